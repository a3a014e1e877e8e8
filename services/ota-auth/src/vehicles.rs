//! Vehicle credentials: one secret per vehicle (several during a rotation),
//! stored hashed, checked on every protocol. A credential names its VIN, so
//! whoever holds it can act as that vehicle and no other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use ota_common::Vin;
use ota_db::{with_pool, Db};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{hash_secret, secret_digest, AuthError, AUTH_CACHE_TTL};

/// Vehicle secrets start with this, so a management token used as one (or
/// the other way round) is refused before any lookup.
pub const VEHICLE_TOKEN_PREFIX: &str = "otav_";

/// Entries kept before the cache is dropped whole: bounds memory against a
/// flood of distinct valid secrets.
const CACHE_MAX: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VehicleCredential {
    pub id: String,
    pub vin: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A credential just issued, with its secret (shown once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedCredential {
    #[serde(flatten)]
    pub credential: VehicleCredential,
    pub token: String,
}

/// Who a valid vehicle secret belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VehicleIdentity {
    pub vin: String,
    pub credential_id: String,
}

#[derive(Clone)]
pub struct VehicleCredentials {
    db: Db,
    /// Secret hash to identity and when it was last confirmed: every poll
    /// authenticates, and vehicles poll far more often than credentials
    /// change. A revoke clears its entries here at once; other processes
    /// notice within the cache lifetime.
    cache: Arc<Mutex<Cache>>,
}

/// Entries older than this are confirmed again, in batches: a vehicle that
/// keeps polling is then re-checked by one query for hundreds of vehicles
/// instead of one query each per cache lifetime. An entry is accepted only
/// while its last confirmation is younger than `AUTH_CACHE_TTL`, so a
/// revocation elsewhere still takes effect within that lifetime.
const REFRESH_AFTER: Duration = Duration::from_secs(5);
/// Secrets confirmed by one query, at most.
const REFRESH_BATCH: usize = 500;
/// How long the first entry due waits for others to join its batch.
const REFRESH_GATHER: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Cache {
    /// Keyed by the raw digest: the hex form is only needed to ask the
    /// database.
    entries: HashMap<[u8; 32], Entry>,
    /// Entries waiting for the next batch confirmation.
    due: Vec<[u8; 32]>,
    /// When the oldest entry in `due` was queued.
    due_since: Option<Instant>,
    /// A request is running the batch query.
    refreshing: bool,
    /// Bumped by every revoke here: an answer read from the database before
    /// a revoke must not go into the cache after it.
    generation: u64,
}

struct Entry {
    identity: VehicleIdentity,
    /// When the database last said the secret was valid (the time the query
    /// was sent, not answered, so an entry never looks newer than it is).
    confirmed: Instant,
    queued: bool,
}

impl Cache {
    /// The batch this request runs, if one is due and none is running.
    fn take_batch(&mut self, now: Instant) -> Option<(Vec<[u8; 32]>, u64)> {
        let since = self.due_since?;
        if self.refreshing
            || (self.due.len() < REFRESH_BATCH
                && now.saturating_duration_since(since) < REFRESH_GATHER)
        {
            return None;
        }
        let n = self.due.len().min(REFRESH_BATCH);
        let batch: Vec<[u8; 32]> = self.due.drain(..n).collect();
        self.due_since = (!self.due.is_empty()).then_some(now);
        self.refreshing = true;
        Some((batch, self.generation))
    }
}

/// Ends a batch however the request ends (answered, failed, or dropped
/// mid-query because the vehicle hung up): entries not confirmed go back
/// to waiting for the next poll to queue them.
struct Refreshing<'a> {
    cache: &'a Mutex<Cache>,
    batch: &'a [[u8; 32]],
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.refreshing = false;
        for digest in self.batch {
            if let Some(e) = cache.entries.get_mut(digest) {
                e.queued = false;
            }
        }
    }
}

type Row = (String, String, i64, Option<i64>);

fn from_row((id, vin, created_at, revoked_at): Row) -> VehicleCredential {
    let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    VehicleCredential {
        id,
        vin,
        created_at: at(created_at),
        revoked_at: revoked_at.map(at),
    }
}

