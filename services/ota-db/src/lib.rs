//! Database connections for the services that persist state: one [`Db`] handle
//! that is either the embedded SQLite file or PostgreSQL, with the matching
//! migrations from `migrations/` applied at start, and the one way stores
//! run the same SQL on both: [`with_pool!`] on a pool, [`write_tx!`] for a
//! write transaction, [`on_conn!`] on a [`Conn`] inside one.

use std::str::FromStr;
use std::time::Duration;

use ota_common::ErrorCode;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Runs the same sqlx code against whichever pool `db` holds. The SQL must be
/// valid for both databases: write parameters as `$1, $2, ...` in order of
/// first use, which SQLite reads positionally too.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}

/// A connection inside a transaction, on either database, so a helper
/// runs its statements in its caller's transaction. Made from `&mut *tx`.
pub enum Conn<'a> {
    Sqlite(&'a mut sqlx::SqliteConnection),
    Postgres(&'a mut sqlx::PgConnection),
}

impl<'a> From<&'a mut sqlx::SqliteConnection> for Conn<'a> {
    fn from(c: &'a mut sqlx::SqliteConnection) -> Self {
        Conn::Sqlite(c)
    }
}

impl<'a> From<&'a mut sqlx::PgConnection> for Conn<'a> {
    fn from(c: &'a mut sqlx::PgConnection) -> Self {
        Conn::Postgres(c)
    }
}

/// A reborrow, so a helper taking `impl Into<Conn>` can be handed the
/// `&mut Conn` its caller holds.
impl<'a, 'b: 'a> From<&'a mut Conn<'b>> for Conn<'a> {
    fn from(c: &'a mut Conn<'b>) -> Self {
        match c {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// Runs the same sqlx code on whichever connection a `&mut Conn` holds,
/// as [`with_pool!`] does for a pool.
#[macro_export]
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::Conn::Sqlite(c) => {
                let $c = &mut **c;
                $body
            }
            $crate::Conn::Postgres(c) => {
                let $c = &mut **c;
                $body
            }
        }
    };
}

/// Opens a write transaction named `$tx` for `$body`, which commits it: on
/// SQLite `BEGIN IMMEDIATE` under `$lock` (a `tokio::sync::Mutex<()>`
/// shared by the process's writers: one writer at a time and no failed
/// lock upgrades), on PostgreSQL a plain one. Errors convert with `?`.
#[macro_export]
macro_rules! write_tx {
    ($db:expr, $lock:expr, $tx:ident => $body:expr) => {
        match $db {
            $crate::Db::Sqlite(pool) => {
                let _guard = $lock.lock().await;
                #[allow(unused_mut)]
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                $body
            }
            $crate::Db::Postgres(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin().await?;
                $body
            }
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database url {0:?}: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot create directory {path} for the database: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("migrating database {url} failed: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
}

impl ota_common::CodedError for DbError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::UnsupportedUrl(_) => ErrorCode::InvalidArgument,
            Self::Connect { .. } => ErrorCode::Unavailable,
            Self::CreateDir { .. } | Self::Migrate { .. } => ErrorCode::Internal,
        }
    }
}

/// Which error code a failed query deserves: a database that cannot be reached
/// is UNAVAILABLE (retry later), anything else is INTERNAL.
pub fn classify(e: &sqlx::Error) -> ErrorCode {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => ErrorCode::Unavailable,
        sqlx::Error::Database(db) if is_unavailable_sqlstate(db.code().as_deref()) => {
            ErrorCode::Unavailable
        }
        sqlx::Error::RowNotFound => ErrorCode::NotFound,
        _ => ErrorCode::Internal,
    }
}

/// Postgres class 08 (connection exception) and 57P01..57P03 (admin shutdown,
/// crash shutdown, cannot connect now) mean "try again later".
fn is_unavailable_sqlstate(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03"))
}

#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: u32,
    /// How long a request waits for a connection before it is UNAVAILABLE.
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// Opens the database and applies pending migrations. A SQLite file (and
    /// its directory) is created on first use.
    pub async fn connect(url: &str, opts: &DbOptions) -> Result<Self, DbError> {
        let shown = redact(url);
        let db = if url.starts_with("sqlite:") {
            let co = SqliteConnectOptions::from_str(url)
                .map_err(|source| DbError::Connect {
                    url: shown.clone(),
                    source,
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            if let Some(dir) = co
                .get_filename()
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections.min(8))
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(co)
                .await
                .map_err(|source| DbError::Connect {
                    url: shown.clone(),
                    source,
                })?;
            sqlx::migrate!("../../migrations/sqlite")
                .run(&pool)
                .await
                .map_err(|source| DbError::Migrate {
                    url: shown.clone(),
                    source,
                })?;
            Db::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let co = PgConnectOptions::from_str(url).map_err(|source| DbError::Connect {
                url: shown.clone(),
                source,
            })?;
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(co)
                .await
                .map_err(|source| DbError::Connect {
                    url: shown.clone(),
                    source,
                })?;
            sqlx::migrate!("../../migrations/postgres")
                .run(&pool)
                .await
                .map_err(|source| DbError::Migrate {
                    url: shown.clone(),
                    source,
                })?;
            Db::Postgres(pool)
        } else {
            return Err(DbError::UnsupportedUrl(shown));
        };
        tracing::info!(database = %shown, "database ready");
        Ok(db)
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
            Db::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
        }
    }

    /// (idle, in use) connections, for the pool gauge.
    pub fn pool_usage(&self) -> (u32, u32) {
        let (size, idle) = match self {
            Db::Sqlite(p) => (p.size(), p.num_idle() as u32),
            Db::Postgres(p) => (p.size(), p.num_idle() as u32),
        };
        (idle, size.saturating_sub(idle))
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// The URL with any password replaced, safe for logs and error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://ota:s3cret@db:5432/ota"),
            "postgres://ota:***@db:5432/ota"
        );
        assert_eq!(redact("postgres://ota@db/ota"), "postgres://ota@db/ota");
        assert_eq!(
            redact("sqlite://./ota-data/ota.db"),
            "sqlite://./ota-data/ota.db"
        );
    }

    #[tokio::test]
    async fn rejects_unknown_schemes_by_name() {
        let err = Db::connect("mysql://x", &DbOptions::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported database url \"mysql://x\": expected sqlite://PATH or postgres://..."
        );
    }

    #[tokio::test]
    async fn creates_the_sqlite_file_and_its_directory() {
        let dir = std::env::temp_dir().join(format!("ota-db-test-{}", std::process::id()));
        let path = dir.join("nested/ota.db");
        let db = Db::connect(
            &format!("sqlite://{}", path.display()),
            &DbOptions::default(),
        )
        .await
        .unwrap();
        db.ping().await.unwrap();
        assert!(path.exists());
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
