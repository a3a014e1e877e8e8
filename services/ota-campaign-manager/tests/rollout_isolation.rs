//! One campaign never stops the rollout of the others: a campaign whose
//! stored plan overflows date arithmetic, or cannot be read at all, fails
//! on its own, shows why on itself (store, gRPC), is counted in the
//! metrics, audited once, and paused after repeated failures; the other
//! campaigns keep advancing in the same ticks and after a restart.

#[macro_use]
mod common;

use common::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ota_campaign_manager::model::{ActionState, Campaign, CampaignState, Transition};
use ota_campaign_manager::rollout::PAUSE_AFTER_FAILED_TICKS;
use ota_campaign_manager::store::CampaignEntry;
use ota_campaign_manager::{CampaignManager, CampaignManagerService};
use ota_common::peer;
use ota_proto::v1 as pb;
use pb::campaign_manager_client::CampaignManagerClient;

on_both!(
    a_campaign_whose_dates_overflow_does_not_stop_the_others,
    an_unreadable_campaign_is_shown_and_paused_while_the_others_go_on,
    a_campaign_that_works_again_loses_its_error,
);

/// Two waves, no soak: wave 0 is staged at the first tick, wave 1 opens at
/// the next one.
const TWO_WAVES: &str = "rollout:\n  waves: [50, 100]\n  wave_soak: 0s\n  max_per_minute: 600000\n";

/// 100,000,000 days: past the last date chrono represents when subtracted
/// from now.
const HUGE: std::time::Duration = std::time::Duration::from_secs(100_000_000 * 86_400);

/// A fresh campaign manager over the same database: what a restarted
/// process has.
fn restarted(h: &Harness) -> CampaignManager {
    ota_tests::platform::Services::new(h.db.db()).manager
}

fn grpc(manager: &CampaignManager) -> CampaignManagerClient<peer::Peer> {
    CampaignManagerClient::new(peer::in_process(
        CampaignManagerService::new(manager.clone()).into_server(),
    ))
}

/// A metrics recorder for this test's thread (tokio tests run on one).
fn recorder() -> (
    metrics_exporter_prometheus::PrometheusRecorder,
    PrometheusHandle,
) {
    let r = PrometheusBuilder::new().build_recorder();
    let handle = r.handle();
    (r, handle)
}

/// The sum of a counter over all its label sets.
fn counter(handle: &PrometheusHandle, name: &str) -> f64 {
    handle
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A campaign stored through the store directly, bypassing the file's
/// validation, launched and targeted; `edit` changes its plan first.
async fn insert_launched(
    h: &Harness,
    name: &str,
    edit: impl FnOnce(&mut ota_campaign_manager::model::Plan),
) -> String {
    let template = h
        .manager
        .create_campaign(&spec(name, "priority: 10\n"), "erin")
        .await
        .unwrap()
        .unwrap();
    let mut plan = template.plan.clone();
    edit(&mut plan);
    let c = Campaign {
        id: uuid::Uuid::now_v7().to_string(),
        plan,
        ..template
    };
    h.manager.store().insert_campaign(&c).await.unwrap();
    h.manager
        .transition(&c.id, Transition::Approve, &approver(), "")
        .await
        .unwrap();
    h.manager
        .transition(&c.id, Transition::Launch, &engineer(), "")
        .await
        .unwrap();
    h.manager.target_campaign(&c.id).await.unwrap();
    c.id
}

/// Overwrites a campaign's stored plan, as a hand edit or an older version
/// would have left it.
async fn set_plan(h: &Harness, id: &str, plan: &str) {
    let updated = ota_db::with_pool!(h.db.db(), p => {
        sqlx::query("UPDATE campaigns SET plan = $1 WHERE id = $2")
            .bind(plan)
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected())
    });
    assert_eq!(updated.unwrap(), 1);
}

async fn plan_text(h: &Harness, id: &str) -> String {
    let (plan,): (String,) = ota_db::with_pool!(h.db.db(), p => {
        sqlx::query_as("SELECT plan FROM campaigns WHERE id = $1")
            .bind(id)
            .fetch_one(p)
            .await
    })
    .unwrap();
    plan
}

