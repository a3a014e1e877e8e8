//! Documents in Redis, shared by every staging and adapter process.
//!
//! Each vehicle is one string key `{ns}:staged:{vin}` holding
//! `"{etag}\n{json}"`: a fetch is exactly one GET, and the etag is readable
//! without parsing JSON (a writer compares stamps with `GETRANGE` and
//! `STRLEN` without transferring documents).
//!
//! Writes are plain pipelines (no `MULTI`, no scripts) of up to
//! [`RedisStoreConfig::chunk`] `SET`s or `DEL`s: Redis spends its time on
//! the writes themselves, not on a script testing every key.
//!
//! The number of staged vehicles is a counter, `{ns}:staged_count`, kept
//! without testing keys. A writer already knows from its
//! [`stamps`](StagedStore::stamps) read which vehicles had a document, so
//! `put_many` ends its pipeline with `INCRBY` by the number of documents it
//! creates. `delete_many` decrements by the number of keys its `DEL`s
//! report removed (exact), in a second round trip. The counter can drift:
//! two writers that both read a vehicle as absent and both create it count
//! it twice, a writer that read it as present while another deleted it
//! counts it zero times, a pipeline cut off midway (timeout, lost
//! connection) may apply its writes but not the count, and edits by hand
//! bypass it. Reconcile resets it after its full walk
//! ([`StagedStore::correct_count`]). The alternatives cost more. `DBSIZE`
//! counts every key of the database (the bus streams too). A set of VINs
//! would cost as much memory as the documents. A `SCAN` walk is O(fleet)
//! for a stats call. A Lua script testing each key (the earlier design)
//! was exact, but bulk staging ran about 30% slower with it.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisWrite, Script, ToRedisArgs, ToSingleRedisArg};

use super::{ReconcileRecord, StagedStore, Stamp};
use crate::document::{head_prefix, is_etag, StoredDoc, ETAG_LEN};
use crate::StagingError;

#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// Key namespace: documents live under `{namespace}:staged:`.
    pub namespace: String,
    /// Bound on a vehicle's lookup, connection included. Past it the fetch
    /// fails with UNAVAILABLE instead of piling up behind a dead Redis.
    pub lookup_timeout: Duration,
    /// Bound on a bulk write or read of one chunk.
    pub bulk_timeout: Duration,
    /// Commands per pipeline.
    pub chunk: usize,
}

impl Default for RedisStoreConfig {
    fn default() -> Self {
        Self {
            namespace: "ota".to_owned(),
            lookup_timeout: Duration::from_millis(500),
            bulk_timeout: Duration::from_secs(5),
            chunk: 1000,
        }
    }
}

pub struct RedisStore {
    /// Vehicle lookups only: on their own connection they never queue behind
    /// a worker's 1000-document write.
    lookups: ConnectionManager,
    bulk: ConnectionManager,
    config: RedisStoreConfig,
    doc_prefix: String,
    count_key: String,
    reconcile_key: String,
    lock_prefix: String,
}

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0";

const CORRECT_COUNT: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur == tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0";

impl RedisStore {
    /// A store at `url` with the default namespace `ota`. Connects lazily:
    /// only a malformed URL fails here; a process starts while Redis is down,
    /// and its lookups fail with UNAVAILABLE until Redis is back. Call
    /// [`ping`](Self::ping) to require Redis at start-up.
    pub async fn connect(url: &str) -> Result<Self, StagingError> {
        Self::connect_with(url, RedisStoreConfig::default()).await
    }

    pub async fn connect_with(url: &str, config: RedisStoreConfig) -> Result<Self, StagingError> {
        let client = redis::Client::open(url)
            // The URL itself stays out of the message: it may hold a password.
            .map_err(|e| StagingError::Invalid(format!("invalid redis url: {e}")))?;
        let manager = |timeout: Duration| {
            // No reconnect retries inside a call: the call's own timeout is
            // the budget, and the next call starts a fresh attempt.
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(0);
            ConnectionManager::new_lazy_with_config(client.clone(), cfg)
                .map_err(|e| StagingError::Invalid(format!("cannot set up the redis client: {e}")))
        };
        let ns = &config.namespace;
        Ok(Self {
            lookups: manager(config.lookup_timeout)?,
            bulk: manager(config.bulk_timeout)?,
            doc_prefix: format!("{ns}:staged:"),
            count_key: format!("{ns}:staged_count"),
            reconcile_key: format!("{ns}:staging_reconcile"),
            lock_prefix: format!("{ns}:staging_lock:"),
            config,
        })
    }

