//! Campaigns from file to report against the real databases: waves,
//! approvals, thresholds, timeouts, retries, conflicts, dynamic targeting.

#[macro_use]
mod common;

use common::*;
use ota_campaign_manager::model::{ActionState, CampaignState, Transition};
use ota_campaign_manager::{CampaignError, CampaignManagerService};
use ota_common::peer;
use ota_proto::v1 as pb;

on_both!(
    campaign_runs_from_file_to_completed_report,
    invalid_file_lists_every_problem_and_creates_nothing,
    structural_and_cel_problems_are_listed_together_with_file_positions,
    hostile_files_are_refused_cheaply,
    approval_needs_a_second_person_with_the_approver_role,
    failure_spike_pauses_the_campaign,
    silent_actions_time_out_after_their_retries,
    failed_actions_are_retried,
    status_reports_are_idempotent_and_checked,
    higher_priority_campaign_takes_the_ecu,
    vehicles_join_and_leave_a_running_campaign,
    pause_and_abort_take_undelivered_actions_back,
    a_campaign_over_thousands_of_vehicles_targets_every_one,
    scans_racing_over_one_campaign_create_each_action_once,
    states_travel_as_enums_over_grpc,
);

const FAST: &str = "rollout:\n  waves: [50, 100]\n  wave_soak: 0s\n  max_per_minute: 600000\n";

async fn campaign_runs_from_file_to_completed_report(h: Harness) {
    h.fleet(20).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let id = h.launch(&spec("bms", FAST)).await;
    assert_eq!(h.counts(&id).await.values().sum::<u64>(), 20);

    h.manager.tick().await.unwrap();
    let first = h.actions_in(&id, ActionState::Staged).await;
    let c = h.manager.campaign(&id).await.unwrap();
    assert_eq!(c.current_wave, 0);
    assert!(
        !first.is_empty() && first.len() < 20,
        "wave 0 only: {}",
        first.len()
    );
    // Staging hears about exactly the staged vehicles.
    let mut notified = h.staging_vins("t1").await;
    notified.sort();
    let mut staged: Vec<String> = first.iter().map(|(v, _)| v.clone()).collect();
    staged.sort();
    assert_eq!(notified, staged);

    for (vin, action) in &first {
        h.report(vin, action, ActionState::Succeeded, 1, "ok")
            .await
            .unwrap();
    }
    h.manager.tick().await.unwrap();
    assert_eq!(h.manager.campaign(&id).await.unwrap().current_wave, 1);
    let rest = h.actions_in(&id, ActionState::Staged).await;
    assert_eq!(first.len() + rest.len(), 20);
    for (vin, action) in &rest {
        let r = h
            .report(vin, action, ActionState::Installing, 1, "")
            .await
            .unwrap();
        assert!(r.applied);
        h.report(vin, action, ActionState::Succeeded, 2, "ok")
            .await
            .unwrap();
    }
    h.manager.tick().await.unwrap();
    let c = h.manager.campaign(&id).await.unwrap();
    assert_eq!(c.state, CampaignState::Completed, "{}", c.state_reason);

    let report = h.manager.report(&id, 5).await.unwrap();
    let succeeded = report
        .by_state
        .iter()
        .find(|s| s.state().as_str() == "succeeded")
        .unwrap();
    assert_eq!(succeeded.count, 20);
    assert_eq!(report.waves.len(), 2);
    assert_eq!(report.waves.iter().map(|w| w.total).sum::<u64>(), 20);
    // Each wave keeps the time it opened, not only the last one.
    let opened: Vec<_> = report.waves.iter().map(|w| w.opened_at).collect();
    assert!(opened.iter().all(Option::is_some), "{opened:?}");
    assert!(opened[0].as_ref().unwrap().seconds <= opened[1].as_ref().unwrap().seconds);
    assert_eq!(report.by_gateway.len(), 2);
    assert_eq!(report.by_model[0].key, "ID.4");
    assert_eq!(report.by_model[0].succeeded, 20);
    assert!(!report.completion.is_empty());
    assert_eq!(report.completion.last().unwrap().succeeded, 20);

    let audit = h
        .manager
        .store()
        .list_audit(Some(&id), None, 100)
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().rev().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["create", "approve", "launch", "wave-open", "complete"]
    );
    assert_eq!(audit.last().unwrap().actor, "erin");
    // The audit counts waves as people do: the second wave is wave 2.
    let opened = audit.iter().find(|e| e.action == "wave-open").unwrap();
    assert!(opened.detail.contains(r#""wave":2"#), "{}", opened.detail);
    assert_eq!(audit[0].actor, "system");
}

async fn invalid_file_lists_every_problem_and_creates_nothing(h: Harness) {
    h.package("bms-fw", "2.3.1").await;
    let text = r#"name: broken
target: 'vehicle.region == '
rules:
  - when: 'vehicle.gateway == "hcp3"'
    install: {package: nope, version: 9.9.9, ecu: BMS}
  - install: {package: bms-fw, version: 2.3.1, ecu: HU}
rollout:
  waves: [10, 5, 100]
"#;
    let errors = h
        .manager
        .create_campaign(text, "erin")
        .await
        .unwrap()
        .unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"rollout.waves[1]"), "{errors:?}");
    // The structural error does not hide the others.
    assert!(paths.contains(&"target"), "{errors:?}");
    assert!(paths.contains(&"rules[0].install.package"), "{errors:?}");
    // Fixed, the rest is still reported.
    let fixed = text.replace("[10, 5, 100]", "[10, 50, 100]");
    let errors = h
        .manager
        .create_campaign(&fixed, "erin")
        .await
        .unwrap()
        .unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"target"), "{errors:?}");
    assert!(paths.contains(&"rules[0].install.package"), "{errors:?}");
    assert!(paths.contains(&"rules[1].install.ecu"), "{errors:?}");
    let missing = errors
        .iter()
        .find(|e| e.path == "rules[0].install.package")
        .unwrap();
    assert!(missing.message.contains("\"nope\""), "{}", missing.message);
    assert!(h
        .manager
        .store()
        .list_campaigns(&[])
        .await
        .unwrap()
        .is_empty());
}

