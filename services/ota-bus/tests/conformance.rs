//! One behaviour for both buses: every test here runs against the in-process
//! bus and against the real Redis at `OTA_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). A Redis that cannot be reached fails the Redis
//! tests; they never skip.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ota_bus::{Bus, BusError, MemoryBus, Message, RedisBus, SharedBus, Subscription};
use tokio::time::Instant;

/// Long enough that no test ever sees a redelivery it did not ask for.
const LONG_CLAIM: Duration = Duration::from_secs(30);
const SHORT_CLAIM: Duration = Duration::from_millis(500);

fn redis_url() -> String {
    std::env::var("OTA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn memory_bus(claim_timeout: Duration) -> SharedBus {
    Arc::new(MemoryBus::new().with_claim_timeout(claim_timeout))
}

async fn redis_bus(claim_timeout: Duration) -> SharedBus {
    let url = redis_url();
    let bus = RedisBus::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "Redis is required for this test but {url} is not reachable: {e} \
             (run scripts/test.sh, which starts it, or set OTA_TEST_REDIS_URL)"
        )
    });
    Arc::new(bus.with_claim_timeout(claim_timeout))
}

async fn no_cleanup(_topic: &str) {}

/// Deletes the test's stream so repeated runs do not pile up data.
async fn redis_cleanup(topic: &str) {
    let client = ::redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis for cleanup");
    ::redis::cmd("DEL")
        .arg(ota_bus::redis::stream_key(topic))
        .query_async::<()>(&mut conn)
        .await
        .expect("delete test stream");
}

fn unique_topic() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{{\"n\":{i}}}")).collect()
}

fn payloads(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(|m| m.payload.clone()).collect()
}

fn ids(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(|m| m.id.clone()).collect()
}

/// Reads until `want` messages arrived or a read came back empty, acking as
/// it goes.
async fn drain(sub: &mut dyn Subscription, want: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < want {
        let batch = sub.next(500, Duration::from_secs(2)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        sub.ack(&ids(&batch)).await.unwrap();
        got.extend(batch);
    }
    got
}

macro_rules! conformance {
    ($backend:ident, $make:path, $cleanup:path, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let topic = super::unique_topic();
                    super::$test($make, &topic).await;
                    $cleanup(&topic).await;
                }
            )*
        }
    };
}

macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {
        conformance!(memory, super::memory_bus, super::no_cleanup, [$($test),*]);
        conformance!(redis, super::redis_bus, super::redis_cleanup, [$($test),*]);
    };
}

both_backends!(
    delivers_in_publish_order_including_messages_from_before_the_group,
    consumers_of_one_group_split_the_messages,
    every_group_sees_every_message,
    unacked_message_goes_to_another_consumer_after_the_claim_timeout,
    acked_message_is_not_redelivered,
    depth_counts_waiting_and_taken_messages,
    many_messages_none_lost_none_duplicated,
    next_wakes_up_on_publish,
    next_returns_empty_after_waiting,
    a_waiting_consumer_does_not_stall_publishers,
);

async fn delivers_in_publish_order_including_messages_from_before_the_group<F, Fut>(
    make: F,
    topic: &str,
) where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = SharedBus>,
{
    let bus = make(LONG_CLAIM).await;
    bus.publish(topic, &numbered(0..5)).await.unwrap();
    let mut sub = bus.subscribe(topic, "g", "c1").await.unwrap();
    bus.publish(topic, &numbered(5..10)).await.unwrap();

    let got = drain(sub.as_mut(), 10).await;
    assert_eq!(payloads(&got), numbered(0..10));
    assert!(got.iter().all(|m| m.topic == topic && m.redeliveries == 0));
    let unique: HashSet<_> = got.iter().map(|m| &m.id).collect();
    assert_eq!(unique.len(), 10, "ids are unique");
}

