//! Per-vehicle actions: bulk creation at launch, release to staging under
//! waves, rate and conflicts, timeouts, and the reads staging builds its
//! documents from. Every state change the platform makes here leaves an
//! event in the action's history, in the same transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ota_bus::topics;
use ota_db::with_pool;
use sqlx::QueryBuilder;

use super::events::{self, NewEvent};
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
    /// The targeted ECU's hardware in the inventory ('' when unknown).
    pub hardware: String,
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
    pub hardware: String,
    pub staged_at: Option<i64>,
    pub state_at: i64,
}

pub(super) const ACTION_COLUMNS: &str = "id, campaign_id, vin, ecu, package_id, wave, state, attempts, last_seq, progress, message, model, region, hardware, staged_at, state_at";

/// A vehicle's action with its campaign's name and state (as stored).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct VehicleActionEntry {
    #[sqlx(flatten)]
    pub row: ActionRow,
    pub campaign_name: String,
    pub campaign_state: String,
}

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

/// (id, vin, attempts) of the rows an UPDATE changed.
pub(super) type Changed = Vec<(String, String, i32)>;

/// The platform's events for the rows an UPDATE moved to `state`.
pub(super) fn transitions(rows: &Changed, state: ActionState, message: &str) -> Vec<NewEvent> {
    rows.iter()
        .map(|(id, _, attempts)| NewEvent::platform(id, state, message, *attempts))
        .collect()
}

