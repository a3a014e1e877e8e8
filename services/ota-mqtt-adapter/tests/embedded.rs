//! The embedded broker with real MQTT clients: vehicles authenticate with
//! their token, get their retained document, report back, and are confined
//! to their own topics.

mod common;

use std::time::Duration;

use common::*;
use ota_campaign_manager::model::ActionState;
use ota_mqtt_adapter::{MqttAdapterConfig, MqttError};
use rumqttc::{Packet, QoS, SubscribeReasonCode};

fn embedded(listen: std::net::SocketAddr) -> MqttAdapterConfig {
    MqttAdapterConfig {
        listen,
        client_id: unique("adapter"),
        ..Default::default()
    }
}

fn topic(vin: &str, kind: &str) -> String {
    format!("ota/v1/vehicles/{vin}/{kind}")
}

async fn vehicle(p: &Platform, addr: std::net::SocketAddr, vin: &str) -> Vehicle {
    let token = p.credentials.issue(vin, false).await.unwrap().token;
    let mut v = connect(options(addr, vin, vin, &token));
    v.connack().await.expect("vehicle with its token connects");
    v
}

async fn document(v: &mut Vehicle, vin: &str, wait: Duration) -> Option<bytes::Bytes> {
    let t = topic(vin, "actions");
    v.expect(wait, |ev| match ev {
        Ok(Packet::Publish(p)) if p.topic == t => Some(p.payload.clone()),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn vehicle_gets_its_document_and_its_reports_reach_the_platform() {
    let p = Platform::new().await;
    let campaign = p.campaign(1).await;
    let vin = p.vin(0);
    let (adapter, _stop) = p.start(embedded(free_addr())).await;
    let addr = adapter.listen.expect("embedded broker address");
    p.staged(std::slice::from_ref(&vin)).await;

    let mut v = vehicle(&p, addr, &vin).await;
    v.client
        .subscribe(topic(&vin, "actions"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let doc = document(&mut v, &vin, Duration::from_secs(10))
        .await
        .expect("the retained document arrives");
    let stored = p.staging.lookup(&vin).await.unwrap();
    assert_eq!(doc, stored.json, "exactly the stored bytes");
    let action = p.action_of(&campaign, &vin).await;
    assert!(std::str::from_utf8(&doc).unwrap().contains(&action));

    v.publish_json(
        &topic(&vin, "status"),
        serde_json::json!({"action_id": action, "state": "downloading", "progress": 10, "message": "", "seq": 1}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.count(&campaign, ActionState::Downloading).await == 1
        })
        .await,
        "the status report reaches the campaign manager"
    );

    v.publish_json(
        &topic(&vin, "inventory"),
        serde_json::json!({"ecus": {"TCU": {"hw": "T1", "sw": "1.0.0"}}, "attributes": {"color": "blue"}}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let got = p.vehicles.get(&vin).await.unwrap();
            got.attributes.get("color").map(String::as_str) == Some("blue")
                && got.ecus.contains_key("TCU")
        })
        .await,
        "the inventory report reaches the vehicle store"
    );

    let before = p.vehicles.get(&vin).await.unwrap().last_seen;
    tokio::time::sleep(Duration::from_millis(20)).await;
    v.client
        .publish(topic(&vin, "presence"), QoS::AtLeastOnce, false, "online")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.vehicles.get(&vin).await.unwrap().last_seen > before
        })
        .await,
        "presence moves last_seen"
    );
    adapter.stop().await;
}

