//! Campaign reports: counts by state, wave and fleet group, the top failure
//! reasons, completion and failures over time, all from the counters the
//! store keeps (never a scan of the campaign's actions); the per-vehicle
//! rows for CSV.

use std::collections::BTreeMap;

use ota_common::vehicle::to_timestamp;
use ota_proto::v1 as pb;

use crate::manager::CampaignManager;
use chrono::{DateTime, Utc};

use crate::model::{ActionState, RolloutError};
use crate::store::{dim, ActionRow, GroupCounts, MinuteCounts};
use crate::CampaignError;

const MINUTE_MS: i64 = 60_000;
/// Points of the completion curve, at most.
const COMPLETION_POINTS: i64 = 60;

impl CampaignManager {
    pub async fn report(&self, id: &str, top: u32) -> Result<pb::CampaignReport, CampaignError> {
        let c = self.campaign(id).await?;
        let (last_error, last_error_at) = RolloutError::shown(c.rollout_error.as_ref());
        let store = &self.inner.store;
        let all = store.counts(id, None).await?;
        let counts = all.by_state(id)?;
        let waves = all.waves(id)?;
        let openings = store.wave_openings(&c).await?;
        let failures = store
            .failure_groups(id, c.plan.spec.rollout.max_retries)
            .await?;
        let top = if top == 0 { 10 } else { top as usize };

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
        let finished = count(counts_as_finished);
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
                            count: w.count.max(0) as u64,
                        })
                        .collect(),
                    total: rows.iter().map(|w| w.count.max(0) as u64).sum(),
                }
            })
            .collect();
        let groups = |d: &str| -> Result<Vec<pb::GroupReport>, CampaignError> {
            Ok(all.groups(id, d)?.into_iter().map(group_pb).collect())
        };
        let minutes = all.minutes(id)?;
        Ok(pb::CampaignReport {
            campaign_id: c.id.clone(),
            by_state,
            state: c.state.into(),
            name: c.name.clone(),
            total,
            waves: wave_reports,
            by_model: groups(dim::MODEL)?,
            by_platform: groups(dim::PLATFORM)?,
            by_gateway: groups(dim::GATEWAY)?,
            by_region: groups(dim::REGION)?,
            by_hardware: groups(dim::HARDWARE)?,
            top_failures: failures
                .into_iter()
                .take(top)
                .map(|g| pb::FailureReason {
                    reason: g.reason,
                    count: g.count,
                })
                .collect(),
            completion: completion(id, &minutes)?,
            failure_series: failure_series(id, &minutes)?,
            failure_rate: if finished == 0 {
                0.0
            } else {
                failed as f64 * 100.0 / finished as f64
            },
            state_reason: c.state_reason,
            retries: all.retries(),
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
            out.push(self.row_pb(r).await?);
        }
        Ok(out)
    }

    /// An action as the contract's row, with its package's name and version.
    pub(crate) async fn row_pb(&self, r: ActionRow) -> Result<pb::VehicleActionRow, CampaignError> {
        let pkg = self.package(&r.package_id).await?;
        let id = &r.campaign_id;
        let state: ActionState = r.state.parse().map_err(|reason| CampaignError::Corrupt {
            what: format!("action state in campaign {id}"),
            reason,
        })?;
        let updated_at = Some(to_timestamp(stored_time(id, "state time", r.state_at)?));
        Ok(pb::VehicleActionRow {
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
            updated_at,
            model: r.model,
            region: r.region,
            hardware: r.hardware,
        })
    }
}

/// A finished action for the failure rate: cancelled ones are not.
fn counts_as_finished(s: ActionState) -> bool {
    s.is_final() && s != ActionState::Cancelled
}

fn group_pb(g: GroupCounts) -> pb::GroupReport {
    pb::GroupReport {
        key: g.key,
        total: g.total,
        succeeded: g.succeeded,
        failed: g.failed,
        in_progress: g.in_progress,
    }
}

fn corrupt_minutes(campaign: &str, first: i64, last: i64) -> CampaignError {
    CampaignError::Corrupt {
        what: format!("finish times of campaign {campaign}"),
        reason: format!("minutes {first}..{last} do not fit the report's arithmetic"),
    }
}

/// The start of a minute, as a timestamp.
fn minute_at(campaign: &str, minute: i64) -> Result<prost_types::Timestamp, CampaignError> {
    let ms = minute
        .checked_mul(MINUTE_MS)
        .ok_or_else(|| corrupt_minutes(campaign, minute, minute))?;
    Ok(to_timestamp(stored_time(campaign, "finish time", ms)?))
}

/// Finished actions (cancelled ones too) and successes up to the end of
/// each of at most [`COMPLETION_POINTS`] spans between the first and the
/// last finish, cumulative.
fn completion(
    campaign: &str,
    minutes: &[MinuteCounts],
) -> Result<Vec<pb::CompletionPoint>, CampaignError> {
    let (Some(first), Some(last)) = (minutes.first(), minutes.last()) else {
        return Ok(Vec::new());
    };
    let (first, last) = (first.minute, last.minute);
    let span = last
        .checked_sub(first)
        .and_then(|d| d.checked_add(1))
        .ok_or_else(|| corrupt_minutes(campaign, first, last))?;
    let width = (span + COMPLETION_POINTS - 1) / COMPLETION_POINTS;
    let mut buckets: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for m in minutes {
        let b = buckets.entry((m.minute - first) / width).or_default();
        b.0 += m.by_state.values().sum::<u64>();
        b.1 += m
            .by_state
            .get(&ActionState::Succeeded)
            .copied()
            .unwrap_or(0);
    }
    let (mut done, mut ok) = (0u64, 0u64);
    buckets
        .into_iter()
        .map(|(b, (n, succeeded))| {
            done += n;
            ok += succeeded;
            let end = (b + 1)
                .checked_mul(width)
                .and_then(|d| first.checked_add(d))
                .ok_or_else(|| corrupt_minutes(campaign, first, last))?;
            Ok(pb::CompletionPoint {
                at: Some(minute_at(campaign, end)?),
                finished: done,
                succeeded: ok,
            })
        })
        .collect()
}

/// Per minute with finished actions (cancelled ones not counted): how many
/// finished and how many of them failed, were rejected or timed out.
fn failure_series(
    campaign: &str,
    minutes: &[MinuteCounts],
) -> Result<Vec<pb::FailurePoint>, CampaignError> {
    let mut out = Vec::new();
    for m in minutes {
        let sum = |f: fn(ActionState) -> bool| -> u64 {
            m.by_state
                .iter()
                .filter(|(s, _)| f(**s))
                .map(|(_, n)| *n)
                .sum()
        };
        let finished = sum(counts_as_finished);
        if finished == 0 {
            continue;
        }
        out.push(pb::FailurePoint {
            at: Some(minute_at(campaign, m.minute)?),
            finished,
            failed: sum(ActionState::is_failure),
        });
    }
    Ok(out)
}

/// A stored time in milliseconds, or the report's error: a value out of
/// chrono's range is shown as what it is, not as 1970.
pub(crate) fn stored_time(
    campaign: &str,
    what: &str,
    ms: i64,
) -> Result<DateTime<Utc>, CampaignError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| CampaignError::Corrupt {
        what: format!("{what} of an action in campaign {campaign}"),
        reason: format!("{ms} ms is not a representable time"),
    })
}
