//! Campaign launch and status ingestion at fleet scale, on PostgreSQL:
//!
//! - launch over N vehicles (default 1,000,000) of which 40% match: time to
//!   the first wave's actions being handed to staging, and to all of them;
//! - status reports from many concurrent vehicles: reports per second, every
//!   one counted, and how current the campaign counters are.
//!
//! `cargo bench -p ota-campaign-manager --bench campaign`; OTA_BENCH_VEHICLES
//! sets N, OTA_TEST_DATABASE_URL the server. Prints one JSON line per figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_bus::memory::MemoryBus;
use ota_bus::outbox::Relay;
use ota_campaign_manager::model::{ActionState, Transition};
use ota_campaign_manager::status::StatusReport;
use ota_campaign_manager::store::Store;
use ota_campaign_manager::{Actor, CampaignManager, Config};
use ota_common::peer;
use ota_db::Db;
use ota_proto::v1 as pb;
use ota_rule_engine::{RuleEngineService, StoreVehicles};
use ota_vehicle_store::grpc::VehicleStoreService;
use ota_vehicle_store::{Precedence, VehicleStore};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let n: u64 = std::env::var("OTA_BENCH_VEHICLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let t = ota_tests::db::postgres().await;
    let Db::Postgres(pool) = t.db() else {
        unreachable!()
    };
    let started = Instant::now();
    // 40% EU with an old BMS: the campaign's target.
    sqlx::query(
        "INSERT INTO vehicles (vin, model, platform, gateway, region, ecus, created_at, updated_at) \
         SELECT 'WVWZZZE1ZMP' || lpad(i::text, 6, '0'), (ARRAY['ID.3','ID.4','ID.5'])[1 + i % 3], 'MEB', \
                CASE WHEN i % 2 = 0 THEN 'hcp3' ELSE 'hcp1' END, \
                CASE WHEN i % 5 < 2 THEN 'EU' ELSE 'US' END, \
                '{\"BMS\":{\"hw\":\"H2\",\"sw\":\"2.2.0\"}}', 0, 0 \
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(n as i64)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE vehicles").execute(pool).await.unwrap();
    eprintln!("fleet of {n} loaded in {:?}", started.elapsed());

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
        Config {
            tick: Duration::from_millis(200),
            status_batch: 2000,
        },
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let relay_task = tokio::spawn(relay.run(stop.clone()));
    for name in ["bms-fw", "bms-fw-hcp3"] {
        manager
            .create_package(
                pb::Package {
                    name: name.into(),
                    version: "2.3.1".into(),
                    ecu: "BMS".into(),
                    artifacts: vec![pb::Artifact {
                        url: format!("https://cdn.example/{name}.bin"),
                        sha256: "a".repeat(64),
                        size: 1 << 20,
                    }],
                    ..Default::default()
                },
                "bench",
            )
            .await
            .unwrap();
    }
    let spec = r#"name: bench
target: 'vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0'
rules:
  - when: 'vehicle.gateway == "hcp3"'
    install: {package: bms-fw-hcp3, version: 2.3.1, ecu: BMS}
  - when: 'vehicle.model == "ID.4"'
    install: {package: bms-fw, version: 2.3.1, ecu: BMS}
  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}
rollout:
  waves: [1, 100]
  wave_soak: 0s
  max_per_minute: 60000000
"#;
    let c = manager
        .create_campaign(spec, "erin")
        .await
        .unwrap()
        .unwrap();
    let approver = Actor {
        name: "alex".into(),
        role: "approver".into(),
    };
    manager
        .transition(&c.id, Transition::Approve, &approver, "")
        .await
        .unwrap();
    let background = manager.spawn_background(None, stop.clone());
    let launched = Instant::now();
    manager
        .transition(&c.id, Transition::Launch, &approver, "")
        .await
        .unwrap();
    let expected = n * 2 / 5;
    let first_wave = expected / 100;
    let mut first_wave_at = None;
    let all_at;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let counts = manager.store().state_counts(&c.id).await.unwrap();
        let staged = counts.get(&ActionState::Staged).copied().unwrap_or(0);
        if first_wave_at.is_none() && staged as f64 >= first_wave as f64 * 0.9 {
            first_wave_at = Some(launched.elapsed());
        }
        if staged >= expected {
            all_at = launched.elapsed();
            break;
        }
        if launched.elapsed() > Duration::from_secs(600) {
            panic!("launch did not stage {expected} actions in 10 minutes: {counts:?}");
        }
    }
    println!(
        "{{\"bench\":\"launch\",\"vehicles\":{n},\"matched\":{expected},\"first_wave_s\":{:.2},\"all_staged_s\":{:.2}}}",
        first_wave_at.unwrap().as_secs_f64(),
        all_at.as_secs_f64()
    );

    // Status reports: every matched vehicle reports success, from 2048
    // concurrent senders, as adapters would.
    let rows = manager
        .store()
        .campaign_rows(&c.id, "", u32::MAX)
        .await
        .unwrap();
    let reports: Vec<(String, String)> = rows.into_iter().map(|r| (r.vin, r.id)).collect();
    let total = reports.len();
    let queue = Arc::new(std::sync::Mutex::new(reports));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..2048 {
        let queue = queue.clone();
        let manager = manager.clone();
        senders.push(tokio::spawn(async move {
            let mut applied = 0u64;
            loop {
                let Some((vin, action_id)) = queue.lock().unwrap().pop() else {
                    break;
                };
                let r = manager
                    .report_status(StatusReport {
                        vin,
                        action_id,
                        state: ActionState::Succeeded,
                        progress: 100,
                        message: String::new(),
                        seq: 1,
                        protocol: "bench".into(),
                    })
                    .await
                    .expect("report");
                applied += r.applied as u64;
            }
            applied
        }));
    }
    let mut applied = 0;
    for s in senders {
        applied += s.await.unwrap();
    }
    let elapsed = started.elapsed();
    let counted = Instant::now();
    let counts = manager.store().state_counts(&c.id).await.unwrap();
    let succeeded = counts.get(&ActionState::Succeeded).copied().unwrap_or(0);
    println!(
        "{{\"bench\":\"status_reports\",\"reports\":{total},\"applied\":{applied},\"counted_succeeded\":{succeeded},\"seconds\":{:.2},\"per_second\":{:.0},\"counter_query_ms\":{}}}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        counted.elapsed().as_millis()
    );
    assert_eq!(applied as usize, total, "every report applied");
    assert_eq!(succeeded as usize, total, "every report counted");
    let _ = stop_tx.send(true);
    for b in background {
        let _ = b.await;
    }
    let _ = relay_task.await;
}