#[tokio::test]
async fn wrong_or_foreign_credentials_are_refused() {
    let p = Platform::new().await;
    p.campaign(2).await;
    let (a, b) = (p.vin(0), p.vin(1));
    let (adapter, _stop) = p.start(embedded(free_addr())).await;
    let addr = adapter.listen.unwrap();
    let token_a = p.credentials.issue(&a, false).await.unwrap().token;

    let cases = [
        ("wrong token", options(addr, &a, &a, "otav_wrongwrongwrong")),
        ("no password", options(addr, &a, &a, "")),
        ("another vehicle's token", options(addr, &b, &b, &token_a)),
        (
            "client id is not the VIN",
            options(addr, "someone", &a, &token_a),
        ),
    ];
    for (what, o) in cases {
        let mut v = connect(o);
        let r = v.connack().await;
        assert!(r.is_err(), "{what}: connection must be refused");
        assert!(
            r.unwrap_err().to_lowercase().contains("refused"),
            "{what}: refused by CONNACK"
        );
    }
    // An anonymous client (no username) is no exception.
    let mut o = rumqttc::MqttOptions::new("anon", addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    assert!(connect(o).connack().await.is_err(), "anonymous refused");

    p.credentials.revoke(&a, None).await.unwrap();
    let mut v = connect(options(addr, &a, &a, &token_a));
    assert!(v.connack().await.is_err(), "revoked token refused");
    adapter.stop().await;
}

/// Each connection is an open file: past `max_sessions` the broker refuses
/// new vehicles with "server unavailable" (they retry later) instead of
/// taking descriptors the rest of the server needs.
#[tokio::test]
async fn a_full_broker_refuses_new_vehicles_until_one_leaves() {
    let p = Platform::new().await;
    p.campaign(3).await;
    let (a, b, c) = (p.vin(0), p.vin(1), p.vin(2));
    let (adapter, _stop) = p
        .start(MqttAdapterConfig {
            max_sessions: 2,
            ..embedded(free_addr())
        })
        .await;
    let addr = adapter.listen.unwrap();
    let va = vehicle(&p, addr, &a).await;
    let _vb = vehicle(&p, addr, &b).await;
    let token_c = p.credentials.issue(&c, false).await.unwrap().token;
    let refused = connect(options(addr, &c, &c, &token_c)).connack().await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("ServiceUnavailable")),
        "a third vehicle is refused as 'server unavailable': {refused:?}"
    );
    // A vehicle already in may always come back (its session exists).
    let token_b2 = p.credentials.issue(&b, false).await.unwrap().token;
    let mut vb2 = connect(options(addr, &b, &b, &token_b2));
    assert_eq!(vb2.connack().await, Ok(()), "a reconnect is not refused");

    // Gone for good: the connection closes and is not retried.
    drop(va);
    let admitted = eventually(Duration::from_secs(10), || {
        let token = token_c.clone();
        let c = c.clone();
        async move {
            let mut v = connect(options(addr, &c, &c, &token));
            v.connack().await.is_ok()
        }
    })
    .await;
    assert!(admitted, "once a vehicle left, the next one gets in");
    adapter.stop().await;
}

