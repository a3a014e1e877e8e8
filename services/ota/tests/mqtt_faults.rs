//! MQTT faults through the real binary: the process killed while vehicles
//! report over QoS 1, and the external broker restarted under the adapter.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, ndjson, vehicle, Server};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

fn vin(n: u32) -> String {
    vehicle(n)["vin"].as_str().unwrap().to_owned()
}

fn import(s: &Server, admin: &str, n: u32) {
    let file = s.data_dir.parent().unwrap().join("fleet.ndjson");
    let fleet: Vec<Value> = (0..n).map(vehicle).collect();
    std::fs::write(&file, ndjson(&fleet)).unwrap();
    let out = s.cli(admin, &["vehicles", "import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn credential(s: &Server, admin: &str, vin: &str) -> String {
    let r: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/vehicles/{vin}/credentials", s.http))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {r}"))
        .to_owned()
}

/// The vehicle as the management API shows it.
async fn vehicle_json(s: &Server, admin: &str, vin: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/api/v1/vehicles/{vin}", s.http))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn attribute(s: &Server, admin: &str, vin: &str) -> Option<u64> {
    let v = vehicle_json(s, admin, vin).await;
    v["attributes"]["n"].as_str().and_then(|n| n.parse().ok())
}

fn inventory(n: u64) -> String {
    json!({"attributes": {"n": n.to_string()}}).to_string()
}

/// A vehicle that publishes inventory reports one at a time and remembers
/// the last one the broker acknowledged.
struct Reporter {
    client: AsyncClient,
    acked: Arc<Mutex<u64>>,
}

fn connect(port: u16, vin: &str, token: Option<&str>) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(vin, "127.0.0.1", port);
    if let Some(t) = token {
        o.set_credentials(vin, t);
    }
    o.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(o, 16)
}

/// Publishes report after report, each after the previous one's PUBACK,
/// until the connection breaks.
fn reporting(port: u16, vin: String, token: String) -> Reporter {
    let (client, mut events) = connect(port, &vin, Some(&token));
    let acked = Arc::new(Mutex::new(0u64));
    let (c, a) = (client.clone(), acked.clone());
    tokio::spawn(async move {
        let topic = format!("ota/v1/vehicles/{vin}/inventory");
        let mut next = 1u64;
        let mut in_flight: HashMap<u16, u64> = HashMap::new();
        let mut pending = vec![];
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    c.publish(&topic, QoS::AtLeastOnce, false, inventory(next))
                        .await
                        .unwrap();
                    pending.push(next);
                    next += 1;
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                    if !pending.is_empty() {
                        in_flight.insert(pkid, pending.remove(0));
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(n) = in_flight.remove(&ack.pkid) {
                        let mut a = a.lock().unwrap();
                        *a = (*a).max(n);
                    }
                    c.publish(&topic, QoS::AtLeastOnce, false, inventory(next))
                        .await
                        .unwrap();
                    pending.push(next);
                    next += 1;
                }
                Ok(_) => {}
                // The server is gone: what was acknowledged is settled.
                Err(_) => return,
            }
        }
    });
    Reporter { client, acked }
}

/// `kill -9` in the middle of a stream of QoS 1 reports: every report the
/// embedded broker acknowledged is in the inventory after the restart.
#[tokio::test]
async fn acknowledged_mqtt_reports_survive_a_killed_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("ota-data");
    let mqtt_port = free_port();
    let listen = format!("127.0.0.1:{mqtt_port}");
    let env = [("OTA_MQTT_LISTEN", listen.as_str())];
    let mut s = Server::start_in(tmp.path(), data_dir.clone(), &env, &[], None);
    let admin = s.admin_token();
    const N: u32 = 6;
    import(&s, &admin, N);
    let mut tokens = Vec::new();
    for i in 0..N {
        tokens.push(credential(&s, &admin, &vin(i)).await);
    }
    let fleet: Vec<Reporter> = (0..N)
        .map(|i| reporting(mqtt_port, vin(i), tokens[i as usize].clone()))
        .collect();

    // Let the reports flow, then kill the process without warning.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet.iter().any(|r| *r.acked.lock().unwrap() < 20) {
        assert!(
            Instant::now() < deadline,
            "the vehicles' reports were not acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    // Give the vehicles' event loops a moment to see the connection drop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked: Vec<u64> = fleet.iter().map(|r| *r.acked.lock().unwrap()).collect();
    for r in &fleet {
        let _ = r.client.try_disconnect();
    }

    let s = Server::start_in(tmp.path(), data_dir, &env, &[], None);
    for (i, acked) in acked.iter().enumerate() {
        let recorded = attribute(&s, &admin, &vin(i as u32)).await.unwrap_or(0);
        assert!(
            recorded >= *acked,
            "vehicle {}: report {acked} was acknowledged but only {recorded} is recorded",
            vin(i as u32)
        );
    }

    // The restarted broker takes the vehicles back on the same port.
    let (client, mut events) = connect(mqtt_port, &vin(0), Some(&tokens[0]));
    let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client
        .publish(
            format!("ota/v1/vehicles/{}/inventory", vin(0)),
            QoS::AtLeastOnce,
            false,
            inventory(1_000_000),
        )
        .await
        .unwrap();
    eventually(&s, &admin, &vin(0), 1_000_000).await;
    pump.abort();
}

