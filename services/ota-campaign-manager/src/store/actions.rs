//! Per-vehicle actions: bulk creation at launch, release to staging under
//! waves, rate and conflicts, timeouts, status reports, and the reads staging
//! builds its documents from.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ota_bus::topics;
use ota_db::with_pool;
use sqlx::QueryBuilder;

use super::{on_conn, staging_events, write_tx, Conn, Store};
use crate::model::{millis, ActionState, CampaignState};
use crate::CampaignError;

/// A matched vehicle's action, as the targeting scan creates it.
#[derive(Debug, Clone)]
pub struct NewAction {
    pub id: String,
    pub vin: String,
    pub ecu: String,
    pub package_id: String,
    pub rule_index: i32,
    pub bucket: i32,
    pub wave: i32,
    /// Pending, or succeeded when the vehicle already runs the version.
    pub state: ActionState,
    pub message: String,
    pub model: String,
    pub platform: String,
    pub gateway: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ActionRow {
    pub id: String,
    pub campaign_id: String,
    pub vin: String,
    pub ecu: String,
    pub package_id: String,
    pub wave: i32,
    pub state: String,
    pub attempts: i32,
    pub last_seq: i64,
    pub progress: i32,
    pub message: String,
    pub model: String,
    pub region: String,
    pub staged_at: Option<i64>,
    pub state_at: i64,
}

const ACTION_COLUMNS: &str = "id, campaign_id, vin, ecu, package_id, wave, state, attempts, last_seq, progress, message, model, region, staged_at, state_at";

/// An open action with what staging needs to build the document.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OpenActionRow {
    pub vin: String,
    pub id: String,
    pub campaign_id: String,
    pub ecu: String,
    pub package_id: String,
    pub state: String,
    pub staged_at: Option<i64>,
    pub priority: i32,
    pub attempts: i32,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    Applied,
    /// The row changed between read and write; the report was not applied.
    Raced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveCounts {
    pub wave: i32,
    pub state: ActionState,
    pub count: i64,
}

/// What a state change of the campaign does to its actions; returns the
/// VINs whose staged documents change.
pub(super) async fn on_campaign_state(
    mut conn: Conn<'_>,
    campaign_id: &str,
    to: CampaignState,
    now_ms: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let unfinished = super::sql_list(|s| !s.is_final());
    let sql = match to {
        // Undelivered actions go back to pending, so they leave the staged
        // documents; what a vehicle already has stays with it.
        CampaignState::Paused => "UPDATE actions SET state = 'pending', open = 0, attempts = attempts - 1, staged_at = NULL, state_at = $1 \
             WHERE campaign_id = $2 AND state = 'staged' RETURNING vin"
            .to_string(),
        CampaignState::Aborted => format!(
            "UPDATE actions SET state = 'cancelled', open = 0, message = 'campaign aborted', state_at = $1, finished_at = $1 \
             WHERE campaign_id = $2 AND state IN {unfinished} RETURNING vin"
        ),
        // Completed (all waves done, or the schedule ended): what was not
        // delivered is cancelled; vehicles mid-install finish and report.
        CampaignState::Completed => "UPDATE actions SET state = 'cancelled', open = 0, message = 'campaign completed before delivery', state_at = $1, finished_at = $1 \
             WHERE campaign_id = $2 AND state IN ('pending', 'waiting', 'staged') RETURNING vin"
            .to_string(),
        _ => return Ok(Vec::new()),
    };
    let vins: Vec<(String,)> = on_conn!(&mut conn, c => {
        sqlx::query_as(&sql).bind(now_ms).bind(campaign_id).fetch_all(c).await?
    });
    let mut vins: Vec<String> = vins.into_iter().map(|(v,)| v).collect();
    vins.sort();
    vins.dedup();
    Ok(vins)
}

pub(super) async fn open_vins(
    mut conn: Conn<'_>,
    campaign_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = on_conn!(&mut conn, c => {
        sqlx::query_as("SELECT vin FROM actions WHERE campaign_id = $1 AND open = 1")
            .bind(campaign_id).fetch_all(c).await?
    });
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

/// SQLite's bound-parameter limit is 32,766, and an action row binds 17.
const SQLITE_MAX_PARAMS: usize = 32_766;
const INSERTED_COLUMNS: usize = 17;
const SQLITE_ROWS_PER_INSERT: usize = SQLITE_MAX_PARAMS / INSERTED_COLUMNS;

impl Store {
    /// Creates actions, skipping vehicles the campaign already has one for.
    /// Returns how many were created.
    pub async fn insert_actions(
        &self,
        campaign_id: &str,
        actions: &[NewAction],
        now: DateTime<Utc>,
    ) -> Result<u64, CampaignError> {
        if actions.is_empty() {
            return Ok(0);
        }
        let now_ms = millis(now);
        let inserted = write_tx!(self, tx => {
            let mut conn = Conn::from(&mut *tx);
            let n = insert_actions(&mut conn, campaign_id, actions, now_ms).await?;
            tx.commit().await?;
            n
        });
        Ok(inserted)
    }

    /// Hands up to `limit` pending or waiting actions of open waves (lowest
    /// bucket first) to staging, skipping vehicles whose ECU already has an
    /// open action; those that are blocked are marked waiting. Returns the
    /// staged VINs.
    pub async fn release(
        &self,
        campaign_id: &str,
        max_wave: i32,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, CampaignError> {
        let now_ms = millis(now);
        let vins = write_tx!(self, tx => {
            let released: Vec<(String,)> = sqlx::query_as(
                "UPDATE actions SET state = 'staged', open = 1, attempts = attempts + 1, staged_at = $1, state_at = $1 \
                 WHERE id IN (SELECT a.id FROM actions a WHERE a.campaign_id = $2 AND a.state IN ('pending', 'waiting') AND a.wave <= $3 \
                   AND NOT EXISTS (SELECT 1 FROM actions b WHERE b.vin = a.vin AND b.ecu = a.ecu AND b.open = 1) \
                   ORDER BY a.bucket LIMIT $4) RETURNING vin")
                .bind(now_ms).bind(campaign_id).bind(max_wave).bind(limit as i64)
                .fetch_all(&mut *tx).await?;
            if (released.len() as u32) < limit {
                // Whatever is left in the open waves is blocked by another
                // campaign's action on the same ECU: show it as waiting.
                sqlx::query("UPDATE actions SET state = 'waiting', state_at = $1 WHERE campaign_id = $2 AND state = 'pending' AND wave <= $3 \
                     AND EXISTS (SELECT 1 FROM actions b WHERE b.vin = actions.vin AND b.ecu = actions.ecu AND b.open = 1)")
                    .bind(now_ms).bind(campaign_id).bind(max_wave)
                    .execute(&mut *tx).await?;
            }
            let vins: Vec<String> = released.into_iter().map(|(v,)| v).collect();
            ota_bus::outbox::enqueue(&mut *tx, topics::STAGING, &staging_events(&vins, now)).await?;
            tx.commit().await?;
            vins
        });
        if !vins.is_empty() {
            self.wake_relay();
        }
        Ok(vins)
    }

    /// A higher-priority campaign takes the ECU from lower-priority actions
    /// that are staged but not yet delivered: they go back to waiting.
    pub async fn preempt(
        &self,
        campaign_id: &str,
        priority: i32,
        max_wave: i32,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, CampaignError> {
        let now_ms = millis(now);
        let vins = write_tx!(self, tx => {
            let rows: Vec<(String,)> = sqlx::query_as(
                "UPDATE actions SET state = 'waiting', open = 0, attempts = attempts - 1, staged_at = NULL, state_at = $1 \
                 WHERE open = 1 AND state = 'staged' AND campaign_id <> $2 \
                   AND campaign_id IN (SELECT id FROM campaigns WHERE priority < $3) \
                   AND EXISTS (SELECT 1 FROM actions w WHERE w.campaign_id = $2 AND w.vin = actions.vin AND w.ecu = actions.ecu \
                               AND w.state = 'waiting' AND w.wave <= $4) RETURNING vin")
                .bind(now_ms).bind(campaign_id).bind(priority).bind(max_wave)
                .fetch_all(&mut *tx).await?;
            let vins: Vec<String> = rows.into_iter().map(|(v,)| v).collect();
            ota_bus::outbox::enqueue(&mut *tx, topics::STAGING, &staging_events(&vins, now)).await?;
            tx.commit().await?;
            vins
        });
        if !vins.is_empty() {
            self.wake_relay();
        }
        Ok(vins)
    }

    /// Open actions staged before `cutoff` time out: staged again while
    /// retries remain, otherwise timed_out. Returns (timed out, retried).
    pub async fn expire(
        &self,
        campaign_id: &str,
        cutoff: DateTime<Utc>,
        max_retries: u32,
        timeout_text: &str,
        now: DateTime<Utc>,
    ) -> Result<(u64, u64), CampaignError> {
        let now_ms = millis(now);
        let message = format!("no final status within {timeout_text}");
        let retry_message = format!("{message}; retrying");
        let (timed_out, retried) = write_tx!(self, tx => {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "UPDATE actions SET \
                   state = CASE WHEN attempts <= $1 THEN 'staged' ELSE 'timed_out' END, \
                   open = CASE WHEN attempts <= $1 THEN 1 ELSE 0 END, \
                   finished_at = CASE WHEN attempts <= $1 THEN NULL ELSE $2 END, \
                   message = CASE WHEN attempts <= $1 THEN $3 ELSE $4 END, \
                   staged_at = CASE WHEN attempts <= $1 THEN $2 ELSE staged_at END, \
                   attempts = CASE WHEN attempts <= $1 THEN attempts + 1 ELSE attempts END, \
                   progress = 0, state_at = $2 \
                 WHERE campaign_id = $5 AND open = 1 AND staged_at < $6 RETURNING vin, state")
                .bind(max_retries as i32).bind(now_ms).bind(&retry_message).bind(&message)
                .bind(campaign_id).bind(millis(cutoff))
                .fetch_all(&mut *tx).await?;
            let timed_out = rows.iter().filter(|(_, s)| s == ActionState::TimedOut.as_str()).count() as u64;
            let retried = rows.len() as u64 - timed_out;
            let vins: Vec<String> = rows.into_iter().map(|(v, _)| v).collect();
            ota_bus::outbox::enqueue(&mut *tx, topics::STAGING, &staging_events(&vins, now)).await?;
            tx.commit().await?;
            (timed_out, retried)
        });
        if timed_out + retried > 0 {
            self.wake_relay();
        }
        Ok((timed_out, retried))
    }

    pub async fn set_budget(
        &self,
        campaign_id: &str,
        budget: f64,
        at: DateTime<Utc>,
    ) -> Result<(), CampaignError> {
        with_pool!(&self.db, pool => {
            sqlx::query("UPDATE campaigns SET release_budget = $1, budget_at = $2 WHERE id = $3")
                .bind(budget).bind(millis(at)).bind(campaign_id).execute(pool).await.map(drop)?
        });
        Ok(())
    }

    /// Counts per wave and state.
    pub async fn wave_counts(&self, campaign_id: &str) -> Result<Vec<WaveCounts>, CampaignError> {
        let rows: Vec<(i32, String, i64)> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT wave, state, COUNT(*) FROM actions WHERE campaign_id = $1 GROUP BY wave, state ORDER BY wave, state")
                .bind(campaign_id).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(wave, state, count)| {
                let state = state.parse().map_err(|reason| CampaignError::Corrupt {
                    what: format!("action state in campaign {campaign_id}"),
                    reason,
                })?;
                Ok(WaveCounts { wave, state, count })
            })
            .collect()
    }

    /// Actions by id, for applying status reports.
    pub async fn actions_by_id(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, ActionRow>, CampaignError> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let rows: Vec<ActionRow> = with_pool!(&self.db, pool => {
                let mut q = QueryBuilder::new(format!("SELECT {ACTION_COLUMNS} FROM actions WHERE id IN ("));
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(id);
                }
                q.push(")");
                q.build_query_as().fetch_all(pool).await?
            });
            out.extend(rows.into_iter().map(|r| (r.id.clone(), r)));
        }
        Ok(out)
    }

