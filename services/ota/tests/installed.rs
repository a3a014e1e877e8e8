//! The inventory follows finished installs on every protocol: a vehicle
//! that only reports its action succeeded (over HTTP, MQTT or hawkBit DDI,
//! and no inventory report) ends with the package's version on its ECU,
//! recorded as the install's doing, and the campaign's target no longer
//! matches it.

mod common;

use std::time::{Duration, Instant};

use common::{
    create_approve_launch, credential, get_json as get, http, import, post, staged_action, vehicle,
    Server,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

const TARGET: &str = r#"vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_reported_success_moves_the_inventory_on_every_protocol() {
    let s = Server::start(&[("OTA_LOG", "warn")], &[]);
    let admin = s.admin_token();
    let api = |p: &str| format!("{}/api/v1{p}", s.http);
    // Vehicles 0, 2 and 4 are in the EU with BMS 2.2.0.
    let fleet: Vec<Value> = [0, 2, 4].into_iter().map(vehicle).collect();
    let vins: Vec<String> = fleet
        .iter()
        .map(|v| v["vin"].as_str().unwrap().to_owned())
        .collect();
    import(&s.http, &admin, &fleet).await;
    let mut tokens = Vec::new();
    for vin in &vins {
        tokens.push(credential(&s.http, &admin, vin).await);
    }
    post(
        api("/packages"),
        &admin,
        json!({"name": "bms-fw", "version": "2.3.1", "ecu": "BMS",
               "artifacts": [{"url": "https://cdn.example/bms-2.3.1.bin", "sha256": "ab".repeat(32), "size": 1}]}),
    )
    .await;
    create_approve_launch(
        &s.http,
        &admin,
        &format!(
            "name: follow\ntarget: '{TARGET}'\n\
             rules:\n  - install: {{package: bms-fw, version: 2.3.1, ecu: BMS}}\n\
             rollout:\n  waves: [100]\n  advance: auto\n"
        ),
    )
    .await;

    // HTTP.
    let action = staged_action(&s.http, &vins[0], &tokens[0]).await["action_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http()
        .post(format!(
            "{}/v1/vehicles/{}/actions/{action}/status",
            s.http, vins[0]
        ))
        .bearer_auth(&tokens[0])
        .json(&json!({"state": "succeeded", "progress": 100, "seq": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    // MQTT, on the embedded broker: acknowledged once recorded.
    let action = staged_action(&s.http, &vins[1], &tokens[1]).await["action_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let port: u16 = s.mqtt.rsplit(':').next().unwrap().parse().unwrap();
    let mut o = MqttOptions::new(&vins[1], "127.0.0.1", port);
    o.set_credentials(&vins[1], &tokens[1]);
    let (client, mut events) = AsyncClient::new(o, 8);
    client
        .publish(
            format!("ota/v1/vehicles/{}/status", vins[1]),
            QoS::AtLeastOnce,
            false,
            json!({"action_id": action, "state": "succeeded", "progress": 100, "seq": 1})
                .to_string(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("the broker acknowledged the report");

    // hawkBit DDI: only what a device can call.
    let auth = format!("TargetToken {}", tokens[2]);
    let poll = get(
        &format!("{}/default/controller/v1/{}", s.http, vins[2]),
        &auth,
    )
    .await;
    let href = poll["_links"]["deploymentBase"]["href"]
        .as_str()
        .unwrap_or_else(|| panic!("a deployment: {poll}"));
    let href = href.split('?').next().unwrap().to_owned();
    let r = http()
        .post(format!("{href}/feedback"))
        .header("authorization", &auth)
        .json(&json!({"status": {"execution": "closed", "result": {"finished": "success"}}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    for vin in &vins {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = get(
                &api(&format!("/vehicles/{vin}")),
                &format!("Bearer {admin}"),
            )
            .await;
            if v["ecus"]["BMS"]["sw"] == "2.3.1" {
                assert_eq!(v["provenance"]["ecus.BMS.sw"], "install", "{v}");
                assert_eq!(
                    v["ecus"]["BMS"]["hw"], "H2",
                    "the rest of the ECU stays: {v}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{vin} kept its version: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let preview = post(api("/rules/preview"), &admin, json!({"expression": TARGET})).await;
    assert_eq!(preview["matched"], 0, "{preview}");
}
