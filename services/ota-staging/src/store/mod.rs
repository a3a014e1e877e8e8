//! Where staged documents live: one key per VIN. [`MemoryStore`] for a single
//! process (it starts empty and is rebuilt at start-up), [`RedisStore`] when
//! several processes share the documents.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisStore, RedisStoreConfig};
use crate::document::StoredDoc;
use crate::StagingError;

/// What a writer compares before writing: the stored etag and document
/// length. The length catches a truncated or replaced value whose first
/// bytes (the etag) survived, without reading the document itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub etag: String,
    pub len: usize,
}

impl Stamp {
    pub fn of(doc: &StoredDoc) -> Self {
        Self {
            etag: doc.etag.clone(),
            len: doc.json.len(),
        }
    }

    pub fn matches(&self, doc: &StoredDoc) -> bool {
        self.len == doc.json.len() && self.etag == doc.etag
    }
}

/// The outcome of the latest reconcile, shared by every staging process
/// through the store (so Stats answers the same wherever it is asked, and a
/// process skips a reconcile another one just did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileRecord {
    /// When it finished, unix milliseconds.
    pub at_ms: i64,
    /// Documents written or deleted because they differed from the open
    /// actions.
    pub repaired: u64,
    /// The public URL the documents were staged under (artifact links).
    pub public_url: String,
}

#[async_trait]
pub trait StagedStore: Send + Sync + 'static {
    /// "memory" or "redis" (the Stats `store` field).
    fn name(&self) -> &'static str;

    /// The stored document, `None` when the vehicle has none.
    /// [`StagingError::Corrupt`] when the stored value is not a valid
    /// document of this VIN.
    async fn get(&self, vin: &str) -> Result<Option<StoredDoc>, StagingError>;

    /// `get` without a future, for a store in this process's memory: the
    /// adapters' fast path skips the boxed future. `None` when the store
    /// cannot answer synchronously.
    fn get_in_process(&self, _vin: &str) -> Option<Option<StoredDoc>> {
        None
    }

    /// The stamp of every VIN's stored value, in order (`None` when absent).
    async fn stamps(&self, vins: &[String]) -> Result<Vec<Option<Stamp>>, StagingError>;

    /// Writes documents (insert or replace). `existed[i]` says whether
    /// `docs[i]` replaces a stored value, as the writer's
    /// [`stamps`](Self::stamps) read found (one entry per document). A store
    /// that keeps a separate count (Redis) adds the new ones to it in the
    /// same round trip instead of testing every key; a stale answer (another
    /// writer created or deleted the key since) skews only that count, until
    /// reconcile corrects it. The in-process store counts exactly and
    /// ignores it.
    async fn put_many(
        &self,
        docs: &[(String, StoredDoc)],
        existed: &[bool],
    ) -> Result<(), StagingError>;

    /// Deletes documents; returns how many existed (exactly: each key's
    /// removal is reported by the store itself).
    async fn delete_many(&self, vins: &[String]) -> Result<u64, StagingError>;

    /// How many vehicles have a stored document: exact for the in-process
    /// store, a maintained counter for Redis (see
    /// [`put_many`](Self::put_many) and [`correct_count`](Self::correct_count)).
    async fn len(&self) -> Result<u64, StagingError>;

    async fn is_empty(&self) -> Result<bool, StagingError> {
        Ok(self.len().await? == 0)
    }

    /// One page of stored VINs, in no particular order. Start with cursor 0;
    /// a returned cursor of 0 means the walk is complete. A VIN may appear
    /// twice, and one written during the walk may be missed (as with Redis
    /// `SCAN`), which reconcile tolerates.
    async fn scan_vins(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(Vec<String>, u64), StagingError>;

    /// Takes or renews (when `token` holds it) the lock `name` for `ttl`;
    /// false when someone else holds it.
    async fn try_lock(&self, name: &str, token: &str, ttl: Duration) -> Result<bool, StagingError>;

    /// Releases `name` when `token` holds it.
    async fn unlock(&self, name: &str, token: &str) -> Result<(), StagingError>;

    async fn record_reconcile(&self, record: &ReconcileRecord) -> Result<(), StagingError>;

    async fn last_reconcile(&self) -> Result<Option<ReconcileRecord>, StagingError>;

    /// After a full walk of [`scan_vins`](Self::scan_vins) found `walked`
    /// documents: a store that keeps a separate count, which concurrent
    /// writers of one vehicle and edits by hand can skew, sets it to
    /// `walked` when it still reads `expected` (nobody wrote during the
    /// walk, so the walk is exact). True when corrected.
    async fn correct_count(&self, _expected: u64, _walked: u64) -> Result<bool, StagingError> {
        Ok(false)
    }

    /// True when the store starts empty with every process start, so staging
    /// must rebuild every document before it answers.
    fn needs_rebuild(&self) -> bool {
        false
    }
}

pub type SharedStore = Arc<dyn StagedStore>;
