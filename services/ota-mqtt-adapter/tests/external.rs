//! Against the real Mosquitto at `OTA_TEST_MQTT_URL` (default
//! 127.0.0.1:1883; a test fails when it is not running): shared
//! subscriptions, retained documents, and no acknowledged report lost when
//! the adapter stops mid-stream; what vehicles may not do there (retained
//! garbage presence, reports past their budget). Each test uses its own
//! topic prefix, share group and VINs, so parallel runs never collide.

mod common;

use std::time::Duration;

use common::*;
use ota_campaign_manager::model::ActionState;
use ota_mqtt_adapter::MqttAdapterConfig;
use rumqttc::{Packet, QoS};

fn external(prefix: &str, client_id: &str) -> MqttAdapterConfig {
    MqttAdapterConfig {
        external_url: Some(format!("mqtt://{}", mosquitto())),
        client_id: client_id.to_owned(),
        topic_prefix: prefix.to_owned(),
        share_group: unique("g"),
        ..Default::default()
    }
}

fn mosquitto_client(id: &str) -> Vehicle {
    let addr = mosquitto();
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
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

/// An external broker cannot be told about payloads by the ACL hook, so a
/// vehicle may get garbage retained on its presence topic there: the
/// adapter deletes it as soon as it sees it, and records nothing.
#[tokio::test]
async fn the_adapter_deletes_garbage_retained_on_a_presence_topic() {
    require_mosquitto();
    let p = Platform::new().await;
    p.campaign(2).await;
    let prefix = unique("ota-test");
    let (adapter, _s) = p.start(external(&prefix, &unique("adapter"))).await;
    let vins: Vec<String> = (0..2).map(|i| p.vin(i)).collect();
    let presence = |vin: &str| format!("{prefix}/{vin}/presence");
    let seen_before = p.vehicles.get(&vins[0]).await.unwrap().last_seen;

    let mut fleet = mosquitto_client(&unique("fleet"));
    fleet.connack().await.unwrap();
    // The adapter's subscriptions are in place once a presence arrives.
    fleet
        .client
        .publish(presence(&vins[1]), QoS::AtLeastOnce, true, "online")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            p.vehicles.get(&vins[1]).await.unwrap().last_seen.is_some()
        })
        .await,
        "adapter consumes"
    );
    fleet
        .client
        .publish(
            presence(&vins[0]),
            QoS::AtLeastOnce,
            true,
            vec![b'x'; 100 * 1024],
        )
        .await
        .unwrap();

    let replayed = |topic: String| async move {
        let mut c = mosquitto_client(&unique("late"));
        c.connack().await.unwrap();
        c.client.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
        c.expect(Duration::from_millis(800), |ev| match ev {
            Ok(Packet::Publish(m)) if m.retain => Some(m.payload.clone()),
            _ => None,
        })
        .await
    };
    assert!(
        eventually(Duration::from_secs(15), || {
            let t = presence(&vins[0]);
            async move { replayed(t).await.is_none() }
        })
        .await,
        "the garbage is no longer retained"
    );
    assert_eq!(
        p.vehicles.get(&vins[0]).await.unwrap().last_seen,
        seen_before,
        "and nothing was recorded for it"
    );
    assert_eq!(
        replayed(presence(&vins[1])).await.as_deref(),
        Some(&b"online"[..]),
        "another vehicle's presence is untouched"
    );
    adapter.stop().await;
    clear_retained(&prefix, &vins).await;
}

/// With an external broker the vehicle's PUBACK comes from the broker, so
/// the adapter can only drop reports past the budget: not recorded,
/// counted, and the adapter's own copy acknowledged (redelivering it would
/// not refill the budget). The broker's own rate limit is what tells the
/// vehicle (see the README).
#[tokio::test]
async fn reports_past_the_budget_through_an_external_broker_are_not_recorded() {
    require_mosquitto();
    let p = Platform::new().await;
    let campaign = p.campaign(2).await;
    let prefix = unique("ota-test");
    let limits = std::sync::Arc::new(ota_common::rate::VehicleLimits::new(
        ota_common::rate::VehicleRates {
            reports: ota_common::rate::RateLimit {
                per_second: 0.001,
                burst: 3,
            },
            ..Default::default()
        },
    ));
    let (adapter, _s) = p
        .start(MqttAdapterConfig {
            limits,
            ..external(&prefix, &unique("adapter"))
        })
        .await;
    let (a, b) = (p.vin(0), p.vin(1));
    let (action_a, action_b) = (
        p.action_of(&campaign, &a).await,
        p.action_of(&campaign, &b).await,
    );
    let mut fleet = mosquitto_client(&unique("fleet"));
    fleet.connack().await.unwrap();
    let report = |action: &str, seq: u64| serde_json::json!({"action_id": action, "state": "downloading", "progress": seq, "message": "", "seq": seq});
    // In order: one lane per vehicle keeps them so.
    for seq in 1..=10 {
        fleet
            .publish_json(&format!("{prefix}/{a}/status"), report(&action_a, seq))
            .await;
    }
    fleet
        .publish_json(&format!("{prefix}/{b}/status"), report(&action_b, 1))
        .await;
    let last_seq = |vin: String| {
        let p = &p;
        let campaign = campaign.clone();
        async move {
            p.manager
                .store()
                .campaign_rows(&campaign, "", 100)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.vin == vin)
                .map(|r| r.last_seq)
        }
    };
    assert!(
        eventually(Duration::from_secs(15), || async {
            last_seq(b.clone()).await == Some(1)
        })
        .await,
        "another vehicle's report is recorded"
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            last_seq(a.clone()).await == Some(3)
        })
        .await,
        "the budget's worth is recorded"
    );
    // The rest were handled (and dropped) right after, in order.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(last_seq(a.clone()).await, Some(3), "and not one more");
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