/// `path: message (line L, column C)` of every problem.
fn listed(errors: &[ota_campaign_manager::spec::SpecError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

async fn structural_and_cel_problems_are_listed_together_with_file_positions(h: Harness) {
    h.package("bms-fw", "2.3.1").await;
    // A structural problem (waves) next to CEL errors in a plain, a quoted
    // and a block scalar, and a package that does not exist.
    let text = r#"name: mixed
target: vehicle.region == "EU" &&
rules:
  - when: |
      vehicle.gateway == "hcp3" &&
        vehicle.model ==
    install: {package: nope, version: 9.9.9, ecu: BMS}
  - when: 'vehicle.gateway == ''hcp1'' && vehicle.ecus.BMS.hw in'
    install: {package: bms-fw, version: 2.3.1, ecu: BMS}
rollout:
  waves: [50, 10]
"#;
    let errors = h
        .manager
        .create_campaign(text, "erin")
        .await
        .unwrap()
        .unwrap_err();
    let got = listed(&errors);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "target",
            "rules[0].when",
            "rules[0].install.package",
            "rules[1].when",
            "rollout.waves[1]",
        ],
        "{got:#?}"
    );
    // Each CEL error is placed in the file, here at the end of each
    // expression: the end of the target's line, the end of the block
    // scalar's last line, the closing quote of the quoted one.
    let at = |i: usize| (errors[i].line, errors[i].column);
    assert_eq!(at(0), (Some(2), Some(34)), "{got:#?}");
    assert_eq!(at(1), (Some(6), Some(25)), "{got:#?}");
    assert_eq!(at(2), (Some(7), Some(24)), "{got:#?}");
    assert_eq!(at(3), (Some(8), Some(65)), "{got:#?}");
    assert_eq!(
        got[4],
        "rollout.waves[1]: 10 is not above the previous wave 50 (line 11, column 15)"
    );
    assert!(errors[2].message.contains("\"nope\""), "{got:#?}");
    assert!(h
        .manager
        .store()
        .list_campaigns(&[])
        .await
        .unwrap()
        .is_empty());
}

