//! A campaign's failed, rejected and timed-out actions grouped by the
//! reason they gave, their VINs, and re-offering a group. These read the
//! failure rows alone (the `actions_failures` partial index), never the
//! whole campaign.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ota_bus::topics;
use ota_db::{with_pool, Db};
use serde_json::json;

use super::actions::{transitions, vins_of};
use super::{events, staging_events, write_audit, write_tx, Audit, Conn, Store};
use crate::model::{millis, ActionState, CampaignState};
use crate::CampaignError;

/// The reason a failure without a message shows.
pub const NO_MESSAGE: &str = "(no message)";

/// A failure's reason in SQL: its message, or [`NO_MESSAGE`].
const REASON: &str = "(CASE WHEN message = '' THEN '(no message)' ELSE message END)";

/// Failures that gave one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroupRow {
    pub reason: String,
    pub count: u64,
    /// By state, in the order of [`ActionState::ALL`].
    pub by_state: Vec<(ActionState, u64)>,
    /// Actions still within the campaign's retries.
    pub retryable: u64,
}

fn failures() -> String {
    super::sql_list(ActionState::is_failure)
}

impl Store {
    /// Every failure group of the campaign, largest first. `max_retries`
    /// is the campaign's: an action whose attempts are within it can be
    /// retried.
    pub async fn failure_groups(
        &self,
        campaign_id: &str,
        max_retries: u32,
    ) -> Result<Vec<FailureGroupRow>, CampaignError> {
        let sql = format!(
            "SELECT {REASON}, state, COUNT(*), CAST(SUM(CASE WHEN attempts <= $1 THEN 1 ELSE 0 END) AS BIGINT) \
             FROM actions WHERE campaign_id = $2 AND state IN {} GROUP BY 1, 2",
            failures()
        );
        let rows: Vec<(String, String, i64, i64)> = with_pool!(&self.db, pool => {
            sqlx::query_as(&sql).bind(i64::from(max_retries)).bind(campaign_id).fetch_all(pool).await?
        });
        let mut groups: BTreeMap<String, FailureGroupRow> = BTreeMap::new();
        for (reason, state, n, retryable) in rows {
            let state: ActionState = state.parse().map_err(|reason| CampaignError::Corrupt {
                what: format!("action state in campaign {campaign_id}"),
                reason,
            })?;
            let g = groups
                .entry(reason.clone())
                .or_insert_with(|| FailureGroupRow {
                    reason,
                    count: 0,
                    by_state: Vec::new(),
                    retryable: 0,
                });
            g.count += n.max(0) as u64;
            g.retryable += retryable.max(0) as u64;
            g.by_state.push((state, n.max(0) as u64));
        }
        let mut out: Vec<FailureGroupRow> = groups.into_values().collect();
        for g in &mut out {
            g.by_state
                .sort_by_key(|(s, _)| ActionState::ALL.iter().position(|a| a == s));
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        Ok(out)
    }

    /// The VINs of a failure group after `after_vin`, in VIN order.
    pub async fn failure_group_vins(
        &self,
        campaign_id: &str,
        reason: &str,
        after_vin: &str,
        limit: u32,
    ) -> Result<Vec<String>, CampaignError> {
        let sql = format!(
            "SELECT vin FROM actions WHERE campaign_id = $1 AND state IN {} AND vin > $2 AND {REASON} = $3 \
             ORDER BY vin LIMIT $4",
            failures()
        );
        let rows: Vec<(String,)> = with_pool!(&self.db, pool => {
            sqlx::query_as(&sql).bind(campaign_id).bind(after_vin).bind(reason).bind(i64::from(limit))
                .fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    /// Re-offers a failure group: its actions within `max_retries` go back
    /// to pending, for the rollout to stage under the campaign's rate and
    /// waves; the others stay as they are. Only while the campaign is
    /// running or paused (checked again in the transaction, which holds a
    /// pause or an abort back until it commits). Returns (retried,
    /// skipped), with an audit entry.
    pub async fn retry_group(
        &self,
        campaign_id: &str,
        reason: &str,
        max_retries: u32,
        audit: &Audit,
        now: DateTime<Utc>,
    ) -> Result<(u64, u64), CampaignError> {
        let now_ms = millis(now);
        let failures = failures();
        let lock = match &self.db {
            Db::Postgres(_) => " FOR SHARE",
            // One writer at a time already.
            Db::Sqlite(_) => "",
        };
        let message = format!("retried by {} after: {reason}", audit.actor);
        let (retried, skipped, vins) = write_tx!(self, tx => {
            let state: Option<(String,)> = sqlx::query_as(&format!("SELECT state FROM campaigns WHERE id = $1{lock}"))
                .bind(campaign_id).fetch_optional(&mut *tx).await?;
            let Some((state,)) = state else {
                return Err(CampaignError::not_found("campaign", campaign_id));
            };
            if !state.parse::<CampaignState>().is_ok_and(CampaignState::is_active) {
                return Err(CampaignError::IllegalTransition {
                    id: campaign_id.to_string(),
                    state,
                    action: RETRY_VERB,
                });
            }
            let rows: Vec<(String, String, i32)> = sqlx::query_as(&format!(
                "UPDATE actions SET state = 'pending', open = 0, staged_at = NULL, finished_at = NULL, progress = 0, \
                   message = $1, state_at = $2 \
                 WHERE campaign_id = $3 AND state IN {failures} AND {REASON} = $4 AND attempts <= $5 \
                 RETURNING id, vin, attempts"))
                .bind(&message).bind(now_ms).bind(campaign_id).bind(reason).bind(i64::from(max_retries))
                .fetch_all(&mut *tx).await?;
            let (skipped,): (i64,) = sqlx::query_as(&format!(
                "SELECT COUNT(*) FROM actions WHERE campaign_id = $1 AND state IN {failures} AND {REASON} = $2"))
                .bind(campaign_id).bind(reason).fetch_one(&mut *tx).await?;
            events::append(&mut Conn::from(&mut *tx), now_ms, &transitions(&rows, ActionState::Pending, &message)).await?;
            let retried = rows.len() as u64;
            let skipped = skipped.max(0) as u64;
            let detail = json!({"reason": reason, "retried": retried, "skipped": skipped}).to_string();
            write_audit(&mut *tx, now_ms, audit, "campaign", campaign_id, "retry-group", &detail).await?;
            // Pending actions are in no document yet; staging recomputes
            // these vehicles all the same, as after every change of their
            // actions.
            let vins = vins_of(&rows);
            ota_bus::outbox::enqueue(&mut *tx, topics::STAGING, &staging_events(&vins, now)).await?;
            tx.commit().await?;
            (retried, skipped, vins)
        });
        if !vins.is_empty() {
            self.wake_relay();
        }
        Ok((retried, skipped))
    }
}

/// What the error says a retry of a group could not do.
pub const RETRY_VERB: &str = "retry the failures of";
