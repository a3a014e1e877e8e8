//! What the admin dashboard calls over gRPC: failure groups, their VINs,
//! retrying a group, a vehicle's actions with their history, and the
//! report's hardware groups and failure series.

#[macro_use]
mod common;

use common::*;
use ota_campaign_manager::model::{ActionState, CampaignState, Transition};
use ota_campaign_manager::store::KEEP_EVENTS;
use ota_campaign_manager::CampaignManagerService;
use ota_common::peer::{self, Peer};
use ota_proto::v1 as pb;
use pb::campaign_manager_client::CampaignManagerClient;
use tonic::Code;

on_both!(
    failures_are_grouped_by_reason,
    a_group_s_vins_come_in_pages,
    retrying_a_group_reoffers_what_has_retries_left,
    retrying_needs_the_role_and_a_live_campaign,
    a_vehicle_s_actions_carry_their_history,
    a_long_history_keeps_the_last_events,
    the_report_has_hardware_groups_and_a_failure_series,
);

fn client(h: &Harness) -> CampaignManagerClient<Peer> {
    CampaignManagerClient::new(peer::in_process(
        CampaignManagerService::new(h.manager.clone()).into_server(),
    ))
}

/// A running campaign over `n` vehicles, every action staged; retries as
/// given.
async fn staged_campaign(h: &Harness, n: u32, max_retries: u32) -> (String, Vec<(String, String)>) {
    h.fleet(n).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let id = h
        .launch(&spec(
            "diag",
            &format!("rollout:\n  max_per_minute: 600000\n  max_retries: {max_retries}\n"),
        ))
        .await;
    h.manager.tick().await.unwrap();
    let mut staged = h.actions_in(&id, ActionState::Staged).await;
    staged.sort();
    assert_eq!(staged.len(), n as usize);
    (id, staged)
}

