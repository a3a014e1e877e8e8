//! The campaigns' gauges, set by the rollout leader after each tick from
//! the action counters the store keeps (a few rows per campaign, never a
//! scan of `actions`):
//!
//! - `ota_campaign_actions{campaign,state}`: the campaign's actions in each
//!   state;
//! - `ota_campaign_failure_threshold{campaign}`: the failure ratio (0 to 1)
//!   over which the rollout stops the campaign, 1 while none applies (no
//!   `failure_threshold`, or fewer than its `min_finished` actions
//!   finished), so that "failures / finished > threshold" is exactly the
//!   rollout's own test.
//!
//! Only campaigns not finished (running or paused) have live numbers. The
//! metrics recorder cannot forget a series, so a campaign that finishes, or
//! every campaign when this process stops leading the rollout, has its
//! series set to zero actions and a threshold of 1: they stay in this
//! process's `/metrics` until it restarts, matching no alert.

use std::collections::{BTreeSet, HashMap};

use crate::manager::CampaignManager;
use crate::model::{ActionState, CampaignState};
use crate::spec::FailureThreshold;
use crate::store::CampaignEntry;
use crate::CampaignError;

/// The campaigns whose gauges this process has set.
#[derive(Debug, Default)]
pub struct CampaignGauges {
    shown: BTreeSet<String>,
}

impl CampaignGauges {
    /// Zeroes every campaign shown here: another process leads the rollout
    /// now, and its numbers are the live ones.
    pub fn clear(&mut self) {
        for id in std::mem::take(&mut self.shown) {
            zero(&id);
        }
    }
}

fn zero(id: &str) {
    for state in ActionState::ALL {
        metrics::gauge!("ota_campaign_actions", "campaign" => id.to_string(), "state" => state.as_str())
            .set(0.0);
    }
    metrics::gauge!("ota_campaign_failure_threshold", "campaign" => id.to_string()).set(1.0);
}

/// The ratio the rollout compares a campaign's failures with, as in
/// `rollout::tick_campaign`: 1 (nothing is above it) until the threshold
/// counts.
pub fn threshold_ratio(
    threshold: Option<&FailureThreshold>,
    counts: &HashMap<ActionState, u64>,
) -> f64 {
    let Some(th) = threshold else { return 1.0 };
    let finished: u64 = counts
        .iter()
        .filter(|(s, _)| s.is_final() && **s != ActionState::Cancelled)
        .map(|(_, n)| n)
        .sum();
    if finished >= th.min_finished.max(1) {
        (th.percent / 100.0).clamp(0.0, 1.0)
    } else {
        1.0
    }
}

impl CampaignManager {
    /// Sets the gauges of every running or paused campaign, and zeroes
    /// those of campaigns shown before that have finished since. A campaign
    /// whose counters cannot be read keeps its last numbers until the next
    /// call.
    pub async fn publish_gauges(&self, gauges: &mut CampaignGauges) -> Result<(), CampaignError> {
        let store = self.store();
        let entries = store
            .list_campaign_entries(&[CampaignState::Running, CampaignState::Paused])
            .await?;
        let mut live = BTreeSet::new();
        for entry in entries {
            let (id, threshold) = match entry {
                CampaignEntry::Readable(c) => (c.id, c.plan.spec.rollout.failure_threshold),
                // Its counters are still right; its threshold is unknown.
                CampaignEntry::Unreadable(u) => (u.id.clone(), None),
            };
            match store.state_counts(&id).await {
                Ok(counts) => {
                    for state in ActionState::ALL {
                        let n = counts.get(&state).copied().unwrap_or(0);
                        metrics::gauge!("ota_campaign_actions", "campaign" => id.clone(), "state" => state.as_str())
                            .set(n as f64);
                    }
                    metrics::gauge!("ota_campaign_failure_threshold", "campaign" => id.clone())
                        .set(threshold_ratio(threshold.as_ref(), &counts));
                }
                Err(e) => {
                    tracing::debug!(campaign = %id, error = %e, "reading the counters for the campaign gauges failed")
                }
            }
            live.insert(id);
        }
        for gone in gauges.shown.difference(&live) {
            zero(gone);
        }
        gauges.shown = live;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ThresholdAction;

    #[test]
    fn the_threshold_counts_once_enough_actions_finished() {
        let th = FailureThreshold {
            percent: 20.0,
            min_finished: 3,
            action: ThresholdAction::Pause,
        };
        let counts = |pairs: &[(ActionState, u64)]| pairs.iter().copied().collect();
        let two = counts(&[(ActionState::Failed, 2), (ActionState::Cancelled, 5)]);
        assert_eq!(
            threshold_ratio(Some(&th), &two),
            1.0,
            "cancelled do not count"
        );
        let three = counts(&[(ActionState::Failed, 2), (ActionState::Succeeded, 1)]);
        assert_eq!(threshold_ratio(Some(&th), &three), 0.2);
        assert_eq!(threshold_ratio(None, &three), 1.0);
    }
}
