//! Who may call the management API: bearer tokens with a role (viewer <
//! engineer < approver < admin), each belonging to a principal (a person or
//! a service). A token's secret is shown once at creation; only its SHA-256
//! is stored, so a leaked database leaks no credentials. Issuing and
//! revoking tokens, and provisioning principals, go into the audit log in
//! the same transaction as the change. The dashboard's browser sessions
//! ([`sessions`]) stand for a token and end with it.

mod principal;
pub mod sessions;
mod token_file;
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
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub use principal::{PrincipalKind, ADMIN, SYSTEM};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
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
                    "unknown role {:?}: expected viewer, engineer, approver or admin",
                    principal::bounded(s)
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
    /// Only a person can be the second pair of eyes.
    #[error("{action} needs a person; token {name:?} belongs to the service {principal:?}")]
    NotAPerson {
        action: &'static str,
        name: String,
        principal: String,
    },
    #[error("principal {principal:?} is a {is}, not a {asked}")]
    KindMismatch {
        principal: String,
        is: PrincipalKind,
        asked: PrincipalKind,
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
            Self::Forbidden { .. } | Self::NotAPerson { .. } => ErrorCode::PermissionDenied,
            Self::KindMismatch { .. } => ErrorCode::Conflict,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Database(_) | Self::TokenFile { .. } => ErrorCode::Internal,
        }
    }
}

/// A token as listed: everything but the secret. It belongs to a
/// principal (a person or a service), which is who the audit log and
/// four-eyes approval name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    /// The token's label ("laptop", "ci-nightly"); says nothing about who.
    pub name: String,
    /// Who the token belongs to: what the audit log and four-eyes use.
    pub principal: String,
    /// Only a person may approve a campaign.
    pub principal_kind: PrincipalKind,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// Left out until the token is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
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

    /// For acts only a person may do (approving: a service has no eyes).
    pub fn require_person(&self, action: &'static str) -> Result<(), AuthError> {
        match self.principal_kind {
            PrincipalKind::Person => Ok(()),
            PrincipalKind::Service => Err(AuthError::NotAPerson {
                action,
                name: self.name.clone(),
                principal: self.principal.clone(),
            }),
        }
    }
}

/// A freshly created token: the only time the secret exists outside its owner.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret, shown in this answer only.
    pub token: String,
    /// The principal did not exist before this token.
    #[serde(default)]
    pub principal_created: bool,
}

/// What `POST /api/v1/tokens` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(value_type = Role)]
    pub role: String,
    /// The token's label (1-64 printable characters); the principal's name
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whose token: the caller's own principal when unset. Naming another
    /// principal issues a token to them, provisioning them when new (1-64 of
    /// `A-Z a-z 0-9 . _ - @`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// A new principal's kind (person when unset); must match an existing
    /// principal's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<PrincipalKind>)]
    pub kind: Option<String>,
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

/// id, name, principal, kind, role, created_at, revoked_at
type TokenRow = (String, String, String, String, String, i64, Option<i64>);

const TOKEN_SELECT: &str =
    "SELECT t.id, t.name, t.principal, p.kind, t.role, t.created_at, t.revoked_at \
     FROM api_tokens t JOIN principals p ON p.name = t.principal";

fn millis_to_time(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

fn from_row(
    (id, name, principal, kind, role, created, revoked): TokenRow,
) -> Result<TokenInfo, AuthError> {
    Ok(TokenInfo {
        id,
        name,
        principal,
        principal_kind: kind.parse()?,
        role: role.parse()?,
        created_at: millis_to_time(created),
        revoked_at: revoked.map(millis_to_time),
    })
}

/// A token label: 1-64 printable characters, trimmed.
fn check_label(name: &str) -> Result<&str, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(AuthError::Invalid(format!(
            "invalid token name {:?}: use 1-64 printable characters",
            principal::bounded(name)
        )));
    }
    Ok(name)
}

/// Who changes tokens, as the audit log names them.
struct By<'a> {
    principal: &'a str,
    /// The label of the token they used (none for the platform itself).
    token: Option<&'a str>,
}

impl<'a> From<&'a TokenInfo> for By<'a> {
    fn from(t: &'a TokenInfo) -> Self {
        Self {
            principal: &t.principal,
            token: Some(&t.name),
        }
    }
}

const BY_SYSTEM: By<'static> = By {
    principal: SYSTEM,
    token: None,
};