    /// The key of a vehicle's document.
    pub fn key(&self, vin: &str) -> String {
        format!("{}{vin}", self.doc_prefix)
    }

    /// Answers when Redis does (readiness).
    pub async fn ping(&self) -> Result<(), StagingError> {
        let mut con = self.lookups.clone();
        timed(self.config.lookup_timeout, async move {
            redis::cmd("PING").query_async::<String>(&mut con).await
        })
        .await
        .map(|_| ())
    }

    fn bulk<'a, T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>> + Send + 'a,
    ) -> impl Future<Output = Result<T, StagingError>> + Send + 'a
    where
        T: Send + 'a,
    {
        timed(self.config.bulk_timeout, fut)
    }
}

async fn timed<T>(
    limit: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StagingError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(StagingError::from),
        Err(_) => Err(StagingError::Unavailable(format!(
            "redis did not answer within {} ms",
            limit.as_millis()
        ))),
    }
}

/// Splits `"{etag}\n{json}"`, checking that it is a document of `vin` with
/// that etag. The full JSON check costs about a microsecond per kilobyte,
/// small next to the network round trip, and keeps a damaged value from
/// reaching a vehicle.
fn parse_value(vin: &str, raw: Vec<u8>) -> Result<StoredDoc, StagingError> {
    let corrupt = |reason: String| StagingError::Corrupt {
        vin: vin.to_owned(),
        reason,
    };
    if raw.len() <= ETAG_LEN || raw[ETAG_LEN] != b'\n' || !is_etag(&raw[..ETAG_LEN]) {
        return Err(corrupt(
            "the value does not start with an etag line".to_owned(),
        ));
    }
    let etag = String::from_utf8_lossy(&raw[..ETAG_LEN]).into_owned();
    let json = Bytes::from(raw).slice(ETAG_LEN + 1..);
    if !json.starts_with(&head_prefix(vin, &etag)) {
        return Err(corrupt(format!(
            "the document does not start with vin {vin} and etag {etag}"
        )));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&json) {
        return Err(corrupt(format!("invalid json: {e}")));
    }
    Ok(StoredDoc { etag, json })
}

/// A document's key, `{prefix}{vin}`, written as one argument without an
/// intermediate `String`.
struct DocKey<'a>(&'a str, &'a str);

impl DocKey<'_> {
    fn len(&self) -> usize {
        self.0.len() + self.1.len()
    }
}

impl ToRedisArgs for DocKey<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut w = out.writer_for_next_arg();
        // Writes into a Vec: they cannot fail.
        let _ = w.write_all(self.0.as_bytes());
        let _ = w.write_all(self.1.as_bytes());
    }
}

impl ToSingleRedisArg for DocKey<'_> {}

/// A stored value, `"{etag}\n{json}"`, written as one argument.
struct DocValue<'a>(&'a StoredDoc);

fn value_len(doc: &StoredDoc) -> usize {
    doc.etag.len() + 1 + doc.json.len()
}

impl ToRedisArgs for DocValue<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut w = out.writer_for_next_arg();
        let _ = w.write_all(self.0.etag.as_bytes());
        let _ = w.write_all(b"\n");
        let _ = w.write_all(&self.0.json);
    }
}

