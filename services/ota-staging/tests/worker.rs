//! The staging worker over the real buses (in-process and Redis Streams) and
//! stores, and reconcile over both stores. The campaign manager's open
//! actions are an in-memory fixture: they are the input, not the subject.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{action, vin, FixtureSource};
use ota_bus::memory::MemoryBus;
use ota_bus::redis::RedisBus;
use ota_bus::{SharedBus, StagingEvent};
use ota_proto::v1 as pb;
use ota_staging::document::build;
use ota_staging::{MemoryStore, SharedStore, Stager, StoredDoc, Worker, WorkerConfig, GROUP};
use tokio::sync::watch;

#[derive(Clone, Copy)]
enum Kind {
    Memory,
    Redis,
}

/// A bus, a store and a topic of one test's own.
struct Env {
    bus: SharedBus,
    store: SharedStore,
    topic: String,
    namespace: Option<String>,
}

impl Env {
    async fn new(kind: Kind, claim_timeout: Duration) -> Self {
        let topic = common::unique("test-staging-topic");
        match kind {
            Kind::Memory => Self {
                bus: Arc::new(MemoryBus::new().with_claim_timeout(claim_timeout)),
                store: Arc::new(MemoryStore::new()),
                topic,
                namespace: None,
            },
            Kind::Redis => {
                let ns = common::unique("test-staging");
                let url = common::redis_url();
                let bus = RedisBus::connect(&url).await.unwrap_or_else(|e| {
                    panic!("Redis is required for this test but {url} is not reachable: {e}")
                });
                Self {
                    bus: Arc::new(bus.with_claim_timeout(claim_timeout)),
                    store: Arc::new(common::redis_store(&ns).await),
                    topic,
                    namespace: Some(ns),
                }
            }
        }
    }

    fn stager(&self, source: Arc<FixtureSource>) -> Stager {
        Stager::new(self.store.clone(), source, 300)
    }

    fn worker(&self, stager: Stager, consumer: &str, max_batch: usize) -> Arc<Worker> {
        Arc::new(Worker::new(
            stager,
            self.bus.clone(),
            WorkerConfig {
                topic: self.topic.clone(),
                consumer: consumer.to_owned(),
                max_batch,
                wait: Duration::from_millis(100),
                max_backoff: Duration::from_millis(200),
                ..Default::default()
            },
        ))
    }

    async fn publish(&self, events: &[StagingEvent]) {
        let payloads: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        self.bus.publish(&self.topic, &payloads).await.unwrap();
    }

    async fn cleanup(self) {
        if let Some(ns) = &self.namespace {
            common::cleanup(ns, Some(&self.topic)).await;
        }
    }
}

