//! Staging benches, for the in-process store and the real Redis:
//!
//! (a) staging throughput: the documents of a campaign that matched 40% of a
//!     1,000,000-vehicle fleet (400,000 vehicles), in vehicles per second,
//!     two ways: build + `put_many` in chunks of 1000 (the write path alone),
//!     and the whole [`Stager::stage_vins`] path the worker runs (open
//!     actions from a synthetic source, build, `stamps` read, `put_many`).
//!     For Redis, `redis-benchmark -q -P 64 -t set -n 1000000 -d <value
//!     size>` runs in the same bench as the reference;
//! (b) GetActions latency, p50 and p99 of single calls through an
//!     in-process gRPC peer (`StagingClient` over `peer::in_process`), at
//!     10,000 and 1,000,000 staged vehicles: two stores side by side (for
//!     Redis the small one in a database of its own, so each keyspace has
//!     its own size), called in alternating blocks so the load of the
//!     shared machine falls on both alike. Criterion then gives the
//!     store-level figures (`get_now`, `store.get`, `service.lookup`) at
//!     both sizes;
//! (c) the in-process store's memory per staged vehicle beyond the document
//!     bytes (a counting global allocator over jemalloc, configured as in
//!     the `ota` binary), after staging and after one
//!     lookup of every vehicle (a lookup must leave nothing behind).
//!
//! cargo bench -p ota-staging --bench staging
//!
//! Environment: `OTA_BENCH_VEHICLES` (the two latency sizes, default
//! `10000,1000000`), `OTA_BENCH_STAGE_VEHICLES` (throughput size, default
//! 400000), `OTA_BENCH_CALLS` (measured GetActions calls per size, default
//! 20000, after 10000 warm-up calls), `OTA_BENCH_STORES` (default
//! `memory,redis`), `OTA_BENCH_PARTS` (default `throughput,lookups`),
//! `OTA_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`;
//! the small latency fleet goes to database `OTA_BENCH_SMALL_REDIS_DB` of
//! the same server, default 1).
//! Redis data goes to a namespace of its own and is deleted afterwards. A
//! summary of every figure is printed at the end.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::Criterion;
use ota_bus::memory::MemoryBus;
use ota_common::alloc::Jemalloc;
use ota_common::peer::{self, Peer};
use ota_proto::v1 as pb;
use ota_staging::document::{build, ETAG_LEN};
use ota_staging::{
    ActionBatches, ActionSource, MemoryStore, RedisStore, RedisStoreConfig, SharedStore, Stager,
    StagingError, StagingService, StoredDoc,
};
use pb::staging_client::StagingClient;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// Counts, then hands every call to the real allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { Jemalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { Jemalloc.realloc(ptr, layout, new_size) }
    }
}

/// Counting on top of the allocator `ota` runs with (jemalloc with huge
/// pages), so the latencies are those of the binary.
#[global_allocator]
static GLOBAL: Counting = Counting;
ota_common::jemalloc_options!();

/// Every figure, printed again together at the end (criterion's output is
/// long).
static SUMMARY: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn report(line: String) {
    println!("{line}");
    SUMMARY.lock().unwrap().push(line);
}

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

/// A campaign's open actions, made up on demand from the VIN's number
/// (standing in for the campaign manager, whose cost is not measured here
/// beyond making the protobuf actions).
struct CampaignSource;

#[async_trait]
impl ActionSource for CampaignSource {
    async fn open_actions(&self, vins: &[String]) -> Result<Vec<pb::VehicleActions>, StagingError> {
        Ok(vins
            .iter()
            .map(|v| pb::VehicleActions {
                vin: v.clone(),
                actions: open_actions(v[9..].parse().expect("a bench vin")),
            })
            .collect())
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

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("{name}: a number")))
        .unwrap_or(default)
}

fn redis_url() -> String {
    std::env::var("OTA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
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
        state: pb::ActionState::Pending.into(),
        attempt: 1,
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
            let d = build(&v, &open_actions(i), 300, "").unwrap().unwrap();
            (v, d)
        })
        .collect()
}

