//! What an admin diagnosing a rollout asks: a campaign's failures grouped
//! by reason, the VINs of a group, offering a group the action again, and
//! every action of one vehicle with its history.

use chrono::Utc;
use ota_auth::Role;
use ota_common::vehicle::to_timestamp;
use ota_common::Vin;
use ota_proto::v1 as pb;

use crate::manager::{Actor, CampaignManager};
use crate::model::{ActionState, CampaignState};
use crate::report::stored_time;
use crate::store::{Audit, EventRow, RETRY_VERB};
use crate::CampaignError;

const DEFAULT_GROUPS: u32 = 50;
const MAX_GROUPS: u32 = 1000;
const DEFAULT_VINS: u32 = 1000;
const MAX_VINS: u32 = 10_000;

/// A request's page size: `default` for 0, at most `max`.
fn page(limit: u32, default: u32, max: u32) -> u32 {
    match limit {
        0 => default,
        n => n.min(max),
    }
}

impl CampaignManager {
    /// The campaign's failure groups, largest first, at most `limit`.
    pub async fn failure_groups(
        &self,
        campaign_id: &str,
        limit: u32,
    ) -> Result<pb::FailureGroupsResponse, CampaignError> {
        let c = self.campaign(campaign_id).await?;
        let groups = self
            .inner
            .store
            .failure_groups(&c.id, c.plan.spec.rollout.max_retries)
            .await?;
        let total_groups = groups.len() as u64;
        Ok(pb::FailureGroupsResponse {
            groups: groups
                .into_iter()
                .take(page(limit, DEFAULT_GROUPS, MAX_GROUPS) as usize)
                .map(|g| pb::FailureGroup {
                    reason: g.reason,
                    count: g.count,
                    by_state: g
                        .by_state
                        .into_iter()
                        .map(|(s, count)| pb::StateCount {
                            state: s.into(),
                            count,
                        })
                        .collect(),
                    retryable: g.retryable,
                })
                .collect(),
            total_groups,
        })
    }

    /// A page of a failure group's VINs, after `after_vin`.
    pub async fn failure_group_vins(
        &self,
        campaign_id: &str,
        reason: &str,
        after_vin: &str,
        limit: u32,
    ) -> Result<Vec<String>, CampaignError> {
        let c = self.campaign(campaign_id).await?;
        self.inner
            .store
            .failure_group_vins(
                &c.id,
                reason,
                after_vin,
                page(limit, DEFAULT_VINS, MAX_VINS),
            )
            .await
    }

    /// Offers a failure group the action again (see
    /// [`Store::retry_group`](crate::store::Store::retry_group)); returns
    /// (retried, skipped).
    pub async fn retry_group(
        &self,
        campaign_id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<(u64, u64), CampaignError> {
        let role: Option<Role> = actor.role.parse().ok();
        if role.is_none_or(|r| r < Role::Engineer) {
            let has = if actor.role.is_empty() {
                "no role".to_string()
            } else {
                format!("the {} role", actor.role)
            };
            return Err(CampaignError::Forbidden(format!(
                "retrying failed actions needs the engineer role; {} has {has}",
                actor.name
            )));
        }
        let c = self.campaign(campaign_id).await?;
        if !c.state.is_active() {
            return Err(CampaignError::IllegalTransition {
                id: c.id,
                state: c.state.to_string(),
                action: RETRY_VERB,
            });
        }
        let (retried, skipped) = self
            .inner
            .store
            .retry_group(
                &c.id,
                reason,
                c.plan.spec.rollout.max_retries,
                &Audit::new(&actor.name, ""),
                Utc::now(),
            )
            .await?;
        tracing::info!(campaign = %c.id, %reason, retried, skipped, actor = %actor.name, "failure group retried");
        Ok((retried, skipped))
    }

    /// Every action of the vehicle, newest first, with its kept history.
    pub async fn vehicle_history(
        &self,
        vin: &str,
    ) -> Result<Vec<pb::VehicleAction>, CampaignError> {
        let vin = Vin::parse(vin).map_err(|e| CampaignError::Invalid(e.to_string()))?;
        let entries = self.inner.store.vehicle_rows(vin.as_str()).await?;
        let ids: Vec<String> = entries.iter().map(|e| e.row.id.clone()).collect();
        let mut history = self.inner.store.events_of(&ids).await?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let campaign_id = e.row.campaign_id.clone();
            let attempt = e.row.attempts.max(0) as u32;
            let reports = history
                .remove(&e.row.id)
                .unwrap_or_default()
                .into_iter()
                .map(|ev| report_pb(&campaign_id, ev))
                .collect::<Result<_, _>>()?;
            out.push(pb::VehicleAction {
                row: Some(self.row_pb(e.row).await?),
                campaign_id,
                campaign_name: e.campaign_name,
                // A stored state this version cannot read goes out
                // unspecified rather than failing the vehicle's page.
                campaign_state: e
                    .campaign_state
                    .parse()
                    .unwrap_or(CampaignState::Unspecified)
                    .into(),
                attempt,
                reports,
            });
        }
        Ok(out)
    }
}

fn report_pb(campaign: &str, e: EventRow) -> Result<pb::StatusReport, CampaignError> {
    let state: ActionState = e.state.parse().map_err(|reason| CampaignError::Corrupt {
        what: format!("history of action {} in campaign {campaign}", e.action_id),
        reason,
    })?;
    Ok(pb::StatusReport {
        at: Some(to_timestamp(stored_time(campaign, "event time", e.at)?)),
        state: state.into(),
        progress: e.progress.max(0) as u32,
        message: e.message,
        protocol: e.protocol,
        attempt: e.attempt.max(0) as u32,
    })
}
