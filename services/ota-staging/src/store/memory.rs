//! The in-process store: the documents of this process's fleet in sharded
//! hash maps.
//!
//! The budget is 300 bytes per staged vehicle besides the document bytes. An
//! entry is the VIN as 17 bytes, the etag as 16 bytes and a `Bytes` handle
//! (32 bytes): 72 bytes with padding, plus one control byte. A hash table
//! runs between 7/16 and 7/8 full, so a bucket costs 83 to 167 bytes per
//! vehicle. A `Bytes` built from an exact-size boxed slice gets a 24-byte
//! shared header when it is first cloned, which `put_many` does. The worst
//! case is about 190 bytes; `tests/memory_budget.rs` measures it.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ReconcileRecord, StagedStore, Stamp};
use crate::document::{StoredDoc, ETAG_LEN};
use crate::StagingError;

/// Enough shards that 2 cores x (lookups + a writer) rarely meet on one lock,
/// few enough that the per-shard overhead is nothing.
const SHARDS: usize = 64;

type Key = [u8; 17];

struct Entry {
    etag: [u8; ETAG_LEN],
    json: Bytes,
}

pub struct MemoryStore {
    shards: Box<[RwLock<HashMap<Key, Entry>>]>,
    locks: Mutex<HashMap<String, (String, Instant)>>,
    last_reconcile: Mutex<Option<ReconcileRecord>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            locks: Mutex::new(HashMap::new()),
            last_reconcile: Mutex::new(None),
        }
    }

    /// The synchronous lookup behind `get`, for callers that want to skip
    /// the boxed future (the HTTP fast path, benches).
    pub fn get_now(&self, vin: &str) -> Option<StoredDoc> {
        let key = key(vin)?;
        let shard = self.shard(&key).read().unwrap_or_else(|e| e.into_inner());
        shard.get(&key).map(|e| {
            prefetch(&e.json);
            StoredDoc {
                etag: etag_string(&e.etag),
                json: e.json.clone(),
            }
        })
    }

    pub fn len_now(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len() as u64)
            .sum()
    }

    fn shard(&self, key: &Key) -> &RwLock<HashMap<Key, Entry>> {
        // FNV-1a: VINs of one fleet share most characters, so every byte
        // must influence the shard.
        let mut h: u32 = 0x811c_9dc5;
        for b in key {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        &self.shards[h as usize % SHARDS]
    }
}

/// Asks the CPU for every cache line of a document the caller is about to
/// read (a fetch parses it whole), so that with a fleet too large for the
/// caches the lines arrive together rather than one miss after another.
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // One address per 64-byte line, and the last byte: the document
        // need not start on a line boundary.
        let lines = bytes.chunks(64).map(<[u8]>::as_ptr);
        for at in lines.chain(bytes.last().map(std::ptr::from_ref)) {
            // SAFETY: a prefetch is only a hint: it never faults nor
            // changes memory, and SSE is part of the x86_64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

fn key(vin: &str) -> Option<Key> {
    vin.as_bytes().try_into().ok()
}

fn key_or_error(vin: &str) -> Result<Key, StagingError> {
    key(vin).ok_or_else(|| StagingError::Invalid(format!("vin {vin:?} is not 17 bytes")))
}

fn etag_string(etag: &[u8; ETAG_LEN]) -> String {
    // Only ever filled from a validated hex etag.
    String::from_utf8_lossy(etag).into_owned()
}

#[async_trait]
impl StagedStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, vin: &str) -> Result<Option<StoredDoc>, StagingError> {
        Ok(self.get_now(vin))
    }

    fn get_in_process(&self, vin: &str) -> Option<Option<StoredDoc>> {
        Some(self.get_now(vin))
    }

    async fn stamps(&self, vins: &[String]) -> Result<Vec<Option<Stamp>>, StagingError> {
        Ok(vins
            .iter()
            .map(|vin| {
                let key = key(vin)?;
                let shard = self.shard(&key).read().unwrap_or_else(|e| e.into_inner());
                shard.get(&key).map(|e| Stamp {
                    etag: etag_string(&e.etag),
                    len: e.json.len(),
                })
            })
            .collect())
    }

    async fn put_many(
        &self,
        docs: &[(String, StoredDoc)],
        _existed: &[bool],
    ) -> Result<(), StagingError> {
        for (vin, doc) in docs {
            let key = key_or_error(vin)?;
            let etag: [u8; ETAG_LEN] = doc
                .etag
                .as_bytes()
                .try_into()
                .ok()
                .filter(|e: &[u8; ETAG_LEN]| crate::document::is_etag(e))
                .ok_or_else(|| {
                    StagingError::Invalid(format!(
                        "etag {:?} of vehicle {vin} is not {ETAG_LEN} hex characters",
                        doc.etag
                    ))
                })?;
            let entry = Entry {
                etag,
                json: doc.json.clone(),
            };
            self.shard(&key)
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, entry);
        }
        Ok(())
    }

    async fn delete_many(&self, vins: &[String]) -> Result<u64, StagingError> {
        let mut existed = 0;
        for vin in vins {
            let Some(key) = key(vin) else { continue };
            let mut shard = self.shard(&key).write().unwrap_or_else(|e| e.into_inner());
            if shard.remove(&key).is_some() {
                existed += 1;
                // Give memory back when a campaign ends and most vehicles
                // lose their documents.
                if shard.capacity() > 64 && shard.len() < shard.capacity() / 4 {
                    shard.shrink_to_fit();
                }
            }
        }
        Ok(existed)
    }

    async fn len(&self) -> Result<u64, StagingError> {
        Ok(self.len_now())
    }

    async fn scan_vins(
        &self,
        cursor: u64,
        _count: usize,
    ) -> Result<(Vec<String>, u64), StagingError> {
        // One shard per page: a hash map has no stable position to resume
        // from, and a shard is 1/64 of the fleet.
        let index = cursor as usize;
        if index >= SHARDS {
            return Ok((Vec::new(), 0));
        }
        let vins = self.shards[index]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let next = if index + 1 == SHARDS {
            0
        } else {
            index as u64 + 1
        };
        Ok((vins, next))
    }

    async fn try_lock(&self, name: &str, token: &str, ttl: Duration) -> Result<bool, StagingError> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match locks.get(name) {
            Some((holder, until)) if holder != token && *until > now => Ok(false),
            _ => {
                locks.insert(name.to_owned(), (token.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn unlock(&self, name: &str, token: &str) -> Result<(), StagingError> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.get(name).is_some_and(|(holder, _)| holder == token) {
            locks.remove(name);
        }
        Ok(())
    }

    async fn record_reconcile(&self, record: &ReconcileRecord) -> Result<(), StagingError> {
        *self
            .last_reconcile
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(record.clone());
        Ok(())
    }

    async fn last_reconcile(&self) -> Result<Option<ReconcileRecord>, StagingError> {
        Ok(self
            .last_reconcile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    fn needs_rebuild(&self) -> bool {
        true
    }
}
