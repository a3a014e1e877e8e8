//! Database connections for the services that persist state: one [`Db`] handle
//! that is either the embedded SQLite file or PostgreSQL, with the matching
//! migrations from `migrations/` applied at start, and the one way stores
//! run the same SQL on both: [`with_pool!`] on a pool, [`write_tx!`] for a
//! write transaction (or [`WriteTx`] for one that outlives a block),
//! [`on_conn!`] on a [`Conn`] inside one, and [`Dialect`] where the SQL
//! must differ.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ota_common::ErrorCode;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

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

/// A write transaction held as a value, begun as [`write_tx!`] begins one,
/// for work that spans more than one block: a strict import keeps one open
/// across the batches it reads from a stream, and gives it up (rolling back
/// and letting the next SQLite writer in) when a line is refused. Dropping
/// it rolls back.
pub struct WriteTx {
    tx: OpenTx,
    // Declared after `tx`, so the lock is released after the rollback a drop
    // starts.
    _writer: Option<OwnedMutexGuard<()>>,
}

enum OpenTx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl WriteTx {
    /// On SQLite `BEGIN IMMEDIATE` once `lock` (the process's writers'
    /// lock, as for [`write_tx!`]) is held, on PostgreSQL a plain `BEGIN`.
    pub async fn begin(db: &Db, lock: &Arc<Mutex<()>>) -> Result<Self, sqlx::Error> {
        Ok(match db {
            Db::Sqlite(pool) => {
                let writer = lock.clone().lock_owned().await;
                Self {
                    tx: OpenTx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
                    _writer: Some(writer),
                }
            }
            Db::Postgres(pool) => Self {
                tx: OpenTx::Postgres(pool.begin().await?),
                _writer: None,
            },
        })
    }

    /// The transaction's connection, for [`on_conn!`] or a match on the
    /// dialect.
    pub fn conn(&mut self) -> Conn<'_> {
        match &mut self.tx {
            OpenTx::Sqlite(tx) => Conn::Sqlite(tx),
            OpenTx::Postgres(tx) => Conn::Postgres(tx),
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.tx {
            OpenTx::Sqlite(tx) => tx.commit().await,
            OpenTx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Which SQL a [`Db`] speaks, for the few statements that must differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
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

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
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
    async fn a_dropped_write_tx_rolls_back_and_lets_the_next_writer_in() {
        let dir = std::env::temp_dir().join(format!("ota-db-tx-test-{}", std::process::id()));
        let db = Db::connect(
            &format!("sqlite://{}", dir.join("ota.db").display()),
            &DbOptions::default(),
        )
        .await
        .unwrap();
        let lock = Arc::new(Mutex::new(()));
        let insert = "INSERT INTO outbox (topic, payload, created_at) VALUES ('t', $1, 0)";
        let mut tx = WriteTx::begin(&db, &lock).await.unwrap();
        on_conn!(&mut tx.conn(), c => sqlx::query(insert).bind("dropped").execute(c).await.map(drop).unwrap());
        assert!(lock.try_lock().is_err(), "an open write holds the lock");
        drop(tx);
        let mut tx = tokio::time::timeout(Duration::from_secs(5), WriteTx::begin(&db, &lock))
            .await
            .expect("the next writer gets in")
            .unwrap();
        on_conn!(&mut tx.conn(), c => sqlx::query(insert).bind("kept").execute(c).await.map(drop).unwrap());
        tx.commit().await.unwrap();
        assert!(lock.try_lock().is_ok(), "commit releases the lock");
        let payloads: Vec<String> = with_pool!(&db, p => {
            sqlx::query_scalar("SELECT payload FROM outbox").fetch_all(p).await.unwrap()
        });
        assert_eq!(payloads, ["kept"]);
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
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
