//! The transactional outbox: events written in the same transaction as the
//! change they describe, and the [`Relay`] that moves them to the bus.
//!
//! A row is deleted only after the bus accepted it, so an event is published
//! at least once; a relay that dies between publishing and deleting publishes
//! the batch again.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use ota_db::{Conn, Db};
use serde::Serialize;
use sqlx::{PgConnection, SqliteConnection};
use tokio::sync::{watch, Notify};

use crate::{BusError, SharedBus};

/// How long an idle relay waits before looking for rows nobody woke it for
/// (rows written by other processes).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Rows one relay pass moves at most.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// SQLite binds at most 32766 parameters per statement; two of them are the
/// topic and the timestamp every row shares.
const SQLITE_ROWS_PER_INSERT: usize = 32_000;

/// An event as outbox payload text, with the current trace
/// ([`crate::events::encode`]).
pub fn payload<T: Serialize>(event: &T) -> String {
    crate::events::encode(event)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Appends events for `topic` to the outbox of a SQLite database. Call it on
/// the transaction that makes the change, so both commit or neither does.
async fn enqueue_sqlite(
    conn: &mut SqliteConnection,
    topic: &str,
    payloads: &[String],
) -> Result<(), sqlx::Error> {
    let created_at = now_ms();
    for chunk in payloads.chunks(SQLITE_ROWS_PER_INSERT) {
        let mut sql = String::with_capacity(64 + chunk.len() * 14);
        sql.push_str("INSERT INTO outbox (topic, payload, created_at) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "($1, ${}, $2)", i + 3);
        }
        let mut q = sqlx::query(&sql).bind(topic).bind(created_at);
        for p in chunk {
            q = q.bind(p.as_str());
        }
        // One statement text per chunk length: caching them would only evict
        // the statements that repeat.
        q.persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Appends events for `topic` to the outbox of a PostgreSQL database, in one
/// statement however many there are. Call it on the transaction that makes
/// the change.
async fn enqueue_postgres(
    conn: &mut PgConnection,
    topic: &str,
    payloads: &[String],
) -> Result<(), sqlx::Error> {
    if payloads.is_empty() {
        return Ok(());
    }
    // ORDER BY the ordinality so ids follow the order of `payloads`.
    sqlx::query(
        "INSERT INTO outbox (topic, payload, created_at) \
         SELECT $1, p, $2 FROM UNNEST($3::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n",
    )
    .bind(topic)
    .bind(now_ms())
    .bind(payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// Appends events for `topic` to the outbox through `conn`, the
/// transaction that makes the change (`&mut *tx`, or an `ota_db::Conn`),
/// whichever database it is.
pub async fn enqueue<'a>(
    conn: impl Into<Conn<'a>>,
    topic: &str,
    payloads: &[String],
) -> Result<(), sqlx::Error> {
    match conn.into() {
        Conn::Sqlite(c) => enqueue_sqlite(c, topic, payloads).await,
        Conn::Postgres(c) => enqueue_postgres(c, topic, payloads).await,
    }
}

/// Moves outbox rows to the bus, oldest first, and deletes them once
/// published.
///
/// On PostgreSQL any number of relays may run: each locks the rows it moves
/// (`FOR UPDATE SKIP LOCKED`), so no row is published by two of them at once,
/// though batches of different relays may reach the bus out of order. On
/// SQLite exactly one relay (one process) may run.
pub struct Relay {
    db: Db,
    bus: SharedBus,
    waker: Arc<Notify>,
    poll_interval: Duration,
    batch_size: usize,
}

type Row = (i64, String, String);

impl Relay {
    pub fn new(db: Db, bus: SharedBus) -> Self {
        Self {
            db,
            bus,
            waker: Arc::new(Notify::new()),
            poll_interval: DEFAULT_POLL_INTERVAL,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }

    /// How often an idle relay looks for rows without being woken.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Rows one pass moves at most (at least 1).
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Writers in this process call `notify_one` on it after committing
    /// outbox rows, so the relay moves them at once instead of at its next
    /// poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.waker.clone()
    }

    /// Moves one batch (up to the batch size) and returns how many rows it
    /// moved. On failure every row of the batch stays in the outbox.
    pub async fn relay_once(&self) -> Result<usize, BusError> {
        let relayed = self.relay_batch().await;
        if relayed.is_err() {
            // The rows stay while the bus is down: `ota_outbox_pending` must
            // grow with them, the outbox backlog alert is how anyone notices.
            if let Ok(n) = self.backlog().await {
                metrics::gauge!("ota_outbox_pending").set(n as f64);
            }
        }
        relayed
    }

    /// An upper bound of the rows waiting (ids have gaps), but two index
    /// lookups where a count would scan the table.
    async fn backlog(&self) -> Result<i64, BusError> {
        Ok(ota_db::with_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM outbox")
                .fetch_one(pool)
                .await?
        }))
    }

    async fn relay_batch(&self) -> Result<usize, BusError> {
        let limit = self.batch_size as i64;
        let moved = match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT id, topic, payload FROM outbox ORDER BY id LIMIT $1 \
                     FOR UPDATE SKIP LOCKED",
                )
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                if rows.is_empty() {
                    tx.commit().await?;
                    metrics::gauge!("ota_outbox_pending").set(0.0);
                    return Ok(0);
                }
                let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
                // The row locks are held while publishing: another relay
                // skips these rows instead of publishing them too.
                if let Err(e) = self.publish(rows).await {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
                sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                ids.len()
            }
            Db::Sqlite(pool) => {
                // No transaction around the publish: a read transaction held
                // that long would fail its upgrade to a write (a stale WAL
                // snapshot) whenever a writer committed meanwhile, and
                // BEGIN IMMEDIATE would stall every writer for the publish.
                // With the single relay SQLite allows, nothing else deletes
                // these rows, and SQLite assigns ids in commit order, so every
                // row up to the batch's last id is in the batch.
                let rows: Vec<Row> =
                    sqlx::query_as("SELECT id, topic, payload FROM outbox ORDER BY id LIMIT $1")
                        .bind(limit)
                        .fetch_all(pool)
                        .await?;
                let Some(last) = rows.last().map(|r| r.0) else {
                    metrics::gauge!("ota_outbox_pending").set(0.0);
                    return Ok(0);
                };
                let n = rows.len();
                self.publish(rows).await?;
                sqlx::query("DELETE FROM outbox WHERE id <= $1")
                    .bind(last)
                    .execute(pool)
                    .await?;
                n
            }
        };
        if moved < self.batch_size {
            metrics::gauge!("ota_outbox_pending").set(0.0);
        } else {
            let n = self.backlog().await?;
            metrics::gauge!("ota_outbox_pending").set(n as f64);
        }
        Ok(moved)
    }

    /// Publishes rows grouped by topic, each topic's rows in id order.
    async fn publish(&self, rows: Vec<Row>) -> Result<(), BusError> {
        let mut by_topic: Vec<(String, Vec<String>)> = Vec::new();
        for (_, topic, payload) in rows {
            match by_topic.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, payloads)) => payloads.push(payload),
                None => by_topic.push((topic, vec![payload])),
            }
        }
        // A failure after some topics went out republishes those with the
        // retried batch: at least once, never lost.
        for (topic, payloads) in &by_topic {
            self.bus.publish(topic, payloads).await?;
        }
        for (topic, payloads) in by_topic {
            metrics::counter!("ota_outbox_relayed_total", "topic" => topic)
                .increment(payloads.len() as u64);
        }
        Ok(())
    }

    /// Relays until `shutdown` turns true (or its sender is dropped): drains
    /// the outbox, then sleeps until woken or the poll interval passes. On
    /// failure it logs, backs off (doubling up to 10 s) and tries again.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let pause = match self.relay_once().await {
                Ok(n) if n >= self.batch_size => {
                    backoff = MIN_BACKOFF;
                    continue;
                }
                Ok(_) => {
                    backoff = MIN_BACKOFF;
                    None
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        database = self.db.backend(),
                        bus = self.bus.name(),
                        retry_in_ms = backoff.as_millis() as u64,
                        "relaying the outbox failed; the rows stay and are retried"
                    );
                    let pause = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    Some(pause)
                }
            };
            let stopped = match pause {
                // After a failure only time ends the pause: a busy writer's
                // wake-ups must not turn the backoff into a retry storm.
                Some(pause) => tokio::select! {
                    r = shutdown.changed() => r.is_err(),
                    _ = tokio::time::sleep(pause) => false,
                },
                None => tokio::select! {
                    r = shutdown.changed() => r.is_err(),
                    _ = self.waker.notified() => false,
                    _ = tokio::time::sleep(self.poll_interval) => false,
                },
            };
            if stopped {
                break;
            }
        }
        tracing::debug!("outbox relay stopped");
    }
}
