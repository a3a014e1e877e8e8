//! The in-process store: the documents of this process's fleet in sharded
//! hash tables.
//!
//! The budget is 300 bytes per staged vehicle besides the document bytes. A
//! table slot is the VIN's hash and a pointer (24 bytes), at a quarter to
//! half full: 48 to 96 bytes per vehicle. The record adds its reference
//! counts (16 bytes), the VIN (17) and the etag (16): 97 to 145 bytes in
//! all. `tests/memory_budget.rs` measures it.

mod table;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use self::table::{Json, Record, Table, VIN_LEN};
use super::{ReconcileRecord, StagedStore, Stamp};
use crate::document::{StoredDoc, ETAG_LEN};
use crate::StagingError;

/// Enough shards that 2 cores x (lookups + a writer) rarely meet on one lock,
/// few enough that the per-shard overhead is nothing.
const SHARDS: usize = 64;

type Key = [u8; VIN_LEN];

pub struct MemoryStore {
    shards: Box<[RwLock<Table>]>,
    /// Keyed per process, so nobody can pick VINs that all collide.
    hasher: RandomState,
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
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            locks: Mutex::new(HashMap::new()),
            last_reconcile: Mutex::new(None),
        }
    }

    /// The synchronous lookup behind `get`, for callers that want to skip
    /// the boxed future (the HTTP fast path, benches).
    pub fn get_now(&self, vin: &str) -> Option<StoredDoc> {
        let key = key(vin)?;
        let (hash, shard) = self.locate(&key);
        let record = shard
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash, &key)?
            .clone();
        Some(StoredDoc {
            etag: etag_string(record.etag()),
            json: Bytes::from_owner(Json(record)),
        })
    }

    pub fn len_now(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len() as u64)
            .sum()
    }

    /// The VIN's hash and its shard: the top bits pick the shard, the low
    /// bits the slot, so the two choices are independent.
    fn locate(&self, key: &Key) -> (u64, &RwLock<Table>) {
        let hash = self.hasher.hash_one(key);
        (hash, &self.shards[(hash >> 58) as usize % SHARDS])
    }
}

fn key(vin: &str) -> Option<Key> {
    vin.as_bytes().try_into().ok()
}

fn key_or_error(vin: &str) -> Result<Key, StagingError> {
    key(vin).ok_or_else(|| {
        StagingError::Invalid(format!(
            "vin {:?} is not 17 bytes",
            ota_common::vin::shown(vin)
        ))
    })
}

fn etag_string(etag: &[u8]) -> String {
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
                let (hash, shard) = self.locate(&key);
                let shard = shard.read().unwrap_or_else(|e| e.into_inner());
                shard.get(hash, &key).map(|r| Stamp {
                    etag: etag_string(r.etag()),
                    len: r.json().len(),
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
            // Built before taking the lock: the copy is the slow part.
            let record = Record::new(&key, &etag, &doc.json);
            let (hash, shard) = self.locate(&key);
            // Dropped once the lock is released.
            let _replaced = shard
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(hash, record);
        }
        Ok(())
    }

    async fn delete_many(&self, vins: &[String]) -> Result<u64, StagingError> {
        let mut existed = 0;
        for vin in vins {
            let Some(key) = key(vin) else { continue };
            let (hash, shard) = self.locate(&key);
            let removed = shard
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(hash, &key);
            existed += u64::from(removed.is_some());
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
            .records()
            .map(|r| String::from_utf8_lossy(r.vin()).into_owned())
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