/// One audit log entry, inside the transaction of the change it records.
macro_rules! audit {
    ($tx:expr, $at:expr, $by:expr, $entity:expr, $entity_id:expr, $action:expr, $detail:expr) => {{
        let mut detail = $detail;
        if let Some(token) = $by.token {
            detail["by_token"] = json!(token);
        }
        sqlx::query("INSERT INTO audit_log (at, actor, entity, entity_id, action, reason, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind($at)
            .bind($by.principal)
            .bind($entity)
            .bind($entity_id)
            .bind($action)
            .bind("")
            .bind(detail.to_string())
            .execute(&mut *$tx)
            .await?;
    }};
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

    /// Issues a token at `by`'s request: for `by`'s own principal unless the
    /// request names another one, which is provisioned (as a person unless
    /// it says otherwise) when new. Both are audited under `by`'s principal.
    pub async fn issue(&self, by: &TokenInfo, req: &TokenRequest) -> Result<NewToken, AuthError> {
        let role: Role = req.role.parse()?;
        let kind = req
            .kind
            .as_deref()
            .map(PrincipalKind::from_str)
            .transpose()?;
        let principal = req.principal.as_deref().unwrap_or(&by.principal);
        let label = req.name.as_deref().unwrap_or(principal);
        self.insert(By::from(by), principal, kind, label, role, new_secret())
            .await
    }

    /// A token labelled `name` for the person `name` (provisioned by the
    /// platform if new): for tools and tests that set up tokens directly.
    pub async fn create(&self, name: &str, role: Role) -> Result<NewToken, AuthError> {
        let name = name.trim();
        self.insert(BY_SYSTEM, name, None, name, role, new_secret())
            .await
    }

    async fn insert(
        &self,
        by: By<'_>,
        principal: &str,
        kind: Option<PrincipalKind>,
        label: &str,
        role: Role,
        secret: String,
    ) -> Result<NewToken, AuthError> {
        let label = check_label(label)?;
        let known: Option<String> = with_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT kind FROM principals WHERE name = $1")
                .bind(principal)
                .fetch_optional(pool)
                .await?
        });
        if known.is_none() {
            principal::check_new_name(principal)?;
        }
        let now = Utc::now().timestamp_millis();
        let id = uuid::Uuid::now_v7().to_string();
        let hash = hash_secret(&secret);
        let new_kind = kind.unwrap_or_default();
        let (created, stored_kind) = with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            // The write comes first so that SQLite takes its write lock at
            // once (a read-then-write transaction can fail to upgrade).
            let created = sqlx::query("INSERT INTO principals (name, kind, created_by, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
                .bind(principal)
                .bind(new_kind.as_str())
                .bind(by.principal)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            let stored: String = sqlx::query_scalar("SELECT kind FROM principals WHERE name = $1")
                .bind(principal)
                .fetch_one(&mut *tx)
                .await?;
            let stored: PrincipalKind = stored.parse()?;
            if let Some(asked) = kind.filter(|k| *k != stored) {
                return Err(AuthError::KindMismatch {
                    principal: principal.to_owned(),
                    is: stored,
                    asked,
                });
            }
            if created {
                audit!(tx, now, by, "principal", principal, "create", json!({"kind": new_kind}));
            }
            sqlx::query("INSERT INTO api_tokens (id, name, principal, role, token_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&id)
                .bind(label)
                .bind(principal)
                .bind(role.as_str())
                .bind(&hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            audit!(tx, now, by, "token", &id, "create",
                json!({"principal": principal, "name": label, "role": role}));
            tx.commit().await?;
            (created, stored)
        });
        Ok(NewToken {
            info: TokenInfo {
                id,
                name: label.to_owned(),
                principal: principal.to_owned(),
                principal_kind: stored_kind,
                role,
                created_at: millis_to_time(now),
                revoked_at: None,
            },
            token: secret,
            principal_created: created,
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
            sqlx::query_as(&format!("{TOKEN_SELECT} WHERE t.token_hash = $1"))
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
            sqlx::query_as(&format!("{TOKEN_SELECT} ORDER BY t.created_at, t.id"))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// Revokes a token at `by`'s request (audited; revoking twice keeps the
    /// first time).
    pub async fn revoke(&self, by: &TokenInfo, id: &str) -> Result<TokenInfo, AuthError> {
        let by = By::from(by);
        let now = Utc::now().timestamp_millis();
        let row: Option<TokenRow> = with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let row: Option<TokenRow> = sqlx::query_as(&format!("{TOKEN_SELECT} WHERE t.id = $1"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(r) = row.as_ref().filter(|_| done > 0) {
                audit!(tx, now, by, "token", id, "revoke",
                    json!({"principal": r.2, "name": r.1}));
            }
            tx.commit().await?;
            row
        });
        let info = row
            .map(from_row)
            .transpose()?
            .ok_or_else(|| AuthError::NotFound(principal::bounded(id)))?;
        self.cache
            .lock()
            .expect("auth cache")
            .retain(|_, (cached, _)| cached.id != id);
        Ok(info)
    }

    /// On a database without any token, creates the admin's token and
    /// writes it to `dir/admin.token` (mode 0600). Returns the file written,
    /// if any. The file is written before the token exists, so a failed
    /// write leaves no token nobody knows (the next start tries again); a
    /// file already there, or a symlink, is replaced, never written through.
    pub async fn bootstrap(&self, dir: &Path) -> Result<Option<PathBuf>, AuthError> {
        let count: i64 = with_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens").fetch_one(pool).await?
        });
        if count > 0 {
            return Ok(None);
        }
        let secret = new_secret();
        let path = dir.join("admin.token");
        let replaced =
            token_file::write_private(&path, &secret).map_err(|source| AuthError::TokenFile {
                path: path.display().to_string(),
                source,
            })?;
        if replaced {
            tracing::warn!(path = %path.display(), "replaced an earlier admin.token: the database has no tokens, so it was stale");
        }
        self.insert(
            BY_SYSTEM,
            ADMIN,
            Some(PrincipalKind::Person),
            "bootstrap-admin",
            Role::Admin,
            secret,
        )
        .await?;
        Ok(Some(path))
    }
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
            principal: "ci".into(),
            principal_kind: PrincipalKind::Service,
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
        let err = t.require_person("approving").unwrap_err();
        assert_eq!(err.code(), ErrorCode::PermissionDenied);
        assert_eq!(
            err.to_string(),
            "approving needs a person; token \"ci\" belongs to the service \"ci\""
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
