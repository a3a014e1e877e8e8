//! A launch that nobody disturbs leaves reconcile nothing to repair: the
//! launch's own events (the targeting scan in the background, releases by
//! the rollout loop, the outbox relay, the staging workers) bring every
//! vehicle's document current. Issue 19, item 4: after a launch over a
//! million vehicles on SQLite the first reconcile repaired 88 documents.
//! That reconcile fell due during the launch (every 5 minutes by default)
//! and counted, and wrote, documents whose events were still on their way
//! to the worker: so here reconciles run back to back during the launch
//! too, and once more after it settled, and none may repair anything.
//!
//! Everything runs as `ota serve` runs it, nothing is driven by hand: on
//! SQLite the in-process bus and store with one relay and one worker; on
//! PostgreSQL the Redis bus and store with two relays and two staging
//! workers, as two processes run them.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_bus::memory::MemoryBus;
use ota_bus::outbox::Relay;
use ota_bus::redis::RedisBus;
use ota_bus::{topics, SharedBus};
use ota_campaign_manager::model::{ActionState, Transition};
use ota_proto::v1 as pb;
use ota_staging::{
    campaign_manager_source, MemoryStore, RunConfig, SharedStore, Stager, StagingTasks,
    WorkerConfig,
};
use ota_tests::platform::{approver, engineer, outbox_backlog, Services};
use tokio::sync::watch;

/// Vehicles launched to: large enough that the launch takes many rollout
/// ticks, relay passes and staging batches, small enough for the test
/// command on two cores. `bench/launch_reconcile.sh` runs the same test on
/// a larger fleet through `OTA_LAUNCH_RECONCILE_FLEET`.
fn fleet() -> u32 {
    std::env::var("OTA_LAUNCH_RECONCILE_FLEET")
        .map(|n| n.parse().expect("OTA_LAUNCH_RECONCILE_FLEET is a number"))
        .unwrap_or(20_000)
}

/// From the launch until every vehicle's document is staged.
fn settle_within(fleet: u32) -> Duration {
    Duration::from_secs(90 + u64::from(fleet) / 1000)
}

/// Redis database of this test alone (emptied first): the campaign
/// manager's events go to the fixed `staging` stream, which other tests'
/// workers must not take. `services/ota/tests` use 11 to 14.
const REDIS_DB: u8 = 15;

