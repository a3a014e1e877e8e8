//! Campaign reports: counts by state, wave and fleet group, the top failure
//! reasons and completion over time; the per-vehicle rows for CSV.

use ota_common::vehicle::to_timestamp;
use ota_proto::v1 as pb;

use crate::manager::CampaignManager;
use chrono::{DateTime, Utc};

use crate::model::{ActionState, RolloutError};
use crate::store::GroupCounts;
use crate::CampaignError;

impl CampaignManager {
    pub async fn report(&self, id: &str, top: u32) -> Result<pb::CampaignReport, CampaignError> {
        let c = self.campaign(id).await?;
        let (last_error, last_error_at) = RolloutError::shown(c.rollout_error.as_ref());
        let store = &self.inner.store;
        let counts = store.state_counts(id).await?;
        let waves = store.wave_counts(id).await?;
        let openings = store.wave_openings(&c).await?;
        let data = store
            .report_data(id, if top == 0 { 10 } else { top })
            .await?;

        let by_state: Vec<pb::StateCount> = ActionState::ALL
            .into_iter()
            .map(|s| pb::StateCount {
                state: s.into(),
                count: counts.get(&s).copied().unwrap_or(0),
            })
            .collect();
        let total: u64 = counts.values().sum();
        let count = |f: fn(ActionState) -> bool| -> u64 {
            counts.iter().filter(|(s, _)| f(**s)).map(|(_, n)| *n).sum()
        };
        let finished = count(|s| s.is_final() && s != ActionState::Cancelled);
        let failed = count(ActionState::is_failure);
        let wave_reports = c
            .waves()
            .iter()
            .enumerate()
            .map(|(i, pct)| {
                let rows: Vec<&crate::store::WaveCounts> =
                    waves.iter().filter(|w| w.wave == i as i32).collect();
                pb::WaveReport {
                    index: i as u32,
                    percent: *pct,
                    open: (i as i32) <= c.current_wave,
                    opened_at: openings
                        .get(i)
                        .copied()
                        .flatten()
                        .or((i as i32 == c.current_wave)
                            .then_some(c.wave_opened_at)
                            .flatten())
                        .filter(|_| (i as i32) <= c.current_wave)
                        .map(to_timestamp),
                    by_state: rows
                        .iter()
                        .map(|w| pb::StateCount {
                            state: w.state.into(),
                            count: w.count as u64,
                        })
                        .collect(),
                    total: rows.iter().map(|w| w.count as u64).sum(),
                }
            })
            .collect();
        let groups = |g: Vec<GroupCounts>| -> Vec<pb::GroupReport> {
            g.into_iter()
                .map(|g| pb::GroupReport {
                    key: g.key,
                    total: g.total,
                    succeeded: g.succeeded,
                    failed: g.failed,
                    in_progress: g.in_progress,
                })
                .collect()
        };
        let mut done = 0u64;
        let mut ok = 0u64;
        let completion = data
            .finished
            .iter()
            .map(|(at, n, succeeded)| {
                done += *n as u64;
                ok += *succeeded as u64;
                Ok(pb::CompletionPoint {
                    at: Some(to_timestamp(stored_time(id, "finish time", *at)?)),
                    finished: done,
                    succeeded: ok,
                })
            })
            .collect::<Result<_, CampaignError>>()?;
        Ok(pb::CampaignReport {
            campaign_id: c.id.clone(),
            by_state,
            state: c.state.into(),
            name: c.name.clone(),
            total,
            waves: wave_reports,
            by_model: groups(data.by_model),
            by_platform: groups(data.by_platform),
            by_gateway: groups(data.by_gateway),
            by_region: groups(data.by_region),
            top_failures: data
                .top_failures
                .into_iter()
                .map(|(reason, count)| pb::FailureReason { reason, count })
                .collect(),
            completion,
            failure_rate: if finished == 0 {
                0.0
            } else {
                failed as f64 * 100.0 / finished as f64
            },
            state_reason: c.state_reason,
            retries: data.retries,
            last_error,
            last_error_at,
        })
    }

    /// One page of the per-vehicle rows, after `after_vin`.
    pub async fn report_rows(
        &self,
        id: &str,
        after_vin: &str,
        limit: u32,
    ) -> Result<Vec<pb::VehicleActionRow>, CampaignError> {
        let rows = self.inner.store.campaign_rows(id, after_vin, limit).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let pkg = self.package(&r.package_id).await?;
            let state: ActionState = r.state.parse().map_err(|reason| CampaignError::Corrupt {
                what: format!("action state in campaign {id}"),
                reason,
            })?;
            out.push(pb::VehicleActionRow {
                vin: r.vin,
                action_id: r.id,
                state: state.into(),
                wave: r.wave.max(0) as u32,
                ecu: r.ecu,
                package: pkg.name,
                version: pkg.version,
                attempts: r.attempts.max(0) as u32,
                progress: r.progress.max(0) as u32,
                message: r.message,
                updated_at: Some(to_timestamp(stored_time(id, "state time", r.state_at)?)),
                model: r.model,
                region: r.region,
            });
        }
        Ok(out)
    }
}

/// A stored time in milliseconds, or the report's error: a value out of
/// chrono's range is shown as what it is, not as 1970.
fn stored_time(campaign: &str, what: &str, ms: i64) -> Result<DateTime<Utc>, CampaignError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| CampaignError::Corrupt {
        what: format!("{what} of an action in campaign {campaign}"),
        reason: format!("{ms} ms is not a representable time"),
    })
}
