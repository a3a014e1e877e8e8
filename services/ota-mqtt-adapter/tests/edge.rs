//! What a vehicle cannot do to the embedded broker, with real MQTT 3.1.1
//! and MQTT 5 clients: leave garbage behind as retained messages, retain
//! its reports, set a will other than `offline`, send large packets, fill
//! the retained store, or report past its budget. Each test sends the
//! attack, then checks that the broker still answers and that nothing else
//! changed.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ota_campaign_manager::model::ActionState;
use ota_common::rate::{RateLimit, VehicleLimits, VehicleRates};
use ota_mqtt_adapter::MqttAdapterConfig;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use rumqttc::{Packet, QoS};

const SUPERUSER: (&str, &str) = ("ota-test-superuser", "superuser-secret-0123456789");

fn embedded() -> MqttAdapterConfig {
    MqttAdapterConfig {
        listen: free_addr(),
        client_id: unique("adapter"),
        username: Some(SUPERUSER.0.into()),
        password: Some(SUPERUSER.1.into()),
        ..Default::default()
    }
}

/// Reports per vehicle that do not refill during a test (polls untouched).
fn report_budget(burst: u32, per_second: f64) -> Arc<VehicleLimits> {
    Arc::new(VehicleLimits::new(VehicleRates {
        reports: RateLimit { per_second, burst },
        ..VehicleRates::default()
    }))
}

fn topic(vin: &str, kind: &str) -> String {
    format!("ota/v1/vehicles/{vin}/{kind}")
}

async fn token(p: &Platform, vin: &str) -> String {
    p.credentials.issue(vin, false).await.unwrap().token
}

async fn vehicle(p: &Platform, addr: SocketAddr, vin: &str) -> Vehicle {
    let mut v = connect(options(addr, vin, vin, &token(p, vin).await));
    v.connack().await.expect("vehicle with its token connects");
    v
}