fn vins_event(vins: &[String]) -> StagingEvent {
    StagingEvent::Vins {
        vins: vins.to_vec(),
        at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

fn campaign_event(id: &str) -> StagingEvent {
    StagingEvent::Campaign {
        campaign_id: id.into(),
        at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// Runs `worker` until the returned sender is dropped or set.
fn spawn(worker: Arc<Worker>) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move { worker.run(rx).await });
    (tx, task)
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn expected(v: &str, actions: &[pb::OpenAction]) -> Option<StoredDoc> {
    build(v, actions, 300, "").unwrap()
}

async fn events_lead_to_correct_documents(kind: Kind) {
    let env = Env::new(kind, Duration::from_secs(30)).await;
    let source = Arc::new(FixtureSource::default());
    let v1_actions = vec![
        action("a1", "c1", 1, "2.3.1"),
        action("a2", "c2", 5, "1.0.0"),
    ];
    source.set(&vin(1), v1_actions.clone());
    let stager = env.stager(source.clone());
    let worker = env.worker(stager.clone(), "w1", 500);
    let (stop, task) = spawn(worker.clone());

    env.publish(&[vins_event(&[vin(1)])]).await;
    let store = env.store.clone();
    eventually("vin 1's document", Duration::from_secs(10), || async {
        store.get(&vin(1)).await.unwrap() == expected(&vin(1), &v1_actions)
    })
    .await;
    let doc = store
        .get(&vin(1))
        .await
        .unwrap()
        .unwrap()
        .document()
        .unwrap();
    let order: Vec<_> = doc.actions.iter().map(|a| a.action_id.as_str()).collect();
    assert_eq!(order, ["a2", "a1"], "highest priority first");

    // A campaign event restages every vehicle of the campaign.
    let v2_actions = vec![action("a3", "c1", 1, "2.3.1")];
    source.set(&vin(2), v2_actions.clone());
    env.publish(&[campaign_event("c1")]).await;
    eventually("vin 2's document", Duration::from_secs(10), || async {
        store.get(&vin(2)).await.unwrap() == expected(&vin(2), &v2_actions)
    })
    .await;
    eventually("both events processed", Duration::from_secs(5), || async {
        worker.processed() == 2
    })
    .await;
    assert_eq!(stager.stats().events(), 2);
    assert_eq!(store.len().await.unwrap(), 2);
    let (p50, _) = stager.stats().lag_quantiles();
    assert!((0.0..10.0).contains(&p50), "{p50}");

    stop.send(true).unwrap();
    task.await.unwrap();
    env.cleanup().await;
}

async fn a_vehicle_whose_actions_vanish_loses_its_document(kind: Kind) {
    let env = Env::new(kind, Duration::from_secs(30)).await;
    let source = Arc::new(FixtureSource::default());
    source.set(&vin(1), vec![action("a1", "c1", 1, "2.3.1")]);
    source.set(&vin(2), vec![action("a2", "c1", 1, "2.3.1")]);
    let (stop, task) = spawn(env.worker(env.stager(source.clone()), "w1", 500));

    env.publish(&[vins_event(&[vin(1), vin(2)])]).await;
    let store = env.store.clone();
    eventually("two documents", Duration::from_secs(10), || async {
        store.len().await.unwrap() == 2
    })
    .await;

    source.clear(&vin(1));
    env.publish(&[vins_event(&[vin(1)])]).await;
    eventually(
        "vin 1's document deleted",
        Duration::from_secs(10),
        || async { store.get(&vin(1)).await.unwrap().is_none() },
    )
    .await;
    // Redis counts what its DELs removed in a second round trip: the count
    // follows the delete, it does not come with it.
    eventually("one document counted", Duration::from_secs(10), || async {
        store.len().await.unwrap() == 1
    })
    .await;
    assert!(store.get(&vin(2)).await.unwrap().is_some());

    stop.send(true).unwrap();
    task.await.unwrap();
    env.cleanup().await;
}

async fn two_workers_share_a_group_without_double_processing(kind: Kind) {
    let env = Env::new(kind, Duration::from_secs(60)).await;
    // A little latency per campaign-manager call lets the workers interleave.
    let source = Arc::new(FixtureSource::with_delay(Duration::from_millis(5)));
    let vins: Vec<String> = (0..200).map(vin).collect();
    for (i, v) in vins.iter().enumerate() {
        source.set(v, vec![action(&format!("a{i}"), "c1", 1, "2.3.1")]);
    }
    let stager = env.stager(source.clone());
    let w1 = env.worker(stager.clone(), "w1", 10);
    let w2 = env.worker(stager.clone(), "w2", 10);
    let (stop1, t1) = spawn(w1.clone());
    let (stop2, t2) = spawn(w2.clone());

    // One VIN per message: a message processed twice asks for its VIN twice.
    let events: Vec<_> = vins
        .iter()
        .map(|v| vins_event(std::slice::from_ref(v)))
        .collect();
    env.publish(&events).await;
    eventually("all 200 messages", Duration::from_secs(30), || async {
        w1.processed() + w2.processed() == 200
    })
    .await;
    assert_eq!(env.store.len().await.unwrap(), 200);
    for v in &vins {
        assert_eq!(source.calls(v), 1, "{v} was staged more than once");
    }
    assert!(
        w1.processed() > 0 && w2.processed() > 0,
        "both workers took part: {} and {}",
        w1.processed(),
        w2.processed()
    );
    assert_eq!(env.bus.depth(&env.topic, GROUP).await.unwrap(), 0);

    stop1.send(true).unwrap();
    stop2.send(true).unwrap();
    t1.await.unwrap();
    t2.await.unwrap();
    env.cleanup().await;
}

async fn a_batch_left_unacknowledged_is_finished_by_another_worker(kind: Kind) {
    let claim = Duration::from_millis(1500);
    let env = Env::new(kind, claim).await;
    let source = Arc::new(FixtureSource::default());
    source.set(&vin(1), vec![action("a1", "c1", 1, "2.3.1")]);

    // The first worker takes the batch while the campaign manager is down,
    // fails, and is gone without acknowledging.
    let broken = Arc::new(FixtureSource::default());
    broken.set_failing(true);
    let doomed = env.worker(env.stager(broken), "doomed", 500);
    let mut sub = env
        .bus
        .subscribe(&env.topic, GROUP, "doomed")
        .await
        .unwrap();
    env.publish(&[vins_event(&[vin(1)])]).await;
    let taken_at = Instant::now();
    assert!(doomed.process(sub.as_mut()).await.is_err());
    drop(sub);
    drop(doomed);

    let survivor = env.worker(env.stager(source.clone()), "survivor", 500);
    let (stop, task) = spawn(survivor.clone());
    tokio::time::sleep(claim / 3).await;
    assert_eq!(survivor.processed(), 0, "taken before the claim timeout");
    let store = env.store.clone();
    eventually(
        "the survivor's document",
        Duration::from_secs(15),
        || async { store.get(&vin(1)).await.unwrap().is_some() },
    )
    .await;
    assert!(taken_at.elapsed() >= claim, "{:?}", taken_at.elapsed());
    assert_eq!(survivor.processed(), 1);

    stop.send(true).unwrap();
    task.await.unwrap();
    env.cleanup().await;
}

async fn a_campaign_that_is_gone_does_not_block_the_queue(kind: Kind) {
    let env = Env::new(kind, Duration::from_secs(30)).await;
    let source = Arc::new(FixtureSource::default());
    source.set(&vin(1), vec![action("a1", "c1", 1, "2.3.1")]);
    let worker = env.worker(env.stager(source.clone()), "w1", 500);
    let (stop, task) = spawn(worker.clone());
    env.publish(&[campaign_event("no-such-campaign"), vins_event(&[vin(1)])])
        .await;
    let store = env.store.clone();
    eventually("vin 1's document", Duration::from_secs(10), || async {
        store.get(&vin(1)).await.unwrap().is_some()
    })
    .await;
    eventually("both acknowledged", Duration::from_secs(5), || async {
        worker.processed() == 2
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    env.cleanup().await;
}

async fn a_large_campaign_is_fanned_out_to_the_group(kind: Kind) {
    let env = Env::new(kind, Duration::from_secs(30)).await;
    let source = Arc::new(FixtureSource::default());
    for n in 0..25 {
        source.set(&vin(n), vec![action(&format!("a{n}"), "c1", 1, "2.3.1")]);
    }
    let stager = env.stager(source.clone());
    let worker = Arc::new(Worker::new(
        stager,
        env.bus.clone(),
        WorkerConfig {
            topic: env.topic.clone(),
            consumer: "w1".into(),
            wait: Duration::from_millis(100),
            fan_out_above: 10,
            ..Default::default()
        },
    ));
    let (stop, task) = spawn(worker.clone());
    env.publish(&[campaign_event("c1")]).await;
    let store = env.store.clone();
    eventually("25 documents", Duration::from_secs(10), || async {
        store.len().await.unwrap() == 25
    })
    .await;
    // The campaign event, then the one event of VINs it became.
    eventually("two messages", Duration::from_secs(5), || async {
        worker.processed() == 2
    })
    .await;
    assert_eq!(source.calls(&vin(0)), 1);
    stop.send(true).unwrap();
    task.await.unwrap();
    env.cleanup().await;
}

/// More vehicles than one chunk: the stager works on two chunks at once,
/// and the store's count (a counter in Redis, fed by the stamps) follows
/// every creation and deletion exactly when nobody else writes.
async fn staging_several_chunks_writes_and_counts_every_vehicle(kind: Kind) {
    let env = Env::new(kind, Duration::from_secs(30)).await;
    let source = Arc::new(FixtureSource::default());
    let vins: Vec<String> = (0..2500).map(vin).collect();
    let actions = |n: u32, version: &str| vec![action(&format!("a{n}"), "c1", 1, version)];
    for n in (0..2500).step_by(2) {
        source.set(&vin(n), actions(n, "2.3.1"));
    }
    let stager = env.stager(source.clone());
    let outcome = stager.stage_vins(&vins).await.unwrap();
    assert_eq!((outcome.recomputed, outcome.changed), (2500, 1250));
    let store = env.store.clone();
    assert_eq!(store.len().await.unwrap(), 1250);

    // A quarter loses its actions, another quarter gets a new version.
    for n in (0..2500).step_by(4) {
        source.clear(&vin(n));
        source.set(&vin(n + 2), actions(n + 2, "2.4.0"));
    }
    let outcome = stager.stage_vins(&vins).await.unwrap();
    assert_eq!((outcome.recomputed, outcome.changed), (2500, 1250));
    assert_eq!(store.len().await.unwrap(), 625);
    for n in [0, 1, 2, 1248, 2498, 2499] {
        let want = (n % 4 == 2).then(|| actions(n, "2.4.0"));
        assert_eq!(
            store.get(&vin(n)).await.unwrap(),
            want.and_then(|a| expected(&vin(n), &a)),
            "{}",
            vin(n)
        );
    }
    let outcome = stager.stage_vins(&vins).await.unwrap();
    assert_eq!(outcome.changed, 0, "nothing left to change");

    source.set_failing(true);
    assert!(stager.stage_vins(&vins).await.is_err());
    assert_eq!(store.len().await.unwrap(), 625);
    env.cleanup().await;
}

async fn reconcile_repairs_what_differs_and_reports_the_count(kind: Kind) {
    let env = Env::new(kind, Duration::from_secs(30)).await;
    let source = Arc::new(FixtureSource::default());
    let actions = |n: u32| vec![action(&format!("a{n}"), "c1", 1, "2.4.0")];
    for n in 1..=5 {
        source.set(&vin(n), actions(n));
    }
    let stager = env.stager(source.clone());
    stager.full_rebuild().await.unwrap();
    let store = env.store.clone();
    assert_eq!(store.len().await.unwrap(), 5);

    // Outdated, deleted, and extra (a vehicle without open actions).
    let outdated = build(&vin(1), &[action("a1", "c1", 1, "2.3.1")], 300, "")
        .unwrap()
        .unwrap();
    store
        .put_many(&[(vin(1), outdated)], &[true])
        .await
        .unwrap();
    let extra = build(&vin(9), &[action("a9", "c1", 1, "2.3.1")], 300, "")
        .unwrap()
        .unwrap();
    store.put_many(&[(vin(9), extra)], &[false]).await.unwrap();
    let mut damaged = 3;
    if let (Kind::Redis, Some(ns)) = (kind, &env.namespace) {
        // By hand, past the store: a deleted key and a damaged value.
        let mut con = common::raw_redis().await;
        let _: i64 = ::redis::cmd("DEL")
            .arg(format!("{ns}:staged:{}", vin(2)))
            .query_async(&mut con)
            .await
            .unwrap();
        let _: () = ::redis::cmd("SET")
            .arg(format!("{ns}:staged:{}", vin(3)))
            .arg("not a document")
            .query_async(&mut con)
            .await
            .unwrap();
        damaged += 1;
    } else {
        store.delete_many(&[vin(2)]).await.unwrap();
    }

    let record = stager.reconcile().await.unwrap().expect("lock was free");
    assert_eq!(record.repaired, damaged);
    for n in 1..=5 {
        assert_eq!(
            store.get(&vin(n)).await.unwrap(),
            expected(&vin(n), &actions(n)),
            "{}",
            vin(n)
        );
    }
    assert_eq!(store.get(&vin(9)).await.unwrap(), None);
    assert_eq!(store.len().await.unwrap(), 5, "count corrected");
    assert_eq!(store.last_reconcile().await.unwrap(), Some(record));

    let again = stager.reconcile().await.unwrap().unwrap();
    assert_eq!(again.repaired, 0);

    // Another process reconciling: this one stands aside.
    assert!(store
        .try_lock("reconcile", "someone-else", Duration::from_secs(30))
        .await
        .unwrap());
    assert_eq!(stager.reconcile().await.unwrap(), None);
    assert_eq!(
        stager
            .reconcile_if_due(Duration::from_secs(3600))
            .await
            .unwrap(),
        None,
        "not due"
    );
    env.cleanup().await;
}

/// A process with a new public URL finds documents staged under the old
/// one and restages them at once, without waiting for the interval: their
/// hosted artifact links would not work any more.
async fn a_new_public_url_restages_at_once(kind: Kind) {
    let env = Env::new(kind, Duration::from_secs(30)).await;
    let source = Arc::new(FixtureSource::default());
    let mut a = action("a1", "c1", 1, "2.4.0");
    a.package.as_mut().unwrap().artifacts[0].url = format!("/artifacts/{}/fw.bin", "ab".repeat(32));
    source.set(&vin(1), vec![a.clone()]);
    let old = env
        .stager(source.clone())
        .with_public_url("https://old.example");
    old.full_rebuild().await.unwrap();
    old.reconcile().await.unwrap().expect("lock was free");
    let url = |doc: Option<StoredDoc>| {
        doc.unwrap().document().unwrap().actions[0]
            .package
            .artifacts[0]
            .url
            .clone()
    };
    assert!(
        url(env.store.get(&vin(1)).await.unwrap()).starts_with("https://old.example/artifacts/")
    );
    assert_eq!(
        old.reconcile_if_due(Duration::from_secs(3600))
            .await
            .unwrap(),
        None,
        "same URL, not due"
    );

    let new = env
        .stager(source.clone())
        .with_public_url("https://new.example/");
    let record = new
        .reconcile_if_due(Duration::from_secs(3600))
        .await
        .unwrap()
        .expect("a changed public URL makes the reconcile due");
    assert_eq!(record.repaired, 1);
    assert_eq!(record.public_url, "https://new.example");
    assert!(
        url(env.store.get(&vin(1)).await.unwrap()).starts_with("https://new.example/artifacts/")
    );
    env.cleanup().await;
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Redis).await;
                }
            )*
        }
    };
}

