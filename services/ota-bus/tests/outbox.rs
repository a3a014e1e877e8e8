//! The outbox and its relay against real SQLite and PostgreSQL databases (one
//! fresh database per test; PostgreSQL at `OTA_TEST_DATABASE_URL`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ota_bus::outbox::{self, Relay};
use ota_bus::{Bus, BusError, MemoryBus, SharedBus, Subscription, VehicleEvent};
use ota_db::Db;
use ota_tests::db::{postgres, sqlite, TestDb};

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

async fn enqueue_committed(db: &Db, topic: &str, payloads: &[String]) {
    ota_db::with_pool!(db, pool => {
        let mut tx = pool.begin().await.unwrap();
        outbox::enqueue(&mut *tx, topic, payloads).await.unwrap();
        tx.commit().await.unwrap();
    })
}

async fn outbox_rows(db: &Db) -> i64 {
    ota_db::with_pool!(db, pool => {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(pool)
            .await
            .unwrap()
    })
}

/// Every message waiting on `topic` for a fresh group, acknowledged.
async fn published(bus: &MemoryBus, topic: &str) -> Vec<String> {
    let mut sub = bus.subscribe(topic, "test", "c").await.unwrap();
    let mut out = Vec::new();
    loop {
        let batch = sub.next(10_000, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
        sub.ack(&ids).await.unwrap();
        out.extend(batch.into_iter().map(|m| m.payload));
    }
}

/// A fault injector: fails the first `failures` publishes, then passes them
/// on.
struct FlakyBus {
    inner: MemoryBus,
    failures: AtomicUsize,
    delay: Duration,
}

impl FlakyBus {
    fn new(inner: MemoryBus, failures: usize) -> Self {
        Self {
            inner,
            failures: AtomicUsize::new(failures),
            delay: Duration::ZERO,
        }
    }
}

#[async_trait::async_trait]
impl Bus for FlakyBus {
    fn name(&self) -> &'static str {
        "flaky"
    }

    async fn publish(&self, topic: &str, payloads: &[String]) -> Result<(), BusError> {
        tokio::time::sleep(self.delay).await;
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(BusError::Unavailable("injected failure".into()));
        }
        self.inner.publish(topic, payloads).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe(topic, group, consumer).await
    }

    async fn depth(&self, topic: &str, group: &str) -> Result<u64, BusError> {
        self.inner.depth(topic, group).await
    }
}

macro_rules! both_databases {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::sqlite().await).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::postgres().await).await;
                }
            )*
        }
    };
}

both_databases!(
    rolled_back_enqueue_publishes_nothing,
    committed_rows_are_relayed_in_order_and_deleted,
    large_enqueues_relay_in_batches,
    a_failing_bus_keeps_the_rows,
    the_backlog_gauge_grows_while_the_bus_fails,
    run_relays_when_woken_and_stops_on_shutdown,
    run_backs_off_and_loses_nothing_while_the_bus_fails,
);

async fn rolled_back_enqueue_publishes_nothing(t: TestDb) {
    let db = t.db();
    ota_db::with_pool!(db, pool => {
        let mut tx = pool.begin().await.unwrap();
        outbox::enqueue(&mut *tx, "t", &numbered("p", 0..3)).await.unwrap();
        tx.rollback().await.unwrap();
    });
    let bus = MemoryBus::new();
    let relay = Relay::new(db.clone(), Arc::new(bus.clone()));
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    assert!(published(&bus, "t").await.is_empty());
}