/// Builds and stores the documents of `range` in chunks of 1000, as the
/// worker does, into a store that holds none of them (the writer's stamps
/// read would say so); returns vehicles per second and the JSON bytes
/// stored.
fn stage(
    rt: &tokio::runtime::Runtime,
    store: &SharedStore,
    range: std::ops::Range<usize>,
) -> (f64, usize) {
    let started = Instant::now();
    let mut json = 0;
    let new = [false; 1000];
    let mut i = range.start;
    while i < range.end {
        let end = (i + 1000).min(range.end);
        let batch = docs(i..end);
        json += batch.iter().map(|(_, d)| d.json.len()).sum::<usize>();
        rt.block_on(store.put_many(&batch, &new[..batch.len()]))
            .unwrap();
        i = end;
    }
    (range.len() as f64 / started.elapsed().as_secs_f64(), json)
}

fn redis_store(rt: &tokio::runtime::Runtime, url: &str) -> (RedisStore, String) {
    let ns = format!("bench-staging-{}", uuid::Uuid::new_v4().simple());
    let store = rt
        .block_on(RedisStore::connect_with(
            url,
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

/// `url` with its database index set to `db`.
fn with_db(url: &str, db: usize) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let base = match url[scheme_end..].find('/') {
        Some(i) => &url[..scheme_end + i],
        None => url,
    };
    format!("{base}/{db}")
}

fn new_store(rt: &tokio::runtime::Runtime, kind: &str) -> (SharedStore, Option<String>) {
    match kind {
        "memory" => (Arc::new(MemoryStore::new()), None),
        _ => {
            let (r, ns) = redis_store(rt, &redis_url());
            (Arc::new(r), Some(ns))
        }
    }
}

fn delete(rt: &tokio::runtime::Runtime, store: &SharedStore, vins: &[String]) -> u64 {
    vins.chunks(1000)
        .map(|chunk| rt.block_on(store.delete_many(chunk)).unwrap())
        .sum()
}

/// Deletes the bench's documents and the store's bookkeeping keys.
fn drop_all(
    rt: &tokio::runtime::Runtime,
    store: &SharedStore,
    vins: &[String],
    url: &str,
    ns: &str,
) {
    delete(rt, store, vins);
    rt.block_on(async {
        let mut con = raw_redis(url).await;
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

async fn raw_redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn service(store: SharedStore) -> StagingService {
    StagingService::new(
        Stager::new(store, Arc::new(NoSource), 300),
        Arc::new(MemoryBus::new()),
    )
}

/// `count` VINs drawn at random among the first `n`.
fn random_vins(n: usize, count: usize, seed: u64) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..count)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            vin((x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize)
        })
        .collect()
}

/// Indices spread over the fleet, so lookups miss the CPU caches the way a
/// fleet's random arrivals do.
fn probes(n: usize) -> Vec<String> {
    random_vins(n, 8192, 0)
}

/// Nearest-rank quantile of sorted samples.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Clone, Copy)]
struct Quantiles {
    p50_us: f64,
    p99_us: f64,
    calls: usize,
}

fn quantiles(samples: &[u64]) -> Quantiles {
    let mut s = samples.to_vec();
    s.sort_unstable();
    Quantiles {
        p50_us: quantile(&s, 0.50) as f64 / 1000.0,
        p99_us: quantile(&s, 0.99) as f64 / 1000.0,
        calls: s.len(),
    }
}

/// GetActions through an in-process gRPC peer, one call at a time.
async fn get_actions(client: &mut StagingClient<Peer>, vin: &str) -> u64 {
    let started = Instant::now();
    let doc = client
        .get_actions(pb::GetActionsRequest {
            vin: vin.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let ns = started.elapsed().as_nanos() as u64;
    assert!(!doc.actions.is_empty(), "a staged vehicle");
    black_box(doc);
    ns
}

/// Nanoseconds of each of `calls` GetActions calls per size, for random
/// staged VINs. The sizes take turns in rounds (each round's block after
/// 500 warm-up calls on that size, the order flipping every round), so a
/// neighbour's load on the shared machine falls on both alike.
fn interleaved_latencies(
    rt: &tokio::runtime::Runtime,
    sizes: [(usize, &StagingClient<Peer>); 2],
    calls: usize,
) -> [Vec<u64>; 2] {
    const ROUNDS: usize = 20;
    const WARM: usize = 500;
    let mut clients = sizes.map(|(n, c)| (n, c.clone()));
    rt.block_on(async move {
        for (i, (n, client)) in clients.iter_mut().enumerate() {
            for v in random_vins(*n, 10_000, i as u64) {
                get_actions(client, &v).await;
            }
        }
        let mut out = [Vec::with_capacity(calls), Vec::with_capacity(calls)];
        for round in 0..ROUNDS {
            let block = calls / ROUNDS + usize::from(round < calls % ROUNDS);
            for k in 0..2 {
                let which = if round % 2 == 0 { k } else { 1 - k };
                let (n, client) = &mut clients[which];
                let seed = 100 + (round * 2 + which) as u64;
                for v in random_vins(*n, WARM, seed) {
                    get_actions(client, &v).await;
                }
                for v in random_vins(*n, block, seed + 1_000) {
                    out[which].push(get_actions(client, &v).await);
                }
            }
        }
        out
    })
}

/// Bytes the in-process store holds per vehicle beyond the JSON.
fn per_vehicle(live_before: isize, json: usize, n: usize) -> f64 {
    let grown = LIVE.load(Ordering::SeqCst) - live_before;
    (grown as f64 - json as f64) / n as f64
}

fn bench_store_level(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    kind: &str,
    n: usize,
    store: &SharedStore,
    memory: Option<&MemoryStore>,
    svc: &StagingService,
) {
    let probes = probes(n);
    let next = AtomicUsize::new(0);
    let pick = || &probes[next.fetch_add(1, Ordering::Relaxed) % probes.len()];
    let mut g = c.benchmark_group(format!("lookup/{kind}"));
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    if let Some(m) = memory {
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
}

/// A store of `n` staged vehicles, and its service ready to answer.
struct Fleet {
    n: usize,
    store: SharedStore,
    memory: Option<Arc<MemoryStore>>,
    /// Redis: the URL and namespace, for clean-up.
    redis: Option<(String, String)>,
    svc: StagingService,
    client: StagingClient<Peer>,
}

/// Stages `n` vehicles into a new store (Redis: at `url`) and reports the
/// rate and, in memory, the bytes per vehicle.
fn fleet(rt: &tokio::runtime::Runtime, kind: &str, n: usize, url: &str) -> Fleet {
    let live_before = LIVE.load(Ordering::SeqCst);
    let (store, memory, redis): (SharedStore, _, _) = if kind == "memory" {
        let m = Arc::new(MemoryStore::new());
        (m.clone(), Some(m), None)
    } else {
        let (r, ns) = redis_store(rt, url);
        (Arc::new(r), None, Some((url.to_owned(), ns)))
    };
    let (rate, json) = stage(rt, &store, 0..n);
    report(format!(
        "{kind}: staged {n} vehicles at {rate:.0} vehicles/s (build + put_many)"
    ));
    assert_eq!(rt.block_on(store.len()).unwrap(), n as u64, "counted");
    if let Some(m) = &memory {
        report(format!(
            "{kind}: {:.1} bytes per staged vehicle beyond the {:.0} document bytes (at {n}, after staging)",
            per_vehicle(live_before, json, n),
            json as f64 / n as f64
        ));
        for i in 0..n {
            black_box(m.get_now(&vin(i)));
        }
        report(format!(
            "{kind}: {:.1} bytes per staged vehicle beyond the document bytes (at {n}, after one lookup of each)",
            per_vehicle(live_before, json, n),
        ));
    }
    let svc = service(store.clone());
    if memory.is_some() {
        // Marks the empty-at-start store ready; NoSource adds nothing.
        rt.block_on(svc.stager().full_rebuild()).unwrap();
    }
    let client = StagingClient::new(peer::in_process(svc.clone().into_server()));
    Fleet {
        n,
        store,
        memory,
        redis,
        svc,
        client,
    }
}

/// (b) and (c): a store of `small` vehicles and one of `large`, side by
/// side (Redis: the small one in database `small_db`, so each has a
/// keyspace of its own size).
fn bench_lookups(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    kind: &str,
    small: usize,
    large: usize,
    calls: usize,
) {
    let url = redis_url();
    let small_db = env_usize("OTA_BENCH_SMALL_REDIS_DB", 1);
    let a = fleet(rt, kind, small, &with_db(&url, small_db));
    let b = fleet(rt, kind, large, &url);

    let [lat_a, lat_b] = interleaved_latencies(rt, [(a.n, &a.client), (b.n, &b.client)], calls);
    let (qa, qb) = (quantiles(&lat_a), quantiles(&lat_b));
    for (n, q) in [(small, qa), (large, qb)] {
        report(format!(
            "{kind}: GetActions over in-process gRPC at {n}: p50 {:.2} us, p99 {:.2} us ({} calls)",
            q.p50_us, q.p99_us, q.calls
        ));
    }
    report(format!(
        "{kind}: GetActions {large} / {small}: p50 x{:.3}, p99 x{:.3} (target within 10%)",
        qb.p50_us / qa.p50_us,
        qb.p99_us / qa.p99_us
    ));

    for f in [&a, &b] {
        bench_store_level(c, rt, kind, f.n, &f.store, f.memory.as_deref(), &f.svc);
    }
    for f in [a, b] {
        if let Some((url, ns)) = &f.redis {
            let vins: Vec<String> = (0..f.n).map(vin).collect();
            drop_all(rt, &f.store, &vins, url, ns);
        }
    }
}

/// The host and port of a `redis://[user:pass@]host[:port][/db]` URL.
fn redis_host_port(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("redis://");
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (hostport.to_owned(), "6379".to_owned()),
    }
}

/// `redis-benchmark -q -P 64 -t set -n 1000000 -d <value_size>` against the
/// bench's Redis: SETs per second, `None` when it cannot run.
fn redis_benchmark_set(rt: &tokio::runtime::Runtime, value_size: usize) -> Option<f64> {
    let (host, port) = redis_host_port(&redis_url());
    // Its one key; removed afterwards unless someone else had it.
    const KEY: &str = "key:__rand_int__";
    let existed: bool = rt.block_on(async {
        redis::cmd("EXISTS")
            .arg(KEY)
            .query_async(&mut raw_redis(&redis_url()).await)
            .await
            .unwrap()
    });
    let args = [
        "-h".to_owned(),
        host,
        "-p".to_owned(),
        port,
        "-q".to_owned(),
        "-P".to_owned(),
        "64".to_owned(),
        "-t".to_owned(),
        "set".to_owned(),
        "-n".to_owned(),
        "1000000".to_owned(),
        "-d".to_owned(),
        value_size.to_string(),
    ];
    println!("running: redis-benchmark {}", args.join(" "));
    let out = match Command::new("redis-benchmark").args(&args).output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            report(format!(
                "redis-benchmark failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        Err(e) => {
            report(format!("redis-benchmark cannot run: {e}"));
            return None;
        }
    };
    if !existed {
        rt.block_on(async {
            let _: i64 = redis::cmd("DEL")
                .arg(KEY)
                .query_async(&mut raw_redis(&redis_url()).await)
                .await
                .unwrap();
        });
    }
    // `-q` prints progress lines ended by '\r', then
    // "SET: 512820.53 requests per second, p50=5.615 msec".
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.split(['\r', '\n']).rfind(|l| l.starts_with("SET: "))?;
    let rate: f64 = line["SET: ".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    report(format!("redis-benchmark: {}", line.trim()));
    Some(rate)
}

/// (a): the documents of `n` vehicles, the campaign's matches.
fn bench_throughput(rt: &tokio::runtime::Runtime, kind: &str, n: usize) {
    // Building alone, to tell the document cost from the store's.
    let started = Instant::now();
    for start in (0..n).step_by(1000) {
        black_box(docs(start..(start + 1000).min(n)));
    }
    let build_rate = n as f64 / started.elapsed().as_secs_f64();

    let (store, ns) = new_store(rt, kind);
    let (put_rate, json) = stage(rt, &store, 0..n);
    let value_size = ETAG_LEN + 1 + json / n;
    let vins: Vec<String> = (0..n).map(vin).collect();
    assert_eq!(rt.block_on(store.len()).unwrap(), n as u64, "counted");
    report(format!(
        "throughput/{kind}: {n} documents ({:.0} bytes of JSON each): build {build_rate:.0}/s, build + put_many {put_rate:.0} vehicles/s",
        json as f64 / n as f64
    ));
    if let Some(ns) = &ns {
        drop_all(rt, &store, &vins, &redis_url(), ns);
    }
    drop(store);

    // The worker's path, into an empty store, for the same vehicles.
    let (store, ns) = new_store(rt, kind);
    let campaign = vins;
    let stager = Stager::new(store.clone(), Arc::new(CampaignSource), 300);
    let started = Instant::now();
    let outcome = rt.block_on(stager.stage_vins(&campaign)).unwrap();
    let stager_rate = campaign.len() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(outcome.changed, campaign.len() as u64);
    assert_eq!(rt.block_on(store.len()).unwrap(), campaign.len() as u64);
    report(format!(
        "throughput/{kind}: Stager::stage_vins of a {}-vehicle campaign (open actions, build, stamps, put_many): {stager_rate:.0} vehicles/s",
        campaign.len()
    ));
    if let Some(ns) = &ns {
        drop_all(rt, &store, &campaign, &redis_url(), ns);
    }
    drop(store);

    if kind == "redis" {
        if let Some(set_rate) = redis_benchmark_set(rt, value_size) {
            report(format!(
                "throughput/redis: staging / redis-benchmark SET ({value_size}-byte values): put_many path {:.3}, Stager path {:.3}",
                put_rate / set_rate,
                stager_rate / set_rate
            ));
        }
    }
}

/// The 1, 5 and 15 minute load averages: the machine is shared, and a
/// neighbour's build takes CPU from both the bench and Redis.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn main() {
    report(format!(
        "machine: {} cores, load average {} at the start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    ));
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
    let [small, large] = sizes[..] else {
        panic!("OTA_BENCH_VEHICLES: two sizes, small then large");
    };
    assert!(small < large, "OTA_BENCH_VEHICLES: small then large");
    let stage_n = env_usize("OTA_BENCH_STAGE_VEHICLES", 400_000);
    let calls = env_usize("OTA_BENCH_CALLS", 20_000);
    report(format!(
        "allocator: jemalloc, huge pages {:?}",
        ota_common::alloc::huge_pages()
    ));
    let parts = env_list("OTA_BENCH_PARTS", "throughput,lookups");
    for kind in env_list("OTA_BENCH_STORES", "memory,redis") {
        assert!(
            kind == "memory" || kind == "redis",
            "OTA_BENCH_STORES: memory or redis, not {kind:?}"
        );
        if parts.iter().any(|p| p == "throughput") {
            bench_throughput(&rt, &kind, stage_n);
        }
        if parts.iter().any(|p| p == "lookups") {
            bench_lookups(&mut c, &rt, &kind, small, large, calls);
        }
    }
    c.final_summary();
    report(format!("machine: load average {} at the end", load()));
    println!("\n==== summary ====");
    for line in SUMMARY.lock().unwrap().iter() {
        println!("{line}");
    }
}