/// Every retained message under the vehicles' topics, as the broker would
/// replay it to a new subscriber (the superuser may subscribe anywhere).
async fn retained(addr: SocketAddr) -> BTreeMap<String, bytes::Bytes> {
    let mut c = connect(options(
        addr,
        &unique("inspector"),
        SUPERUSER.0,
        SUPERUSER.1,
    ));
    c.connack().await.expect("the superuser connects");
    c.client
        .subscribe("ota/v1/vehicles/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    while let Some((t, payload)) = c
        .expect(Duration::from_millis(1500), |ev| match ev {
            Ok(Packet::Publish(m)) if m.retain => Some((m.topic.clone(), m.payload.clone())),
            _ => None,
        })
        .await
    {
        out.insert(t, payload);
    }
    out
}

/// An MQTT 5 vehicle with its token on the embedded broker.
async fn vehicle5(addr: SocketAddr, vin: &str, token: &str) -> Result<Vehicle5, String> {
    let mut o = rumqttc::v5::MqttOptions::new(vin, addr.ip().to_string(), addr.port());
    o.set_credentials(vin, token)
        .set_keep_alive(Duration::from_secs(5));
    connect5(o).await
}

/// The next PUBACK (`Ok`) or the connection's end (`Err`).
async fn puback_or_close(v: &mut Vehicle) -> Option<Result<(), String>> {
    v.expect(Duration::from_secs(10), |ev| match ev {
        Ok(Packet::PubAck(_)) => Some(Ok(())),
        Err(e) => Some(Err(e.clone())),
        _ => None,
    })
    .await
}

fn status(action: &str, state: &str, seq: u64) -> Vec<u8> {
    serde_json::json!({"action_id": action, "state": state, "progress": seq, "message": "", "seq": seq})
        .to_string()
        .into_bytes()
}

/// The attack of 50 vehicles retaining 1 MB of garbage each on their
/// presence topics, and its variants: nothing but `online` / `offline` is
/// ever retained, reports are never retained, and the broker carries on.
#[tokio::test]
async fn vehicles_cannot_leave_garbage_retained_on_the_broker() {
    let p = Platform::new().await;
    let campaign = p.campaign(2).await;
    let (a, b) = (p.vin(0), p.vin(1));
    let (adapter, _stop) = p.start(embedded()).await;
    let addr = adapter.listen.unwrap();

    // 1 MB retained on its own presence: the packet is too large to be read
    // at all, and the vehicle is disconnected.
    let mut va = vehicle(&p, addr, &a).await;
    va.client
        .publish(
            topic(&a, "presence"),
            QoS::AtLeastOnce,
            true,
            vec![b'x'; 1_000_000],
        )
        .await
        .unwrap();
    let closed = va
        .expect(Duration::from_secs(10), |ev| ev.as_ref().err().cloned())
        .await;
    assert!(closed.is_some(), "a 1 MB packet closes the connection");
    drop(va);

    // Smaller garbage, over MQTT 5 so the refusal is visible: refused with
    // a reason code, and not kept.
    let ta = token(&p, &a).await;
    let mut a5 = vehicle5(addr, &a, &ta)
        .await
        .expect("MQTT 5 vehicle connects");
    for garbage in [vec![b'x'; 10 * 1024], b"maybe".to_vec(), Vec::new()] {
        assert_eq!(
            a5.publish(&topic(&a, "presence"), true, garbage).await,
            PubAckReason::PayloadFormatInvalid
        );
    }
    // A retained report is refused, and not recorded either.
    let action_a = p.action_of(&campaign, &a).await;
    assert_eq!(
        a5.publish(&topic(&a, "status"), true, status(&action_a, "failed", 1))
            .await,
        PubAckReason::NotAuthorized
    );
    let inventory = br#"{"attributes": {"retained": "yes"}}"#.to_vec();
    assert_eq!(
        a5.publish(&topic(&a, "inventory"), true, inventory).await,
        PubAckReason::NotAuthorized
    );
    // What the contract allows goes through.
    assert_eq!(
        a5.publish(&topic(&a, "presence"), true, b"online".to_vec())
            .await,
        PubAckReason::Success
    );
    assert_eq!(
        a5.publish(
            &topic(&a, "status"),
            false,
            status(&action_a, "accepted", 2)
        )
        .await,
        PubAckReason::Success
    );
    // A state no vehicle may report is refused as malformed, whether
    // unknown or the platform's own.
    for state in ["done", "timed_out"] {
        assert_eq!(
            a5.publish(&topic(&a, "status"), false, status(&action_a, state, 3))
                .await,
            PubAckReason::PayloadFormatInvalid,
            "{state}"
        );
    }

    // The same over MQTT 3.1.1: acknowledged (it has no negative PUBACK)
    // but neither kept nor recorded.
    let vb = vehicle(&p, addr, &b).await;
    let action_b = p.action_of(&campaign, &b).await;
    for (kind, retain, payload) in [
        ("presence", true, vec![b'y'; 4096]),
        ("status", true, status(&action_b, "failed", 1)),
        ("presence", true, b"offline".to_vec()),
    ] {
        vb.client
            .publish(topic(&b, kind), QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }
    vb.publish_json(
        &topic(&b, "status"),
        serde_json::json!({"action_id": action_b, "state": "downloading", "progress": 5, "message": "", "seq": 2}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.count(&campaign, ActionState::Downloading).await == 1
                && p.count(&campaign, ActionState::Accepted).await == 1
        })
        .await,
        "the valid reports were recorded"
    );
    assert_eq!(
        p.count(&campaign, ActionState::Failed).await,
        0,
        "retained reports were not"
    );
    assert!(!p
        .vehicles
        .get(&a)
        .await
        .unwrap()
        .attributes
        .contains_key("retained"));

    // The documents are published as vehicles connect, in the background.
    let mut kept = BTreeMap::new();
    for _ in 0..10 {
        kept = retained(addr).await;
        if kept.contains_key(&topic(&a, "actions")) && kept.contains_key(&topic(&b, "actions")) {
            break;
        }
    }
    let vehicle_side: BTreeMap<_, _> = kept
        .iter()
        .filter(|(t, _)| !t.ends_with("/actions"))
        .map(|(t, v)| (t.clone(), v.clone()))
        .collect();
    assert_eq!(
        vehicle_side,
        BTreeMap::from([
            (topic(&a, "presence"), bytes::Bytes::from_static(b"online")),
            (topic(&b, "presence"), bytes::Bytes::from_static(b"offline")),
        ]),
        "only presence, only online/offline"
    );
    assert!(
        kept.contains_key(&topic(&a, "actions")),
        "documents are still retained: {:?}",
        kept.keys().collect::<Vec<_>>()
    );
    adapter.stop().await;
}

/// A will is published by the broker without the publish hook, so it is
/// checked at connect: only `offline`, only on the vehicle's own presence.
#[tokio::test]
async fn a_will_other_than_offline_on_its_own_presence_is_refused_at_connect() {
    let p = Platform::new().await;
    p.campaign(2).await;
    let (a, b) = (p.vin(0), p.vin(1));
    let (adapter, _stop) = p.start(embedded()).await;
    let addr = adapter.listen.unwrap();
    let ta = token(&p, &a).await;
    let will = |t: String, payload: Vec<u8>| {
        let mut o = options(addr, &a, &a, &ta);
        o.set_last_will(rumqttc::LastWill::new(t, payload, QoS::AtLeastOnce, true));
        o
    };
    for (what, o) in [
        (
            "garbage",
            will(topic(&a, "presence"), vec![b'z'; 32 * 1024]),
        ),
        ("online", will(topic(&a, "presence"), b"online".to_vec())),
        (
            "other topic",
            will(topic(&a, "status"), b"offline".to_vec()),
        ),
        (
            "other vehicle",
            will(topic(&b, "presence"), b"offline".to_vec()),
        ),
    ] {
        let r = connect(o).connack().await;
        assert!(r.is_err(), "{what}: connection must be refused");
    }
    let mut v = connect(will(topic(&a, "presence"), b"offline".to_vec()));
    assert_eq!(v.connack().await, Ok(()), "the contract's will is fine");
    // The broker still serves others.
    let _vb = vehicle(&p, addr, &b).await;
    drop(v);
    let mut kept = BTreeMap::new();
    for _ in 0..10 {
        kept = retained(addr).await;
        if kept.contains_key(&topic(&a, "presence")) {
            break;
        }
    }
    assert_eq!(
        kept.get(&topic(&a, "presence")).map(|b| &b[..]),
        Some(&b"offline"[..]),
        "the will was published"
    );
    adapter.stop().await;
}

/// Past `max_retained` the broker keeps no more retained messages: the
/// bound of its memory whatever vehicles do.
#[tokio::test]
async fn the_broker_keeps_at_most_max_retained_messages() {
    let p = Platform::new().await;
    p.campaign(3).await;
    let (adapter, _stop) = p
        .start(MqttAdapterConfig {
            max_retained: 3,
            ..embedded()
        })
        .await;
    let addr = adapter.listen.unwrap();
    let mut fleet = Vec::new();
    for i in 0..3 {
        // In a known order: the vehicle's document, then its presence.
        let vin = p.vin(i);
        let mut v = vehicle(&p, addr, &vin).await;
        v.client
            .subscribe(topic(&vin, "actions"), QoS::AtLeastOnce)
            .await
            .unwrap();
        let actions = topic(&vin, "actions");
        v.expect(Duration::from_secs(10), |ev| match ev {
            Ok(Packet::Publish(m)) if m.topic == actions => Some(()),
            _ => None,
        })
        .await
        .expect("the document is published");
        v.client
            .publish(topic(&vin, "presence"), QoS::AtLeastOnce, true, "online")
            .await
            .unwrap();
        assert_eq!(puback_or_close(&mut v).await, Some(Ok(())));
        fleet.push(v);
    }
    // Three documents and three presences were offered for retention.
    let kept = retained(addr).await;
    assert_eq!(kept.len(), 3, "{:?}", kept.keys().collect::<Vec<_>>());
    // The broker still answers.
    let _another = vehicle(&p, addr, &p.vin(0)).await;
    adapter.stop().await;
}

/// MQTT 5: reports past the vehicle's budget get PUBACK "quota exceeded"
/// (0x97) and are not recorded; the vehicle knows to send them again later.
/// Other vehicles are not affected.
#[tokio::test]
async fn mqtt5_reports_past_the_budget_get_quota_exceeded_and_are_not_recorded() {
    let p = Platform::new().await;
    let campaign = p.campaign(2).await;
    let (a, b) = (p.vin(0), p.vin(1));
    let (adapter, _stop) = p
        .start(MqttAdapterConfig {
            limits: report_budget(3, 0.001),
            ..embedded()
        })
        .await;
    let addr = adapter.listen.unwrap();
    let mut va = vehicle5(addr, &a, &token(&p, &a).await).await.unwrap();
    let action = p.action_of(&campaign, &a).await;
    let mut codes = Vec::new();
    for seq in 1..=10 {
        let r = va
            .publish(
                &topic(&a, "status"),
                false,
                status(&action, "downloading", seq),
            )
            .await;
        codes.push(r);
    }
    assert_eq!(&codes[..3], [PubAckReason::Success; 3]);
    assert_eq!(&codes[3..], [PubAckReason::QuotaExceeded; 7]);
    let row = p
        .manager
        .store()
        .campaign_rows(&campaign, "", 100)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.vin == a)
        .unwrap();
    assert_eq!(
        (row.state.as_str(), row.last_seq),
        ("downloading", 3),
        "nothing past the budget"
    );
    // Inventory takes from the same budget.
    let inventory = br#"{"attributes": {"over": "budget"}}"#.to_vec();
    assert_eq!(
        va.publish(&topic(&a, "inventory"), false, inventory).await,
        PubAckReason::QuotaExceeded
    );
    assert!(!p
        .vehicles
        .get(&a)
        .await
        .unwrap()
        .attributes
        .contains_key("over"));
    // The connection is still up, and another vehicle reports as usual.
    let mut vb = vehicle5(addr, &b, &token(&p, &b).await).await.unwrap();
    let action_b = p.action_of(&campaign, &b).await;
    assert_eq!(
        vb.publish(
            &topic(&b, "status"),
            false,
            status(&action_b, "installing", 1)
        )
        .await,
        PubAckReason::Success
    );
    assert_eq!(p.count(&campaign, ActionState::Installing).await, 1);
    adapter.stop().await;
}

