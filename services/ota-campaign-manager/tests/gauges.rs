//! The campaigns' gauges follow their counters: actions by state and the
//! failure threshold once it counts, for running and paused campaigns,
//! zeroed when a campaign finishes; status reports are counted by protocol
//! and state with bounded labels.

#[macro_use]
mod common;

use common::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ota_campaign_manager::gauges::CampaignGauges;
use ota_campaign_manager::model::{ActionState, CampaignState, Transition};

on_both!(gauges_follow_a_campaign_until_it_finishes);

/// The value of the one series `name{labels}` (labels as rendered, in
/// order); None when it is not there.
fn value(handle: &PrometheusHandle, series: &str) -> Option<f64> {
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn actions(handle: &PrometheusHandle, campaign: &str, state: &str) -> Option<f64> {
    value(
        handle,
        &format!(r#"ota_campaign_actions{{campaign="{campaign}",state="{state}"}}"#),
    )
}

fn threshold(handle: &PrometheusHandle, campaign: &str) -> Option<f64> {
    value(
        handle,
        &format!(r#"ota_campaign_failure_threshold{{campaign="{campaign}"}}"#),
    )
}

async fn gauges_follow_a_campaign_until_it_finishes(h: Harness) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    h.fleet(4).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    let id = h
        .launch(&spec(
            "gauged",
            "rollout:\n  waves: [100]\n  max_per_minute: 600000\n  failure_threshold: {percent: 30, min_finished: 2, action: pause}\n",
        ))
        .await;
    let mut gauges = CampaignGauges::default();
    h.manager.tick().await.unwrap();
    h.manager.publish_gauges(&mut gauges).await.unwrap();
    assert_eq!(actions(&handle, &id, "staged"), Some(4.0));
    assert_eq!(actions(&handle, &id, "failed"), Some(0.0));
    assert_eq!(
        threshold(&handle, &id),
        Some(1.0),
        "no action finished: the threshold does not count yet"
    );

    let staged = h.actions_in(&id, ActionState::Staged).await;
    for (state, (vin, action)) in [ActionState::Failed, ActionState::Succeeded]
        .into_iter()
        .zip(&staged)
    {
        h.manager
            .store()
            .mark_delivered(vin, std::slice::from_ref(action), chrono::Utc::now())
            .await
            .unwrap();
        let r = h.report(vin, action, state, 1, "done").await.unwrap();
        assert!(r.applied, "{r:?}");
    }
    h.manager.publish_gauges(&mut gauges).await.unwrap();
    assert_eq!(actions(&handle, &id, "failed"), Some(1.0));
    assert_eq!(actions(&handle, &id, "succeeded"), Some(1.0));
    assert_eq!(actions(&handle, &id, "staged"), Some(2.0));
    assert_eq!(threshold(&handle, &id), Some(0.3));
    assert_eq!(
        value(
            &handle,
            r#"ota_status_reports_total{protocol="other",state="failed",outcome="applied"}"#
        ),
        Some(1.0),
        "a protocol no adapter speaks is `other`"
    );

    // 50 % failed: the rollout pauses it, and a paused campaign is shown.
    h.manager.tick().await.unwrap();
    let c = h.manager.campaign(&id).await.unwrap();
    assert_eq!(c.state, CampaignState::Paused, "{}", c.state_reason);
    h.manager.publish_gauges(&mut gauges).await.unwrap();
    assert_eq!(actions(&handle, &id, "failed"), Some(1.0));
    assert_eq!(threshold(&handle, &id), Some(0.3));

    h.manager
        .transition(&id, Transition::Abort, &engineer(), "too many failures")
        .await
        .unwrap();
    h.manager.publish_gauges(&mut gauges).await.unwrap();
    for state in ActionState::ALL {
        assert_eq!(
            actions(&handle, &id, state.as_str()),
            Some(0.0),
            "{state:?} of a finished campaign"
        );
    }
    assert_eq!(threshold(&handle, &id), Some(1.0));
    assert!(!handle.render().contains(&vin(0)), "a VIN in a label");
}
