//! Vehicle credentials: one secret per vehicle (several during a rotation),
//! stored hashed, checked on every protocol. A credential names its VIN, so
//! whoever holds it can act as that vehicle and no other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use ota_common::Vin;
use ota_db::{with_pool, Db};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{hash_secret, AuthError, AUTH_CACHE_TTL};

/// Vehicle secrets start with this, so a management token used as one (or
/// the other way round) is refused before any lookup.
pub const VEHICLE_TOKEN_PREFIX: &str = "otav_";

/// Entries kept before the cache is dropped whole: bounds memory against a
/// flood of distinct valid secrets.
const CACHE_MAX: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Secret hash to identity and when it was checked: every poll
    /// authenticates, and vehicles poll far more often than credentials
    /// change. A revoke clears its entries here at once; other processes
    /// notice within the cache lifetime.
    cache: Arc<Mutex<HashMap<String, (VehicleIdentity, Instant)>>>,
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
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
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
        if !secret.starts_with(VEHICLE_TOKEN_PREFIX) || secret.len() > 128 {
            return Err(AuthError::BadToken);
        }
        let hash = hash_secret(secret);
        if let Some((identity, at)) = self.cache.lock().expect("cache").get(&hash) {
            if at.elapsed() < AUTH_CACHE_TTL {
                return Ok(identity.clone());
            }
        }
        let row: Option<(String, String)> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT id, vin FROM vehicle_credentials WHERE token_hash = $1 AND revoked_at IS NULL")
                .bind(&hash).fetch_optional(pool).await?
        });
        let (credential_id, vin) = row.ok_or(AuthError::BadToken)?;
        let identity = VehicleIdentity { vin, credential_id };
        let mut cache = self.cache.lock().expect("cache");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, (identity.clone(), Instant::now()));
        Ok(identity)
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
                "credential {} of vehicle {vin}",
                id.unwrap_or_default()
            )));
        }
        self.forget(|identity| {
            identity.vin == vin && id.is_none_or(|i| identity.credential_id == i)
        });
        Ok(n)
    }

    fn forget(&self, pred: impl Fn(&VehicleIdentity) -> bool) {
        self.cache
            .lock()
            .expect("cache")
            .retain(|_, (identity, _)| !pred(identity));
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