    /// A campaign's actions for these vehicles.
    pub async fn campaign_actions_for(
        &self,
        campaign_id: &str,
        vins: &[String],
    ) -> Result<HashMap<String, ActionRow>, CampaignError> {
        let mut out = HashMap::new();
        for chunk in vins.chunks(1000) {
            let rows: Vec<ActionRow> = with_pool!(&self.db, pool => {
                let mut q = QueryBuilder::new(format!("SELECT {ACTION_COLUMNS} FROM actions WHERE campaign_id = "));
                q.push_bind(campaign_id).push(" AND vin IN (");
                let mut sep = q.separated(", ");
                for v in chunk {
                    sep.push_bind(v);
                }
                q.push(")");
                q.build_query_as().fetch_all(pool).await?
            });
            out.extend(rows.into_iter().map(|r| (r.vin.clone(), r)));
        }
        Ok(out)
    }

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
            let mut vins: Vec<String> = updates.iter().zip(&outcomes)
                .filter(|(u, o)| **o == ReportOutcome::Applied && (u.state.is_final() || u.restaged))
                .map(|(u, _)| u.vin.clone()).collect();
            vins.sort();
            vins.dedup();
            ota_bus::outbox::enqueue(&mut conn, topics::STAGING, &staging_events(&vins, now)).await?;
            // In the same transaction: a success acknowledged to a vehicle
            // reaches its inventory even if this process dies next.
            let installs: Vec<ota_bus::Install> = updates.iter().zip(&outcomes)
                .filter(|(u, o)| **o == ReportOutcome::Applied && u.state == ActionState::Succeeded)
                .map(|(u, _)| ota_bus::Install { vin: u.vin.clone(), action_id: u.id.clone(), ecu: u.ecu.clone(), package_id: u.package_id.clone() })
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

