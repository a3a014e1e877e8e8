//! Staging faults through the real binary, on PostgreSQL and Redis: a
//! staging process killed in the middle of a batch, and its batch finished
//! by the process that replaces it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ota_proto::v1 as pb;
use pb::staging_client::StagingClient;
use redis::aio::MultiplexedConnection;
use serde_json::json;

/// Enough vehicles that staging them takes many batches.
const N: u32 = 10_000;
const STREAM: &str = "ota:bus:staging";

fn vin(n: u32) -> String {
    format!("WVWZZZE1ZMP{n:06}")
}

async fn staged_count(conn: &mut MultiplexedConnection) -> u64 {
    let n: Option<u64> = redis::cmd("GET")
        .arg("ota:staged_count")
        .query_async(conn)
        .await
        .unwrap();
    n.unwrap_or(0)
}

/// Messages of the staging group taken by a consumer and not acknowledged.
async fn pending(conn: &mut MultiplexedConnection) -> u64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg("staging")
        .query_async(conn)
        .await
        .unwrap();
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("XPENDING summary starts with {other:?}"),
        },
        other => panic!("XPENDING answered {other:?}"),
    }
}

#[tokio::test]
async fn a_staging_process_killed_mid_batch_is_replaced_and_no_event_is_lost() {
    let pg = ota_tests::db::postgres().await;
    let (redis_url, mut conn) = redis_db(13).await;

    let shared = [
        ("OTA_DATABASE_URL", pg.url.as_str()),
        ("OTA_REDIS_URL", redis_url.as_str()),
        // A dead process's batch goes to another one after 2 s, not 30.
        ("OTA_BUS__CLAIM_TIMEOUT_MS", "2000"),
        ("OTA_CAMPAIGNS__TICK_MS", "200"),
        // One address for the fleet, as a split deployment must have
        // (staging would rewrite documents staged under another one).
        ("OTA_PUBLIC_URL", "https://ota.example"),
    ];
    let core = Server::start(
        &shared,
        &[
            "--services",
            "vehicle-store,rule-engine,campaign-manager,rest",
        ],
    );
    let staging_env: Vec<(&str, &str)> = shared
        .iter()
        .copied()
        .chain([("OTA_PEERS__CAMPAIGN_MANAGER", core.grpc.as_str())])
        .collect();
    let first = Server::start(&staging_env, &["--services", "staging"]);

    let admin = core.admin_token();
    let api = |p: &str| format!("{}/api/v1{p}", core.http);
    let fleet: String = (0..N)
        .map(|i| {
            json!({"vin": vin(i), "region": "EU", "gateway": "hcp3",
                   "ecus": {"BMS": {"hw": "H2", "sw": "2.2.0"}}})
            .to_string()
                + "\n"
        })
        .collect();
    let r = http()
        .post(api("/vehicles:import?source=manufacturing"))
        .bearer_auth(&admin)
        .header("content-type", "application/x-ndjson")
        .body(fleet)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    post(
        api("/packages"),
        &admin,
        json!({"name": "bms-fw", "version": "2.3.1", "ecu": "BMS",
               "artifacts": [{"url": "https://cdn.example/bms.bin", "sha256": "d".repeat(64), "size": 9}]}),
    )
    .await;
    let id = create_approve_launch(
        &core.http,
        &admin,
        "name: killed\ntarget: 'vehicle.region == \"EU\"'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\nrollout:\n  max_per_minute: 6000000\n",
    )
    .await;

    // Kill the only staging process while it has written part of the
    // campaign and holds taken, unacknowledged events. It is frozen first,
    // so that what is checked is what it dies with.
    let pid = first.child.id().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}");
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let written = loop {
        let written = staged_count(&mut conn).await;
        assert!(
            written < u64::from(N),
            "staging finished before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "staging did not get under way within 60 s"
        );
        if written > 0 {
            signal("-STOP");
            // Commands it sent just before are let to land.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let written = staged_count(&mut conn).await;
            if written < u64::from(N) && pending(&mut conn).await > 0 {
                drop(first); // SIGKILL: no shutdown, no acknowledgement
                break written;
            }
            signal("-CONT");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let held = pending(&mut conn).await;
    assert!(held > 0, "the killed process held no events");
    let frozen_at = staged_count(&mut conn).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        staged_count(&mut conn).await,
        frozen_at,
        "nobody stages while the only staging process is dead"
    );

    // Its replacement takes the abandoned events over after the claim
    // timeout and finishes them.
    let second = Server::start(&staging_env, &["--services", "staging"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (n, p) = (staged_count(&mut conn).await, pending(&mut conn).await);
        if n == u64::from(N) && p == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "60 s after the kill (at {written} of {N} staged, {held} events held): {n} staged, {p} events pending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every vehicle has exactly one action, of this campaign.
    let needle = format!("\"campaign_id\":\"{id}\"");
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|&i| format!("ota:staged:{}", vin(i)))
            .collect();
        let docs: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
        for (key, doc) in keys.iter().zip(docs) {
            let doc = doc.unwrap_or_else(|| panic!("{key} is missing"));
            assert_eq!(doc.matches(&needle).count(), 1, "{key}: {doc}");
            assert_eq!(doc.matches("\"action_id\"").count(), 1, "{key}: {doc}");
        }
    }
    // The documents came from the events, not from a reconcile repairing
    // what was lost.
    let stats = StagingClient::connect(second.grpc.clone())
        .await
        .unwrap()
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.last_reconcile_repaired, 0, "{stats:?}");
}