async fn hostile_files_are_refused_cheaply(h: Harness) {
    // A list of 2,000 scalars, 500 aliases of it, 50 of those and 4 of
    // those: 9 KB of text, 200 million nodes once expanded, in few enough
    // alias jumps that serde_yaml_ng's repetition limit let it through.
    let base = spec("bomb", "");
    let mut bomb = format!("{base}x0: &a0 [{}]\n", vec!["a"; 2000].join(", "));
    for (i, n) in [(1, 500), (2, 50), (3, 4)] {
        let items = vec![format!("*a{}", i - 1); n].join(", ");
        bomb.push_str(&format!("x{i}: &a{i} [{items}]\n"));
    }
    let errors = h.manager.validate(&bomb).await.unwrap().unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0]
            .message
            .starts_with("the file has more than 100000 nodes once its aliases are expanded"),
        "{}",
        errors[0].message
    );
    // The 49th alias of the 2,001-node list crosses 100,000.
    assert_eq!((errors[0].line, errors[0].column), (Some(8), Some(250)));

    // 8,000 broken rules: the first problems, then how many more there are
    // (8,000 missing versions, "too many rules", and the CEL errors of the
    // first 1,000 rules, the most the rule engine takes).
    let mut text = String::from("name: many\ntarget: 'true'\nrules:\n");
    for _ in 0..8000 {
        text.push_str("  - {when: 'vehicle.model ==', install: {package: p, ecu: E}}\n");
    }
    let errors = h.manager.validate(&text).await.unwrap().unwrap_err();
    assert_eq!(errors.len(), 101);
    assert_eq!(errors[0].path, "rules");
    assert_eq!(
        errors[100].message,
        "... and 8901 more problems; only the first 100 are listed"
    );

    let errors = h
        .manager
        .validate(&spec("long", "rollout: {action_timeout: 100000000d}\n"))
        .await
        .unwrap()
        .unwrap_err();
    let got = listed(&errors);
    assert!(
        got.contains(&r#"rollout.action_timeout: "100000000d" is too long; durations are at most 365d (line 7, column 27)"#.to_owned()),
        "{got:#?}"
    );
}

async fn approval_needs_a_second_person_with_the_approver_role(h: Harness) {
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let c = h
        .manager
        .create_campaign(&spec("x", ""), "alex")
        .await
        .unwrap()
        .unwrap();
    // alex created it: alex cannot approve it.
    let e = h
        .manager
        .transition(&c.id, Transition::Approve, &approver(), "")
        .await
        .unwrap_err();
    assert!(matches!(e, CampaignError::Forbidden(_)), "{e}");
    let e = h
        .manager
        .transition(&c.id, Transition::Approve, &engineer(), "")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("approver role"), "{e}");
    let e = h
        .manager
        .transition(&c.id, Transition::Launch, &engineer(), "")
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("campaign {} is draft: cannot launch it", c.id)
    );
    let boss = ota_campaign_manager::Actor {
        name: "bo".into(),
        role: "admin".into(),
    };
    let c2 = h
        .manager
        .transition(&c.id, Transition::Approve, &boss, "")
        .await
        .unwrap();
    assert_eq!(
        (c2.state, c2.approved_by.as_deref()),
        (CampaignState::Approved, Some("bo"))
    );
    let e = h
        .manager
        .transition(&c.id, Transition::Resume, &engineer(), "")
        .await
        .unwrap_err();
    assert!(matches!(e, CampaignError::IllegalTransition { .. }));
    let e = h
        .manager
        .transition("nope", Transition::Pause, &engineer(), "")
        .await
        .unwrap_err();
    assert!(matches!(e, CampaignError::NotFound { .. }));
    let pkg = h.manager.store().get_package("bms-fw@2.3.1").await.unwrap();
    assert!(pkg.in_use, "a package used by a campaign is frozen");
}