async fn audit_actions(manager: &CampaignManager, id: &str) -> Vec<String> {
    let entries = manager
        .store()
        .list_audit(Some(id), None, 1000)
        .await
        .unwrap();
    entries.into_iter().rev().map(|e| e.action).collect()
}

fn count_of(actions: &[String], action: &str) -> usize {
    actions.iter().filter(|a| *a == action).count()
}

async fn a_campaign_whose_dates_overflow_does_not_stop_the_others(h: Harness) {
    let (rec, metrics) = recorder();
    let _local = metrics::set_default_local_recorder(&rec);
    h.fleet(20).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let good = h.launch(&spec("good", TWO_WAVES)).await;
    // Higher priority: the rollout reaches it first in every tick.
    let bad = insert_launched(&h, "bad", |p| p.spec.rollout.action_timeout = Some(HUGE)).await;

    h.manager
        .tick()
        .await
        .expect("the tick goes on past the bad campaign");
    let first = h.actions_in(&good, ActionState::Staged).await;
    assert!(
        !first.is_empty() && first.len() < 20,
        "the good campaign stages its first wave: {}",
        first.len()
    );
    assert_eq!(h.count(&bad, ActionState::Staged).await, 0);

    // The bad campaign says what is wrong, on itself, through gRPC.
    let mut client = grpc(&h.manager);
    let shown = client
        .get_campaign(pb::GetCampaignRequest { id: bad.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.state().as_str(), "running");
    assert!(
        shown.last_error.contains("2400000000h"),
        "names the offending value: {}",
        shown.last_error
    );
    assert!(shown.last_error_at.is_some());
    assert_eq!(shown.failed_ticks, 1);
    let good_shown = client
        .get_campaign(pb::GetCampaignRequest { id: good.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (good_shown.last_error.as_str(), good_shown.failed_ticks),
        ("", 0)
    );
    // `ota campaigns status` reads the report: it carries the error too,
    // or, for a plan that cannot be read at all, fails naming it.
    match client
        .report(pb::ReportRequest {
            id: bad.clone(),
            ..Default::default()
        })
        .await
    {
        Ok(r) => assert_eq!(r.into_inner().last_error, shown.last_error),
        Err(s) => assert!(s.message().contains("2400000000h"), "{s:?}"),
    }
    assert_eq!(counter(&metrics, "ota_rollout_tick_failures_total"), 1.0);
    assert_eq!(
        count_of(&audit_actions(&h.manager, &bad).await, "rollout-failing"),
        1
    );

    // After a restart the good campaign goes on to its next wave, and the
    // bad one fails again on its own, audited only once.
    let manager = restarted(&h);
    manager
        .tick()
        .await
        .expect("the tick goes on after a restart");
    let c = manager.campaign(&good).await.unwrap();
    assert_eq!(c.current_wave, 1, "the good campaign opened its next wave");
    assert_eq!(h.count(&good, ActionState::Staged).await, 20);
    let shown = grpc(&manager)
        .get_campaign(pb::GetCampaignRequest { id: bad.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.failed_ticks, 2);
    assert!(
        shown.last_error.contains("2400000000h"),
        "{}",
        shown.last_error
    );
    assert_eq!(counter(&metrics, "ota_rollout_tick_failures_total"), 2.0);
    assert_eq!(
        count_of(&audit_actions(&manager, &bad).await, "rollout-failing"),
        1
    );
}

async fn an_unreadable_campaign_is_shown_and_paused_while_the_others_go_on(h: Harness) {
    let (rec, metrics) = recorder();
    let _local = metrics::set_default_local_recorder(&rec);
    h.fleet(20).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let good = h.launch(&spec("good", TWO_WAVES)).await;
    let bad = insert_launched(&h, "bad", |_| {}).await;
    set_plan(&h, &bad, r#"{"spec": 42}"#).await;

    h.manager
        .tick()
        .await
        .expect("the tick goes on past the bad campaign");
    assert!(!h.actions_in(&good, ActionState::Staged).await.is_empty());
    let mut client = grpc(&h.manager);
    let shown = client
        .get_campaign(pb::GetCampaignRequest { id: bad.clone() })
        .await
        .expect("an unreadable campaign can still be shown")
        .into_inner();
    assert_eq!((shown.state().as_str(), shown.failed_ticks), ("running", 1));
    assert!(
        shown.last_error.contains(&format!(
            "stored campaign {bad} is corrupt: plan does not parse"
        )),
        "{}",
        shown.last_error
    );
    let listed = client
        .list_campaigns(pb::ListCampaignsRequest::default())
        .await
        .expect("one unreadable campaign does not break the listing")
        .into_inner();
    // The good one, the bad one, and the draft the bad one was copied from.
    assert_eq!(listed.campaigns.len(), 3);
    let listed_bad = listed.campaigns.iter().find(|c| c.id == bad).unwrap();
    assert_eq!(listed_bad.last_error, shown.last_error);
    assert_eq!(counter(&metrics, "ota_rollout_tick_failures_total"), 1.0);

    // It keeps failing: paused after the threshold, with the reason, while
    // the good campaign goes on.
    let manager = restarted(&h);
    for _ in 1..PAUSE_AFTER_FAILED_TICKS {
        manager.tick().await.unwrap();
    }
    assert_eq!(manager.campaign(&good).await.unwrap().current_wave, 1);
    assert_eq!(h.count(&good, ActionState::Staged).await, 20);
    let shown = grpc(&manager)
        .get_campaign(pb::GetCampaignRequest { id: bad.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.state().as_str(), "paused");
    assert!(
        shown.state_reason.starts_with(&format!(
            "the rollout failed {PAUSE_AFTER_FAILED_TICKS} times in a row: stored campaign"
        )),
        "{}",
        shown.state_reason
    );
    let audit = audit_actions(&manager, &bad).await;
    assert_eq!(count_of(&audit, "rollout-failing"), 1, "{audit:?}");
    assert_eq!(audit.last().map(String::as_str), Some("auto-pause"));
    assert_eq!(
        counter(&metrics, "ota_rollout_tick_failures_total"),
        f64::from(PAUSE_AFTER_FAILED_TICKS)
    );
    // Paused, it is no longer ticked.
    manager.tick().await.unwrap();
    assert_eq!(
        counter(&metrics, "ota_rollout_tick_failures_total"),
        f64::from(PAUSE_AFTER_FAILED_TICKS)
    );
}

/// While a campaign cannot be read, its vehicles' documents and status
/// reports still work (other campaigns' actions share them); once its record
/// is repaired, its next good tick clears the error.
async fn a_campaign_that_works_again_loses_its_error(h: Harness) {
    h.fleet(4).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let id = insert_launched(&h, "flaky", |p| {
        p.spec.rollout.max_per_minute = 600_000;
    })
    .await;
    h.manager.tick().await.unwrap();
    let staged = h.actions_in(&id, ActionState::Staged).await;
    assert_eq!(staged.len(), 4);
    let plan = plan_text(&h, &id).await;
    set_plan(&h, &id, "not json").await;

    let (vin, action) = &staged[0];
    let open = h
        .manager
        .store()
        .open_actions(std::slice::from_ref(vin))
        .await
        .unwrap();
    let docs = h
        .manager
        .vehicle_actions(open)
        .await
        .expect("documents are built without the unreadable plan");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].actions[0].action_id, *action);
    assert_eq!(docs[0].actions[0].deadline, None);
    let r = h
        .report(vin, action, ActionState::Failed, 1, "flash error")
        .await
        .expect("status reports are applied without the unreadable plan");
    assert_eq!((r.applied, r.state.as_str()), (true, "failed"));

    h.manager.tick().await.unwrap();
    h.manager.tick().await.unwrap();
    let e = h.manager.store().get_campaign_entry(&id).await.unwrap();
    let CampaignEntry::Unreadable(e) = e else {
        panic!("readable with a broken plan: {e:?}");
    };
    assert_eq!(e.rollout_error.as_ref().map(|e| e.failed_ticks), Some(2));

    set_plan(&h, &id, &plan).await;
    h.manager.tick().await.unwrap();
    let c = h.manager.campaign(&id).await.unwrap();
    assert_eq!(c.state, CampaignState::Running);
    assert_eq!(c.rollout_error, None);
    let audit = audit_actions(&h.manager, &id).await;
    assert_eq!(count_of(&audit, "rollout-failing"), 1, "{audit:?}");
    assert_eq!(count_of(&audit, "rollout-recovered"), 1, "{audit:?}");
}
