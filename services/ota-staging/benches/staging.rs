//! Staging benches, for the in-process store and the real Redis:
//!
//! (a) lookup latency (what GetActions and the adapters' fast path cost) at
//!     10,000 and 1,000,000 staged vehicles;
//! (b) staging throughput: building and storing the documents of 40% of a
//!     1,000,000-vehicle fleet, in vehicles per second;
//! (c) the in-process store's memory per staged vehicle beyond the document
//!     bytes (a counting global allocator).
//!
//! cargo bench -p ota-staging --bench staging
//!
//! Environment: `OTA_BENCH_VEHICLES` (lookup sizes, default `10000,1000000`),
//! `OTA_BENCH_STAGE_VEHICLES` (throughput size, default 400000),
//! `OTA_BENCH_STORES` (default `memory,redis`), `OTA_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`). Redis data goes to a namespace of
//! its own and is deleted afterwards.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::Criterion;
use ota_bus::memory::MemoryBus;
use ota_proto::v1 as pb;
use ota_staging::document::build;
use ota_staging::{
    ActionBatches, ActionSource, MemoryStore, RedisStore, RedisStoreConfig, SharedStore, Stager,
    StagingError, StagingService, StoredDoc,
};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Lookups only: nothing is ever corrupt here.
struct NoSource;

#[async_trait]
impl ActionSource for NoSource {
    async fn open_actions(&self, _: &[String]) -> Result<Vec<pb::VehicleActions>, StagingError> {
        Ok(Vec::new())
    }
    async fn scan_all(&self, _: u32) -> Result<ActionBatches, StagingError> {
        Ok(Box::pin(futures::stream::empty()))
    }
    async fn campaign_vins(&self, _: &str) -> Result<Vec<String>, StagingError> {
        Ok(Vec::new())
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn vin(i: usize) -> String {
    format!("WVWZZZE1Z{i:08}")
}

/// A realistic vehicle: one or two open actions (two in a fifth of the
/// fleet), one artifact each, a deadline on some.
fn open_actions(i: usize) -> Vec<pb::OpenAction> {
    let one = |n: usize, ecu: &str, pkg: &str, priority: i32| pb::OpenAction {
        action_id: format!("0190a5c4-7e1b-7c3d-9f00-{:012x}", i * 2 + n),
        campaign_id: format!("campaign-2026-{:02}", (i + n) % 12),
        ecu: ecu.to_owned(),
        priority,
        package: Some(pb::StagedPackage {
            name: pkg.to_owned(),
            version: format!("2.{}.{}", i % 7, i % 13),
            artifacts: vec![pb::Artifact {
                url: format!(
                    "https://cdn.ota.example/packages/{pkg}/2.{}.{}/image.bin",
                    i % 7,
                    i % 13
                ),
                sha256: format!("{:064x}", i as u128 * 0x9E37_79B9_7F4A_7C15),
                size: 48_000_000 + i as u64 % 1000,
            }],
        }),
        deadline: i.is_multiple_of(3).then_some(prost_types::Timestamp {
            seconds: 1_796_083_200,
            nanos: 0,
        }),
        state: "pending".to_owned(),
    };
    let mut a = vec![one(0, "BMS", "bms-fw", 5)];
    if i.is_multiple_of(5) {
        a.push(one(1, "HU", "hu-sw", 3));
    }
    a
}

fn docs(range: std::ops::Range<usize>) -> Vec<(String, StoredDoc)> {
    range
        .map(|i| {
            let v = vin(i);
            let d = build(&v, &open_actions(i), 300).unwrap().unwrap();
            (v, d)
        })
        .collect()
}

/// Builds and stores `n` documents in chunks of 1000, as the worker does;
/// returns vehicles per second and the JSON bytes stored.
fn stage(rt: &tokio::runtime::Runtime, store: &SharedStore, n: usize) -> (f64, usize) {
    let started = Instant::now();
    let mut json = 0;
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        let batch = docs(i..end);
        json += batch.iter().map(|(_, d)| d.json.len()).sum::<usize>();
        rt.block_on(store.put_many(&batch)).unwrap();
        i = end;
    }
    (n as f64 / started.elapsed().as_secs_f64(), json)
}

fn redis_store(rt: &tokio::runtime::Runtime) -> (RedisStore, String) {
    let url =
        std::env::var("OTA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let ns = format!("bench-staging-{}", uuid::Uuid::new_v4().simple());
    let store = rt
        .block_on(RedisStore::connect_with(
            &url,
            RedisStoreConfig {
                namespace: ns.clone(),
                ..Default::default()
            },
        ))
        .unwrap();
    rt.block_on(async {
        for _ in 0..5 {
            if store.ping().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Redis at {url} is not reachable (set OTA_TEST_REDIS_URL or drop redis from OTA_BENCH_STORES)");
    });
    (store, ns)
}

/// Deletes the bench's documents and the store's bookkeeping keys.
fn drop_all(rt: &tokio::runtime::Runtime, store: &SharedStore, n: usize, ns: &str) {
    let vins: Vec<String> = (0..n).map(vin).collect();
    for chunk in vins.chunks(10_000) {
        rt.block_on(store.delete_many(chunk)).unwrap();
    }
    let url =
        std::env::var("OTA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        // The store's bookkeeping keys (see store/redis.rs).
        let keys: Vec<String> = [
            "staged_count",
            "staging_reconcile",
            "staging_lock:reconcile",
        ]
        .iter()
        .map(|k| format!("{ns}:{k}"))
        .collect();
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut con)
            .await
            .unwrap();
    });
}

fn service(store: SharedStore) -> StagingService {
    StagingService::new(
        Stager::new(store, Arc::new(NoSource), 300),
        Arc::new(MemoryBus::new()),
    )
}

/// Indices spread over the fleet, so lookups miss the CPU caches the way a
/// fleet's random arrivals do.
fn probes(n: usize) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..8192)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            vin((x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize)
        })
        .collect()
}

