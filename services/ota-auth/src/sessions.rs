//! Dashboard sessions. A browser logs in with a management token once and
//! then carries only a random session secret in a cookie; the database keeps
//! the secret's digest, the token it stands for and the CSRF token of its
//! forms. A session ends at logout, at expiry, or when its token is revoked
//! (every request checks the token again), so it never outlives the access
//! it was opened with. Rows live in the shared database, so any process
//! serving the dashboard recognises the session.

use std::time::Duration;

use chrono::Utc;
use ota_db::with_pool;
use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::{from_row, hash_secret, AuthError, TokenInfo, TokenRow, TokenStore};

/// How long a session lasts from login, whatever its use: a working day.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// A token's row ([`TokenRow`]) and the session's CSRF token.
type SessionRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    String,
);

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token the session was opened with, as it is now.
    pub token: TokenInfo,
    /// What every state-changing form must send back.
    pub csrf: String,
}

#[derive(Clone)]
pub struct Sessions {
    tokens: TokenStore,
    ttl: Duration,
}

fn random(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

impl Sessions {
    pub fn new(tokens: TokenStore) -> Self {
        Self {
            tokens,
            ttl: SESSION_TTL,
        }
    }

    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Opens a session for a management token: the cookie's secret and
    /// the session. Expired sessions are swept on the way.
    pub async fn login(&self, token_secret: &str) -> Result<(String, Session), AuthError> {
        let token = self.tokens.authenticate(token_secret.trim()).await?;
        let secret = random(43);
        let csrf = random(32);
        let now = Utc::now().timestamp_millis();
        let expires = now.saturating_add(self.ttl.as_millis() as i64);
        with_pool!(self.tokens.db(), pool => {
            sqlx::query("DELETE FROM ui_sessions WHERE expires_at < $1")
                .bind(now)
                .execute(pool)
                .await?;
            sqlx::query("INSERT INTO ui_sessions (id_hash, token_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(hash_secret(&secret))
                .bind(&token.id)
                .bind(&csrf)
                .bind(now)
                .bind(expires)
                .execute(pool)
                .await?;
        });
        Ok((secret, Session { token, csrf }))
    }

    /// The live session a cookie's secret names: [`AuthError::BadToken`]
    /// when it is unknown, expired, logged out or its token was revoked.
    pub async fn get(&self, secret: &str) -> Result<Session, AuthError> {
        let now = Utc::now().timestamp_millis();
        let row: Option<SessionRow> = with_pool!(self.tokens.db(), pool => {
            sqlx::query_as(
                "SELECT t.id, t.name, t.principal, p.kind, t.role, t.created_at, t.revoked_at, s.csrf \
                 FROM ui_sessions s JOIN api_tokens t ON t.id = s.token_id JOIN principals p ON p.name = t.principal \
                 WHERE s.id_hash = $1 AND s.expires_at >= $2")
                .bind(hash_secret(secret))
                .bind(now)
                .fetch_optional(pool)
                .await?
        });
        let Some((id, name, principal, kind, role, created, revoked, csrf)) = row else {
            return Err(AuthError::BadToken);
        };
        let token: TokenRow = (id, name, principal, kind, role, created, revoked);
        let token = from_row(token)?;
        if token.revoked_at.is_some() {
            return Err(AuthError::BadToken);
        }
        Ok(Session { token, csrf })
    }

    /// Ends the session a cookie names (nothing when there is none).
    pub async fn logout(&self, secret: &str) -> Result<(), AuthError> {
        with_pool!(self.tokens.db(), pool => {
            sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1")
                .bind(hash_secret(secret))
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
