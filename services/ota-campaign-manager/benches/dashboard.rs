//! What the admin dashboard's pages ask of the campaign manager, over one
//! campaign of N actions (default 1,000,000) in PostgreSQL: `Report`,
//! `FailureGroups`, `FailureGroupVins` and `VehicleActions` through the
//! gRPC client the dashboard uses, beside a `SELECT 1` round trip on the
//! same pool and the GROUP BY queries the report ran before the counters.
//!
//! The actions are written by one SQL statement (generate_series), so the
//! counter trigger aggregates them in one go; the bench times that, the
//! fold, and the migration's backfill query over the same rows.
//!
//! `cargo bench -p ota-campaign-manager --bench dashboard`; OTA_BENCH_ACTIONS
//! sets N, OTA_BENCH_ROUNDS the calls per figure (default 30),
//! OTA_TEST_DATABASE_URL the server. Prints one JSON line per figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_bus::memory::MemoryBus;
use ota_bus::outbox::Relay;
use ota_campaign_manager::model::Transition;
use ota_campaign_manager::store::Store;
use ota_campaign_manager::{Actor, CampaignManager, CampaignManagerService, Config};
use ota_common::peer;
use ota_db::Db;
use ota_proto::v1 as pb;
use ota_rule_engine::{RuleEngineService, StoreVehicles};
use ota_vehicle_store::grpc::VehicleStoreService;
use ota_vehicle_store::{Precedence, VehicleStore};
use pb::campaign_manager_client::CampaignManagerClient;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and 95th percentile of `rounds` calls, after two warm-ups.
async fn measure<F, Fut>(rounds: u64, mut call: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..2 {
        call().await;
    }
    let mut times = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let started = Instant::now();
        call().await;
        times.push(started.elapsed());
    }
    times.sort();
    let p95 = times[((times.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    (times[times.len() / 2], p95)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run() {
    let n = env_or("OTA_BENCH_ACTIONS", 1_000_000) as i64;
    let rounds = env_or("OTA_BENCH_ROUNDS", 30);
    let t = ota_tests::db::postgres().await;
    let Db::Postgres(pool) = t.db() else {
        unreachable!()
    };
    let vehicles = VehicleStore::new(t.db(), Precedence::default());
    let vehicle_peer = peer::in_process(VehicleStoreService::new(vehicles).into_server());
    let rule_peer = peer::in_process(
        RuleEngineService::new(StoreVehicles::new(vehicle_peer.clone())).into_server(),
    );
    let bus = Arc::new(MemoryBus::new());
    let relay = Relay::new(t.db().clone(), bus.clone());
    let store = Store::new(t.db().clone(), relay.waker());
    let manager = CampaignManager::new(
        store,
        rule_peer,
        Arc::new(StoreVehicles::new(vehicle_peer)),
        Config::default(),
    );
    let pkg = manager
        .create_package(
            pb::Package {
                name: "bms-fw".into(),
                version: "2.3.1".into(),
                ecu: "BMS".into(),
                artifacts: vec![pb::Artifact {
                    url: "https://cdn.example/bms-fw.bin".into(),
                    sha256: "a".repeat(64),
                    size: 1 << 20,
                }],
                ..Default::default()
            },
            "bench",
        )
        .await
        .unwrap();
    let spec = "name: dashboard\ntarget: 'true'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\n\
                rollout:\n  waves: [1, 10, 50, 100]\n  max_retries: 2\n";
    let c = manager
        .create_campaign(spec, "erin")
        .await
        .unwrap()
        .unwrap();
    let approver = Actor {
        name: "alex".into(),
        role: "approver".into(),
    };
    for step in [Transition::Approve, Transition::Launch] {
        manager
            .transition(&c.id, step, &approver, "")
            .await
            .unwrap();
    }
    // The empty inventory's scan finds nothing: the actions come from SQL.
    manager.target_campaign(&c.id).await.unwrap();

    // A rollout well under way: 70 % succeeded, 3 % failed under 20
    // reasons, 1 % rejected, 1 % timed out, the rest in flight or not yet
    // staged; finishes spread over three days; 5 models, 3 platforms,
    // 2 gateways, 8 regions, 6 hardware versions.
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO actions (id, campaign_id, vin, ecu, package_id, rule_index, bucket, wave, state, open, attempts, \
           progress, message, model, platform, gateway, region, hardware, staged_at, finished_at, state_at, created_at) \
         SELECT (1000000000 + i)::text, $1, 'WVWZZZE1ZMP' || lpad(i::text, 6, '0'), 'BMS', $2, 0, i % 10000, \
           CASE WHEN i % 100 = 0 THEN 0 WHEN i % 10 = 1 THEN 1 WHEN i % 2 = 0 THEN 2 ELSE 3 END, s.state, \
           CASE WHEN s.state IN ('staged','delivered','accepted','downloading','installing') THEN 1 ELSE 0 END, \
           CASE WHEN s.state IN ('pending','waiting') THEN 0 ELSE 1 + i % 3 END, 0, \
           CASE WHEN s.state IN ('failed','rejected') THEN 'error E' || (i / 100 % 20) \
                WHEN s.state = 'timed_out' THEN 'no final status within 72h' ELSE '' END, \
           'ID.' || (i % 5), 'P' || (i % 3), 'hcp' || (i % 2), 'R' || (i % 8), 'H' || (i % 6), \
           CASE WHEN s.state IN ('pending','waiting') THEN NULL ELSE 1700000000000 END, \
           CASE WHEN s.state IN ('succeeded','failed','rejected','timed_out','cancelled') \
                THEN 1700000000000 + (i::bigint * 259200000 / $3) END, 1700000000000, 1700000000000 \
         FROM generate_series(0, $3 - 1) AS i, LATERAL (SELECT CASE \
           WHEN i % 100 < 70 THEN 'succeeded' WHEN i % 100 < 73 THEN 'failed' WHEN i % 100 < 74 THEN 'rejected' \
           WHEN i % 100 < 75 THEN 'timed_out' WHEN i % 100 < 80 THEN 'downloading' WHEN i % 100 < 83 THEN 'installing' \
           WHEN i % 100 < 86 THEN 'delivered' WHEN i % 100 < 90 THEN 'staged' ELSE 'pending' END AS state) s",
    )
    .bind(&c.id)
    .bind(&pkg.id)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
    let inserted = started.elapsed();
    // Three events per started action, as release, delivery and a report
    // leave them.
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO action_events (action_id, at, state, progress, message, protocol, attempt) \
         SELECT a.id, 1700000000000 + e, (ARRAY['staged','delivered','downloading'])[e + 1], 0, '', \
           CASE WHEN e = 2 THEN 'mqtt' ELSE 'platform' END, 1 \
         FROM actions a, generate_series(0, 2) AS e WHERE a.campaign_id = $1 AND a.state NOT IN ('pending','waiting')",
    )
    .bind(&c.id)
    .execute(pool)
    .await
    .unwrap();
    let events_loaded = started.elapsed();
    let started = Instant::now();
    let folded = manager.store().fold_counts().await.unwrap();
    let fold = started.elapsed();
    sqlx::query("ANALYZE").execute(pool).await.unwrap();
    let started = Instant::now();
    let (backfill_rows,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT a.campaign_id, k.dim, k.key, k.state, SUM(k.n) \
         FROM actions a CROSS JOIN LATERAL action_count_keys(a) k GROUP BY 1, 2, 3, 4) b",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let backfill = started.elapsed();
    println!(
        "{{\"bench\":\"load\",\"actions\":{n},\"insert_with_trigger_s\":{:.2},\"events_s\":{:.2},\"fold_s\":{:.3},\"deltas_folded\":{folded},\"backfill_query_s\":{:.2},\"counter_rows\":{backfill_rows}}}",
        inserted.as_secs_f64(),
        events_loaded.as_secs_f64(),
        fold.as_secs_f64(),
        backfill.as_secs_f64()
    );

    let client = CampaignManagerClient::new(peer::in_process(
        CampaignManagerService::new(manager.clone()).into_server(),
    ));
    let id = c.id.clone();
    let vin = "WVWZZZE1ZMP000101".to_string();
    let mut figures: Vec<(&str, Duration, Duration)> = Vec::new();

    let (p50, p95) = measure(rounds, || async {
        sqlx::query("SELECT 1").execute(pool).await.unwrap();
    })
    .await;
    let select1 = p50;
    figures.push(("select_1", p50, p95));

    let (p50, p95) = measure(rounds, || {
        let (mut client, id) = (client.clone(), id.clone());
        async move {
            let r = client
                .report(pb::ReportRequest {
                    id,
                    top_failures: 10,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.total, n as u64);
        }
    })
    .await;
    figures.push(("report", p50, p95));

    let (p50, p95) = measure(rounds, || {
        let (mut client, id) = (client.clone(), id.clone());
        async move {
            let g = client
                .failure_groups(pb::FailureGroupsRequest {
                    campaign_id: id,
                    limit: 50,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(g.total_groups, 21);
        }
    })
    .await;
    figures.push(("failure_groups", p50, p95));

    let (p50, p95) = measure(rounds, || {
        let (mut client, id) = (client.clone(), id.clone());
        async move {
            let v = client
                .failure_group_vins(pb::FailureGroupVinsRequest {
                    campaign_id: id,
                    reason: "error E1".into(),
                    after_vin: String::new(),
                    limit: 1000,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(v.vins.len(), 1000);
        }
    })
    .await;
    figures.push(("failure_group_vins_1000", p50, p95));

    let (p50, p95) = measure(rounds, || {
        let (mut client, vin) = (client.clone(), vin.clone());
        async move {
            let a = client
                .vehicle_actions(pb::VehicleActionsRequest { vin })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(a.actions.len(), 1);
        }
    })
    .await;
    figures.push(("vehicle_actions", p50, p95));

    let (p50, p95) = measure(rounds, || async {
        manager.store().state_counts(&id).await.unwrap();
    })
    .await;
    figures.push(("rollout_state_counts", p50, p95));

    // What the report and the rollout read before the counters: a GROUP BY
    // over the campaign's actions per figure (fewer rounds: seconds each).
    let before = [
        "SELECT state, COUNT(*) FROM actions WHERE campaign_id = $1 GROUP BY state",
        "SELECT wave, state, COUNT(*) FROM actions WHERE campaign_id = $1 GROUP BY wave, state",
        "SELECT model, COUNT(*), SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) FROM actions WHERE campaign_id = $1 GROUP BY model",
        "SELECT platform, COUNT(*), SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) FROM actions WHERE campaign_id = $1 GROUP BY platform",
        "SELECT gateway, COUNT(*), SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) FROM actions WHERE campaign_id = $1 GROUP BY gateway",
        "SELECT region, COUNT(*), SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) FROM actions WHERE campaign_id = $1 GROUP BY region",
        "SELECT MIN(finished_at), MAX(finished_at) FROM actions WHERE campaign_id = $1 AND finished_at IS NOT NULL",
        "SELECT finished_at / 4320000, COUNT(*) FROM actions WHERE campaign_id = $1 AND finished_at IS NOT NULL GROUP BY 1",
        "SELECT SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END) FROM actions WHERE campaign_id = $1",
    ];
    let (p50, p95) = measure(rounds.min(5), || async {
        for sql in before {
            sqlx::query(sql).bind(&id).execute(pool).await.unwrap();
        }
    })
    .await;
    figures.push(("report_before_group_by_queries", p50, p95));

    for (name, p50, p95) in figures {
        println!(
            "{{\"bench\":\"{name}\",\"actions\":{n},\"p50_ms\":{:.3},\"p95_ms\":{:.3},\"p50_over_select_1\":{:.1}}}",
            ms(p50),
            ms(p95),
            p50.as_secs_f64() / select1.as_secs_f64()
        );
    }
}