    /// Staged actions a vehicle has now been handed.
    pub async fn mark_delivered(
        &self,
        vin: &str,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<u32, CampaignError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let now_ms = millis(now);
        let n = write_tx!(self, tx => {
            let mut q = QueryBuilder::new("UPDATE actions SET state = 'delivered', state_at = ");
            q.push_bind(now_ms).push(" WHERE state = 'staged' AND vin = ").push_bind(vin).push(" AND id IN (");
            let mut sep = q.separated(", ");
            for id in ids {
                sep.push_bind(id);
            }
            q.push(")");
            let n = q.build().execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            n
        });
        Ok(n as u32)
    }

    /// Ends actions that should no longer happen: `state` is cancelled (the
    /// vehicle stopped matching; only actions not yet delivered) or
    /// succeeded (the vehicle already runs the version; any unfinished one).
    pub async fn close_actions(
        &self,
        ids: &[String],
        state: ActionState,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, CampaignError> {
        let from = if state == ActionState::Succeeded {
            super::sql_list(|s| !s.is_final())
        } else {
            super::sql_list(|s| !s.is_delivered() && !s.is_final())
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = millis(now);
        let vins = write_tx!(self, tx => {
            let mut q = QueryBuilder::new("UPDATE actions SET open = 0, state = ");
            q.push_bind(state.as_str()).push(", message = ").push_bind(message)
                .push(", state_at = ").push_bind(now_ms).push(", finished_at = ").push_bind(now_ms)
                .push(format_args!(" WHERE state IN {from} AND id IN ("));
            let mut sep = q.separated(", ");
            for id in ids {
                sep.push_bind(id);
            }
            q.push(") RETURNING vin");
            let rows: Vec<(String,)> = q.build_query_as().fetch_all(&mut *tx).await?;
            let vins: Vec<String> = rows.into_iter().map(|(v,)| v).collect();
            ota_bus::outbox::enqueue(&mut *tx, topics::STAGING, &staging_events(&vins, now)).await?;
            tx.commit().await?;
            vins
        });
        if !vins.is_empty() {
            self.wake_relay();
        }
        Ok(vins)
    }

    /// Open actions of these vehicles, with their campaign's priority.
    pub async fn open_actions(&self, vins: &[String]) -> Result<Vec<OpenActionRow>, CampaignError> {
        let mut out = Vec::new();
        for chunk in vins.chunks(1000) {
            let rows: Vec<OpenActionRow> = with_pool!(&self.db, pool => {
                let mut q = QueryBuilder::new("SELECT a.vin, a.id, a.campaign_id, a.ecu, a.package_id, a.state, a.staged_at, c.priority, a.attempts \
                    FROM actions a JOIN campaigns c ON c.id = a.campaign_id WHERE a.open = 1 AND a.vin IN (");
                let mut sep = q.separated(", ");
                for v in chunk {
                    sep.push_bind(v);
                }
                q.push(") ORDER BY a.vin");
                q.build_query_as().fetch_all(pool).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// Open actions of the vehicles after `after_vin`, whole vehicles only,
    /// about `limit` rows.
    pub async fn scan_open_actions(
        &self,
        after_vin: &str,
        limit: u32,
    ) -> Result<Vec<OpenActionRow>, CampaignError> {
        let limit = limit.max(1);
        let mut rows: Vec<OpenActionRow> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT a.vin, a.id, a.campaign_id, a.ecu, a.package_id, a.state, a.staged_at, c.priority, a.attempts \
                FROM actions a JOIN campaigns c ON c.id = a.campaign_id WHERE a.open = 1 AND a.vin > $1 ORDER BY a.vin LIMIT $2")
                .bind(after_vin).bind(limit as i64).fetch_all(pool).await?
        });
        // A full page may have cut the last vehicle's actions in two: leave
        // it for the next page, unless it is the only vehicle on this one.
        if rows.len() as u32 == limit {
            let last = rows.last().map(|r| r.vin.clone()).unwrap_or_default();
            if rows.first().is_some_and(|r| r.vin != last) {
                rows.retain(|r| r.vin != last);
            }
        }
        Ok(rows)
    }

    /// A campaign's actions after `after_vin`, in VIN order (report rows).
    pub async fn campaign_rows(
        &self,
        campaign_id: &str,
        after_vin: &str,
        limit: u32,
    ) -> Result<Vec<ActionRow>, CampaignError> {
        let rows: Vec<ActionRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(&format!("SELECT {ACTION_COLUMNS} FROM actions WHERE campaign_id = $1 AND vin > $2 ORDER BY vin LIMIT $3"))
                .bind(campaign_id).bind(after_vin).bind(limit as i64).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// How many of the campaign's actions are in each state.
    pub async fn state_counts(
        &self,
        campaign_id: &str,
    ) -> Result<HashMap<ActionState, u64>, CampaignError> {
        let rows: Vec<(String, i64)> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT state, COUNT(*) FROM actions WHERE campaign_id = $1 GROUP BY state")
                .bind(campaign_id).fetch_all(pool).await?
        });
        let mut out = HashMap::new();
        for (state, n) in rows {
            let s: ActionState = state.parse().map_err(|reason| CampaignError::Corrupt {
                what: format!("action state in campaign {campaign_id}"),
                reason,
            })?;
            out.insert(s, n as u64);
        }
        Ok(out)
    }
}

async fn insert_actions(
    conn: &mut Conn<'_>,
    campaign_id: &str,
    actions: &[NewAction],
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let mut inserted = 0;
    match conn {
        Conn::Postgres(c) => {
            // One statement per call: arrays instead of thousands of
            // placeholders.
            let col = |f: fn(&NewAction) -> String| actions.iter().map(f).collect::<Vec<String>>();
            let int = |f: fn(&NewAction) -> i32| actions.iter().map(f).collect::<Vec<i32>>();
            let finished: Vec<Option<i64>> = actions
                .iter()
                .map(|a| a.state.is_final().then_some(now_ms))
                .collect();
            inserted += sqlx::query(
                "INSERT INTO actions (id, campaign_id, vin, ecu, package_id, rule_index, bucket, wave, state, message, model, platform, gateway, region, finished_at, state_at, created_at) \
                 SELECT u.id, $1, u.vin, u.ecu, u.package_id, u.rule_index, u.bucket, u.wave, u.state, u.message, u.model, u.platform, u.gateway, u.region, u.finished_at, $2, $2 \
                 FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[], $9::int[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::bigint[]) \
                   AS u(id, vin, ecu, package_id, rule_index, bucket, wave, state, message, model, platform, gateway, region, finished_at) \
                 ON CONFLICT (campaign_id, vin) DO NOTHING")
                .bind(campaign_id)
                .bind(now_ms)
                .bind(col(|a| a.id.clone()))
                .bind(col(|a| a.vin.clone()))
                .bind(col(|a| a.ecu.clone()))
                .bind(col(|a| a.package_id.clone()))
                .bind(int(|a| a.rule_index))
                .bind(int(|a| a.bucket))
                .bind(int(|a| a.wave))
                .bind(col(|a| a.state.as_str().to_string()))
                .bind(col(|a| a.message.clone()))
                .bind(col(|a| a.model.clone()))
                .bind(col(|a| a.platform.clone()))
                .bind(col(|a| a.gateway.clone()))
                .bind(col(|a| a.region.clone()))
                .bind(finished)
                .execute(&mut **c)
                .await?
                .rows_affected();
        }
        Conn::Sqlite(c) => {
            for chunk in actions.chunks(SQLITE_ROWS_PER_INSERT) {
                let mut q = QueryBuilder::new(
                    "INSERT INTO actions (id, campaign_id, vin, ecu, package_id, rule_index, bucket, wave, state, message, model, platform, gateway, region, finished_at, state_at, created_at) ",
                );
                q.push_values(chunk, |mut b, a| {
                    b.push_bind(&a.id)
                        .push_bind(campaign_id)
                        .push_bind(&a.vin)
                        .push_bind(&a.ecu)
                        .push_bind(&a.package_id)
                        .push_bind(a.rule_index)
                        .push_bind(a.bucket)
                        .push_bind(a.wave)
                        .push_bind(a.state.as_str())
                        .push_bind(&a.message)
                        .push_bind(&a.model)
                        .push_bind(&a.platform)
                        .push_bind(&a.gateway)
                        .push_bind(&a.region)
                        .push_bind(a.state.is_final().then_some(now_ms))
                        .push_bind(now_ms)
                        .push_bind(now_ms);
                });
                q.push(" ON CONFLICT (campaign_id, vin) DO NOTHING");
                inserted += q.build().execute(&mut **c).await?.rows_affected();
            }
        }
    }
    Ok(inserted)
}

/// Returns the ids whose update applied.
async fn write_status(
    conn: &mut Conn<'_>,
    updates: &[StatusUpdate],
    now_ms: i64,
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    const SET: &str = "state = u.state, open = u.open, attempts = u.attempts, last_seq = u.seq, progress = u.progress, message = u.message, state_at = $1, \
        finished_at = CASE WHEN u.finished = 1 THEN $1 ELSE NULL END, \
        staged_at = CASE WHEN u.restaged = 1 THEN $1 ELSE actions.staged_at END";
    let mut applied = std::collections::HashSet::new();
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
