//! Who may call the management API: bearer tokens with a role (viewer <
//! engineer < approver < admin). A token's secret is shown once at creation;
//! only its SHA-256 is stored, so a leaked database leaks no credentials.

pub mod vehicles;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use ota_common::{CodedError, ErrorCode};
use ota_db::{with_pool, Db};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Engineer,
    Approver,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Engineer, Role::Approver, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Engineer => "engineer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "unknown role {s:?}: expected viewer, engineer, approver or admin"
                ))
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("invalid or revoked token")]
    BadToken,
    #[error("this needs the {needed} role; token {name:?} has {have}")]
    Forbidden {
        needed: Role,
        have: Role,
        name: String,
    },
    #[error("token {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("cannot write bootstrap token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for AuthError {
    fn from(e: sqlx::Error) -> Self {
        match ota_db::classify(&e) {
            ErrorCode::Unavailable => Self::Unavailable(e),
            _ => Self::Database(e),
        }
    }
}

impl CodedError for AuthError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::MissingToken | Self::BadToken => ErrorCode::Unauthenticated,
            Self::Forbidden { .. } => ErrorCode::PermissionDenied,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Database(_) | Self::TokenFile { .. } => ErrorCode::Internal,
        }
    }
}

/// A token as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenInfo {
    pub fn require(&self, needed: Role) -> Result<(), AuthError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                needed,
                have: self.role,
                name: self.name.clone(),
            })
        }
    }
}

/// A freshly created token: the only time the secret exists outside its owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

pub const TOKEN_PREFIX: &str = "ota_";

/// The SHA-256 of a secret: what caches key by. The database stores its
/// hex form, [`hash_secret`].
pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(secret_digest(secret))
}

fn new_secret() -> String {
    let body: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{TOKEN_PREFIX}{body}")
}

type TokenRow = (String, String, String, i64, Option<i64>);

fn from_row((id, name, role, created, revoked): TokenRow) -> Result<TokenInfo, AuthError> {
    let ms = |v: i64| Utc.timestamp_millis_opt(v).single().unwrap_or_default();
    Ok(TokenInfo {
        id,
        name,
        role: role.parse()?,
        created_at: ms(created),
        revoked_at: revoked.map(ms),
    })
}

/// How long a verified token is trusted without asking the database again.
/// A revoke through this process takes effect at once; through another
/// process (a split deployment) within this time.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(10);
/// The cache is dropped whole past this many entries (tokens are few; this
/// only bounds memory against a flood of distinct valid tokens).
const AUTH_CACHE_MAX: usize = 10_000;

type AuthCache = HashMap<String, (TokenInfo, Instant)>;

#[derive(Clone)]
pub struct TokenStore {
    db: Db,
    /// Token hash to its info and when it was checked: every API request
    /// authenticates, and a database round trip for each doubled the cost
    /// of a vehicle lookup.
    cache: Arc<Mutex<AuthCache>>,
}

impl TokenStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The database the tokens live in, for stores that share it (vehicle
    /// credentials).
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn create(&self, name: &str, role: Role) -> Result<NewToken, AuthError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(AuthError::Invalid(format!(
                "invalid token name {name:?}: use 1-64 printable characters"
            )));
        }
        let secret = new_secret();
        let info = TokenInfo {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.to_owned(),
            role,
            created_at: Utc::now(),
            revoked_at: None,
        };
        let hash = hash_secret(&secret);
        with_pool!(&self.db, pool => {
            sqlx::query("INSERT INTO api_tokens (id, name, role, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&info.id)
                .bind(&info.name)
                .bind(role.as_str())
                .bind(&hash)
                .bind(info.created_at.timestamp_millis())
                .execute(pool)
                .await
                .map(drop)?
        });
        let info = TokenInfo {
            created_at: Utc
                .timestamp_millis_opt(info.created_at.timestamp_millis())
                .single()
                .unwrap_or_default(),
            ..info
        };
        Ok(NewToken {
            info,
            token: secret,
        })
    }

    /// The token a bearer secret belongs to, if it exists and is not revoked.
    pub async fn authenticate(&self, secret: &str) -> Result<TokenInfo, AuthError> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Err(AuthError::BadToken);
        }
        let hash = hash_secret(secret);
        if let Some((info, at)) = self.cache.lock().expect("auth cache").get(&hash) {
            if at.elapsed() < AUTH_CACHE_TTL {
                return Ok(info.clone());
            }
        }
        let row: Option<TokenRow> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT id, name, role, created_at, revoked_at FROM api_tokens WHERE token_hash = $1")
                .bind(&hash)
                .fetch_optional(pool)
                .await?
        });
        match row.map(from_row).transpose()? {
            Some(info) if info.revoked_at.is_none() => {
                let mut cache = self.cache.lock().expect("auth cache");
                if cache.len() >= AUTH_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(hash, (info.clone(), Instant::now()));
                Ok(info)
            }
            _ => Err(AuthError::BadToken),
        }
    }

    pub async fn list(&self) -> Result<Vec<TokenInfo>, AuthError> {
        let rows: Vec<TokenRow> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT id, name, role, created_at, revoked_at FROM api_tokens ORDER BY created_at, id")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    pub async fn revoke(&self, id: &str) -> Result<TokenInfo, AuthError> {
        let now = Utc::now().timestamp_millis();
        let done = with_pool!(&self.db, pool => {
            sqlx::query("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if done == 0 {
            return Err(AuthError::NotFound(id.to_owned()));
        }
        self.cache
            .lock()
            .expect("auth cache")
            .retain(|_, (info, _)| info.id != id);
        self.list()
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| AuthError::NotFound(id.to_owned()))
    }

    /// On a database without any token, creates an admin token and writes it
    /// to `dir/admin.token` (mode 0600). Returns the file written, if any.
    pub async fn bootstrap(&self, dir: &Path) -> Result<Option<PathBuf>, AuthError> {
        let count: i64 = with_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens").fetch_one(pool).await?
        });
        if count > 0 {
            return Ok(None);
        }
        let token = self.create("bootstrap-admin", Role::Admin).await?;
        let path = dir.join("admin.token");
        write_private(&path, &token.token).map_err(|source| AuthError::TokenFile {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Some(path))
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    writeln!(f, "{content}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parsed() {
        assert!(
            Role::Viewer < Role::Engineer
                && Role::Engineer < Role::Approver
                && Role::Approver < Role::Admin
        );
        assert_eq!("approver".parse::<Role>().unwrap(), Role::Approver);
        let err = "root".parse::<Role>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown role \"root\": expected viewer, engineer, approver or admin"
        );
    }

    #[test]
    fn require_names_both_roles() {
        let t = TokenInfo {
            id: "1".into(),
            name: "ci".into(),
            role: Role::Viewer,
            created_at: Utc::now(),
            revoked_at: None,
        };
        assert!(t.require(Role::Viewer).is_ok());
        let err = t.require(Role::Engineer).unwrap_err();
        assert_eq!(err.code(), ErrorCode::PermissionDenied);
        assert_eq!(
            err.to_string(),
            "this needs the engineer role; token \"ci\" has viewer"
        );
    }

    #[test]
    fn secrets_are_random_and_prefixed() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 44);
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a).len(), 64);
    }
}
