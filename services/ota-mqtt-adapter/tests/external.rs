//! Against the real Mosquitto at 127.0.0.1:1883 (a test fails when it is not
//! running): shared subscriptions, retained documents, and no acknowledged
//! report lost when the adapter stops mid-stream. Each test uses its own
//! topic prefix, share group and VINs, so parallel runs never collide.

mod common;

use std::time::Duration;

use common::*;
use ota_campaign_manager::model::ActionState;
use ota_mqtt_adapter::MqttAdapterConfig;
use rumqttc::{Packet, QoS};

fn external(prefix: &str, client_id: &str) -> MqttAdapterConfig {
    MqttAdapterConfig {
        external_url: Some(format!("mqtt://{MOSQUITTO}")),
        client_id: client_id.to_owned(),
        topic_prefix: prefix.to_owned(),
        share_group: unique("g"),
        ..Default::default()
    }
}

fn mosquitto_client(id: &str) -> Vehicle {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", 1883);
    o.set_keep_alive(Duration::from_secs(5))
        .set_inflight(200)
        .set_max_packet_size(1024 * 1024, 1024 * 1024);
    connect(o)
}

#[tokio::test]
async fn reports_through_the_shared_subscription_reach_the_campaign_manager() {
    require_mosquitto();
    let p = Platform::new().await;
    let campaign = p.campaign(3).await;
    let prefix = unique("ota-test");
    let mut config = external(&prefix, &unique("adapter"));
    // Two instances in one share group split the reports between them.
    let (first, _s1) = p.start(config.clone()).await;
    config.client_id = unique("adapter");
    let (second, _s2) = p.start(config).await;

    let vins: Vec<String> = (0..3).map(|i| p.vin(i)).collect();
    let mut watcher = mosquitto_client(&unique("watcher"));
    watcher.connack().await.unwrap();
    watcher
        .client
        .subscribe(format!("{prefix}/+/actions"), QoS::AtLeastOnce)
        .await
        .unwrap();
    p.staged(&vins).await;
    let mut docs = std::collections::HashSet::new();
    while docs.len() < 3 {
        let t = watcher
            .expect(Duration::from_secs(10), |ev| match ev {
                Ok(Packet::Publish(m)) => Some((m.topic.clone(), m.retain, m.payload.clone())),
                _ => None,
            })
            .await
            .expect("every vehicle's document is published");
        let vin = t.0.split('/').nth(1).unwrap().to_owned();
        assert_eq!(t.2, p.staging.lookup(&vin).await.unwrap().json);
        docs.insert(vin);
    }

    // A late subscriber gets the document as a retained message.
    let mut late = mosquitto_client(&vins[0]);
    late.connack().await.unwrap();
    late.client
        .subscribe(format!("{prefix}/{}/actions", vins[0]), QoS::AtLeastOnce)
        .await
        .unwrap();
    let retained = late
        .expect(Duration::from_secs(10), |ev| match ev {
            Ok(Packet::Publish(m)) => Some(m.retain),
            _ => None,
        })
        .await;
    assert_eq!(retained, Some(true));

    for vin in &vins {
        let action = p.action_of(&campaign, vin).await;
        late.publish_json(
            &format!("{prefix}/{vin}/status"),
            serde_json::json!({"action_id": action, "state": "accepted", "progress": 0, "message": "", "seq": 1}),
        )
        .await;
    }
    assert!(
        eventually(Duration::from_secs(15), || async {
            p.count(&campaign, ActionState::Accepted).await == 3
        })
        .await,
        "all three reports recorded, each once"
    );
    first.stop().await;
    second.stop().await;
    clear_retained(&prefix, &vins).await;
}

#[tokio::test]
async fn no_acknowledged_report_is_lost_when_the_adapter_restarts() {
    require_mosquitto();
    const N: u32 = 40;
    let p = Platform::new().await;
    let campaign = p.campaign(N).await;
    let prefix = unique("ota-test");
    // The same client id and group across the restart: the broker keeps
    // the session and what it did not get acknowledged.
    let config = external(&prefix, &unique("adapter"));
    let (adapter, _s) = p.start(config.clone()).await;

    let vins: Vec<String> = (0..N).map(|i| p.vin(i)).collect();
    let mut actions = Vec::new();
    for vin in &vins {
        actions.push(p.action_of(&campaign, vin).await);
    }
    let mut fleet = mosquitto_client(&unique("fleet"));
    fleet.connack().await.unwrap();
    // The adapter's subscriptions are in place once a report goes through.
    fleet
        .publish_json(
            &format!("{prefix}/{}/status", vins[0]),
            serde_json::json!({"action_id": actions[0], "state": "downloading", "progress": 1, "message": "", "seq": 1}),
        )
        .await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            p.count(&campaign, ActionState::Downloading).await == 1
        })
        .await,
        "adapter consumes"
    );

    let report = |i: usize| serde_json::json!({"action_id": actions[i], "state": "downloading", "progress": 1, "message": "", "seq": 1});
    // Half the fleet reports and the adapter stops while those are in
    // flight (how many it recorded by then varies) ...
    let half = N as usize / 2;
    for (i, vin) in vins.iter().enumerate().take(half).skip(1) {
        fleet
            .publish_json(&format!("{prefix}/{vin}/status"), report(i))
            .await;
    }
    adapter.stop().await;
    let recorded_before_restart = p.count(&campaign, ActionState::Downloading).await;
    eprintln!("{recorded_before_restart} of {half} recorded before the restart");
    // ... the other half reports while it is down ...
    for (i, vin) in vins.iter().enumerate().skip(half) {
        fleet
            .publish_json(&format!("{prefix}/{vin}/status"), report(i))
            .await;
    }
    // ... the broker acknowledged every one of them to the vehicle side ...
    let mut acked = 0;
    while acked < N {
        fleet
            .expect(Duration::from_secs(10), |ev| match ev {
                Ok(Packet::PubAck(_)) => Some(()),
                _ => None,
            })
            .await
            .expect("the broker acknowledges every report");
        acked += 1;
    }
    assert!(recorded_before_restart < u64::from(N));
    let (adapter, _s) = p.start(config).await;
    // ... is recorded after the restart.
    assert!(
        eventually(Duration::from_secs(20), || async {
            p.count(&campaign, ActionState::Downloading).await == u64::from(N)
        })
        .await,
        "{} of {N} recorded ({recorded_before_restart} before the restart)",
        p.count(&campaign, ActionState::Downloading).await
    );
    adapter.stop().await;
}

/// Retained documents are left on the shared broker otherwise.
async fn clear_retained(prefix: &str, vins: &[String]) {
    let c = mosquitto_client(&unique("cleaner"));
    for vin in vins {
        let _ = c
            .client
            .publish(
                format!("{prefix}/{vin}/actions"),
                QoS::AtLeastOnce,
                true,
                Vec::new(),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}