async fn failures_are_grouped_by_reason(h: Harness) {
    let (id, staged) = staged_campaign(&h, 8, 0).await;
    let outcomes = [
        (ActionState::Failed, "flash write error"),
        (ActionState::Failed, "flash write error"),
        (ActionState::Rejected, "flash write error"),
        (ActionState::Failed, ""),
        (ActionState::Rejected, "user declined"),
        (ActionState::Succeeded, ""),
    ];
    for ((vin, action), (state, message)) in staged.iter().zip(outcomes) {
        h.report(vin, action, state, 1, message).await.unwrap();
    }
    let mut c = client(&h);
    let groups = c
        .failure_groups(pb::FailureGroupsRequest {
            campaign_id: id.clone(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(groups.total_groups, 3);
    let shown: Vec<(&str, u64, u64)> = groups
        .groups
        .iter()
        .map(|g| (g.reason.as_str(), g.count, g.retryable))
        .collect();
    // No retries in this campaign: a rejected action (one attempt) has
    // none left either.
    assert_eq!(
        shown,
        [
            ("flash write error", 3, 0),
            ("(no message)", 1, 0),
            ("user declined", 1, 0)
        ]
    );
    let by_state: Vec<(ActionState, u64)> = groups.groups[0]
        .by_state
        .iter()
        .map(|s| (s.state(), s.count))
        .collect();
    assert_eq!(
        by_state,
        [(ActionState::Failed, 2), (ActionState::Rejected, 1)]
    );
    let first = c
        .failure_groups(pb::FailureGroupsRequest {
            campaign_id: id.clone(),
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.groups.len(), first.total_groups), (1, 3));
    // The report's top failures are the same groups.
    let report = h.manager.report(&id, 2).await.unwrap();
    let top: Vec<(&str, u64)> = report
        .top_failures
        .iter()
        .map(|f| (f.reason.as_str(), f.count))
        .collect();
    assert_eq!(top, [("flash write error", 3), ("(no message)", 1)]);

    let e = c
        .failure_groups(pb::FailureGroupsRequest {
            campaign_id: "nope".into(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "campaign nope not found");
}

async fn a_group_s_vins_come_in_pages(h: Harness) {
    let (id, staged) = staged_campaign(&h, 7, 0).await;
    for (vin, action) in &staged[..5] {
        h.report(vin, action, ActionState::Failed, 1, "crc mismatch")
            .await
            .unwrap();
    }
    h.report(&staged[5].0, &staged[5].1, ActionState::Failed, 1, "")
        .await
        .unwrap();
    let mut c = client(&h);
    let page = |after: &str, reason: &str| pb::FailureGroupVinsRequest {
        campaign_id: id.clone(),
        reason: reason.into(),
        after_vin: after.into(),
        limit: 2,
    };
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let vins = c
            .failure_group_vins(page(&after, "crc mismatch"))
            .await
            .unwrap()
            .into_inner()
            .vins;
        assert!(vins.len() <= 2);
        let Some(last) = vins.last().cloned() else {
            break;
        };
        all.extend(vins);
        after = last;
    }
    let expected: Vec<String> = staged[..5].iter().map(|(v, _)| v.clone()).collect();
    assert_eq!(all, expected);
    let none = c
        .failure_group_vins(page("", "(no message)"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.vins, [staged[5].0.clone()]);
    let unknown = c
        .failure_group_vins(page("", "never said"))
        .await
        .unwrap()
        .into_inner();
    assert!(unknown.vins.is_empty());
    let e = c
        .failure_group_vins(pb::FailureGroupVinsRequest {
            campaign_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

async fn retrying_a_group_reoffers_what_has_retries_left(h: Harness) {
    let (id, staged) = staged_campaign(&h, 5, 1).await;
    // Rejections are not retried by themselves: each has its first attempt
    // only. A failure is staged again once, and its second failure ends it.
    for (vin, action) in &staged[..3] {
        h.report(vin, action, ActionState::Rejected, 1, "battery low")
            .await
            .unwrap();
    }
    let (vin, action) = &staged[3];
    h.report(vin, action, ActionState::Failed, 1, "battery low")
        .await
        .unwrap();
    let r = h
        .report(vin, action, ActionState::Failed, 2, "battery low")
        .await
        .unwrap();
    assert_eq!(r.state, ActionState::Failed);
    h.staging_vins("retry").await;

    let mut c = client(&h);
    let groups = c
        .failure_groups(pb::FailureGroupsRequest {
            campaign_id: id.clone(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((groups.groups[0].count, groups.groups[0].retryable), (4, 3));
    let request = |reason: &str| pb::RetryGroupRequest {
        campaign_id: id.clone(),
        reason: reason.into(),
        actor: "erin".into(),
        actor_role: "engineer".into(),
    };
    let r = c
        .retry_group(request("battery low"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.retried, r.skipped), (3, 1));
    assert_eq!(h.count(&id, ActionState::Pending).await, 3);
    assert_eq!(h.count(&id, ActionState::Failed).await, 1);
    h.assert_counts_exact(&id, "the retry").await;
    let mut notified = h.staging_vins("retry").await;
    notified.sort();
    let retried: Vec<String> = staged[..3].iter().map(|(v, _)| v.clone()).collect();
    assert_eq!(notified, retried);
    let audit = h
        .manager
        .store()
        .list_audit(Some(&id), None, 1)
        .await
        .unwrap();
    assert_eq!(
        (audit[0].action.as_str(), audit[0].actor.as_str()),
        ("retry-group", "erin")
    );
    let detail: serde_json::Value = serde_json::from_str(&audit[0].detail).unwrap();
    assert_eq!(
        detail,
        serde_json::json!({"reason": "battery low", "retried": 3, "skipped": 1})
    );

    // The rollout stages them again, as a second attempt.
    h.manager.tick().await.unwrap();
    let again = h.actions_in(&id, ActionState::Staged).await;
    assert_eq!(again.len(), 4, "3 retried and the one never reported");
    let rows = h.manager.store().campaign_rows(&id, "", 10).await.unwrap();
    for (vin, _) in &staged[..3] {
        let row = rows.iter().find(|r| &r.vin == vin).unwrap();
        assert_eq!((row.state.as_str(), row.attempts), ("staged", 2));
    }
    // Their retries are used up now: rejected again, nothing to retry.
    for (vin, action) in &staged[..3] {
        h.report(vin, action, ActionState::Rejected, 5, "battery low")
            .await
            .unwrap();
    }
    let r = c
        .retry_group(request("battery low"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.retried, r.skipped), (0, 4));
    // A reason no action gave retries nothing.
    let r = c
        .retry_group(request("never said"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.retried, r.skipped), (0, 0));
}

async fn retrying_needs_the_role_and_a_live_campaign(h: Harness) {
    let (id, staged) = staged_campaign(&h, 2, 1).await;
    h.report(&staged[0].0, &staged[0].1, ActionState::Rejected, 1, "no")
        .await
        .unwrap();
    let mut c = client(&h);
    let request = |campaign: &str, role: &str| pb::RetryGroupRequest {
        campaign_id: campaign.into(),
        reason: "no".into(),
        actor: "vic".into(),
        actor_role: role.into(),
    };
    for role in ["viewer", "", "root"] {
        let e = c.retry_group(request(&id, role)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{role}");
        assert!(e.message().contains("engineer role"), "{}", e.message());
    }
    let e = c.retry_group(request("nope", "admin")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "campaign nope not found");
    // Paused: allowed.
    h.manager
        .transition(&id, Transition::Pause, &engineer(), "")
        .await
        .unwrap();
    let r = c
        .retry_group(request(&id, "approver"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.retried, r.skipped), (1, 0));
    h.manager
        .transition(&id, Transition::Abort, &engineer(), "")
        .await
        .unwrap();
    let e = c.retry_group(request(&id, "admin")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        format!("campaign {id} is aborted: cannot retry the failures of it")
    );
    // A draft never ran.
    let draft = h
        .manager
        .create_campaign(&spec("draft", ""), "erin")
        .await
        .unwrap()
        .unwrap();
    let e = c
        .retry_group(request(&draft.id, "engineer"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("is draft"), "{}", e.message());
    assert_eq!(draft.state, CampaignState::Draft);
}

async fn a_vehicle_s_actions_carry_their_history(h: Harness) {
    let (id, staged) = staged_campaign(&h, 2, 1).await;
    let (vin, action) = &staged[0];
    h.manager
        .store()
        .mark_delivered(vin, std::slice::from_ref(action), chrono::Utc::now())
        .await
        .unwrap();
    h.report(vin, action, ActionState::Downloading, 1, "")
        .await
        .unwrap();
    h.report(vin, action, ActionState::Failed, 2, "disk full")
        .await
        .unwrap();
    // An older report applies nothing and leaves no trace.
    h.report(vin, action, ActionState::Installing, 1, "")
        .await
        .unwrap();
    let mut c = client(&h);
    let actions = c
        .vehicle_actions(pb::VehicleActionsRequest { vin: vin.clone() })
        .await
        .unwrap()
        .into_inner()
        .actions;
    assert_eq!(actions.len(), 1);
    let a = &actions[0];
    assert_eq!(
        (
            a.campaign_id.as_str(),
            a.campaign_name.as_str(),
            a.campaign_state(),
            a.attempt
        ),
        (id.as_str(), "diag", CampaignState::Running, 2)
    );
    let row = a.row.as_ref().unwrap();
    assert_eq!(
        (row.action_id.as_str(), row.state()),
        (action.as_str(), ActionState::Staged)
    );
    assert_eq!(row.hardware, "H2");
    let history: Vec<(ActionState, &str, &str, u32)> = a
        .reports
        .iter()
        .map(|r| {
            (
                r.state(),
                r.protocol.as_str(),
                r.message.as_str(),
                r.attempt,
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (ActionState::Staged, "platform", "", 1),
            (ActionState::Delivered, "platform", "", 1),
            (ActionState::Downloading, "test", "", 1),
            (ActionState::Failed, "test", "disk full", 1),
            (
                ActionState::Staged,
                "platform",
                "attempt 1 failed: disk full; retrying",
                2
            ),
        ]
    );
    assert!(a.reports.iter().all(|r| r.at.is_some()));

    // In a second campaign too, newest first.
    h.manager
        .transition(&id, Transition::Abort, &engineer(), "")
        .await
        .unwrap();
    let second = h
        .launch(&spec("second", "rollout:\n  max_per_minute: 600000\n"))
        .await;
    let actions = c
        .vehicle_actions(pb::VehicleActionsRequest { vin: vin.clone() })
        .await
        .unwrap()
        .into_inner()
        .actions;
    let campaigns: Vec<&str> = actions.iter().map(|a| a.campaign_id.as_str()).collect();
    assert_eq!(campaigns, [second.as_str(), id.as_str()]);
    let last = actions[1].reports.last().unwrap();
    assert_eq!(
        (last.state(), last.message.as_str()),
        (ActionState::Cancelled, "campaign aborted")
    );
    assert_eq!(actions[1].campaign_state(), CampaignState::Aborted);

    let none = c
        .vehicle_actions(pb::VehicleActionsRequest { vin: vin_of(99) })
        .await
        .unwrap()
        .into_inner();
    assert!(none.actions.is_empty());
    let e = c
        .vehicle_actions(pb::VehicleActionsRequest {
            vin: "not-a-vin".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("\"not-a-vin\""), "{}", e.message());
}

fn vin_of(i: u32) -> String {
    vin(i)
}

async fn a_long_history_keeps_the_last_events(h: Harness) {
    let (_, staged) = staged_campaign(&h, 1, 0).await;
    let (vin, action) = &staged[0];
    let reports = KEEP_EVENTS as u64 + 30;
    for seq in 1..=reports {
        let r = h
            .report(
                vin,
                action,
                ActionState::Downloading,
                seq,
                &format!("{seq}"),
            )
            .await
            .unwrap();
        assert!(r.applied);
    }
    let actions = h.manager.vehicle_history(vin).await.unwrap();
    let history = &actions[0].reports;
    assert_eq!(history.len(), KEEP_EVENTS as usize);
    assert_eq!(history.last().unwrap().message, reports.to_string());
    assert_eq!(
        history[0].message,
        (reports - KEEP_EVENTS as u64 + 1).to_string()
    );
}

async fn the_report_has_hardware_groups_and_a_failure_series(h: Harness) {
    h.fleet(3).await;
    h.upsert(serde_json::json!({
        "vin": vin(3), "model": "ID.3", "platform": "MEB", "region": "EU", "gateway": "hcp1",
        "ecus": {"BMS": {"hw": "H1", "sw": "2.2.0"}}
    }))
    .await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let id = h
        .launch(&spec("hw", "rollout:\n  max_per_minute: 600000\n"))
        .await;
    h.manager.tick().await.unwrap();
    let mut staged = h.actions_in(&id, ActionState::Staged).await;
    staged.sort();
    for (i, (vin, action)) in staged.iter().enumerate() {
        let state = if i == 3 {
            ActionState::Failed
        } else {
            ActionState::Succeeded
        };
        h.report(vin, action, state, 1, "").await.unwrap();
    }
    let report = client(&h)
        .report(pb::ReportRequest {
            id: id.clone(),
            top_failures: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let hw: Vec<(&str, u64, u64, u64)> = report
        .by_hardware
        .iter()
        .map(|g| (g.key.as_str(), g.total, g.succeeded, g.failed))
        .collect();
    assert_eq!(hw, [("H2", 3, 3, 0), ("H1", 1, 0, 1)]);
    let finished: u64 = report.failure_series.iter().map(|p| p.finished).sum();
    let failed: u64 = report.failure_series.iter().map(|p| p.failed).sum();
    assert_eq!((finished, failed), (4, 1));
    let at = report.failure_series[0].at.as_ref().unwrap();
    assert_eq!(at.seconds % 60, 0, "points are whole minutes");
    assert_eq!(report.completion.last().unwrap().finished, 4);
}