async fn failure_spike_pauses_the_campaign(h: Harness) {
    h.fleet(20).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let extra = "rollout:\n  waves: [100]\n  max_per_minute: 600000\n  failure_threshold: {percent: 20, min_finished: 5, action: pause}\n";
    let id = h.launch(&spec("spiky", extra)).await;
    h.manager.tick().await.unwrap();
    let staged = h.actions_in(&id, ActionState::Staged).await;
    assert_eq!(staged.len(), 20);
    for (vin, action) in staged.iter().take(4) {
        h.report(vin, action, ActionState::Failed, 1, "flash write error")
            .await
            .unwrap();
    }
    h.report(&staged[4].0, &staged[4].1, ActionState::Succeeded, 1, "")
        .await
        .unwrap();
    h.report(&staged[5].0, &staged[5].1, ActionState::Accepted, 1, "")
        .await
        .unwrap();
    h.manager.tick().await.unwrap();
    let c = h.manager.campaign(&id).await.unwrap();
    assert_eq!(c.state, CampaignState::Paused);
    assert!(c.state_reason.contains("80.0%"), "{}", c.state_reason);
    // Undelivered actions left the vehicles; the accepted one stays.
    assert_eq!(h.count(&id, ActionState::Staged).await, 0);
    assert_eq!(h.count(&id, ActionState::Pending).await, 14);
    assert_eq!(h.count(&id, ActionState::Accepted).await, 1);
    let report = h.manager.report(&id, 3).await.unwrap();
    assert_eq!(report.top_failures[0].reason, "flash write error");
    assert_eq!(report.top_failures[0].count, 4);
    let audit = h
        .manager
        .store()
        .list_audit(Some(&id), None, 1)
        .await
        .unwrap();
    assert_eq!(
        (audit[0].action.as_str(), audit[0].actor.as_str()),
        ("auto-pause", "system")
    );
}

async fn silent_actions_time_out_after_their_retries(h: Harness) {
    h.fleet(2).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let extra = "rollout:\n  max_per_minute: 600000\n  action_timeout: 1s\n  max_retries: 1\n";
    let id = h.launch(&spec("slow", extra)).await;
    h.manager.tick().await.unwrap();
    assert_eq!(h.count(&id, ActionState::Staged).await, 2);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    h.manager.tick().await.unwrap();
    // First timeout: staged again for the one retry.
    assert_eq!(h.count(&id, ActionState::Staged).await, 2);
    let rows = h.manager.store().campaign_rows(&id, "", 10).await.unwrap();
    assert!(rows
        .iter()
        .all(|r| r.attempts == 2 && r.message.contains("no final status within 1s")));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    h.manager.tick().await.unwrap();
    assert_eq!(h.count(&id, ActionState::TimedOut).await, 2);
}

async fn failed_actions_are_retried(h: Harness) {
    h.fleet(1).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let id = h
        .launch(&spec(
            "retry",
            "rollout:\n  max_per_minute: 600000\n  max_retries: 1\n",
        ))
        .await;
    h.manager.tick().await.unwrap();
    let (vin, action) = h.actions_in(&id, ActionState::Staged).await.remove(0);
    let r = h
        .report(&vin, &action, ActionState::Failed, 1, "crc mismatch")
        .await
        .unwrap();
    assert_eq!((r.applied, r.state.as_str()), (true, "staged"));
    let r = h
        .report(&vin, &action, ActionState::Failed, 2, "crc mismatch")
        .await
        .unwrap();
    assert_eq!((r.applied, r.state.as_str()), (true, "failed"));
    assert_eq!(h.manager.report(&id, 1).await.unwrap().retries, 1);
}

