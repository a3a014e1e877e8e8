//! One behaviour suite for the staged document store, run against the
//! in-process store and the real Redis; then what only Redis can do wrong
//! (be down, hold a damaged value).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{action, vin};
use ota_common::{CodedError, ErrorCode};
use ota_staging::document::build;
use ota_staging::{
    MemoryStore, ReconcileRecord, RedisStoreConfig, SharedStore, StagedStore, StagingError, Stamp,
    StoredDoc,
};

fn doc(n: u32, version: &str) -> (String, StoredDoc) {
    let v = vin(n);
    let d = build(&v, &[action(&format!("a{n}"), "c1", 1, version)], 300, "")
        .unwrap()
        .unwrap();
    (v, d)
}

async fn get_of_unknown_vin_is_none(store: SharedStore) {
    assert_eq!(store.get(&vin(1)).await.unwrap(), None);
    assert_eq!(store.len().await.unwrap(), 0);
}

async fn put_then_get_returns_the_same_document(store: SharedStore) {
    let (v, d) = doc(1, "2.3.1");
    store
        .put_many(&[(v.clone(), d.clone())], &[false])
        .await
        .unwrap();
    assert_eq!(store.get(&v).await.unwrap(), Some(d));
    assert_eq!(store.len().await.unwrap(), 1);
}

async fn put_replaces_and_counts_a_vehicle_once(store: SharedStore) {
    let (v, old) = doc(1, "2.3.1");
    let (_, new) = doc(1, "2.4.0");
    store.put_many(&[(v.clone(), old)], &[false]).await.unwrap();
    // The writer's stamps read found the old document.
    store
        .put_many(&[(v.clone(), new.clone())], &[true])
        .await
        .unwrap();
    assert_eq!(store.get(&v).await.unwrap(), Some(new));
    assert_eq!(store.len().await.unwrap(), 1);
}

async fn stamps_report_etag_and_length_in_order(store: SharedStore) {
    let (v1, d1) = doc(1, "2.3.1");
    let (v3, d3) = doc(3, "2.3.1");
    store
        .put_many(
            &[(v1.clone(), d1.clone()), (v3.clone(), d3.clone())],
            &[false, false],
        )
        .await
        .unwrap();
    let stamps = store.stamps(&[v1, vin(2), v3]).await.unwrap();
    assert_eq!(
        stamps,
        vec![Some(Stamp::of(&d1)), None, Some(Stamp::of(&d3))]
    );
    assert!(stamps[0].as_ref().unwrap().matches(&d1));
    assert!(!stamps[0].as_ref().unwrap().matches(&d3));
}

async fn delete_many_removes_and_reports_what_existed(store: SharedStore) {
    let docs: Vec<_> = (1..=3).map(|n| doc(n, "2.3.1")).collect();
    store.put_many(&docs, &[false; 3]).await.unwrap();
    let existed = store.delete_many(&[vin(1), vin(2), vin(9)]).await.unwrap();
    assert_eq!(existed, 2);
    assert_eq!(store.get(&vin(1)).await.unwrap(), None);
    assert!(store.get(&vin(3)).await.unwrap().is_some());
    assert_eq!(store.len().await.unwrap(), 1);
}

async fn large_batches_span_several_chunks(store: SharedStore) {
    let docs: Vec<_> = (0..2500).map(|n| doc(n, "2.3.1")).collect();
    store.put_many(&docs, &[false; 2500]).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 2500);
    let vins: Vec<String> = docs.iter().map(|(v, _)| v.clone()).collect();
    let stamps = store.stamps(&vins).await.unwrap();
    assert!(stamps
        .iter()
        .zip(&docs)
        .all(|(s, (_, d))| s.as_ref().is_some_and(|s| s.matches(d))));
    assert_eq!(store.delete_many(&vins).await.unwrap(), 2500);
    assert_eq!(store.len().await.unwrap(), 0);
}

