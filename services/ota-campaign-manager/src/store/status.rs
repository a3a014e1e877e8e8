//! Writing decided status reports: a batch in one transaction, each row
//! only if it is still as it was read, with its history events, and the
//! staging and installed events of what changed.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use ota_bus::topics;

use super::events::{self, NewEvent};
use super::{staging_events, write_tx, Conn, Store};
use crate::model::{millis, ActionState};
use crate::CampaignError;

/// A status report's effect on one action, decided by the caller.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub id: String,
    pub vin: String,
    /// The row as it was read: the write applies only if it is unchanged.
    pub old_state: String,
    pub old_seq: i64,
    pub state: ActionState,
    pub attempts: i32,
    pub seq: i64,
    pub progress: i32,
    pub message: String,
    /// Staged again for a retry.
    pub restaged: bool,
    /// What the action installs: a success is recorded in the inventory.
    pub ecu: String,
    pub package_id: String,
    /// The history this adds: each report that applied, and the retry.
    pub events: Vec<NewEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    Applied,
    /// The row changed between read and write; the report was not applied.
    Raced,
}

/// Installed events for these successes, in chunks.
fn installed_events(installs: &[ota_bus::Install], now: DateTime<Utc>) -> Vec<String> {
    installs
        .chunks(super::VINS_PER_EVENT)
        .map(|chunk| {
            ota_bus::outbox::payload(&ota_bus::InstalledEvent::Succeeded {
                installs: chunk.to_vec(),
                at_ms: millis(now),
            })
        })
        .collect()
}

impl Store {
    /// Applies decided status updates in one transaction; each applies only
    /// if the row is still as it was read. VINs whose open actions changed
    /// get a staging event.
    pub async fn write_status(
        &self,
        updates: &[StatusUpdate],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReportOutcome>, CampaignError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = millis(now);
        let (outcomes, vins) = write_tx!(self, tx => {
            let mut conn = Conn::from(&mut *tx);
            let applied = write_status(&mut conn, updates, now_ms).await?;
            let outcomes: Vec<ReportOutcome> = updates.iter().map(|u| if applied.contains(&u.id) { ReportOutcome::Applied } else { ReportOutcome::Raced }).collect();
            let applied_updates = || updates.iter().zip(&outcomes).filter(|(_, o)| **o == ReportOutcome::Applied).map(|(u, _)| u);
            let history: Vec<NewEvent> = applied_updates().flat_map(|u| u.events.iter().cloned()).collect();
            events::append(&mut conn, now_ms, &history).await?;
            let mut vins: Vec<String> = applied_updates()
                .filter(|u| u.state.is_final() || u.restaged)
                .map(|u| u.vin.clone()).collect();
            vins.sort();
            vins.dedup();
            ota_bus::outbox::enqueue(&mut conn, topics::STAGING, &staging_events(&vins, now)).await?;
            // In the same transaction: a success acknowledged to a vehicle
            // reaches its inventory even if this process dies next.
            let installs: Vec<ota_bus::Install> = applied_updates()
                .filter(|u| u.state == ActionState::Succeeded)
                .map(|u| ota_bus::Install { vin: u.vin.clone(), action_id: u.id.clone(), ecu: u.ecu.clone(), package_id: u.package_id.clone() })
                .collect();
            ota_bus::outbox::enqueue(&mut conn, topics::INSTALLED, &installed_events(&installs, now)).await?;
            tx.commit().await?;
            (outcomes, vins)
        });
        if !vins.is_empty() {
            self.wake_relay();
        }
        Ok(outcomes)
    }
}

/// Returns the ids whose update applied.
async fn write_status(
    conn: &mut Conn<'_>,
    updates: &[StatusUpdate],
    now_ms: i64,
) -> Result<HashSet<String>, sqlx::Error> {
    const SET: &str = "state = u.state, open = u.open, attempts = u.attempts, last_seq = u.seq, progress = u.progress, message = u.message, state_at = $1, \
        finished_at = CASE WHEN u.finished = 1 THEN $1 ELSE NULL END, \
        staged_at = CASE WHEN u.restaged = 1 THEN $1 ELSE actions.staged_at END";
    let mut applied = HashSet::new();
    match conn {
        Conn::Postgres(c) => {
            let text =
                |f: fn(&StatusUpdate) -> String| updates.iter().map(f).collect::<Vec<String>>();
            let int = |f: fn(&StatusUpdate) -> i32| updates.iter().map(f).collect::<Vec<i32>>();
            let rows: Vec<(String,)> = sqlx::query_as(&format!(
                "UPDATE actions SET {SET} FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[], $6::int[], $7::int[], $8::bigint[], $9::int[], $10::text[], $11::int[], $12::int[]) \
                   AS u(id, old_state, old_seq, state, open, attempts, seq, progress, message, finished, restaged) \
                 WHERE actions.id = u.id AND actions.state = u.old_state AND actions.last_seq = u.old_seq RETURNING actions.id"))
                .bind(now_ms)
                .bind(text(|u| u.id.clone()))
                .bind(text(|u| u.old_state.clone()))
                .bind(updates.iter().map(|u| u.old_seq).collect::<Vec<i64>>())
                .bind(text(|u| u.state.as_str().to_string()))
                .bind(int(|u| u.state.is_open() as i32))
                .bind(int(|u| u.attempts))
                .bind(updates.iter().map(|u| u.seq).collect::<Vec<i64>>())
                .bind(int(|u| u.progress))
                .bind(text(|u| u.message.clone()))
                .bind(int(|u| u.state.is_final() as i32))
                .bind(int(|u| u.restaged as i32))
                .fetch_all(&mut **c)
                .await?;
            applied.extend(rows.into_iter().map(|(id,)| id));
        }
        Conn::Sqlite(c) => {
            for u in updates {
                // Placeholders in order of first use: SQLite numbers them so.
                let n = sqlx::query(
                    "UPDATE actions SET state = $1, open = $2, attempts = $3, last_seq = $4, progress = $5, message = $6, state_at = $7, \
                     finished_at = CASE WHEN $8 = 1 THEN $7 ELSE NULL END, staged_at = CASE WHEN $9 = 1 THEN $7 ELSE staged_at END \
                     WHERE id = $10 AND state = $11 AND last_seq = $12",
                )
                .bind(u.state.as_str())
                .bind(u.state.is_open() as i32)
                .bind(u.attempts)
                .bind(u.seq)
                .bind(u.progress)
                .bind(&u.message)
                .bind(now_ms)
                .bind(u.state.is_final() as i32)
                .bind(u.restaged as i32)
                .bind(&u.id)
                .bind(&u.old_state)
                .bind(u.old_seq)
                .execute(&mut **c)
                .await?
                .rows_affected();
                if n > 0 {
                    applied.insert(u.id.clone());
                }
            }
        }
    }
    Ok(applied)
}