/// The distinct VINs of changed rows, sorted.
pub(super) fn vins_of(rows: &Changed) -> Vec<String> {
    let mut vins: Vec<String> = rows.iter().map(|(_, v, _)| v.clone()).collect();
    vins.sort();
    vins.dedup();
    vins
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
    let (sql, state, message) = match to {
        // Undelivered actions go back to pending, so they leave the staged
        // documents; what a vehicle already has stays with it.
        CampaignState::Paused => (
            "UPDATE actions SET state = 'pending', open = 0, attempts = attempts - 1, staged_at = NULL, state_at = $1 \
             WHERE campaign_id = $2 AND state = 'staged' RETURNING id, vin, attempts"
                .to_string(),
            ActionState::Pending,
            "campaign paused",
        ),
        CampaignState::Aborted => (
            format!(
                "UPDATE actions SET state = 'cancelled', open = 0, message = $3, state_at = $1, finished_at = $1 \
                 WHERE campaign_id = $2 AND state IN {unfinished} RETURNING id, vin, attempts"
            ),
            ActionState::Cancelled,
            "campaign aborted",
        ),
        // Completed (all waves done, or the schedule ended): what was not
        // delivered is cancelled; vehicles mid-install finish and report.
        CampaignState::Completed => (
            "UPDATE actions SET state = 'cancelled', open = 0, message = $3, state_at = $1, finished_at = $1 \
             WHERE campaign_id = $2 AND state IN ('pending', 'waiting', 'staged') RETURNING id, vin, attempts"
                .to_string(),
            ActionState::Cancelled,
            "campaign completed before delivery",
        ),
        _ => return Ok(Vec::new()),
    };
    let rows: Changed = on_conn!(&mut conn, c => {
        let q = sqlx::query_as(&sql).bind(now_ms).bind(campaign_id);
        // A pause keeps the message (a retry's reason, say).
        let q = if to == CampaignState::Paused { q } else { q.bind(message) };
        q.fetch_all(c).await?
    });
    events::append(&mut conn, now_ms, &transitions(&rows, state, message)).await?;
    Ok(vins_of(&rows))
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

/// Why a pending action waits (its history's message).
const BLOCKED: &str = "another campaign's action on this ECU is open";

/// SQLite's bound-parameter limit is 32,766, and an action row binds 18.
const SQLITE_MAX_PARAMS: usize = 32_766;
const INSERTED_COLUMNS: usize = 18;
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
        // Rows in VIN order: two writers racing on the same vehicles (two
        // processes scanning one campaign, or two campaigns on one ECU) then
        // take their unique-index locks in the same order and wait for each
        // other instead of deadlocking.
        let sorted;
        let actions = if actions.is_sorted_by(|a, b| a.vin <= b.vin) {
            actions
        } else {
            let mut copy = actions.to_vec();
            copy.sort_by(|a, b| a.vin.cmp(&b.vin));
            sorted = copy;
            &sorted[..]
        };
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
            let released: Changed = sqlx::query_as(
                "UPDATE actions SET state = 'staged', open = 1, attempts = attempts + 1, staged_at = $1, state_at = $1 \
                 WHERE id IN (SELECT a.id FROM actions a WHERE a.campaign_id = $2 AND a.state IN ('pending', 'waiting') AND a.wave <= $3 \
                   AND NOT EXISTS (SELECT 1 FROM actions b WHERE b.vin = a.vin AND b.ecu = a.ecu AND b.open = 1) \
                   ORDER BY a.bucket LIMIT $4) RETURNING id, vin, attempts")
                .bind(now_ms).bind(campaign_id).bind(max_wave).bind(limit as i64)
                .fetch_all(&mut *tx).await?;
            let mut history = transitions(&released, ActionState::Staged, "");
            if (released.len() as u32) < limit {
                // Whatever is left in the open waves is blocked by another
                // campaign's action on the same ECU: show it as waiting.
                let blocked: Changed = sqlx::query_as("UPDATE actions SET state = 'waiting', state_at = $1 WHERE campaign_id = $2 AND state = 'pending' AND wave <= $3 \
                     AND EXISTS (SELECT 1 FROM actions b WHERE b.vin = actions.vin AND b.ecu = actions.ecu AND b.open = 1) RETURNING id, vin, attempts")
                    .bind(now_ms).bind(campaign_id).bind(max_wave)
                    .fetch_all(&mut *tx).await?;
                history.extend(transitions(&blocked, ActionState::Waiting, BLOCKED));
            }
            events::append(&mut Conn::from(&mut *tx), now_ms, &history).await?;
            let vins: Vec<String> = released.into_iter().map(|(_, v, _)| v).collect();
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
            let rows: Changed = sqlx::query_as(
                "UPDATE actions SET state = 'waiting', open = 0, attempts = attempts - 1, staged_at = NULL, state_at = $1 \
                 WHERE open = 1 AND state = 'staged' AND campaign_id <> $2 \
                   AND campaign_id IN (SELECT id FROM campaigns WHERE priority < $3) \
                   AND EXISTS (SELECT 1 FROM actions w WHERE w.campaign_id = $2 AND w.vin = actions.vin AND w.ecu = actions.ecu \
                               AND w.state = 'waiting' AND w.wave <= $4) RETURNING id, vin, attempts")
                .bind(now_ms).bind(campaign_id).bind(priority).bind(max_wave)
                .fetch_all(&mut *tx).await?;
            let message = format!("campaign {campaign_id} of higher priority took the ECU");
            events::append(&mut Conn::from(&mut *tx), now_ms, &transitions(&rows, ActionState::Waiting, &message)).await?;
            let vins = vins_of(&rows);
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
            let rows: Vec<(String, String, i32, String, String)> = sqlx::query_as(
                "UPDATE actions SET \
                   state = CASE WHEN attempts <= $1 THEN 'staged' ELSE 'timed_out' END, \
                   open = CASE WHEN attempts <= $1 THEN 1 ELSE 0 END, \
                   finished_at = CASE WHEN attempts <= $1 THEN NULL ELSE $2 END, \
                   message = CASE WHEN attempts <= $1 THEN $3 ELSE $4 END, \
                   staged_at = CASE WHEN attempts <= $1 THEN $2 ELSE staged_at END, \
                   attempts = CASE WHEN attempts <= $1 THEN attempts + 1 ELSE attempts END, \
                   progress = 0, state_at = $2 \
                 WHERE campaign_id = $5 AND open = 1 AND staged_at < $6 RETURNING id, vin, attempts, state, message")
                .bind(max_retries as i32).bind(now_ms).bind(&retry_message).bind(&message)
                .bind(campaign_id).bind(millis(cutoff))
                .fetch_all(&mut *tx).await?;
            let timed_out = rows.iter().filter(|r| r.3 == ActionState::TimedOut.as_str()).count() as u64;
            let retried = rows.len() as u64 - timed_out;
            let history: Vec<NewEvent> = rows.iter().map(|(id, _, attempts, state, message)| {
                let state = if state == ActionState::TimedOut.as_str() { ActionState::TimedOut } else { ActionState::Staged };
                NewEvent::platform(id, state, message, *attempts)
            }).collect();
            events::append(&mut Conn::from(&mut *tx), now_ms, &history).await?;
            let vins: Vec<String> = rows.into_iter().map(|r| r.1).collect();
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
            q.push(") RETURNING id, vin, attempts");
            let rows: Changed = q.build_query_as().fetch_all(&mut *tx).await?;
            events::append(&mut Conn::from(&mut *tx), now_ms, &transitions(&rows, ActionState::Delivered, "")).await?;
            tx.commit().await?;
            rows.len()
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
            q.push(") RETURNING id, vin, attempts");
            let rows: Changed = q.build_query_as().fetch_all(&mut *tx).await?;
            events::append(&mut Conn::from(&mut *tx), now_ms, &transitions(&rows, state, message)).await?;
            let vins: Vec<String> = rows.into_iter().map(|(_, v, _)| v).collect();
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

    /// Every action of a vehicle, newest first, with its campaign's name
    /// and state.
    pub async fn vehicle_rows(&self, vin: &str) -> Result<Vec<VehicleActionEntry>, CampaignError> {
        let columns: Vec<String> = ACTION_COLUMNS
            .split(", ")
            .map(|c| format!("a.{c}"))
            .collect();
        let sql = format!(
            "SELECT {}, c.name AS campaign_name, c.state AS campaign_state \
             FROM actions a JOIN campaigns c ON c.id = a.campaign_id WHERE a.vin = $1 \
             ORDER BY a.created_at DESC, a.id DESC",
            columns.join(", ")
        );
        let rows: Vec<VehicleActionEntry> = with_pool!(&self.db, pool => {
            sqlx::query_as(&sql).bind(vin).fetch_all(pool).await?
        });
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
                "INSERT INTO actions (id, campaign_id, vin, ecu, package_id, rule_index, bucket, wave, state, message, model, platform, gateway, region, hardware, finished_at, state_at, created_at) \
                 SELECT u.id, $1, u.vin, u.ecu, u.package_id, u.rule_index, u.bucket, u.wave, u.state, u.message, u.model, u.platform, u.gateway, u.region, u.hardware, u.finished_at, $2, $2 \
                 FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[], $9::int[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::bigint[]) \
                   AS u(id, vin, ecu, package_id, rule_index, bucket, wave, state, message, model, platform, gateway, region, hardware, finished_at) \
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
                .bind(col(|a| a.hardware.clone()))
                .bind(finished)
                .execute(&mut **c)
                .await?
                .rows_affected();
        }
        Conn::Sqlite(c) => {
            for chunk in actions.chunks(SQLITE_ROWS_PER_INSERT) {
                let mut q = QueryBuilder::new(
                    "INSERT INTO actions (id, campaign_id, vin, ecu, package_id, rule_index, bucket, wave, state, message, model, platform, gateway, region, hardware, finished_at, state_at, created_at) ",
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
                        .push_bind(&a.hardware)
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