async fn eventually(s: &Server, admin: &str, vin: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if attribute(s, admin, vin).await == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "report {want} of {vin} never recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Mosquitto of the test's own, so it can be stopped and started again
/// without disturbing anything else on the machine.
struct Mosquitto {
    port: u16,
    child: Child,
}

impl Mosquitto {
    fn start(port: u16) -> Self {
        let child = Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test needs the mosquitto binary (scripts/test.sh installs it): {e}")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, child }
    }

    fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits on a vehicle connection for a document holding an action, while
/// announcing the vehicle online (as the simulator and real vehicles do).
async fn document_arrives(port: u16, vin: &str) -> Value {
    let (client, mut events) = connect(port, vin, None);
    client
        .subscribe(format!("ota/v1/vehicles/{vin}/actions"), QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish(
            format!("ota/v1/vehicles/{vin}/presence"),
            QoS::AtLeastOnce,
            true,
            "online",
        )
        .await
        .unwrap();
    let wait = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let doc: Value = serde_json::from_slice(&p.payload).unwrap();
                    if doc["actions"].as_array().is_some_and(|a| !a.is_empty()) {
                        return doc;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    let doc = tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no document with an action reached {vin} within 20 s"));
    let _ = client.disconnect().await;
    doc
}

/// The external broker restarts, losing every session, subscription and
/// retained document: the adapter reconnects and subscribes again by
/// itself, a vehicle's reports reach the platform again, and a vehicle
/// coming back online gets its document again.
#[tokio::test]
async fn the_adapter_rejoins_a_restarted_broker() {
    let broker = Mosquitto::start(free_port());
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let s = Server::start(
        &[("OTA_MQTT_URL", &url), ("OTA_CAMPAIGNS__TICK_MS", "200")],
        &[],
    );
    let admin = s.admin_token();
    import(&s, &admin, 1);
    let v = vin(0);
    common::post(
        format!("{}/api/v1/packages", s.http),
        &admin,
        json!({"name": "bms-fw", "version": "2.3.1", "ecu": "BMS",
               "artifacts": [{"url": "https://cdn.example/bms.bin", "sha256": "b".repeat(64), "size": 7}]}),
    )
    .await;
    common::create_approve_launch(
        &s.http,
        &admin,
        "name: restart\ntarget: 'vehicle.region == \"EU\"'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\n",
    )
    .await;
    let before = document_arrives(broker.port, &v).await;
    // Mosquitto here lets anyone in: authentication is the broker's job
    // with an external one (EMQX asks the HTTP adapter's hooks).
    let send_until_recorded = |n: u64, port: u16| {
        let (s, admin, v) = (&s, admin.clone(), v.clone());
        async move {
            let (client, mut events) = connect(port, &v, None);
            let pump = tokio::spawn(async move {
                loop {
                    if events.poll().await.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            // Resent until recorded: until the adapter has subscribed again
            // the broker has no one to hand it to.
            while attribute(s, &admin, &v).await != Some(n) {
                assert!(
                    Instant::now() < deadline,
                    "report {n} never recorded: the adapter did not rejoin the broker"
                );
                let _ = client.try_publish(
                    format!("ota/v1/vehicles/{v}/inventory"),
                    QoS::AtLeastOnce,
                    false,
                    inventory(n),
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            pump.abort();
        }
    };
    send_until_recorded(1, broker.port).await;

    let port = broker.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _broker = Mosquitto::start(port);
    send_until_recorded(2, port).await;
    let after = document_arrives(port, &v).await;
    assert_eq!(after["etag"], before["etag"], "{after}");
}

/// A vehicle that only logs in to the embedded broker is heard from: its
/// `last_seen` moves within one batch of last-seen times (5 s), while a
/// vehicle that never connected stays unseen.
#[tokio::test]
async fn an_mqtt_login_marks_the_vehicle_seen() {
    let s = Server::start(&[], &[]);
    let admin = s.admin_token();
    import(&s, &admin, 2);
    let token = credential(&s, &admin, &vin(0)).await;
    let port: u16 = s.mqtt.rsplit(':').next().unwrap().parse().unwrap();
    let (_client, mut events) = connect(port, &vin(0), Some(&token));
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("connecting as {}: {e}", vin(0)),
        }
    }
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let seen = |v: String| {
        let (s, admin) = (&s, &admin);
        async move { vehicle_json(s, admin, &v).await.get("last_seen").cloned() }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen(vin(0)).await.is_none() {
        assert!(Instant::now() < deadline, "{} never seen", vin(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(seen(vin(1)).await, None, "{} never connected", vin(1));
}