async fn scan_walks_every_stored_vin(store: SharedStore) {
    let docs: Vec<_> = (0..1500).map(|n| doc(n, "2.3.1")).collect();
    store.put_many(&docs, &[false; 1500]).await.unwrap();
    let mut seen = BTreeSet::new();
    let mut cursor = 0;
    loop {
        let (vins, next) = store.scan_vins(cursor, 100).await.unwrap();
        seen.extend(vins);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let expected: BTreeSet<String> = docs.into_iter().map(|(v, _)| v).collect();
    assert_eq!(seen, expected);
}

async fn lock_is_exclusive_renewable_and_released(store: SharedStore) {
    let ttl = Duration::from_secs(30);
    assert!(store.try_lock("reconcile", "a", ttl).await.unwrap());
    assert!(!store.try_lock("reconcile", "b", ttl).await.unwrap());
    assert!(
        store.try_lock("reconcile", "a", ttl).await.unwrap(),
        "renewal"
    );
    store.unlock("reconcile", "b").await.unwrap();
    assert!(
        !store.try_lock("reconcile", "b", ttl).await.unwrap(),
        "b cannot unlock a's lock"
    );
    store.unlock("reconcile", "a").await.unwrap();
    assert!(store.try_lock("reconcile", "b", ttl).await.unwrap());
}

async fn an_expired_lock_can_be_taken(store: SharedStore) {
    assert!(store
        .try_lock("reconcile", "a", Duration::from_millis(50))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(store
        .try_lock("reconcile", "b", Duration::from_secs(30))
        .await
        .unwrap());
}

async fn reconcile_record_round_trips(store: SharedStore) {
    assert_eq!(store.last_reconcile().await.unwrap(), None);
    let r = ReconcileRecord {
        at_ms: 1_760_000_000_123,
        repaired: 7,
        public_url: "https://ota.example".into(),
    };
    store.record_reconcile(&r).await.unwrap();
    assert_eq!(store.last_reconcile().await.unwrap(), Some(r));
}

async fn a_document_read_stays_whole_after_it_is_replaced_or_deleted(store: SharedStore) {
    let (v, old) = doc(1, "2.3.1");
    let (_, new) = doc(1, "2.4.0");
    store
        .put_many(&[(v.clone(), old.clone())], &[false])
        .await
        .unwrap();
    let held = store.get(&v).await.unwrap().unwrap();
    store.put_many(&[(v.clone(), new)], &[true]).await.unwrap();
    store.delete_many(std::slice::from_ref(&v)).await.unwrap();
    assert_eq!(held, old, "a reader keeps what it read");
    assert_eq!(store.get(&v).await.unwrap(), None);
}

/// Most of a fleet's documents go when a campaign ends; the rest must stay
/// reachable (the in-process table shrinks and moves records on removal).
async fn deleting_most_of_a_fleet_keeps_the_rest_reachable(store: SharedStore) {
    let docs: Vec<_> = (0..3000).map(|n| doc(n, "2.3.1")).collect();
    for chunk in docs.chunks(1000) {
        store
            .put_many(chunk, &vec![false; chunk.len()])
            .await
            .unwrap();
    }
    let gone: Vec<String> = docs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 != 0)
        .map(|(_, (v, _))| v.clone())
        .collect();
    assert_eq!(store.delete_many(&gone).await.unwrap(), 2250);
    assert_eq!(store.len().await.unwrap(), 750);
    for (i, (v, d)) in docs.iter().enumerate() {
        let found = store.get(v).await.unwrap();
        if i % 4 == 0 {
            assert_eq!(found.as_ref(), Some(d), "vehicle {i} kept");
        } else {
            assert_eq!(found, None, "vehicle {i} deleted");
        }
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(Arc::new(MemoryStore::new())).await;
                }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let ns = common::unique("test-staging");
                    let store = common::redis_store(&ns).await;
                    super::$name(Arc::new(store)).await;
                    common::cleanup(&ns, None).await;
                }
            )*
        }
    };
}

suite!(
    get_of_unknown_vin_is_none,
    put_then_get_returns_the_same_document,
    put_replaces_and_counts_a_vehicle_once,
    stamps_report_etag_and_length_in_order,
    delete_many_removes_and_reports_what_existed,
    large_batches_span_several_chunks,
    scan_walks_every_stored_vin,
    lock_is_exclusive_renewable_and_released,
    an_expired_lock_can_be_taken,
    reconcile_record_round_trips,
    a_document_read_stays_whole_after_it_is_replaced_or_deleted,
    deleting_most_of_a_fleet_keeps_the_rest_reachable,
);

#[tokio::test]
async fn redis_value_is_the_etag_line_then_the_json() {
    let ns = common::unique("test-staging");
    let store = common::redis_store(&ns).await;
    let (v, d) = doc(1, "2.3.1");
    store
        .put_many(&[(v.clone(), d.clone())], &[false])
        .await
        .unwrap();
    let raw: Vec<u8> = ::redis::cmd("GET")
        .arg(format!("{ns}:staged:{v}"))
        .query_async(&mut common::raw_redis().await)
        .await
        .unwrap();
    let expected = [d.etag.as_bytes(), b"\n", &d.json].concat();
    assert_eq!(raw, expected);
    common::cleanup(&ns, None).await;
}

#[tokio::test]
async fn redis_reports_a_damaged_value_as_corrupt_naming_the_vin() {
    let ns = common::unique("test-staging");
    let store = common::redis_store(&ns).await;
    let (v, d) = doc(1, "2.3.1");
    let mut con = common::raw_redis().await;
    let damaged = [
        b"garbage".to_vec(),
        // The etag line survived, the JSON was cut short.
        [d.etag.as_bytes(), b"\n", &d.json[..d.json.len() - 5]].concat(),
    ];
    for value in damaged {
        let _: () = ::redis::cmd("SET")
            .arg(store.key(&v))
            .arg(&value)
            .query_async(&mut con)
            .await
            .unwrap();
        let err = store.get(&v).await.unwrap_err();
        assert!(
            matches!(&err, StagingError::Corrupt { vin, .. } if *vin == v),
            "{err}"
        );
        assert!(err
            .to_string()
            .starts_with(&format!("staged document of vehicle {v} is corrupt")));
        // A writer comparing stamps sees it differs, so it rewrites it.
        let stamp = store
            .stamps(std::slice::from_ref(&v))
            .await
            .unwrap()
            .remove(0);
        assert!(!stamp.unwrap().matches(&d));
    }
    common::cleanup(&ns, None).await;
}