/// MQTT 3.1.1 has no negative PUBACK, and any PUBACK would tell the vehicle
/// its report was delivered. So a report past the budget gets none: the
/// connection closes, and the vehicle (with a persistent session, as 3.1.1
/// redelivery needs) sends it again after reconnecting, once its budget
/// has refilled. Nothing is lost, nothing is recorded twice.
#[tokio::test]
async fn mqtt311_reports_past_the_budget_are_not_acked_and_arrive_once_resent() {
    let p = Platform::new().await;
    let campaign = p.campaign(1).await;
    let a = p.vin(0);
    let (adapter, _stop) = p
        .start(MqttAdapterConfig {
            limits: report_budget(2, 1.0),
            ..embedded()
        })
        .await;
    let addr = adapter.listen.unwrap();
    let mut o = options(addr, &a, &a, &token(&p, &a).await);
    o.set_clean_session(false);
    let mut va = connect(o);
    va.connack().await.unwrap();
    let action = p.action_of(&campaign, &a).await;
    // One report at a time: two are acknowledged, then the connection
    // closes instead of a third PUBACK.
    for (seq, state) in [(1, "accepted"), (2, "downloading"), (3, "installing")] {
        va.client
            .publish(
                topic(&a, "status"),
                QoS::AtLeastOnce,
                false,
                status(&action, state, seq),
            )
            .await
            .unwrap();
        let answer = puback_or_close(&mut va)
            .await
            .expect("a PUBACK or a disconnect");
        match seq {
            1 | 2 => assert_eq!(answer, Ok(()), "report {seq} is within the budget"),
            _ => assert!(answer.is_err(), "no PUBACK past the budget: {answer:?}"),
        }
    }
    assert_eq!(
        p.count(&campaign, ActionState::Downloading).await,
        1,
        "not recorded yet"
    );
    // The client reconnects, resends, and the budget has refilled by then.
    assert!(
        eventually(Duration::from_secs(15), || async {
            p.count(&campaign, ActionState::Installing).await == 1
        })
        .await,
        "the resent report is recorded"
    );
    let ack = va
        .expect(Duration::from_secs(10), |ev| match ev {
            Ok(Packet::PubAck(_)) => Some(()),
            _ => None,
        })
        .await;
    assert!(ack.is_some(), "and acknowledged once recorded");
    adapter.stop().await;
}