fn bench_lookups(c: &mut Criterion, rt: &tokio::runtime::Runtime, kind: &str, sizes: &[usize]) {
    for &n in sizes {
        let (store, memory, ns): (SharedStore, Option<Arc<MemoryStore>>, Option<String>) =
            match kind {
                "memory" => {
                    let m = Arc::new(MemoryStore::new());
                    (m.clone(), Some(m), None)
                }
                _ => {
                    let (r, ns) = redis_store(rt);
                    (Arc::new(r), None, Some(ns))
                }
            };
        let before = LIVE.load(Ordering::SeqCst);
        let (rate, json) = stage(rt, &store, n);
        let grown = LIVE.load(Ordering::SeqCst) - before;
        println!("{kind}: staged {n} vehicles at {rate:.0} vehicles/s (build + put_many)");
        if memory.is_some() {
            println!(
                "{kind}: {:.1} bytes per staged vehicle beyond the {:.0} document bytes (at {n})",
                (grown as f64 - json as f64) / n as f64,
                json as f64 / n as f64
            );
        }
        let svc = service(store.clone());
        if memory.is_some() {
            // Marks the empty-at-start store ready; NoSource adds nothing.
            rt.block_on(svc.stager().full_rebuild()).unwrap();
        }
        let probes = probes(n);
        let next = AtomicUsize::new(0);
        let pick = || &probes[next.fetch_add(1, Ordering::Relaxed) % probes.len()];

        let mut g = c.benchmark_group(format!("lookup/{kind}"));
        g.measurement_time(Duration::from_secs(4))
            .warm_up_time(Duration::from_secs(1));
        if let Some(m) = &memory {
            g.bench_function(format!("get_now/{n}"), |b| {
                b.iter(|| black_box(m.get_now(pick())))
            });
        }
        g.bench_function(format!("store.get/{n}"), |b| {
            b.to_async(rt)
                .iter(|| async { black_box(store.get(pick()).await.unwrap()) })
        });
        g.bench_function(format!("service.lookup/{n}"), |b| {
            b.to_async(rt)
                .iter(|| async { black_box(svc.lookup(pick()).await.unwrap()) })
        });
        g.finish();
        drop(svc);
        if let Some(ns) = ns {
            drop_all(rt, &store, n, &ns);
        }
    }
}

fn bench_throughput(rt: &tokio::runtime::Runtime, kind: &str, n: usize) {
    let (store, ns): (SharedStore, Option<String>) = match kind {
        "memory" => (Arc::new(MemoryStore::new()), None),
        _ => {
            let (r, ns) = redis_store(rt);
            (Arc::new(r), Some(ns))
        }
    };
    // Building alone, to tell the document cost from the store's.
    let started = Instant::now();
    for start in (0..n).step_by(1000) {
        black_box(docs(start..(start + 1000).min(n)));
    }
    let build_rate = n as f64 / started.elapsed().as_secs_f64();
    let (rate, json) = stage(rt, &store, n);
    println!(
        "throughput/{kind}: {n} documents ({:.0} bytes each): build {build_rate:.0}/s, build + put_many {rate:.0} vehicles/s",
        json as f64 / n as f64
    );
    if let Some(ns) = ns {
        drop_all(rt, &store, n, &ns);
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sizes: Vec<usize> = env_list("OTA_BENCH_VEHICLES", "10000,1000000")
        .iter()
        .map(|s| s.parse().expect("OTA_BENCH_VEHICLES: numbers"))
        .collect();
    let stage_n: usize = std::env::var("OTA_BENCH_STAGE_VEHICLES")
        .ok()
        .map(|s| s.parse().expect("OTA_BENCH_STAGE_VEHICLES: a number"))
        .unwrap_or(400_000);
    for kind in env_list("OTA_BENCH_STORES", "memory,redis") {
        assert!(
            kind == "memory" || kind == "redis",
            "OTA_BENCH_STORES: memory or redis, not {kind:?}"
        );
        bench_throughput(&rt, &kind, stage_n);
        bench_lookups(&mut c, &rt, &kind, &sizes);
    }
    c.final_summary();
}