#[tokio::test]
async fn redis_down_fails_fast_with_unavailable() {
    // A port nobody listens on: bind, note the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let store = ota_staging::RedisStore::connect_with(
        &format!("redis://127.0.0.1:{port}"),
        RedisStoreConfig::default(),
    )
    .await
    .expect("connecting is lazy");
    for _ in 0..3 {
        let started = Instant::now();
        let err = store.get(&vin(1)).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
        assert_eq!(err.to_status().code(), tonic::Code::Unavailable);
    }
    let err = store
        .put_many(&[doc(1, "2.3.1")], &[false])
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    let err = store.len().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
}

#[tokio::test]
async fn redis_lookups_fail_fast_during_an_outage_and_recover_after() {
    let ns = common::unique("test-staging");
    let url = common::redis_url();
    let proxy = ota_tests::proxy::Proxy::start(common::redis_addr(&url)).await;
    let store = common::redis_store_at(&format!("redis://{}", proxy.addr), &ns).await;
    let (v, d) = doc(1, "2.3.1");
    store
        .put_many(&[(v.clone(), d.clone())], &[false])
        .await
        .unwrap();
    assert_eq!(store.get(&v).await.unwrap(), Some(d.clone()));

    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        let err = store.get(&v).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    }

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match store.get(&v).await {
            Ok(got) => {
                assert_eq!(got, Some(d));
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no recovery after redis came back: {e}"),
        }
    }
    common::cleanup(&ns, None).await;
}

#[tokio::test]
async fn redis_count_is_corrected_after_edits_by_hand() {
    let ns = common::unique("test-staging");
    let store = common::redis_store(&ns).await;
    let docs: Vec<_> = (0..5).map(|n| doc(n, "2.3.1")).collect();
    store.put_many(&docs, &[false; 5]).await.unwrap();
    let _: i64 = ::redis::cmd("DEL")
        .arg(store.key(&vin(0)))
        .query_async(&mut common::raw_redis().await)
        .await
        .unwrap();
    assert_eq!(
        store.len().await.unwrap(),
        5,
        "the counter missed the hand edit"
    );
    // Someone wrote since the walk began: no correction.
    assert!(!store.correct_count(4, 4).await.unwrap());
    assert!(store.correct_count(5, 4).await.unwrap());
    assert_eq!(store.len().await.unwrap(), 4);
    common::cleanup(&ns, None).await;
}

/// The Redis count follows what writers knew from their stamps, not what
/// Redis held: writers of one new vehicle that both read it as absent count
/// it twice (the documented race), and reconcile's walk sets it right.
#[tokio::test]
async fn redis_count_follows_the_writers_stamps_until_reconcile_corrects_it() {
    let ns = common::unique("test-staging");
    let store = common::redis_store(&ns).await;
    let (v, old) = doc(1, "2.3.1");
    let (_, new) = doc(1, "2.4.0");
    // Two writers read the stamps before either wrote.
    let stamps = store.stamps(std::slice::from_ref(&v)).await.unwrap();
    assert_eq!(stamps, vec![None]);
    store.put_many(&[(v.clone(), old)], &[false]).await.unwrap();
    store
        .put_many(&[(v.clone(), new.clone())], &[false])
        .await
        .unwrap();
    assert_eq!(store.get(&v).await.unwrap(), Some(new));
    assert_eq!(store.len().await.unwrap(), 2, "counted by both writers");
    // A third writer that read it as present adds nothing.
    let (_, newer) = doc(1, "2.5.0");
    store
        .put_many(&[(v.clone(), newer)], &[true])
        .await
        .unwrap();
    assert_eq!(store.len().await.unwrap(), 2);
    // Deletes count what Redis removed, so a second delete changes nothing.
    assert_eq!(
        store.delete_many(std::slice::from_ref(&v)).await.unwrap(),
        1
    );
    assert_eq!(
        store.delete_many(std::slice::from_ref(&v)).await.unwrap(),
        0
    );
    assert_eq!(store.len().await.unwrap(), 1, "still one too many");
    // Reconcile's walk found no document, and nobody wrote meanwhile.
    assert!(store.correct_count(1, 0).await.unwrap());
    assert_eq!(store.len().await.unwrap(), 0);
    common::cleanup(&ns, None).await;
}

#[tokio::test]
async fn redis_put_many_wants_one_flag_per_document() {
    let ns = common::unique("test-staging");
    let store = common::redis_store(&ns).await;
    let err = store
        .put_many(&[doc(1, "2.3.1"), doc(2, "2.3.1")], &[false])
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    assert_eq!(store.get(&vin(1)).await.unwrap(), None, "nothing written");
    common::cleanup(&ns, None).await;
}

#[tokio::test]
async fn a_redis_that_accepts_and_never_answers_fails_fast_with_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let store = ota_staging::RedisStore::connect_with(
        &format!("redis://{addr}"),
        RedisStoreConfig::default(),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let err = store.get(&vin(1)).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    }
    hold.abort();
}
