//! The in-process store must cost at most 300 bytes per staged vehicle
//! besides the document bytes. Measured with a counting allocator, so this
//! file is its own test binary.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::{action, vin};
use ota_staging::document::build;
use ota_staging::{MemoryStore, StagedStore};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// Counts, then hands every call to the real allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BUDGET: f64 = 300.0;

/// Bytes the store holds per vehicle beyond the JSON, after staging `n`
/// vehicles and looking each up once.
fn overhead(n: u32) -> f64 {
    let before = LIVE.load(Ordering::SeqCst);
    let store = MemoryStore::new();
    let mut json_bytes = 0usize;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let docs: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let v = vin(i);
                let d = build(&v, &[action(&format!("a{i}"), "c1", 1, "2.3.1")], 300, "")
                    .unwrap()
                    .unwrap();
                json_bytes += d.json.len();
                (v, d)
            })
            .collect();
        let new = vec![false; docs.len()];
        futures::executor::block_on(store.put_many(&docs, &new)).unwrap();
    }
    for i in 0..n {
        assert!(store.get_now(&vin(i)).is_some());
    }
    let after = LIVE.load(Ordering::SeqCst);
    let per_vehicle = (after - before) as f64 / f64::from(n) - json_bytes as f64 / f64::from(n);
    drop(store);
    per_vehicle
}

#[test]
fn the_memory_store_costs_at_most_300_bytes_per_vehicle_beyond_the_documents() {
    // Two fleet sizes land at different hash-table fill factors.
    for n in [100_000, 180_000] {
        let o = overhead(n);
        eprintln!("{n} vehicles: {o:.1} bytes per vehicle beyond the documents");
        assert!(
            o <= BUDGET,
            "{n} vehicles: {o:.1} bytes per vehicle, budget {BUDGET}"
        );
    }
}