impl VehicleCredentials {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Arc::new(Mutex::new(Cache::default())),
        }
    }

    /// The database the credentials live in, for adapters that keep
    /// their own rows beside them (the DDI action ids).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Issues a new credential for the vehicle. With `rotate`, the vehicle's
    /// earlier credentials are revoked in the same transaction.
    pub async fn issue(&self, vin: &str, rotate: bool) -> Result<IssuedCredential, AuthError> {
        let vin = Vin::parse(vin)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .to_string();
        let secret: String = format!(
            "{VEHICLE_TOKEN_PREFIX}{}",
            rand::thread_rng()
                .sample_iter(&Alphanumeric)
                .take(40)
                .map(char::from)
                .collect::<String>()
        );
        let now = Utc::now().timestamp_millis();
        let id = uuid::Uuid::now_v7().to_string();
        let hash = hash_secret(&secret);
        with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            if rotate {
                sqlx::query("UPDATE vehicle_credentials SET revoked_at = $1 WHERE vin = $2 AND revoked_at IS NULL")
                    .bind(now).bind(&vin).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO vehicle_credentials (id, vin, token_hash, created_at) VALUES ($1, $2, $3, $4)")
                .bind(&id).bind(&vin).bind(&hash).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        if rotate {
            self.forget(|identity| identity.vin == vin);
        }
        Ok(IssuedCredential {
            credential: from_row((id, vin, now, None)),
            token: secret,
        })
    }

    /// The vehicle a secret belongs to, if it is valid.
    pub async fn authenticate(&self, secret: &str) -> Result<VehicleIdentity, AuthError> {
        self.authenticate_at(secret, Instant::now()).await
    }

    async fn authenticate_at(
        &self,
        secret: &str,
        now: Instant,
    ) -> Result<VehicleIdentity, AuthError> {
        if !secret.starts_with(VEHICLE_TOKEN_PREFIX) || secret.len() > 128 {
            return Err(AuthError::BadToken);
        }
        let digest = secret_digest(secret);
        let (cached, batch) = {
            let mut guard = self.cache.lock().expect("cache");
            let cache = &mut *guard;
            let cached = match cache.entries.get_mut(&digest) {
                Some(e) if now.saturating_duration_since(e.confirmed) < AUTH_CACHE_TTL => {
                    if !e.queued && now.saturating_duration_since(e.confirmed) >= REFRESH_AFTER {
                        e.queued = true;
                        cache.due.push(digest);
                        cache.due_since.get_or_insert(now);
                    }
                    Some(e.identity.clone())
                }
                _ => None,
            };
            (cached, cache.take_batch(now))
        };
        if let Some((batch, generation)) = batch {
            self.refresh(&batch, generation, now).await;
        }
        if let Some(identity) = cached {
            // Unless the batch just ran found this very secret revoked.
            if self
                .cache
                .lock()
                .expect("cache")
                .entries
                .contains_key(&digest)
            {
                return Ok(identity);
            }
        }
        let generation = self.cache.lock().expect("cache").generation;
        let hash = hex::encode(digest);
        let row: Option<(String, String)> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT id, vin FROM vehicle_credentials WHERE token_hash = $1 AND revoked_at IS NULL")
                .bind(&hash).fetch_optional(pool).await?
        });
        let (credential_id, vin) = row.ok_or(AuthError::BadToken)?;
        let identity = VehicleIdentity { vin, credential_id };
        let mut cache = self.cache.lock().expect("cache");
        if cache.generation == generation {
            if cache.entries.len() >= CACHE_MAX {
                cache.entries.clear();
                cache.due.clear();
                cache.due_since = None;
            }
            cache.entries.insert(
                digest,
                Entry {
                    identity: identity.clone(),
                    confirmed: now,
                    queued: false,
                },
            );
        }
        Ok(identity)
    }

    /// Confirms a batch of cached secrets with one query: those still valid
    /// count as confirmed at `now`, the others leave the cache. On a
    /// database error nothing changes; the entries expire at their usual
    /// time and are then checked one by one.
    async fn refresh(&self, batch: &[[u8; 32]], generation: u64, now: Instant) {
        let _end = Refreshing {
            cache: &self.cache,
            batch,
        };
        let rows: Result<Vec<(String, String, String)>, sqlx::Error> = with_pool!(&self.db, pool => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT token_hash, id, vin FROM vehicle_credentials WHERE revoked_at IS NULL AND token_hash IN (",
            );
            let mut list = q.separated(", ");
            for digest in batch {
                list.push_bind(hex::encode(digest));
            }
            q.push(")");
            q.build_query_as().fetch_all(pool).await
        });
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, secrets = batch.len(), "confirming cached vehicle credentials failed");
                return;
            }
        };
        let valid: HashMap<String, (String, String)> = rows
            .into_iter()
            .map(|(hash, id, vin)| (hash, (id, vin)))
            .collect();
        let mut cache = self.cache.lock().expect("cache");
        if cache.generation != generation {
            return;
        }
        for digest in batch {
            let still = match (cache.entries.get(digest), valid.get(&hex::encode(digest))) {
                (None, _) => continue,
                (Some(e), Some((id, vin))) => {
                    e.identity.credential_id == *id && e.identity.vin == *vin
                }
                (Some(_), None) => false,
            };
            if still {
                if let Some(e) = cache.entries.get_mut(digest) {
                    e.confirmed = e.confirmed.max(now);
                }
            } else {
                cache.entries.remove(digest);
            }
        }
    }

    /// A vehicle's credentials, newest last, revoked ones included.
    pub async fn list(&self, vin: &str) -> Result<Vec<VehicleCredential>, AuthError> {
        let rows: Vec<Row> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT id, vin, created_at, revoked_at FROM vehicle_credentials WHERE vin = $1 ORDER BY created_at, id")
                .bind(vin).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// Revokes one credential of the vehicle, or all of them when `id` is
    /// None. Returns how many were revoked now.
    pub async fn revoke(&self, vin: &str, id: Option<&str>) -> Result<u64, AuthError> {
        let now = Utc::now().timestamp_millis();
        let n = with_pool!(&self.db, pool => {
            sqlx::query("UPDATE vehicle_credentials SET revoked_at = $1 WHERE vin = $2 AND ($3 IS NULL OR id = $3) AND revoked_at IS NULL")
                .bind(now).bind(vin).bind(id).execute(pool).await?.rows_affected()
        });
        if n == 0 && id.is_some() {
            return Err(AuthError::NotFound(format!(
                "credential {} of vehicle {}",
                crate::principal::bounded(id.unwrap_or_default()),
                ota_common::vin::shown(vin)
            )));
        }
        self.forget(|identity| {
            identity.vin == vin && id.is_none_or(|i| identity.credential_id == i)
        });
        Ok(n)
    }

    fn forget(&self, pred: impl Fn(&VehicleIdentity) -> bool) {
        let mut cache = self.cache.lock().expect("cache");
        cache.generation += 1;
        cache.entries.retain(|_, e| !pred(&e.identity));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issue_authenticate_rotate_revoke_on_sqlite() {
        let t = ota_tests::db::sqlite().await;
        issue_authenticate_rotate_revoke(VehicleCredentials::new(t.db.clone())).await;
    }

    #[tokio::test]
    async fn issue_authenticate_rotate_revoke_on_postgres() {
        let t = ota_tests::db::postgres().await;
        issue_authenticate_rotate_revoke(VehicleCredentials::new(t.db.clone())).await;
    }

    async fn issue_authenticate_rotate_revoke(c: VehicleCredentials) {
        let vin = "WVWZZZE1ZMP000001";
        let first = c.issue(vin, false).await.unwrap();
        assert!(first.token.starts_with(VEHICLE_TOKEN_PREFIX));
        assert_eq!(c.authenticate(&first.token).await.unwrap().vin, vin);
        let second = c.issue(vin, true).await.unwrap();
        assert!(
            matches!(c.authenticate(&first.token).await, Err(AuthError::BadToken)),
            "rotation revokes the old one"
        );
        assert_eq!(
            c.authenticate(&second.token).await.unwrap().credential_id,
            second.credential.id
        );
        assert_eq!(c.revoke(vin, None).await.unwrap(), 1);
        assert!(
            matches!(
                c.authenticate(&second.token).await,
                Err(AuthError::BadToken)
            ),
            "revocation is immediate"
        );
        assert_eq!(c.list(vin).await.unwrap().len(), 2);
        assert!(c
            .list(vin)
            .await
            .unwrap()
            .iter()
            .all(|k| k.revoked_at.is_some()));
    }

    #[tokio::test]
    async fn batches_confirm_cached_secrets_and_catch_revocations_on_sqlite() {
        let t = ota_tests::db::sqlite().await;
        batches_confirm_cached_secrets_and_catch_revocations(t.db.clone()).await;
    }

    #[tokio::test]
    async fn batches_confirm_cached_secrets_and_catch_revocations_on_postgres() {
        let t = ota_tests::db::postgres().await;
        batches_confirm_cached_secrets_and_catch_revocations(t.db.clone()).await;
    }

    async fn batches_confirm_cached_secrets_and_catch_revocations(db: Db) {
        let here = VehicleCredentials::new(db.clone());
        // Another process on the same database: its revoke does not reach
        // this cache directly.
        let elsewhere = VehicleCredentials::new(db);
        let kept = here.issue("WVWZZZE1ZMP000001", false).await.unwrap().token;
        let revoked = here.issue("WVWZZZE1ZMP000002", false).await.unwrap().token;
        let confirmed = |secret: &str| {
            let digest = secret_digest(secret);
            here.cache
                .lock()
                .unwrap()
                .entries
                .get(&digest)
                .map(|e| e.confirmed)
        };
        let t0 = Instant::now();
        for secret in [&kept, &revoked] {
            here.authenticate_at(secret, t0).await.unwrap();
        }
        assert_eq!(confirmed(&kept), Some(t0));
        elsewhere.revoke("WVWZZZE1ZMP000002", None).await.unwrap();

        let due = t0 + REFRESH_AFTER;
        for secret in [&kept, &revoked] {
            here.authenticate_at(secret, due).await.unwrap();
        }
        assert_eq!(confirmed(&kept), Some(t0), "queued, not yet asked");

        let batch = due + REFRESH_GATHER;
        here.authenticate_at(&kept, batch).await.unwrap();
        assert_eq!(confirmed(&kept), Some(batch), "confirmed by the batch");
        assert_eq!(confirmed(&revoked), None, "the batch found the revocation");
        assert!(matches!(
            here.authenticate_at(&revoked, batch).await,
            Err(AuthError::BadToken)
        ));

        let later = t0 + AUTH_CACHE_TTL + Duration::from_secs(1);
        here.authenticate_at(&kept, later).await.unwrap();
        assert_eq!(
            confirmed(&kept),
            Some(batch),
            "still cached past the first check's lifetime"
        );
        let expired = batch + AUTH_CACHE_TTL;
        here.authenticate_at(&kept, expired).await.unwrap();
        assert_eq!(
            confirmed(&kept),
            Some(expired),
            "confirmed again at its first use after expiring"
        );
        assert!(!here.cache.lock().unwrap().refreshing);
    }

    #[tokio::test]
    async fn bad_input_is_refused() {
        let t = ota_tests::db::sqlite().await;
        let c = VehicleCredentials::new(t.db.clone());
        let e = c.issue("WVWZZZE1ZMP00000I", false).await.unwrap_err();
        assert!(e.to_string().contains("WVWZZZE1ZMP00000I"), "{e}");
        assert!(matches!(
            c.authenticate("ota_notavehicletoken").await,
            Err(AuthError::BadToken)
        ));
        assert!(matches!(
            c.authenticate("otav_unknown").await,
            Err(AuthError::BadToken)
        ));
        let e = c
            .revoke("WVWZZZE1ZMP000001", Some("nope"))
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::NotFound(_)));
    }
}
