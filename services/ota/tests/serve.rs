//! The `ota` binary as a user runs it: `ota serve` as a process on real
//! sockets, driven through HTTP, gRPC and the CLI.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn fresh_start_answers_health_on_both_ports_and_writes_a_private_admin_token() {
    let s = Server::start(&[], &[]);
    let r = http()
        .get(format!("{}/readyz", s.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["services"].as_array().unwrap().len(), 7);
    assert!(
        s.data_dir.join("ota.db").exists(),
        "SQLite created on first start"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.data_dir.join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let metrics = http()
        .get(format!("{}/metrics", s.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ota_http_requests_total"), "{metrics}");

    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(s.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    for service in ["", "ota.v1.VehicleStore", "ota.v1.RuleEngine"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    drop(health);
    let (status, logs) = s.terminate();
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
    let first: Value =
        serde_json::from_str(logs.lines().next().unwrap()).expect("logs are JSON lines");
    assert_eq!(first["message"], "starting ota");
    assert!(
        logs.contains("bootstrap admin token"),
        "the log says where the token is"
    );
    assert!(logs.contains("\"stopped\""));
}

#[tokio::test]
async fn auth_rejects_missing_wrong_and_underprivileged_tokens() {
    let s = Server::start(&[], &[]);
    let admin = s.admin_token();
    let url = format!("{}/api/v1/vehicles/WVWZZZE1ZMP000001", s.http);
    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = http()
        .get(&url)
        .bearer_auth("ota_not-a-real-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");

    let out = s.cli(
        &admin,
        &[
            "tokens", "create", "--role", "viewer", "--name", "dash", "--output", "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let viewer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let viewer_token = viewer["token"].as_str().unwrap();
    let r = http()
        .put(&url)
        .bearer_auth(viewer_token)
        .json(&json!({"model": "ID.4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "this needs the engineer role; token \"dash\" has viewer"
    );
    let r = http()
        .get(&url)
        .bearer_auth(viewer_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "viewers may read; the vehicle just does not exist"
    );

    let out = s.cli(
        &admin,
        &["tokens", "revoke", viewer["id"].as_str().unwrap()],
    );
    assert!(out.status.success());
    let r = http()
        .get(&url)
        .bearer_auth(viewer_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "revoked tokens stop working");
    let out = s.cli("ota_wrong", &["vehicles", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid or revoked token (HTTP 401)"));
}

#[tokio::test]
async fn cli_imports_gets_and_lists_with_line_numbered_rejections() {
    let s = Server::start(&[], &[]);
    let token = s.admin_token();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.ndjson");
    let mut content = ndjson(&(0..10).map(vehicle).collect::<Vec<_>>());
    content.push_str("{\"vin\":\"TOO-SHORT\"}\n{broken\n");
    content.push_str(&ndjson(&[vehicle(10)]));
    std::fs::write(&file, content).unwrap();

    let out = s.cli(
        &token,
        &[
            "vehicles",
            "import",
            file.to_str().unwrap(),
            "--source",
            "manufacturing",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial import exits 3: {stdout} {stderr}"
    );
    assert!(
        stdout.contains("imported 11, updated 0, unchanged 0, rejected 2"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "line 11 [TOO-SHORT]: invalid vin \"TOO-SHORT\": must be 17 characters, got 9"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("line 12: invalid JSON"), "{stderr}");

    let out = s.cli(
        &token,
        &["vehicles", "get", "WVWZZZE1ZMP000004", "--output", "json"],
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ecus"]["BMS"]["sw"], "2.2.0");
    assert_eq!(v["provenance"]["model"], "manufacturing");

    let out = s.cli(
        &token,
        &[
            "vehicles",
            "list",
            "--filter",
            "region=EU",
            "--limit",
            "2",
            "--all",
            "--output",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        page["vehicles"].as_array().unwrap().len(),
        6,
        "EU vehicles 0,2,4,6,8,10 across pages"
    );
    let out = s.cli(&token, &["vehicles", "list", "--filter", "colour=red"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown filter field \"colour\""));

    // Strict: one bad line, nothing imported.
    let strict = dir.path().join("strict.csv");
    std::fs::write(
        &strict,
        "vin,model,ecu.BMS.sw\nWVWZZZE1ZMP100001,ID.7,3.0.0\nWVWZZZE1ZMP10000O,ID.7,3.0.0\n",
    )
    .unwrap();
    let out = s.cli(
        &token,
        &["vehicles", "import", strict.to_str().unwrap(), "--strict"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing imported"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3"));
    let out = s.cli(&token, &["vehicles", "get", "WVWZZZE1ZMP100001"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found (HTTP 404)"));
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_bad_bodies_400() {
    let s = Server::start(
        &[
            ("OTA_LIMITS__MAX_BODY_BYTES", "1024"),
            ("OTA_LIMITS__MAX_IMPORT_BYTES", "4096"),
        ],
        &[],
    );
    let token = s.admin_token();
    let url = format!("{}/api/v1/vehicles/WVWZZZE1ZMP000001", s.http);
    let big = json!({"attributes": {"blob": "x".repeat(2000)}});
    let r = http()
        .put(&url)
        .bearer_auth(&token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http()
        .post(format!("{}/api/v1/vehicles:import", s.http))
        .bearer_auth(&token)
        .body(ndjson(&(0..100).map(vehicle).collect::<Vec<_>>()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http()
        .put(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http()
        .put(&url)
        .bearer_auth(&token)
        .json(&json!({"vin": "WVWZZZE1ZMP000002"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{body}"
    );
    let r = http()
        .put(&url)
        .bearer_auth(&token)
        .json(&json!({"model_year": "soon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http()
        .put(&url)
        .bearer_auth(&token)
        .json(&json!({"model": "ID.4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "nothing above harmed a valid write");
    let r = http()
        .get(format!("{}/api/v1/vehicles?limit=5000", s.http))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn unreachable_database_at_start_is_a_clear_error_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(OTA)
        .args(["serve"])
        .current_dir(tmp.path())
        .env(
            "OTA_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port()),
        )
        .env("OTA_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("OTA_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("OTA_MQTT_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("database_url / OTA_DATABASE_URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot open database postgres://postgres@127.0.0.1"),
        "{stderr}"
    );
}

#[test]
fn bad_configuration_names_the_key_and_taken_ports_name_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(tmp.path().join("ota.toml")).unwrap();
    writeln!(f, "http_adr = \"127.0.0.1:1\"").unwrap();
    let out = Command::new(OTA)
        .arg("serve")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("http_adr"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(OTA)
        .args([
            "serve",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--grpc-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("OTA_DATA_DIR", tmp.path().join("d"))
        .env("OTA_MQTT_LISTEN", format!("127.0.0.1:{}", free_port()))
        .current_dir(tmp.path())
        .args(["--config", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot listen for HTTP on 127.0.0.1:{port} (http_addr / OTA_HTTP_ADDR)"
        )),
        "{stderr}"
    );

    // The embedded broker's port taken (by a local Mosquitto, say): the
    // error names both ways out.
    let out = Command::new(OTA)
        .args([
            "serve",
            "--http-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--grpc-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("OTA_DATA_DIR", tmp.path().join("e"))
        .env("OTA_MQTT_LISTEN", format!("127.0.0.1:{port}"))
        .current_dir(tmp.path())
        .args(["--config", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen for MQTT on 127.0.0.1:{port}"))
            && stderr.contains("OTA_MQTT_LISTEN")
            && stderr.contains("OTA_MQTT_URL"),
        "{stderr}"
    );
}

/// Two processes on one PostgreSQL database: the vehicle store alone, and the
/// REST API reaching it over gRPC. Then the database goes away under them.
// Multi-threaded: the proxy must keep serving while setup blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_services_over_grpc_on_postgres_survive_a_database_outage() {
    let pg = ota_tests::db::postgres().await;
    let pg_addr: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = ota_tests::proxy::Proxy::start(pg_addr).await;
    let db_name = pg.url.rsplit('/').next().unwrap().to_owned();
    let url = format!("postgres://postgres@{}/{db_name}", proxy.addr);

    let store = Server::start(
        &[
            ("OTA_DATABASE_URL", &url),
            ("OTA_DATABASE__ACQUIRE_TIMEOUT_MS", "1000"),
        ],
        &["--services", "vehicle-store,rule-engine,campaign-manager"],
    );
    let rest = Server::start(
        &[
            ("OTA_DATABASE_URL", &url),
            ("OTA_PEERS__VEHICLE_STORE", &store.grpc),
            ("OTA_PEERS__RULE_ENGINE", &store.grpc),
            ("OTA_PEERS__CAMPAIGN_MANAGER", &store.grpc),
            ("OTA_DATABASE__ACQUIRE_TIMEOUT_MS", "1000"),
        ],
        &["--services", "rest"],
    );
    let token = rest.admin_token();
    let r = http()
        .post(format!(
            "{}/api/v1/vehicles:import?source=dealer",
            rest.http
        ))
        .bearer_auth(&token)
        .header("content-type", "application/x-ndjson")
        .body(ndjson(&(0..20).map(vehicle).collect::<Vec<_>>()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let summary: Value = r.json().await.unwrap();
    assert_eq!(summary["imported"], 20);
    let get = || {
        http()
            .get(format!("{}/api/v1/vehicles/WVWZZZE1ZMP000007", rest.http))
            .bearer_auth(&token)
            .send()
    };
    let r = get().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["provenance"]["model"], "dealer");
    // rest -> rule-engine (other process) -> vehicle-store scan.
    let r = http()
        .post(format!("{}/api/v1/rules/preview", rest.http))
        .bearer_auth(&token)
        .json(&json!({"expression": "vehicle.region == \"EU\""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        (p["scanned"].as_u64(), p["matched"].as_u64()),
        (Some(20), Some(10))
    );

    proxy.cut();
    let r = get().await.unwrap();
    assert_eq!(r.status(), 503, "database gone: unavailable, not a crash");
    assert_eq!(r.headers()["retry-after"], "5");
    let r = http()
        .get(format!("{}/readyz", store.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not recover after the database came back: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(rest);
    drop(store);
}

#[tokio::test]
async fn rules_check_explain_and_preview_from_the_cli_and_rest() {
    let s = Server::start(&[], &[]);
    let token = s.admin_token();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.ndjson");
    let mut fleet: Vec<Value> = (0..40).map(vehicle).collect();
    fleet[4]["ecus"] = json!({"HU": {"hw": "MIB3", "sw": "5.1.0"}}); // EU, no BMS
    std::fs::write(&file, ndjson(&fleet)).unwrap();
    assert!(s
        .cli(&token, &["vehicles", "import", file.to_str().unwrap()])
        .status
        .success());

    let expr = r#"vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0"#;
    let out = s.cli(&token, &["rules", "check", expr]);
    assert_eq!(out.status.code(), Some(0));
    // A campaign file with rules: target and every `when` are checked.
    let campaign = dir.path().join("campaign.yaml");
    std::fs::write(
        &campaign,
        format!("name: c\ntarget: '{expr}'\nrules:\n  - when: 'vehicle.gateway == \"hcp3\"'\n    install: {{package: bms-fw-hcp3, version: 2.3.1, ecu: BMS}}\n  - install: {{package: bms-fw, version: 2.3.1, ecu: BMS}}\n"),
    )
    .unwrap();
    let out = s.cli(
        &token,
        &["rules", "check", "-f", campaign.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        &campaign,
        format!("name: c\ntarget: '{expr}'\nrules:\n  - when: 'vehicle.gatway == \"hcp3\"'\n    install: {{package: bms-fw, version: 2.3.1, ecu: BMS}}\n"),
    )
    .unwrap();
    let out = s.cli(
        &token,
        &["rules", "check", "-f", campaign.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rules[0].when") && stderr.contains("gateway"),
        "{stderr}"
    );
    let out = s.cli(&token, &["rules", "check", "vehicle.modle == \"ID.4\""]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("target:1:9: unknown field `modle` on vehicle, did you mean `model`?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("        ^"),
        "caret under the column: {stderr}"
    );

    let out = s.cli(&token, &["rules", "preview", expr, "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["scanned"], 40);
    assert_eq!(
        p["matched"], 19,
        "20 EU vehicles, one of them without a BMS"
    );
    assert_eq!(
        p["errors"], 1,
        "the missing ECU is a counted non-match, not a failure"
    );
    assert_eq!(p["by_model"]["ID.4"], 19);

    let out = s.cli(
        &token,
        &[
            "rules",
            "explain",
            "--vin",
            "WVWZZZE1ZMP000004",
            expr,
            "--output",
            "json",
        ],
    );
    assert!(out.status.success());
    let x: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(x["result"]["target_matched"], false);
    assert!(
        x["result"]["error"].as_str().unwrap().contains("BMS"),
        "{x}"
    );

    // REST: a rule set with rules; invalid input is a 400 listing every error.
    let r = http()
        .post(format!("{}/api/v1/rules/preview", s.http))
        .bearer_auth(&token)
        .json(&json!({"target": "vehicle.model == 5", "rules": [{"when": "vehicle.gatway == \"hcp3\"", "action": "a"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["target", "rules[0].when"]);
    let r = http()
        .post(format!("{}/api/v1/rules/validate", s.http))
        .bearer_auth(&token)
        .json(&json!({"expression": "x".repeat(17 * 1024)}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["valid"], false);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("16384"),
        "{body}"
    );
}

/// With OTEL_EXPORTER_OTLP_ENDPOINT set, requests become spans in the
/// collector, an operator's `traceparent` is continued, and a call from
/// `rest` to the vehicle store in another process continues that trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_exported_over_otlp_and_continue_across_processes() {
    let (collector, endpoint) = ota_tests::otlp::start().await;
    let pg = ota_tests::db::postgres().await;
    let store = Server::start(
        &[
            ("OTA_DATABASE_URL", &pg.url),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "ota-store"),
        ],
        &["--services", "vehicle-store,rule-engine,campaign-manager"],
    );
    let rest = Server::start(
        &[
            ("OTA_DATABASE_URL", &pg.url),
            ("OTA_PEERS__VEHICLE_STORE", &store.grpc),
            ("OTA_PEERS__RULE_ENGINE", &store.grpc),
            ("OTA_PEERS__CAMPAIGN_MANAGER", &store.grpc),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "ota-rest"),
            // Logging at warn does not turn the request spans off.
            ("OTA_LOG", "warn"),
        ],
        &["--services", "rest"],
    );
    let token = rest.admin_token();
    // An operator's tool sends its own trace: the request joins it.
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    let r = http()
        .get(format!("{}/api/v1/vehicles/WVWZZZE1ZMP000001", rest.http))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Stopping flushes the batch exporters.
    assert!(rest.terminate().0.success());
    assert!(store.terminate().0.success());

    let spans = collector.spans();
    let grpc_span = spans
        .iter()
        .find(|s| s.service == "ota-store" && s.name == "grpc.request")
        .unwrap_or_else(|| panic!("no grpc.request span from ota-store in {spans:?}"));
    // The health probes are traces of their own; the GET is the one whose
    // trace reaches the store.
    let http_span = spans
        .iter()
        .find(|s| {
            s.service == "ota-rest" && s.name == "http.request" && s.trace_id == grpc_span.trace_id
        })
        .unwrap_or_else(|| {
            panic!("no ota-rest http.request shares the store span's trace in {spans:?}")
        });
    assert_eq!(
        (
            http_span.trace_id.as_str(),
            http_span.parent_span_id.as_deref()
        ),
        (TRACE, Some(CALLER)),
        "the REST request continues the caller's trace, and the store's span with it"
    );
}
