//! Every attack of the hardening review, in one run against one `ota
//! serve`: each is refused or bounded, the server answers `/healthz` within
//! a second after each, and at the end nothing else has changed (a
//! reference vehicle, a running campaign, the other tokens).
//!
//! The crates' own tests cover each fix in depth; this one proves they hold
//! together through the real binary, with the weakest credentials an
//! attacker would have (a viewer token, a vehicle's token).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

const METRICS_TOKEN: &str = "metrics-secret-0123456789";
const MQTT_PASSWORD: &str = "adapter-secret-0123456789";

/// `/healthz` answers within a second, or the test fails naming the attack.
fn still_up(s: &Server, after: &str) {
    let addr = s.http.trim_start_matches("http://");
    let started = Instant::now();
    assert!(healthz_ok(addr), "/healthz failed after {after}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/healthz took {:?} after {after}",
        started.elapsed()
    );
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A YAML file whose aliases expand to 10^8 nodes in under 10 KB.
fn alias_bomb() -> String {
    let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        y.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    y.push_str("name: bomb\ntarget: 'true'\nrules: *a8\n");
    y
}

fn many_bad_rules(n: usize) -> String {
    let mut y = String::from("name: many\ntarget: 'true'\nrules:\n");
    for i in 0..n {
        y.push_str(&format!("  - when: 'vehicle.modle{i} == 1'\n    install: {{package: p, version: '1', ecu: BMS}}\n"));
    }
    y
}

fn mqtt_vehicle(port: u16, vin: &str, token: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(vin, "127.0.0.1", port);
    o.set_credentials(vin, token)
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    AsyncClient::new(o, 16)
}

#[tokio::test]
async fn every_attack_is_refused_and_the_server_stays_up() {
    let s = Server::start(
        &[
            ("OTA_HTTP__HEADER_READ_TIMEOUT_MS", "1000"),
            ("OTA_HTTP__METRICS_TOKEN", METRICS_TOKEN),
            ("OTA_MQTT_USERNAME", "ota-adapter"),
            ("OTA_MQTT_PASSWORD", MQTT_PASSWORD),
        ],
        &[],
    );
    let admin = s.admin_token();
    // No kept-alive connections: with a 1 s header timeout the server
    // closes idle ones, and a request sent just then would race the close.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let api = |p: &str| format!("{}/api/v1{p}", s.http);

    // ---- the state that must come through unchanged ----
    let fleet: Vec<Value> = (0..4).chain(100..105).map(vehicle).collect();
    let (st, _) = send(
        c.post(api("/vehicles:import?source=manufacturing"))
            .bearer_auth(&admin)
            .header("content-type", "application/x-ndjson")
            .body(ndjson(&fleet)),
    )
    .await;
    assert_eq!(st, 200);
    let reference = "WVWZZZE1ZMP000000";
    let get_reference = || async {
        let (st, v) = send(
            c.get(api(&format!("/vehicles/{reference}")))
                .bearer_auth(&admin),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        (
            v["ecus"].clone(),
            v["attributes"].clone(),
            v["provenance"].clone(),
        )
    };
    let reference_before = get_reference().await;
    post(
        api("/packages"),
        &admin,
        json!({"name": "bms-fw", "version": "2.3.1", "ecu": "BMS",
               "artifacts": [{"url": "https://cdn.example/bms.bin", "sha256": "ab".repeat(32), "size": 1}]}),
    )
    .await;
    let spec = "name: steady\ntarget: 'vehicle.region == \"NA\"'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\nrollout:\n  waves: [100]\n";
    let steady = create_approve_launch(&s.http, &admin, spec).await;
    let viewer = post(
        api("/tokens"),
        &admin,
        json!({"role": "viewer", "principal": "vera"}),
    )
    .await;
    let viewer = viewer["token"].as_str().unwrap().to_string();
    let engineer = post(
        api("/tokens"),
        &admin,
        json!({"role": "engineer", "principal": "eve"}),
    )
    .await;
    let engineer = engineer["token"].as_str().unwrap().to_string();
    let credential = |vin: String| {
        let (c, admin, url) = (
            c.clone(),
            admin.clone(),
            api(&format!("/vehicles/{vin}/credentials")),
        );
        async move {
            let (st, v) = send(
                c.post(url)
                    .bearer_auth(admin)
                    .json(&json!({"rotate": true})),
            )
            .await;
            assert_eq!(st, 201, "{v}");
            v["token"].as_str().unwrap().to_string()
        }
    };
    still_up(&s, "the set-up");

    // 1. A YAML alias bomb, sent by a viewer.
    let started = Instant::now();
    let (st, v) = send(
        c.post(api("/campaigns:validate"))
            .bearer_auth(&viewer)
            .header("content-type", "application/yaml")
            .body(alias_bomb()),
    )
    .await;
    assert_eq!((st, &v["valid"]), (200, &json!(false)), "{v}");
    assert!(
        v.to_string()
            .contains("nodes once its aliases are expanded"),
        "{v}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused cheaply"
    );
    still_up(&s, "the alias bomb");

    // 2. Thousands of bad rules: answered, capped.
    let (st, v) = send(
        c.post(api("/campaigns:validate"))
            .bearer_auth(&viewer)
            .header("content-type", "application/yaml")
            .body(many_bad_rules(1_000)),
    )
    .await;
    assert_eq!((st, &v["valid"]), (200, &json!(false)), "{v}");
    assert!(
        v.to_string().contains("more problems"),
        "the list is capped: {v}"
    );
    still_up(&s, "a file of bad rules");

    // 3. CEL without a cost bound: two viewers at once.
    let list: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let l = format!("[{}]", list.join(","));
    let costly = format!("{l}.all(a, {l}.all(b, {l}.all(c, {l}.all(d, a + b + c + d > 0))))");
    let explain = |c: reqwest::Client| {
        let (url, viewer, costly) = (api("/rules/explain"), viewer.clone(), costly.clone());
        async move {
            send(
                c.post(url)
                    .bearer_auth(viewer)
                    .json(&json!({"expression": costly, "vin": reference})),
            )
            .await
        }
    };
    let (a, b) = tokio::join!(explain(c.clone()), explain(c.clone()));
    for (st, v) in [a, b] {
        assert_eq!(st, 400, "{v}");
        assert!(v.to_string().contains("too costly"), "{v}");
    }
    still_up(&s, "costly CEL");

    // 4. A duration past any date arithmetic.
    let (st, v) = send(
        c.post(api("/campaigns"))
            .bearer_auth(&engineer)
            .header("content-type", "application/yaml")
            .body(format!("{spec}  action_timeout: 100000000d\n")),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("365d"), "{v}");
    still_up(&s, "an endless action_timeout");

    // 5. Vehicles leave retained garbage on their presence topics.
    let mqtt_port: u16 = s.mqtt.rsplit(':').next().unwrap().parse().unwrap();
    for n in 0..5u32 {
        let vin = format!("WVWZZZE1ZMP{:06}", 100 + n);
        let token = credential(vin.clone()).await;
        let (client, mut events) = mqtt_vehicle(mqtt_port, &vin, &token);
        let garbage = if n == 0 {
            vec![b'x'; 1024 * 1024]
        } else {
            b"<garbage>".to_vec()
        };
        client
            .publish(
                format!("ota/v1/vehicles/{vin}/presence"),
                QoS::AtLeastOnce,
                true,
                garbage,
            )
            .await
            .unwrap();
        // The big one closes the connection; the small ones are refused
        // (acknowledged or not, as the MQTT version allows) and not kept.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    // What the broker kept on presence topics, seen by the adapter's own
    // login: a retained presence is `online` or `offline`, nothing else.
    let mut o = MqttOptions::new("hardening-check", "127.0.0.1", mqtt_port);
    o.set_credentials("ota-adapter", MQTT_PASSWORD)
        .set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    let (client, mut events) = AsyncClient::new(o, 16);
    client
        .subscribe("ota/v1/vehicles/+/presence", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut kept = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(event) = tokio::time::timeout_at(deadline, events.poll()).await {
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) if p.retain => kept.push(p.payload.to_vec()),
            Ok(_) => {}
            Err(e) => panic!("the check's own connection failed: {e}"),
        }
    }
    for k in &kept {
        assert!(
            k.as_slice() == b"online" || k.as_slice() == b"offline",
            "kept a retained presence of {} bytes: {:?}",
            k.len(),
            String::from_utf8_lossy(&k[..k.len().min(40)])
        );
    }
    still_up(&s, "retained garbage over MQTT");

    // 6. Inventory reports that grow one vehicle without bound.
    let grower = "WVWZZZE1ZMP000002";
    let token = credential(grower.to_string()).await;
    let mut refused = 0;
    for r in 0..20 {
        let attributes: serde_json::Map<String, Value> = (0..256)
            .map(|i| (format!("r{r}k{i}"), json!("v")))
            .collect();
        let (st, _) = send(
            c.put(format!("{}/v1/vehicles/{grower}/inventory", s.http))
                .bearer_auth(&token)
                .json(&json!({"attributes": attributes})),
        )
        .await;
        match st {
            202 | 200 | 204 => {}
            400 | 429 => refused += 1,
            other => panic!("inventory report {r}: {other}"),
        }
    }
    assert!(refused >= 19, "at most one report of 256 fits");
    let (_, v) = send(
        c.get(api(&format!("/vehicles/{grower}")))
            .bearer_auth(&admin),
    )
    .await;
    let n = v["attributes"].as_object().map_or(0, |m| m.len());
    assert!(n <= 256, "{n} attributes on one vehicle");
    still_up(&s, "growing inventory");

    // 7. A burst of DDI configData: the report budget throttles it.
    let ddi = "WVWZZZE1ZMP000003";
    let token = credential(ddi.to_string()).await;
    let mut limited = 0;
    for i in 0..40 {
        let (st, v) = send(
            c.put(format!("{}/default/controller/v1/{ddi}/configData", s.http))
                .header("authorization", format!("TargetToken {token}"))
                .json(&json!({"mode": "merge", "data": {"n": i.to_string()}})),
        )
        .await;
        match st {
            200 | 204 => {}
            429 => limited += 1,
            other => panic!("configData {i}: {other} {v}"),
        }
    }
    assert!(limited >= 10, "only {limited} of 40 were limited");
    still_up(&s, "a configData burst");

    // 8. Slow clients: half-sent request heads are closed.
    let addr = s.http.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut t = TcpStream::connect(&addr).unwrap();
        t.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .unwrap();
        slow.push(t);
    }
    still_up(&s, "200 half-sent heads");
    for mut t in slow {
        t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let r = t.read_to_end(&mut buf);
        assert!(
            r.is_ok(),
            "a half-sent head was closed within the header timeout"
        );
    }

    // 9. Four-eyes: the admin mints a second approver token for themself.
    let (st, v) = send(
        c.post(api("/campaigns"))
            .bearer_auth(&admin)
            .header("content-type", "application/yaml")
            .body(spec.replace("steady", "mine")),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let mine = v["id"].as_str().unwrap().to_string();
    let second = post(
        api("/tokens"),
        &admin,
        json!({"role": "approver", "name": "mallory"}),
    )
    .await;
    let (st, v) = send(
        c.post(api(&format!("/campaigns/{mine}:approve")))
            .bearer_auth(second["token"].as_str().unwrap())
            .json(&json!({})),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    still_up(&s, "self-approval");

    // 10. The smaller holes.
    let (st, _) = send(c.get(format!("{}/metrics", s.http))).await;
    assert_eq!(st, 401, "/metrics without its token");
    let (st, body) = send(
        c.get(format!("{}/metrics", s.http))
            .bearer_auth(METRICS_TOKEN),
    )
    .await;
    assert_eq!(st, 200);
    assert!(body
        .as_str()
        .unwrap_or_default()
        .contains("ota_http_requests_total"));
    let long_vin = "X".repeat(20_000);
    let (st, v) = send(
        c.get(api(&format!("/vehicles/{long_vin}")))
            .bearer_auth(&viewer),
    )
    .await;
    assert_eq!(st, 400);
    assert!(v.to_string().len() < 1_000, "a bad VIN is echoed cut short");
    let (st, v) = send(
        c.put(api(&format!("/vehicles/{reference}?source=vehicle")))
            .bearer_auth(&engineer)
            .json(&json!({"model": "forged"})),
    )
    .await;
    assert_eq!(st, 400, "an engineer writing as the vehicle: {v}");
    assert!(message(&v).contains("vehicle"), "{v}");
    let (st, v) = send(
        c.get(format!("{}/artifacts/{}", s.http, "ab".repeat(32)))
            .header("authorization", format!("Basic {admin}")),
    )
    .await;
    assert_eq!(st, 401, "{v}");
    assert!(
        message(&v).contains("Bearer, TargetToken or GatewayToken"),
        "{v}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&s.data_dir), 0o700);
        assert_eq!(mode(&s.data_dir.join("admin.token")), 0o600);
    }
    still_up(&s, "the smaller holes");

    // ---- nothing else changed ----
    assert_eq!(
        get_reference().await,
        reference_before,
        "the reference vehicle"
    );
    let (st, v) = send(
        c.get(api(&format!("/campaigns/{steady}")))
            .bearer_auth(&viewer),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["state"], "running", "{v}");
    assert!(v["last_error"].is_null(), "{v}");
    let (st, v) = send(c.get(api("/whoami")).bearer_auth(&viewer)).await;
    assert_eq!((st, v["principal"].as_str()), (200, Some("vera")));
    let (st, _) = send(c.get(api("/whoami")).bearer_auth(&admin)).await;
    assert_eq!(st, 200, "the admin token still works");
}