both!(
    events_lead_to_correct_documents,
    a_vehicle_whose_actions_vanish_loses_its_document,
    two_workers_share_a_group_without_double_processing,
    a_batch_left_unacknowledged_is_finished_by_another_worker,
    a_campaign_that_is_gone_does_not_block_the_queue,
    a_large_campaign_is_fanned_out_to_the_group,
    staging_several_chunks_writes_and_counts_every_vehicle,
    reconcile_repairs_what_differs_and_reports_the_count,
    a_new_public_url_restages_at_once,
);

/// `ota_staging_lag_seconds` runs from the change of a vehicle's actions
/// (the event's `at_ms`) to its staged document: an event written 3 s ago
/// is recorded as about 3 s, once its document is there. Current-thread,
/// so the test's metrics recorder sees the worker's.
#[tokio::test]
async fn the_lag_runs_from_the_change_to_the_staged_document() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let env = Env::new(Kind::Memory, Duration::from_secs(30)).await;
    let source = Arc::new(FixtureSource::default());
    source.set(&vin(1), vec![action("a1", "c1", 1, "2.3.1")]);
    let worker = env.worker(env.stager(source), "w1", 500);
    let mut sub = env.bus.subscribe(&env.topic, GROUP, "w1").await.unwrap();
    env.publish(&[StagingEvent::Vins {
        vins: vec![vin(1)],
        at_ms: chrono::Utc::now().timestamp_millis() - 3000,
    }])
    .await;
    assert_eq!(worker.process(sub.as_mut()).await.unwrap(), 1);
    assert!(env.store.get(&vin(1)).await.unwrap().is_some());

    let text = metrics.render();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    };
    assert_eq!(value("ota_staging_lag_seconds_count"), 1.0);
    let lag = value("ota_staging_lag_seconds_sum");
    assert!((3.0..10.0).contains(&lag), "{lag}");
}