async fn consumers_of_one_group_split_the_messages<F, Fut>(make: F, topic: &str)
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = SharedBus>,
{
    let bus = make(LONG_CLAIM).await;
    let mut a = bus.subscribe(topic, "g", "a").await.unwrap();
    let mut b = bus.subscribe(topic, "g", "b").await.unwrap();
    bus.publish(topic, &numbered(0..1000)).await.unwrap();

    let first_a = a.next(10, Duration::from_secs(2)).await.unwrap();
    let first_b = b.next(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(payloads(&first_a), numbered(0..10));
    assert_eq!(payloads(&first_b), numbered(10..20));
    a.ack(&ids(&first_a)).await.unwrap();
    b.ack(&ids(&first_b)).await.unwrap();

    let (rest_a, rest_b) = tokio::join!(drain(a.as_mut(), 980), drain(b.as_mut(), 980));
    let mut all: Vec<String> = [first_a, first_b, rest_a, rest_b]
        .iter()
        .flat_map(|m| payloads(m))
        .collect();
    assert_eq!(all.len(), 1000, "each message exactly once");
    all.sort_by_key(|p| p[5..p.len() - 1].parse::<usize>().unwrap());
    assert_eq!(all, numbered(0..1000));
    assert_eq!(bus.depth(topic, "g").await.unwrap(), 0);
}

async fn every_group_sees_every_message<F, Fut>(make: F, topic: &str)
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = SharedBus>,
{
    let bus = make(LONG_CLAIM).await;
    let mut a = bus.subscribe(topic, "ga", "c").await.unwrap();
    let mut b = bus.subscribe(topic, "gb", "c").await.unwrap();
    bus.publish(topic, &numbered(0..100)).await.unwrap();

    assert_eq!(payloads(&drain(a.as_mut(), 100).await), numbered(0..100));
    assert_eq!(payloads(&drain(b.as_mut(), 100).await), numbered(0..100));
}

async fn unacked_message_goes_to_another_consumer_after_the_claim_timeout<F, Fut>(
    make: F,
    topic: &str,
) where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = SharedBus>,
{
    let bus = make(SHORT_CLAIM).await;
    let mut a = bus.subscribe(topic, "g", "a").await.unwrap();
    let mut b = bus.subscribe(topic, "g", "b").await.unwrap();
    bus.publish(topic, &numbered(0..3)).await.unwrap();

    let taken = a.next(10, Duration::from_secs(2)).await.unwrap();
    let taken_at = Instant::now();
    assert_eq!(payloads(&taken), numbered(0..3));
    // `a` "crashes": it never acks.
    let early = b.next(10, Duration::from_millis(100)).await.unwrap();
    assert!(
        early.is_empty(),
        "handed out again before the claim timeout: {early:?}"
    );

    let again = b.next(10, Duration::from_secs(5)).await.unwrap();
    assert!(
        taken_at.elapsed() >= SHORT_CLAIM - Duration::from_millis(20),
        "redelivered after {:?}, before the claim timeout",
        taken_at.elapsed()
    );
    assert_eq!(ids(&again), ids(&taken));
    assert_eq!(payloads(&again), numbered(0..3));
    assert!(again.iter().all(|m| m.redeliveries == 1), "{again:?}");
    assert_eq!(
        bus.depth(topic, "g").await.unwrap(),
        3,
        "still unacknowledged"
    );

    b.ack(&ids(&again)).await.unwrap();
    assert_eq!(bus.depth(topic, "g").await.unwrap(), 0);
    let after_ack = a.next(10, SHORT_CLAIM * 3).await.unwrap();
    assert!(
        after_ack.is_empty(),
        "acked messages came back: {after_ack:?}"
    );
}

async fn acked_message_is_not_redelivered<F, Fut>(make: F, topic: &str)
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = SharedBus>,
{
    let bus = make(SHORT_CLAIM).await;
    let mut a = bus.subscribe(topic, "g", "a").await.unwrap();
    let mut b = bus.subscribe(topic, "g", "b").await.unwrap();
    bus.publish(topic, &numbered(0..2)).await.unwrap();

    let taken = a.next(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(taken.len(), 2);
    a.ack(&[taken[0].id.clone()]).await.unwrap();

    let again = b.next(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(payloads(&again), numbered(1..2));
    assert_eq!(again[0].redeliveries, 1);
    b.ack(&ids(&again)).await.unwrap();
    let none = b.next(10, SHORT_CLAIM * 3).await.unwrap();
    assert!(none.is_empty(), "{none:?}");
}

async fn depth_counts_waiting_and_taken_messages<F, Fut>(make: F, topic: &str)
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = SharedBus>,
{
    let bus = make(LONG_CLAIM).await;
    assert_eq!(bus.depth(topic, "g").await.unwrap(), 0, "unknown topic");
    let mut sub = bus.subscribe(topic, "g", "c").await.unwrap();
    let _other = bus.subscribe(topic, "other", "c").await.unwrap();
    assert_eq!(bus.depth(topic, "g").await.unwrap(), 0);
    assert_eq!(
        bus.depth(topic, "nobody").await.unwrap(),
        0,
        "unknown group"
    );

    bus.publish(topic, &numbered(0..5)).await.unwrap();
    assert_eq!(bus.depth(topic, "g").await.unwrap(), 5);
    let taken = sub.next(2, Duration::from_secs(2)).await.unwrap();
    assert_eq!(taken.len(), 2);
    assert_eq!(
        bus.depth(topic, "g").await.unwrap(),
        5,
        "taken still counts"
    );
    sub.ack(&ids(&taken)).await.unwrap();
    assert_eq!(bus.depth(topic, "g").await.unwrap(), 3);
    assert_eq!(bus.depth(topic, "other").await.unwrap(), 5);
}

async fn many_messages_none_lost_none_duplicated<F, Fut>(make: F, topic: &str)
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = SharedBus>,
{
    const N: usize = 10_000;
    let bus = make(LONG_CLAIM).await;
    let mut consumers = Vec::new();
    for c in 0..4 {
        consumers.push(bus.subscribe(topic, "g", &format!("c{c}")).await.unwrap());
    }
    let publisher = {
        let bus = bus.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            for chunk in numbered(0..N).chunks(700) {
                bus.publish(&topic, chunk).await.unwrap();
            }
        })
    };
    let readers: Vec<_> = consumers
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = sub.next(200, Duration::from_millis(1500)).await.unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    sub.ack(&ids(&batch)).await.unwrap();
                    got.extend(batch);
                }
            })
        })
        .collect();
    publisher.await.unwrap();
    let mut seen = HashSet::new();
    for reader in readers {
        let got = reader.await.unwrap();
        let order: Vec<usize> = got
            .iter()
            .map(|m| m.payload[5..m.payload.len() - 1].parse().unwrap())
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "each consumer sees its share in publish order"
        );
        for n in order {
            assert!(seen.insert(n), "message {n} delivered twice");
        }
    }
    assert_eq!(seen.len(), N, "lost {} messages", N - seen.len());
    assert_eq!(bus.depth(topic, "g").await.unwrap(), 0);
}