#[tokio::test]
async fn a_vehicle_is_confined_to_its_own_topics() {
    let p = Platform::new().await;
    let campaign = p.campaign(2).await;
    let (a, b) = (p.vin(0), p.vin(1));
    let (adapter, _stop) = p.start(embedded(free_addr())).await;
    let addr = adapter.listen.unwrap();
    let mut va = vehicle(&p, addr, &a).await;

    // Subscribing to the other vehicle's actions is refused and nothing
    // arrives, even when its document is published.
    va.client
        .subscribe(topic(&b, "actions"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let codes = va
        .expect(Duration::from_secs(10), |ev| match ev {
            Ok(Packet::SubAck(s)) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
        .expect("SUBACK");
    assert_eq!(codes, vec![SubscribeReasonCode::Failure]);
    for wildcard in ["ota/v1/vehicles/+/actions", "ota/v1/vehicles/#", "#"] {
        va.client
            .subscribe(wildcard, QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    p.staged(&[a.clone(), b.clone()]).await;
    let foreign = topic(&b, "actions");
    let leaked = va
        .expect(Duration::from_secs(2), |ev| match ev {
            Ok(Packet::Publish(m)) if m.topic != topic(&a, "actions") => Some(m.topic.clone()),
            _ => None,
        })
        .await;
    assert_eq!(leaked, None, "no message of another vehicle ({foreign})");

    // Publishing as the other vehicle is dropped; its own report goes
    // through (sent after, so once it is recorded the other was handled).
    let action_a = p.action_of(&campaign, &a).await;
    let action_b = p.action_of(&campaign, &b).await;
    va.publish_json(
        &topic(&b, "status"),
        serde_json::json!({"action_id": action_b, "state": "failed", "progress": 0, "message": "spoofed", "seq": 1}),
    )
    .await;
    va.publish_json(
        &topic(&a, "actions"),
        serde_json::json!({"vin": a, "etag": "x", "poll_after_s": 1, "actions": []}),
    )
    .await;
    va.publish_json(
        &topic(&a, "status"),
        serde_json::json!({"action_id": action_a, "state": "installing", "progress": 50, "message": "", "seq": 1}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.count(&campaign, ActionState::Installing).await == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        p.count(&campaign, ActionState::Failed).await,
        0,
        "spoof dropped"
    );

    // A will on another vehicle's topic is refused at connect.
    let token_a = p.credentials.issue(&a, false).await.unwrap().token;
    let mut o = options(addr, &a, &a, &token_a);
    o.set_last_will(rumqttc::LastWill::new(
        topic(&b, "presence"),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    assert!(connect(o).connack().await.is_err(), "foreign will refused");
    adapter.stop().await;
}

#[tokio::test]
async fn garbage_and_oversized_reports_do_not_break_the_adapter() {
    let p = Platform::new().await;
    let campaign = p.campaign(2).await;
    let (a, b) = (p.vin(0), p.vin(1));
    let (adapter, _stop) = p.start(embedded(free_addr())).await;
    let addr = adapter.listen.unwrap();
    let va = vehicle(&p, addr, &a).await;
    let vb = vehicle(&p, addr, &b).await;

    for payload in [
        b"not json".to_vec(),
        b"{\"action_id\": 5}".to_vec(),
        vec![0xff, 0xfe, 0x00],
        format!(
            "{{\"action_id\":\"x\",\"state\":\"installing\",\"seq\":1,\"message\":\"{}\"}}",
            "x".repeat(20 * 1024)
        )
        .into_bytes(),
    ] {
        va.client
            .publish(topic(&a, "status"), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    va.client
        .publish(topic(&a, "presence"), QoS::AtLeastOnce, false, "maybe")
        .await
        .unwrap();
    va.client
        .publish(topic(&a, "inventory"), QoS::AtLeastOnce, false, "[]")
        .await
        .unwrap();

    for (v, vin) in [(&va, &a), (&vb, &b)] {
        let action = p.action_of(&campaign, vin).await;
        v.publish_json(
            &topic(vin, "status"),
            serde_json::json!({"action_id": action, "state": "succeeded", "progress": 100, "message": "", "seq": 1}),
        )
        .await;
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.count(&campaign, ActionState::Succeeded).await == 2
        })
        .await,
        "valid reports after garbage still arrive, for both vehicles"
    );
    adapter.stop().await;
}

#[tokio::test]
async fn a_taken_port_is_a_clear_start_up_error() {
    let p = Platform::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = match ota_mqtt_adapter::start(embedded(addr), p.backends(), p.bus.clone(), rx).await {
        Ok(_) => panic!("started on a taken port"),
        Err(e) => e,
    };
    assert!(matches!(err, MqttError::Listen { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string())
            && msg.contains("OTA_MQTT_LISTEN")
            && msg.contains("OTA_MQTT_URL"),
        "{msg}"
    );
}

#[tokio::test]
async fn documents_are_republished_when_they_change_and_once_per_etag() {
    let p = Platform::new().await;
    let campaign = p.campaign(1).await;
    let vin = p.vin(0);
    let (adapter, _stop) = p.start(embedded(free_addr())).await;
    let addr = adapter.listen.unwrap();
    let mut v = vehicle(&p, addr, &vin).await;
    v.client
        .subscribe(topic(&vin, "actions"), QoS::AtLeastOnce)
        .await
        .unwrap();
    // Connecting is enough for the first document.
    let first = document(&mut v, &vin, Duration::from_secs(10))
        .await
        .expect("document on connect");
    p.staged(&[vin.clone(), vin.clone()]).await;
    assert_eq!(
        document(&mut v, &vin, Duration::from_millis(800)).await,
        None,
        "same etag, not published again"
    );

    // The campaign is aborted: the vehicle has nothing to do any more.
    let engineer = ota_campaign_manager::Actor {
        name: "erin".into(),
        role: "engineer".into(),
    };
    p.manager
        .transition(
            &campaign,
            ota_campaign_manager::model::Transition::Abort,
            &engineer,
            "stop",
        )
        .await
        .unwrap();
    p.staging
        .stager()
        .stage_vins(std::slice::from_ref(&vin))
        .await
        .unwrap();
    p.staged(std::slice::from_ref(&vin)).await;
    let second = document(&mut v, &vin, Duration::from_secs(10))
        .await
        .expect("changed document published");
    assert_ne!(first, second);
    let doc: serde_json::Value = serde_json::from_slice(&second).unwrap();
    assert_eq!(doc["actions"], serde_json::json!([]), "{doc}");
    adapter.stop().await;
}