async fn status_reports_are_idempotent_and_checked(h: Harness) {
    h.fleet(2).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let id = h
        .launch(&spec("idem", "rollout:\n  max_per_minute: 600000\n"))
        .await;
    h.manager.tick().await.unwrap();
    let staged = h.actions_in(&id, ActionState::Staged).await;
    let (vin, action) = &staged[0];
    assert!(
        h.report(vin, action, ActionState::Downloading, 5, "")
            .await
            .unwrap()
            .applied
    );
    let dup = h
        .report(vin, action, ActionState::Downloading, 5, "")
        .await
        .unwrap();
    assert_eq!((dup.applied, dup.state.as_str()), (false, "downloading"));
    let old = h
        .report(vin, action, ActionState::Accepted, 3, "")
        .await
        .unwrap();
    assert!(!old.applied);
    assert!(
        h.report(vin, action, ActionState::Succeeded, 9, "")
            .await
            .unwrap()
            .applied
    );
    let late = h
        .report(vin, action, ActionState::Installing, 10, "")
        .await
        .unwrap();
    assert_eq!((late.applied, late.state.as_str()), (false, "succeeded"));
    // Another vehicle's action, and an action that does not exist.
    let other = &staged[1].0;
    let e = h
        .report(other, action, ActionState::Failed, 11, "")
        .await
        .unwrap_err();
    assert!(matches!(e, CampaignError::Forbidden(_)), "{e}");
    let e = h
        .report(vin, "424242", ActionState::Failed, 1, "")
        .await
        .unwrap_err();
    assert!(matches!(e, CampaignError::NotFound { .. }), "{e}");
    assert_eq!(h.count(&id, ActionState::Succeeded).await, 1);
    assert_eq!(
        h.count(&id, ActionState::Staged).await,
        1,
        "the other action is untouched"
    );
}

async fn higher_priority_campaign_takes_the_ecu(h: Harness) {
    h.fleet(2).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let low = h
        .launch(&spec(
            "low",
            "rollout:\n  max_per_minute: 600000\npriority: 1\n",
        ))
        .await;
    h.manager.tick().await.unwrap();
    let low_staged = h.actions_in(&low, ActionState::Staged).await;
    assert_eq!(low_staged.len(), 2);
    // Vehicle 0 already has its action; vehicle 1 does not yet.
    let (v0, a0) = low_staged.iter().find(|(v, _)| *v == vin(0)).unwrap();
    h.report(v0, a0, ActionState::Downloading, 1, "")
        .await
        .unwrap();

    let high = h
        .launch(&spec(
            "high",
            "rollout:\n  max_per_minute: 600000\npriority: 50\n",
        ))
        .await;
    h.manager.tick().await.unwrap();
    let high_staged = h.actions_in(&high, ActionState::Staged).await;
    assert_eq!(
        high_staged
            .iter()
            .map(|(v, _)| v.clone())
            .collect::<Vec<_>>(),
        [vin(1)]
    );
    assert_eq!(h.actions_in(&high, ActionState::Waiting).await[0].0, vin(0));
    assert_eq!(h.actions_in(&low, ActionState::Waiting).await[0].0, vin(1));
    // Staging sees at most one open action per vehicle and ECU.
    let open = h
        .manager
        .store()
        .open_actions(&[vin(0), vin(1)])
        .await
        .unwrap();
    assert_eq!(open.len(), 2);
    let report = h.manager.report(&low, 1).await.unwrap();
    assert_eq!(
        report
            .by_state
            .iter()
            .find(|s| s.state().as_str() == "waiting")
            .unwrap()
            .count,
        1
    );
    // When the low campaign's delivered action finishes, the high one gets its turn.
    h.report(v0, a0, ActionState::Succeeded, 2, "")
        .await
        .unwrap();
    h.manager.tick().await.unwrap();
    assert_eq!(h.count(&high, ActionState::Staged).await, 2);
}

async fn vehicles_join_and_leave_a_running_campaign(h: Harness) {
    h.fleet(3).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let id = h
        .launch(&spec("dyn", "rollout:\n  max_per_minute: 600000\n"))
        .await;
    h.manager.tick().await.unwrap();
    assert_eq!(h.count(&id, ActionState::Staged).await, 3);
    // A new vehicle that matches, one that moves out of the EU, one that
    // reports the target version already installed.
    h.upsert(serde_json::json!({"vin": vin(7), "region": "EU", "gateway": "hcp1", "ecus": {"BMS": {"hw": "H2", "sw": "2.0.0"}}})).await;
    h.upsert(serde_json::json!({"vin": vin(0), "region": "US"}))
        .await;
    h.upsert(serde_json::json!({"vin": vin(1), "ecus": {"BMS": {"hw": "H2", "sw": "2.3.1"}}}))
        .await;
    h.manager
        .on_vehicles_changed(&[vin(7), vin(0), vin(1)])
        .await
        .unwrap();
    let rows = h.manager.store().campaign_rows(&id, "", 10).await.unwrap();
    let state = |v: String| {
        rows.iter()
            .find(|r| r.vin == v)
            .map(|r| r.state.clone())
            .unwrap()
    };
    assert_eq!(state(vin(0)), "cancelled");
    assert_eq!(state(vin(1)), "succeeded");
    assert_eq!(state(vin(2)), "staged");
    assert_eq!(state(vin(7)), "pending");
    let left = rows.iter().find(|r| r.vin == vin(0)).unwrap();
    assert_eq!(left.message, "no longer matches the target");
    h.manager.tick().await.unwrap();
    assert_eq!(h.count(&id, ActionState::Staged).await, 2);
}