impl ToSingleRedisArg for DocValue<'_> {}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl StagedStore for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, vin: &str) -> Result<Option<StoredDoc>, StagingError> {
        let mut con = self.lookups.clone();
        let key = self.key(vin);
        let raw: Option<Vec<u8>> = timed(self.config.lookup_timeout, async move {
            redis::cmd("GET").arg(&key).query_async(&mut con).await
        })
        .await?;
        raw.map(|raw| parse_value(vin, raw)).transpose()
    }

    async fn stamps(&self, vins: &[String]) -> Result<Vec<Option<Stamp>>, StagingError> {
        let mut out = Vec::with_capacity(vins.len());
        for chunk in vins.chunks(self.config.chunk) {
            let mut pipe = redis::pipe();
            for vin in chunk {
                let key = self.key(vin);
                pipe.cmd("GETRANGE").arg(&key).arg(0).arg(ETAG_LEN);
                pipe.cmd("STRLEN").arg(&key);
            }
            let mut con = self.bulk.clone();
            let replies: Vec<(Vec<u8>, usize)> = self
                .bulk(async move { pipe.query_async(&mut con).await })
                .await?;
            out.extend(replies.into_iter().map(|(head, strlen)| {
                if strlen == 0 {
                    return None;
                }
                // A value without an etag line still exists: an empty etag
                // never matches, so the writer replaces it.
                let valid = head.len() == ETAG_LEN + 1
                    && head[ETAG_LEN] == b'\n'
                    && is_etag(&head[..ETAG_LEN]);
                Some(if valid {
                    Stamp {
                        etag: String::from_utf8_lossy(&head[..ETAG_LEN]).into_owned(),
                        len: strlen - ETAG_LEN - 1,
                    }
                } else {
                    Stamp {
                        etag: String::new(),
                        len: strlen,
                    }
                })
            }));
        }
        Ok(out)
    }

    async fn put_many(
        &self,
        docs: &[(String, StoredDoc)],
        existed: &[bool],
    ) -> Result<(), StagingError> {
        if existed.len() != docs.len() {
            return Err(StagingError::Invalid(format!(
                "put_many: {} documents but {} existence flags",
                docs.len(),
                existed.len()
            )));
        }
        let chunk = self.config.chunk.max(1);
        for (docs, existed) in docs.chunks(chunk).zip(existed.chunks(chunk)) {
            let mut pipe = redis::pipe();
            for (vin, doc) in docs {
                let key = DocKey(&self.doc_prefix, vin);
                // Sized up front: the value is written straight into the
                // command, without an intermediate buffer.
                let mut set = Cmd::with_capacity(3, 3 + key.len() + value_len(doc));
                set.arg("SET").arg(key).arg(DocValue(doc));
                pipe.add_command(set).ignore();
            }
            let created = existed.iter().filter(|e| !**e).count();
            if created > 0 {
                pipe.cmd("INCRBY")
                    .arg(&self.count_key)
                    .arg(created)
                    .ignore();
            }
            let mut con = self.bulk.clone();
            self.bulk(async move { pipe.exec_async(&mut con).await })
                .await?;
        }
        Ok(())
    }

    async fn delete_many(&self, vins: &[String]) -> Result<u64, StagingError> {
        let mut existed = 0;
        for chunk in vins.chunks(self.config.chunk.max(1)) {
            let mut pipe = redis::pipe();
            for vin in chunk {
                pipe.cmd("DEL").arg(DocKey(&self.doc_prefix, vin));
            }
            let mut con = self.bulk.clone();
            let removed: Vec<i64> = self
                .bulk(async move { pipe.query_async(&mut con).await })
                .await?;
            let n = removed.iter().filter(|r| **r > 0).count() as u64;
            if n > 0 {
                // Only what this call removed: two deleters of one vehicle
                // cannot both count it.
                let mut con = self.bulk.clone();
                let key = self.count_key.clone();
                self.bulk(async move {
                    redis::cmd("DECRBY")
                        .arg(&key)
                        .arg(n)
                        .query_async::<i64>(&mut con)
                        .await
                })
                .await?;
            }
            existed += n;
        }
        Ok(existed)
    }

    async fn len(&self) -> Result<u64, StagingError> {
        let mut con = self.bulk.clone();
        let key = self.count_key.clone();
        let n: Option<i64> = self
            .bulk(async move { redis::cmd("GET").arg(&key).query_async(&mut con).await })
            .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    async fn scan_vins(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(Vec<String>, u64), StagingError> {
        let mut con = self.bulk.clone();
        let pattern = format!("{}*", glob_escape(&self.doc_prefix));
        let (next, keys): (u64, Vec<String>) = self
            .bulk(async move {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(count.max(1))
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let vins = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.doc_prefix).map(str::to_owned))
            .collect();
        Ok((vins, next))
    }

    async fn try_lock(&self, name: &str, token: &str, ttl: Duration) -> Result<bool, StagingError> {
        let key = format!("{}{name}", self.lock_prefix);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let mut con = self.bulk.clone();
        let (k, t) = (key.clone(), token.to_owned());
        let taken: Option<String> = self
            .bulk(async move {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(&t)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        if taken.is_some() {
            return Ok(true);
        }
        let script = Script::new(RENEW);
        let mut inv = script.prepare_invoke();
        inv.key(&key).arg(token).arg(ttl_ms);
        let mut con = self.bulk.clone();
        let renewed: i64 = self
            .bulk(async move { inv.invoke_async(&mut con).await })
            .await?;
        Ok(renewed == 1)
    }

    async fn unlock(&self, name: &str, token: &str) -> Result<(), StagingError> {
        let script = Script::new(UNLOCK);
        let mut inv = script.prepare_invoke();
        inv.key(format!("{}{name}", self.lock_prefix)).arg(token);
        let mut con = self.bulk.clone();
        self.bulk(async move { inv.invoke_async::<i64>(&mut con).await })
            .await?;
        Ok(())
    }

    async fn record_reconcile(&self, record: &ReconcileRecord) -> Result<(), StagingError> {
        let mut con = self.bulk.clone();
        let key = self.reconcile_key.clone();
        let (at, repaired) = (record.at_ms, record.repaired);
        let public_url = record.public_url.clone();
        self.bulk(async move {
            redis::cmd("HSET")
                .arg(&key)
                .arg("at_ms")
                .arg(at)
                .arg("repaired")
                .arg(repaired)
                .arg("public_url")
                .arg(public_url)
                .query_async::<i64>(&mut con)
                .await
        })
        .await?;
        Ok(())
    }

    async fn last_reconcile(&self) -> Result<Option<ReconcileRecord>, StagingError> {
        let mut con = self.bulk.clone();
        let key = self.reconcile_key.clone();
        let (at_ms, repaired, public_url): (Option<i64>, Option<u64>, Option<String>) = self
            .bulk(async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("at_ms")
                    .arg("repaired")
                    .arg("public_url")
                    .query_async(&mut con)
                    .await
            })
            .await?;
        Ok(at_ms.map(|at_ms| ReconcileRecord {
            at_ms,
            repaired: repaired.unwrap_or(0),
            public_url: public_url.unwrap_or_default(),
        }))
    }

    async fn correct_count(&self, before: u64, walked: u64) -> Result<bool, StagingError> {
        let script = Script::new(CORRECT_COUNT);
        let mut inv = script.prepare_invoke();
        inv.key(&self.count_key).arg(before).arg(walked);
        let mut con = self.bulk.clone();
        let done: i64 = self
            .bulk(async move { inv.invoke_async(&mut con).await })
            .await?;
        Ok(done == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIN: &str = "WVWZZZE1ZMP000001";

    fn value(doc: &StoredDoc) -> Vec<u8> {
        let mut v = doc.etag.as_bytes().to_vec();
        v.push(b'\n');
        v.extend_from_slice(&doc.json);
        v
    }

    #[test]
    fn parses_what_it_writes() {
        let doc = crate::document::empty(VIN, 300);
        let doc = StoredDoc {
            etag: "0123456789abcdef".into(),
            json: Bytes::from(
                String::from_utf8(doc.json.to_vec())
                    .unwrap()
                    .replace(crate::document::EMPTY_ETAG, "0123456789abcdef"),
            ),
        };
        assert_eq!(parse_value(VIN, value(&doc)).unwrap(), doc);
    }

    #[test]
    fn rejects_damaged_values_naming_the_vin() {
        let doc = crate::document::empty(VIN, 300);
        let mut truncated = value(&doc);
        truncated.truncate(truncated.len() - 2);
        let other_vin = value(&crate::document::empty("WVWZZZE1ZMP000002", 300));
        for raw in [b"garbage".to_vec(), truncated, other_vin] {
            let err = parse_value(VIN, raw).unwrap_err();
            assert!(
                matches!(&err, StagingError::Corrupt { vin, .. } if vin == VIN),
                "{err}"
            );
        }
    }

    #[test]
    fn writes_key_and_value_as_single_arguments() {
        let doc = crate::document::empty(VIN, 300);
        let mut direct = Cmd::with_capacity(3, 0);
        direct
            .arg("SET")
            .arg(DocKey("ota:staged:", VIN))
            .arg(DocValue(&doc));
        let expected = redis::cmd("SET")
            .arg(format!("ota:staged:{VIN}"))
            .arg(value(&doc))
            .get_packed_command();
        assert_eq!(direct.get_packed_command(), expected);
        assert_eq!(DocValue(&doc).to_redis_args(), vec![value(&doc)]);
        assert_eq!(value_len(&doc), value(&doc).len());
    }

    #[test]
    fn escapes_glob_characters_of_the_namespace() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