async fn next_wakes_up_on_publish<F, Fut>(make: F, topic: &str)
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = SharedBus>,
{
    let bus = make(LONG_CLAIM).await;
    let mut sub = bus.subscribe(topic, "g", "c").await.unwrap();
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let got = sub.next(10, Duration::from_secs(10)).await.unwrap();
        (got, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    bus.publish(topic, &numbered(0..1)).await.unwrap();
    let (got, waited) = waiter.await.unwrap();
    assert_eq!(payloads(&got), numbered(0..1));
    assert!(
        waited < Duration::from_secs(2),
        "woke up only after {waited:?}"
    );
}

async fn next_returns_empty_after_waiting<F, Fut>(make: F, topic: &str)
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = SharedBus>,
{
    let bus = make(LONG_CLAIM).await;
    let mut sub = bus.subscribe(topic, "g", "c").await.unwrap();
    let started = Instant::now();
    let got = sub.next(10, Duration::from_millis(300)).await.unwrap();
    let waited = started.elapsed();
    assert!(got.is_empty());
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(2),
        "waited {waited:?} for a 300 ms wait"
    );
    let started = Instant::now();
    assert!(sub.next(10, Duration::ZERO).await.unwrap().is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a zero wait waited"
    );
    assert!(sub
        .next(0, Duration::from_secs(10))
        .await
        .unwrap()
        .is_empty());
}