async fn pause_and_abort_take_undelivered_actions_back(h: Harness) {
    h.fleet(4).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let id = h
        .launch(&spec("stop", "rollout:\n  max_per_minute: 600000\n"))
        .await;
    h.manager.tick().await.unwrap();
    let staged = h.actions_in(&id, ActionState::Staged).await;
    h.manager
        .store()
        .mark_delivered(&staged[0].0, &[staged[0].1.clone()], chrono::Utc::now())
        .await
        .unwrap();
    h.staging_vins("t2").await;
    h.manager
        .transition(&id, Transition::Pause, &engineer(), "investigating")
        .await
        .unwrap();
    assert_eq!(h.count(&id, ActionState::Delivered).await, 1);
    assert_eq!(h.count(&id, ActionState::Pending).await, 3);
    let mut notified = h.staging_vins("t2").await;
    notified.sort();
    let mut expected: Vec<String> = staged[1..].iter().map(|(v, _)| v.clone()).collect();
    expected.sort();
    assert_eq!(
        notified, expected,
        "staging recomputes the vehicles that lost an action"
    );
    // Paused campaigns hand nothing out.
    h.manager.tick().await.unwrap();
    assert_eq!(h.count(&id, ActionState::Staged).await, 0);
    h.manager
        .transition(&id, Transition::Resume, &engineer(), "")
        .await
        .unwrap();
    h.manager.tick().await.unwrap();
    assert_eq!(h.count(&id, ActionState::Staged).await, 3);
    let c = h
        .manager
        .transition(&id, Transition::Abort, &engineer(), "bad build")
        .await
        .unwrap();
    assert_eq!(
        (c.state, c.state_reason.as_str()),
        (CampaignState::Aborted, "bad build")
    );
    assert_eq!(h.count(&id, ActionState::Cancelled).await, 4);
    assert!(h
        .manager
        .store()
        .open_actions(&staged.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>())
        .await
        .unwrap()
        .is_empty());
}

/// More actions than one multi-row INSERT may carry on SQLite (32,766
/// bound parameters): the rows are split, and none is missing.
async fn a_campaign_over_thousands_of_vehicles_targets_every_one(h: Harness) {
    const N: u32 = 4_500;
    h.bulk_fleet(N).await;
    h.package("bms-fw", "2.3.1").await;
    let id = h
        .launch(&format!(
            "name: big\ntarget: 'true'\nrules:\n  - install: {{package: bms-fw, version: 2.3.1, ecu: BMS}}\n{FAST}"
        ))
        .await;
    let total: u64 = h.counts(&id).await.values().sum();
    assert_eq!(total, u64::from(N));
}

