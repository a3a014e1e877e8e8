//! A campaign through the real binary on embedded defaults: REST to create,
//! approve and launch it, staging's gRPC to see what vehicles would fetch,
//! the campaign manager's ReportStatus as the adapters will call it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ota_proto::v1 as pb;
use pb::campaign_manager_client::CampaignManagerClient;
use pb::staging_client::StagingClient;
use serde_json::{json, Value};

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_campaign_reaches_staged_documents_and_completes() {
    let s = Server::start(&[("OTA_CAMPAIGNS__TICK_MS", "200")], &[]);
    let admin = s.admin_token();
    let api = |p: &str| format!("{}/api/v1{p}", s.http);
    let r = reqwest::Client::new()
        .post(api("/vehicles:import?source=manufacturing"))
        .bearer_auth(&admin)
        .header("content-type", "application/x-ndjson")
        .body(
            (0..4)
                .map(|i| {
                    json!({"vin": format!("WVWZZZE1ZMP{i:06}"), "region": "EU", "gateway": "hcp1",
                           "ecus": {"BMS": {"hw": "H2", "sw": "2.2.0"}}})
                    .to_string()
                        + "\n"
                })
                .collect::<String>(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    post(
        api("/packages"),
        &admin,
        json!({"name": "bms-fw", "version": "2.3.1", "ecu": "BMS",
               "artifacts": [{"url": "https://cdn.example/bms.bin", "sha256": "b".repeat(64), "size": 7}]}),
    )
    .await;
    let spec = "name: e2e\ntarget: 'vehicle.region == \"EU\"'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\nrollout:\n  max_per_minute: 60000\npriority: 7\n";
    let id = create_approve_launch(&s.http, &admin, spec).await;

    let mut staging = StagingClient::connect(s.grpc.clone()).await.unwrap();
    let mut campaigns = CampaignManagerClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let vin = "WVWZZZE1ZMP000002".to_string();
    let doc = |staging: &mut StagingClient<tonic::transport::Channel>| {
        let mut staging = staging.clone();
        let vin = vin.clone();
        async move {
            staging
                .get_actions(pb::GetActionsRequest { vin })
                .await
                .unwrap()
                .into_inner()
        }
    };
    eventually("the action reaching the staged document", || {
        let d = doc(&mut staging);
        async move { d.await.actions.len() == 1 }
    })
    .await;
    let d = doc(&mut staging).await;
    let action = &d.actions[0];
    assert_eq!(
        (action.campaign_id.as_str(), action.ecu.as_str()),
        (id.as_str(), "BMS")
    );
    assert_eq!(action.package.as_ref().unwrap().version, "2.3.1");
    assert!(
        action.deadline.is_some(),
        "72h default timeout gives a deadline"
    );
    let etag = d.etag.clone();

    // Pausing takes the undelivered action back from the document.
    post(
        api(&format!("/campaigns/{id}:pause")),
        &admin,
        json!({"reason": "check"}),
    )
    .await;
    eventually("the paused action leaving the document", || {
        let d = doc(&mut staging);
        async move { d.await.actions.is_empty() }
    })
    .await;
    post(api(&format!("/campaigns/{id}:resume")), &admin, json!({})).await;
    eventually("the resumed action returning", || {
        let d = doc(&mut staging);
        async move { d.await.actions.len() == 1 }
    })
    .await;
    // Staged again, the action has a new deadline: new content, new etag.
    let again = doc(&mut staging).await;
    assert_ne!(again.etag, etag);
    assert_ne!(again.actions[0].deadline, d.actions[0].deadline);
    assert_eq!(
        doc(&mut staging).await.etag,
        again.etag,
        "same content, same etag"
    );

    // Every vehicle reports success; the campaign completes.
    for i in 0..4 {
        let vin = format!("WVWZZZE1ZMP{i:06}");
        let vin2 = vin.clone();
        eventually("every vehicle's action staged", || {
            let mut staging = staging.clone();
            let vin = vin2.clone();
            async move {
                let d = staging.get_actions(pb::GetActionsRequest { vin }).await;
                !d.unwrap().into_inner().actions.is_empty()
            }
        })
        .await;
        let d = staging
            .get_actions(pb::GetActionsRequest { vin: vin.clone() })
            .await
            .unwrap()
            .into_inner();
        let r = campaigns
            .report_status(pb::ReportStatusRequest {
                vin: vin.clone(),
                action_id: d.actions[0].action_id.clone(),
                state: pb::ActionState::Succeeded.into(),
                progress: 100,
                seq: 1,
                protocol: "test".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.applied);
    }
    eventually("the campaign completing", || {
        let url = api(&format!("/campaigns/{id}"));
        let admin = admin.clone();
        async move {
            let c: Value = reqwest::Client::new()
                .get(url)
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            c["state"] == "completed"
        }
    })
    .await;
    eventually("finished actions leaving the documents", || {
        let d = doc(&mut staging);
        async move { d.await.actions.is_empty() }
    })
    .await;
    let stats = staging
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.store.as_str(), stats.staged_vehicles), ("memory", 0));
    assert!(stats.events_processed > 0);

    // Operators see the same through REST and the CLI, and can restage.
    let out = s.cli(&admin, &["staging", "stats", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli_stats["store"], "memory");
    assert_eq!(cli_stats["staged_vehicles"], 0);
    let r = post(api("/staging:restage"), &admin, json!({"campaign_id": id})).await;
    assert_eq!(r["vehicles"], 4);
    assert_eq!(r["changed"], 0, "nothing drifted");
    let out = s.cli(
        &admin,
        &["staging", "restage", "--vin", "WVWZZZE1ZMP000001"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = reqwest::Client::new()
        .post(api("/staging:restage"))
        .bearer_auth(&admin)
        .json(&json!({"campaign_id": id, "vins": ["WVWZZZE1ZMP000001"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// The production shape: PostgreSQL, Redis for staged documents and events,
/// and staging in its own process, fed across processes by the bus.
#[tokio::test]
async fn staging_in_its_own_process_follows_a_campaign_through_redis() {
    let pg = ota_tests::db::postgres().await;
    let (redis_url, mut conn) = redis_db(11).await;

    let core = Server::start(
        &[
            ("OTA_DATABASE_URL", &pg.url),
            ("OTA_REDIS_URL", &redis_url),
            ("OTA_CAMPAIGNS__TICK_MS", "200"),
        ],
        &[
            "--services",
            "vehicle-store,rule-engine,campaign-manager,rest",
        ],
    );
    let staging = Server::start(
        &[
            ("OTA_DATABASE_URL", &pg.url),
            ("OTA_REDIS_URL", &redis_url),
            ("OTA_PEERS__CAMPAIGN_MANAGER", &core.grpc),
        ],
        &["--services", "staging"],
    );
    let admin = core.admin_token();
    let api = |p: &str| format!("{}/api/v1{p}", core.http);
    let r = reqwest::Client::new()
        .put(api("/vehicles/WVWZZZE1ZMP000042?source=manufacturing"))
        .bearer_auth(&admin)
        .json(&json!({"region": "EU", "ecus": {"BMS": {"hw": "H2", "sw": "1.0.0"}}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    post(
        api("/packages"),
        &admin,
        json!({"name": "bms-fw", "version": "2.3.1", "ecu": "BMS",
               "artifacts": [{"url": "https://cdn.example/bms.bin", "sha256": "c".repeat(64), "size": 9}]}),
    )
    .await;
    let id = create_approve_launch(
        &core.http,
        &admin,
        "name: split\ntarget: 'vehicle.region == \"EU\"'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\n",
    )
    .await;

    let staging_client = StagingClient::connect(staging.grpc.clone()).await.unwrap();
    let get = || {
        let mut c = staging_client.clone();
        async move {
            c.get_actions(pb::GetActionsRequest {
                vin: "WVWZZZE1ZMP000042".into(),
            })
            .await
            .map(|r| r.into_inner().actions.len())
            .unwrap_or(0)
        }
    };
    eventually(
        "the action reaching the staged document in Redis",
        || async { get().await == 1 },
    )
    .await;
    let stored: Option<String> = redis::cmd("GET")
        .arg("ota:staged:WVWZZZE1ZMP000042")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        stored.unwrap().contains(&id),
        "the document lives in Redis under ota:staged:{{vin}}"
    );

    post(
        api(&format!("/campaigns/{id}:abort")),
        &admin,
        json!({"reason": "test"}),
    )
    .await;
    eventually("the aborted action leaving the document", || async {
        get().await == 0
    })
    .await;
}

/// The demo as a test: a mixed fleet of HTTP, MQTT and DDI vehicles, run by
/// `ota simulate`, takes a campaign with a hosted artifact to completion
/// against `ota serve` on embedded defaults.
#[tokio::test]
async fn a_simulated_mixed_fleet_completes_a_campaign() {
    let s = Server::start(&[("OTA_CAMPAIGNS__TICK_MS", "200")], &[]);
    simulated_fleet_completes_a_campaign(&s, 0, &s.mqtt.clone(), "mixed").await;
}

/// The production shape: PostgreSQL, Redis and the real Mosquitto as the
/// MQTT vehicles' broker (the adapter joins through a shared subscription).
#[tokio::test]
async fn a_simulated_mixed_fleet_completes_a_campaign_on_postgres_redis_and_mosquitto() {
    let pg = ota_tests::db::postgres().await;
    let (redis_url, _flushed) = redis_db(12).await;
    let mqtt =
        std::env::var("OTA_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let s = Server::start(
        &[
            ("OTA_CAMPAIGNS__TICK_MS", "200"),
            ("OTA_DATABASE_URL", &pg.url),
            ("OTA_REDIS_URL", &redis_url),
            ("OTA_MQTT_URL", &mqtt),
        ],
        &[],
    );
    // VINs of their own on the shared broker.
    let first = 100_000 + (std::process::id() % 800) * 1000;
    simulated_fleet_completes_a_campaign(&s, first, &mqtt, "mixed").await;
}

/// `bms-fw` 2.3.1 for the BMS, its artifact (`size` bytes) hosted by the
/// server: `ota packages add --file`.
fn add_hosted_bms_package(s: &Server, admin: &str, dir: &std::path::Path, size: usize) {
    let firmware = dir.join("bms-2.3.1.bin");
    std::fs::write(&firmware, vec![7u8; size]).unwrap();
    s.add_hosted_package(admin, "bms-fw", "2.3.1", "BMS", &firmware);
}

async fn simulated_fleet_completes_a_campaign(s: &Server, first: u32, mqtt: &str, protocol: &str) {
    let admin = s.admin_token();
    let dir = tempfile::tempdir().unwrap();
    add_hosted_bms_package(s, &admin, dir.path(), 50_000);
    let first_vin = first.to_string();
    let sim = |extra: &[&str]| {
        let mut args = vec![
            "simulate",
            "--vehicles",
            "9",
            "--first",
            &first_vin,
            "--protocol",
            protocol,
            "--mqtt-url",
            mqtt,
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = s.cli(&admin, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    sim(&["--duration", "1s"]);
    let spec = "name: sim\ntarget: '\"simulated\" in vehicle.tags && version_cmp(vehicle.ecus.BMS.sw, \"2.3.1\") < 0'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\nrollout:\n  max_per_minute: 60000\n";
    let api = |p: &str| format!("{}/api/v1{p}", s.http);
    let id = create_approve_launch(&s.http, &admin, spec).await;

    let summary = sim(&[
        "--install-time",
        "200ms",
        "--poll-every",
        "300ms",
        "--until-idle",
        "4s",
        "--duration",
        "60s",
    ]);
    assert_eq!(summary["succeeded"], 9, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(
        summary["downloads"], 9,
        "every vehicle downloaded and checked the artifact"
    );
    eventually("the campaign completing", || {
        let url = api(&format!("/campaigns/{id}"));
        let admin = admin.clone();
        async move {
            let c: Value = reqwest::Client::new()
                .get(url)
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            c["state"] == "completed"
        }
    })
    .await;
    // The vehicles reported their new software: the inventory says so.
    let v: Value = reqwest::Client::new()
        .get(api(&format!("/vehicles/WVWSMLTR{:09}", first + 1)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ecus"]["BMS"]["sw"], "2.3.1", "{v}");
}

/// `ota simulate --receive-only`: MQTT vehicles connect, say when they are
/// all subscribed (--ready-file), note when their action arrives, and
/// neither install nor report; the summary and --notifications give the
/// latency from the campaign's launch.
#[tokio::test]
async fn a_receive_only_fleet_reports_how_fast_a_launch_reached_it() {
    let s = Server::start(&[("OTA_CAMPAIGNS__TICK_MS", "200")], &[]);
    let admin = s.admin_token();
    let dir = tempfile::tempdir().unwrap();
    add_hosted_bms_package(&s, &admin, dir.path(), 1000);
    let (ready, notifications) = (dir.path().join("ready"), dir.path().join("notified.ndjson"));
    // Two URLs of the same broker: the vehicles alternate between them.
    let urls = format!("{},{}", s.mqtt, s.mqtt);
    let sim = std::process::Command::new(OTA)
        .args([
            "simulate",
            "--protocol",
            "mqtt",
            "--vehicles",
            "6",
            "--receive-only",
        ])
        .args(["--mqtt-url", &urls, "--duration", "60s", "--output", "json"])
        .arg("--ready-file")
        .arg(&ready)
        .arg("--notifications")
        .arg(&notifications)
        .env("OTA_SERVER", &s.http)
        .env("OTA_TOKEN", &admin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("every simulated vehicle subscribed", || {
        let ready = ready.clone();
        async move { ready.exists() }
    })
    .await;
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert_eq!(
        (r["connected"].as_u64(), r["stopped"].as_u64()),
        (Some(6), Some(0)),
        "{r}"
    );

    let id = create_approve_launch(
        &s.http,
        &admin,
        "name: notify\ntarget: '\"simulated\" in vehicle.tags'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\nrollout:\n  max_per_minute: 60000\n",
    )
    .await;
    let out = sim.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["notified"], 6, "{summary}");
    assert_eq!(summary["connected"], 6, "{summary}");
    assert_eq!(
        summary["status_reports"], 0,
        "receive-only vehicles do not report"
    );
    let p99 = summary["notify_ms"]["p99"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 15_000.0, "{summary}");
    let lines: Vec<Value> = std::fs::read_to_string(&notifications)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert!(lines
        .iter()
        .all(|n| n["campaign_id"] == id.as_str() && n["after_launch_ms"].as_f64().is_some()));
}