async fn a_waiting_consumer_does_not_stall_publishers<F, Fut>(make: F, topic: &str)
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = SharedBus>,
{
    let bus = make(LONG_CLAIM).await;
    let other = format!("{topic}-other");
    let mut sub = bus.subscribe(&other, "g", "c").await.unwrap();
    let waiter = tokio::spawn(async move { sub.next(10, Duration::from_secs(3)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    bus.publish(topic, &numbered(0..10)).await.unwrap();
    assert_eq!(bus.depth(&other, "g").await.unwrap(), 0);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "publish waited {took:?} behind a blocked read"
    );
    assert!(waiter.await.unwrap().unwrap().is_empty());
    if bus.name() == "redis" {
        redis_cleanup(&other).await;
    }
}

#[tokio::test]
async fn redis_connect_failure_is_unavailable_and_names_the_redacted_url() {
    // Port 1 refuses connections; the password must not leak into the error.
    let err = match RedisBus::connect("redis://:s3cret@127.0.0.1:1").await {
        Ok(_) => panic!("connected to a port nobody listens on"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(matches!(err, BusError::Unavailable(_)), "{msg}");
    assert!(msg.contains("redis://:***@127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
}

#[tokio::test]
async fn redis_streams_live_under_the_topic_key() {
    let topic = unique_topic();
    let bus = redis_bus(LONG_CLAIM).await;
    assert_eq!(bus.name(), "redis");
    bus.publish(&topic, &numbered(0..3)).await.unwrap();
    let client = ::redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let len: u64 = ::redis::cmd("XLEN")
        .arg(format!("ota:bus:{topic}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 3);
    redis_cleanup(&topic).await;
}

/// `url` with its host and port replaced by `addr`.
fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let start = url
        .find('@')
        .map_or_else(|| url.find("://").unwrap() + 3, |at| at + 1);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    format!("{}{addr}{}", &url[..start], &url[end..])
}

async fn retry<T>(what: &str, mut f: impl AsyncFnMut() -> Result<T, BusError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, BusError::Unavailable(_)), "{what}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what} did not recover: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_publisher_and_consumer_recover_after_the_connection_drops() {
    let url = redis_url();
    let info = ::redis::Client::open(url.as_str()).expect("redis url");
    let target = match info.get_connection_info().addr() {
        ::redis::ConnectionAddr::Tcp(host, port) => tokio::net::lookup_host((host.as_str(), *port))
            .await
            .unwrap()
            .next()
            .unwrap(),
        other => panic!("this test needs Redis over TCP, not {other:?}"),
    };
    redis_bus(LONG_CLAIM).await; // fails loudly when Redis itself is down
    let proxy = ota_tests::proxy::Proxy::start(target).await;
    let bus = RedisBus::connect(&via(&url, proxy.addr)).await.unwrap();
    let topic = unique_topic();
    let mut sub = bus.subscribe(&topic, "g", "c").await.unwrap();
    bus.publish(&topic, &numbered(0..1)).await.unwrap();
    let got = sub.next(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(payloads(&got), numbered(0..1));
    sub.ack(&ids(&got)).await.unwrap();

    proxy.cut();
    // The proxy drops its connections asynchronously.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = bus.publish(&topic, &numbered(1..2)).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
    let err = sub.next(10, Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains(&proxy.addr.to_string()), "{err}");

    proxy.restore();
    retry("publish", async || {
        bus.publish(&topic, &numbered(2..3)).await
    })
    .await;
    // The failed publish may still have landed (its reply was what got
    // lost): at least once, so "1" may come before "2".
    let mut got = Vec::new();
    while !got.contains(&numbered(2..3)[0]) {
        let batch = retry("next", async || sub.next(10, Duration::from_secs(1)).await).await;
        sub.ack(&ids(&batch)).await.unwrap();
        got.extend(payloads(&batch));
    }
    assert!(got == numbered(2..3) || got == numbered(1..3), "{got:?}");
    redis_cleanup(&topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_consumer_recreates_its_group_when_the_stream_was_deleted() {
    let topic = unique_topic();
    let bus = redis_bus(LONG_CLAIM).await;
    let mut sub = bus.subscribe(&topic, "g", "c").await.unwrap();
    redis_cleanup(&topic).await;
    bus.publish(&topic, &numbered(0..2)).await.unwrap();
    let got = drain(sub.as_mut(), 2).await;
    assert_eq!(payloads(&got), numbered(0..2));
    redis_cleanup(&topic).await;
}