/// Five percent first, then the rest: the launch takes the early pass for
/// the open wave, the scan with its writer queue for the later one, and the
/// rollout opens the second wave once targeting finished. The rate spreads
/// the fleet over about ten seconds of rollout ticks, so the reconciles
/// meet documents on their way, whatever the machine.
fn spec(fleet: u32) -> String {
    format!(
        r#"name: large-launch
target: 'vehicle.region == "EU"'
rules:
  - install: {{package: bms-fw, version: 2.3.1, ecu: BMS}}
rollout:
  waves: [5, 100]
  wave_soak: 0s
  advance: auto
  max_per_minute: {}
"#,
        fleet * 6
    )
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    /// SQLite, the in-process bus and store: `ota serve` on defaults.
    Sqlite,
    /// PostgreSQL, the Redis bus and store, two processes' relays and
    /// workers.
    PostgresRedis,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_clean_launch_leaves_reconcile_nothing_to_repair() {
    a_clean_launch_leaves_reconcile_nothing_to_repair(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_redis_a_clean_launch_leaves_reconcile_nothing_to_repair() {
    a_clean_launch_leaves_reconcile_nothing_to_repair(Backend::PostgresRedis).await;
}

async fn a_clean_launch_leaves_reconcile_nothing_to_repair(backend: Backend) {
    let started = Instant::now();
    let fleet = fleet();
    let (db, bus, store, processes): (_, SharedBus, SharedStore, usize) = match backend {
        Backend::Sqlite => (
            ota_tests::db::sqlite().await,
            Arc::new(MemoryBus::new()),
            Arc::new(MemoryStore::new()),
            1,
        ),
        Backend::PostgresRedis => {
            let url = redis_db(REDIS_DB).await;
            let bus = RedisBus::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("Redis is required for this test: {e}"));
            let store = common::redis_store_at(&url, "ota").await;
            (
                ota_tests::db::postgres().await,
                Arc::new(bus),
                Arc::new(store),
                2,
            )
        }
    };
    let services = Services::with_bus(db.db(), bus.clone());
    services.import_fleet(fleet).await;
    services
        .manager
        .create_package(
            pb::Package {
                name: "bms-fw".into(),
                version: "2.3.1".into(),
                ecu: "BMS".into(),
                artifacts: vec![pb::Artifact {
                    url: "https://cdn.example/bms-fw-2.3.1.bin".into(),
                    sha256: "a".repeat(64),
                    size: 1024,
                }],
                ..Default::default()
            },
            "erin",
        )
        .await
        .expect("package registered");
    let imported = started.elapsed();

    // The background of every process: the rollout loop (one leader), the
    // outbox relays, staging with its start-up rebuild and its worker.
    let Services {
        manager,
        campaign_peer,
        relay,
        ..
    } = services;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = manager.spawn_background(Some(bus.clone()), stopped.clone());
    tasks.push(tokio::spawn(relay.run(stopped.clone())));
    for _ in 1..processes {
        let relay = Relay::new(db.db().clone(), bus.clone());
        tasks.push(tokio::spawn(relay.run(stopped.clone())));
    }
    let stagers: Vec<Stager> = (0..processes)
        .map(|_| {
            Stager::new(
                store.clone(),
                Arc::new(campaign_manager_source(campaign_peer.clone())),
                300,
            )
        })
        .collect();
    let staging: Vec<StagingTasks> = stagers
        .iter()
        .enumerate()
        .map(|(i, stager)| {
            StagingTasks::spawn(
                stager.clone(),
                bus.clone(),
                RunConfig {
                    worker: WorkerConfig {
                        consumer: format!("staging-{i}"),
                        ..Default::default()
                    },
                    // Only the reconcile this test runs counts.
                    reconcile_every: Duration::from_secs(24 * 3600),
                },
            )
        })
        .collect();

    let c = manager
        .create_campaign(&spec(fleet), "erin")
        .await
        .expect("campaign stored")
        .unwrap_or_else(|problems| panic!("campaign file rejected: {problems:?}"));
    manager
        .transition(&c.id, Transition::Approve, &approver(), "ok")
        .await
        .expect("approved");
    let launched = Instant::now();
    manager
        .transition(&c.id, Transition::Launch, &engineer(), "go")
        .await
        .expect("launched");

    // Reconciles back to back while the launch goes on, taking turns
    // between the processes, as the periodic one runs when it falls due.
    let (end_passes, passes_ended) = watch::channel(false);
    let during = {
        let stagers = stagers.clone();
        tokio::spawn(async move {
            let mut passes = Vec::new();
            for turn in 0.. {
                if *passes_ended.borrow() {
                    break;
                }
                let stager = &stagers[turn % stagers.len()];
                // `None`: the other process's pass holds the lock.
                if let Some(r) = stager.reconcile().await.expect("reconcile ran") {
                    passes.push((launched.elapsed(), r.repaired));
                }
            }
            passes
        })
    };

    // Settled: targeting finished, the last wave is open, every vehicle's
    // action was released, the outbox is relayed and the staging group has
    // acknowledged every event (a worker acknowledges after writing). Read
    // in this order, each look covers what the one before saw.
    let mut last = String::new();
    loop {
        let campaign = manager.campaign(&c.id).await.expect("campaign read");
        let counts: HashMap<ActionState, u64> = manager
            .store()
            .state_counts(&c.id)
            .await
            .expect("counts read");
        let backlog = outbox_backlog(db.db()).await;
        let depth = bus
            .depth(topics::STAGING, ota_staging::worker::GROUP)
            .await
            .expect("queue depth read");
        let staged = counts.get(&ActionState::Staged).copied().unwrap_or(0);
        if campaign.targeted_at.is_some()
            && campaign.current_wave == 1
            && staged == u64::from(fleet)
            && backlog == 0
            && depth == 0
        {
            break;
        }
        last = format!(
            "targeted: {}, wave {}, actions {counts:?}, outbox {backlog}, staging queue {depth}",
            campaign.targeted_at.is_some(),
            campaign.current_wave
        );
        assert!(
            launched.elapsed() < settle_within(fleet),
            "{backend:?}: the launch did not settle within {:?}: {last}",
            settle_within(fleet)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = launched.elapsed();
    let _ = end_passes.send(true);
    let passes = during.await.expect("the reconciles during the launch ran");

    let record = stagers[0]
        .reconcile()
        .await
        .expect("reconcile ran")
        .expect("no other reconcile runs now");
    let staged_docs = store.len().await.expect("staged count read");
    let repairs: Vec<_> = passes.iter().filter(|(_, n)| *n > 0).collect();
    eprintln!(
        "{backend:?}: {fleet} vehicles imported in {imported:?}, launch settled in {settled:?} \
         (last look before: {last}); {} reconciles during it, those that repaired (time, \
         documents): {repairs:?}; after it: {} repaired",
        passes.len(),
        record.repaired
    );
    assert!(
        passes.len() >= 2,
        "{backend:?}: only {} reconciles ran during the launch",
        passes.len()
    );
    let repaired_during: u64 = passes.iter().map(|(_, n)| n).sum();
    assert_eq!(
        (repaired_during, record.repaired),
        (0, 0),
        "{backend:?}: reconciles repaired documents of a clean launch of {fleet} vehicles, \
         during it (time, documents): {repairs:?}"
    );
    assert_eq!(
        staged_docs,
        u64::from(fleet),
        "{backend:?}: staged documents"
    );

    let _ = stop.send(true);
    for s in staging {
        s.shutdown().await;
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Redis database `index`, emptied, as a URL; fails loudly without Redis.
async fn redis_db(index: u8) -> String {
    let url = format!("{}/{index}", common::redis_url().trim_end_matches('/'));
    let client = redis::Client::open(url.as_str()).expect("valid OTA_TEST_REDIS_URL");
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out connecting to Redis at {url}"))
    .unwrap_or_else(|e| {
        panic!("Redis is required for this test but {url} is not reachable: {e} (run scripts/test.sh, which starts it)")
    });
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut conn)
        .await
        .expect("FLUSHDB");
    url
}