/// The launch starts a scan in the background; a caller in the same process
/// and a second process scan the same campaign at once. They insert the same
/// rows: each vehicle gets one action and no writer deadlocks on another.
async fn scans_racing_over_one_campaign_create_each_action_once(h: Harness) {
    const N: u32 = 3_000;
    h.bulk_fleet(N).await;
    h.package("bms-fw", "2.3.1").await;
    let spec = format!(
        "name: race\ntarget: 'true'\nrules:\n  - install: {{package: bms-fw, version: 2.3.1, ecu: BMS}}\n{FAST}"
    );
    let c = h
        .manager
        .create_campaign(&spec, "erin")
        .await
        .unwrap()
        .unwrap();
    h.manager
        .transition(&c.id, Transition::Approve, &approver(), "ok")
        .await
        .unwrap();
    h.manager
        .transition(&c.id, Transition::Launch, &engineer(), "go")
        .await
        .unwrap();
    let other = ota_tests::platform::Services::new(h.db.db()).manager;
    let (here, again, there) = tokio::join!(
        h.manager.target_campaign(&c.id),
        h.manager.target_campaign(&c.id),
        other.target_campaign(&c.id),
    );
    let created = here.expect("first scan")
        + again.expect("second scan")
        + there.expect("scan of the other process");
    assert!(
        created <= u64::from(N),
        "{created} actions created for {N} vehicles"
    );
    let total: u64 = h.counts(&c.id).await.values().sum();
    assert_eq!(total, u64::from(N));
}

/// Every state in the gRPC contract is its enum, the same state the store
/// holds as text; a state no vehicle may report is refused naming the ones
/// it may.
async fn states_travel_as_enums_over_grpc(h: Harness) {
    h.fleet(4).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let id = h.launch(&spec("bms", FAST)).await;
    h.manager.tick().await.unwrap();
    let mut client = pb::campaign_manager_client::CampaignManagerClient::new(peer::in_process(
        CampaignManagerService::new(h.manager.clone()).into_server(),
    ));

    let list = |state: i32| {
        let mut client = client.clone();
        async move {
            client
                .list_campaigns(pb::ListCampaignsRequest { state })
                .await
                .map(|r| r.into_inner().campaigns)
        }
    };
    let running = list(CampaignState::Running.into()).await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].state(), CampaignState::Running);
    assert!(list(CampaignState::Draft.into()).await.unwrap().is_empty());
    assert_eq!(
        list(CampaignState::Unspecified.into()).await.unwrap().len(),
        1
    );
    let e = list(99).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("99"), "{}", e.message());

    let (vin, action) = h.actions_in(&id, ActionState::Staged).await.remove(0);
    let report = |state: i32| pb::ReportStatusRequest {
        vin: vin.clone(),
        action_id: action.clone(),
        state,
        seq: 1,
        ..Default::default()
    };
    for (state, shown) in [
        (ActionState::Staged.into(), "\"staged\""),
        (ActionState::Unspecified.into(), "\"unspecified\""),
        (99, "99"),
    ] {
        let e = client.report_status(report(state)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            e.message(),
            format!(
                "unknown state {shown}: expected one of accepted, downloading, installing, \
                 succeeded, failed, rejected"
            )
        );
    }
    let r = client
        .report_status(report(ActionState::Accepted.into()))
        .await
        .unwrap()
        .into_inner();
    assert!(r.applied);
    assert_eq!(r.state(), ActionState::Accepted);
    assert_eq!(h.count(&id, ActionState::Accepted).await, 1);

    let c = client
        .report(pb::ReportRequest {
            id: id.clone(),
            top_failures: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.state(), CampaignState::Running);
    let by_state: Vec<ActionState> = c.by_state.iter().map(|s| s.state()).collect();
    assert_eq!(by_state, ActionState::ALL);
    let accepted = c
        .by_state
        .iter()
        .find(|s| s.state() == ActionState::Accepted);
    assert_eq!(accepted.map(|s| s.count), Some(1));
    let in_waves: Vec<ActionState> = c
        .waves
        .iter()
        .flat_map(|w| w.by_state.iter().map(|s| s.state()))
        .collect();
    assert!(in_waves.contains(&ActionState::Accepted), "{in_waves:?}");

    let mut pages = client
        .report_vehicles(pb::ReportRequest {
            id: id.clone(),
            top_failures: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut rows = Vec::new();
    while let Some(page) = pages.message().await.unwrap() {
        rows.extend(page.rows);
    }
    assert_eq!(rows.len(), 4);
    let row = rows.iter().find(|r| r.action_id == action).unwrap();
    assert_eq!(row.state(), ActionState::Accepted);

    let open = client
        .open_actions(pb::OpenActionsRequest {
            vins: vec![vin.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(open.vehicles[0].actions[0].state(), ActionState::Accepted);
}