async fn committed_rows_are_relayed_in_order_and_deleted(t: TestDb) {
    let db = t.db();
    let event = outbox::payload(&VehicleEvent::Changed {
        vins: vec!["WVWZZZE1ZMP000001".into()],
        at_ms: 1,
    });
    assert_eq!(
        event,
        r#"{"kind":"changed","vins":["WVWZZZE1ZMP000001"],"at_ms":1}"#
    );
    // Interleaved topics, and the backend-specific functions next to the
    // generic one.
    ota_db::with_pool!(db, pool => {
        let mut tx = pool.begin().await.unwrap();
        outbox::enqueue(&mut *tx, "a", &numbered("a", 0..2)).await.unwrap();
        outbox::enqueue(&mut *tx, "b", &numbered("b", 0..2)).await.unwrap();
        outbox::enqueue(&mut *tx, "a", std::slice::from_ref(&event)).await.unwrap();
        outbox::enqueue(&mut *tx, "a", &[]).await.unwrap();
        tx.commit().await.unwrap();
    });
    // Outside a transaction too, through a pooled connection.
    ota_db::with_pool!(db, pool => {
        let mut conn = pool.acquire().await.unwrap();
        outbox::enqueue(&mut *conn, "b", &numbered("b", 2..4))
            .await
            .unwrap();
    });
    let created: (i64, i64) = ota_db::with_pool!(db, pool => {
        sqlx::query_as("SELECT MIN(created_at), MAX(created_at) FROM outbox")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    let now = chrono::Utc::now().timestamp_millis();
    assert!(created.0 > now - 60_000 && created.1 <= now, "{created:?}");

    let bus = MemoryBus::new();
    let relay = Relay::new(db.clone(), Arc::new(bus.clone()));
    assert_eq!(relay.relay_once().await.unwrap(), 7);
    assert_eq!(outbox_rows(db).await, 0);
    assert_eq!(relay.relay_once().await.unwrap(), 0);

    let mut want_a = numbered("a", 0..2);
    want_a.push(event);
    assert_eq!(published(&bus, "a").await, want_a);
    assert_eq!(published(&bus, "b").await, numbered("b", 0..4));
}

async fn large_enqueues_relay_in_batches(t: TestDb) {
    let db = t.db();
    // More rows than one SQLite statement can bind.
    let n = 40_000;
    enqueue_committed(db, "big", &numbered("p", 0..n)).await;
    assert_eq!(outbox_rows(db).await, n as i64);

    let bus = MemoryBus::new();
    let relay = Relay::new(db.clone(), Arc::new(bus.clone())).batch_size(15_000);
    let mut batches = Vec::new();
    loop {
        let moved = relay.relay_once().await.unwrap();
        if moved == 0 {
            break;
        }
        batches.push(moved);
    }
    assert_eq!(batches, [15_000, 15_000, 10_000]);
    assert_eq!(outbox_rows(db).await, 0);
    assert_eq!(published(&bus, "big").await, numbered("p", 0..n));
}

async fn a_failing_bus_keeps_the_rows(t: TestDb) {
    let db = t.db();
    enqueue_committed(db, "t", &numbered("p", 0..5)).await;
    let memory = MemoryBus::new();
    let flaky = Arc::new(FlakyBus::new(memory.clone(), 1));
    let relay = Relay::new(db.clone(), flaky.clone());

    let err = relay.relay_once().await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
    assert_eq!(outbox_rows(db).await, 5, "rows stay when publishing fails");
    assert!(published(&memory, "t").await.is_empty());

    assert_eq!(relay.relay_once().await.unwrap(), 5);
    assert_eq!(outbox_rows(db).await, 0);
    assert_eq!(published(&memory, "t").await, numbered("p", 0..5));
}

/// `ota_outbox_pending` says how many rows wait while the bus refuses them
/// (the outbox backlog alert), and drops to zero once they are relayed.
async fn the_backlog_gauge_grows_while_the_bus_fails(t: TestDb) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let db = t.db();
    enqueue_committed(db, "t", &numbered("p", 0..5)).await;
    let relay = Relay::new(db.clone(), Arc::new(FlakyBus::new(MemoryBus::new(), 1)));
    relay.relay_once().await.unwrap_err();
    assert!(metrics
        .render()
        .lines()
        .any(|l| l == "ota_outbox_pending 5"));
    assert_eq!(relay.relay_once().await.unwrap(), 5);
    assert!(metrics
        .render()
        .lines()
        .any(|l| l == "ota_outbox_pending 0"));
}

async fn run_relays_when_woken_and_stops_on_shutdown(t: TestDb) {
    let db = t.db();
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe("t", "g", "c").await.unwrap();
    // A poll interval nobody waits for: only the waker can be what moves
    // the rows.
    let relay =
        Relay::new(db.clone(), Arc::new(bus.clone())).poll_interval(Duration::from_secs(3600));
    let waker = relay.waker();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(relay.run(stopped));
    tokio::time::sleep(Duration::from_millis(100)).await;

    enqueue_committed(db, "t", &numbered("p", 0..3)).await;
    waker.notify_one();
    let got = sub.next(10, Duration::from_secs(2)).await.unwrap();
    let got: Vec<String> = got.into_iter().map(|m| m.payload).collect();
    assert_eq!(got, numbered("p", 0..3));

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("relay stops on shutdown")
        .unwrap();
}

async fn run_backs_off_and_loses_nothing_while_the_bus_fails(t: TestDb) {
    let db = t.db();
    enqueue_committed(db, "t", &numbered("p", 0..10)).await;
    let memory = MemoryBus::new();
    let mut sub = memory.subscribe("t", "g", "c").await.unwrap();
    let flaky: SharedBus = Arc::new(FlakyBus::new(memory.clone(), 3));
    let relay = Relay::new(db.clone(), flaky).poll_interval(Duration::from_millis(20));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(relay.run(stopped));

    // Three failures back off 100 + 200 + 400 ms before the fourth try.
    let got = sub.next(100, Duration::from_secs(5)).await.unwrap();
    let got: Vec<String> = got.into_iter().map(|m| m.payload).collect();
    assert_eq!(got, numbered("p", 0..10));
    // The relay deletes the rows just after the bus took them.
    let emptied = tokio::time::timeout(Duration::from_secs(2), async {
        while outbox_rows(db).await > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    emptied.await.expect("relayed rows are deleted");
    drop(stop);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("relay stops when the shutdown sender is gone")
        .unwrap();
    assert!(sub
        .next(100, Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_relays_on_postgres_publish_each_row_once() {
    let t = postgres().await;
    let n = 5_000;
    enqueue_committed(t.db(), "t", &numbered("p", 0..n)).await;

    let memory = MemoryBus::new();
    let mut counts = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        // Each relay has its own pool, as separate processes would.
        let db = Db::connect(&t.url, &ota_db::DbOptions::default())
            .await
            .unwrap();
        // Publishing takes a while, so the relays overlap.
        let bus = Arc::new(FlakyBus {
            delay: Duration::from_millis(5),
            ..FlakyBus::new(memory.clone(), 0)
        });
        let relay = Relay::new(db, bus).batch_size(100);
        tasks.push(tokio::spawn(async move {
            let mut moved = 0;
            loop {
                match relay.relay_once().await.unwrap() {
                    0 => return moved,
                    k => moved += k,
                }
            }
        }));
    }
    for task in tasks {
        counts.push(task.await.unwrap());
    }
    assert_eq!(counts.iter().sum::<usize>(), n, "{counts:?}");
    assert!(
        counts.iter().all(|&c| c > 0),
        "both relays worked: {counts:?}"
    );
    let got = published(&memory, "t").await;
    assert_eq!(got.len(), n, "each row published exactly once");
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), n);
    assert_eq!(outbox_rows(t.db()).await, 0);
}
