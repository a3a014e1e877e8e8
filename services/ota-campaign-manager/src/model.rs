//! The campaign and action state machines, and the rows the store returns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::CampaignSpec;

/// The states are the gRPC contract's enums: their names and what each one
/// means live with them in `ota-proto`, for every service alike.
pub use ota_proto::v1::{ActionState, CampaignState};

/// What an engineer (or the rollout) asks of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Approve,
    Launch,
    Pause,
    Resume,
    Abort,
    Cancel,
    Complete,
}

impl Transition {
    pub fn verb(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Launch => "launch",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
            Self::Cancel => "cancel",
            Self::Complete => "complete",
        }
    }

    /// The state this leads to from `from`, or None when it is illegal.
    /// draft -> approved -> running <-> paused -> completed | aborted; a
    /// campaign that never ran is cancelled instead of aborted.
    pub fn next_state(self, from: CampaignState) -> Option<CampaignState> {
        use CampaignState::*;
        use Transition::*;
        match (from, self) {
            (Draft, Approve) => Some(Approved),
            (Approved, Launch) => Some(Running),
            (Running, Pause) => Some(Paused),
            (Paused, Resume) => Some(Running),
            (Running | Paused, Abort) => Some(Aborted),
            (Draft | Approved, Cancel) => Some(Cancelled),
            (Running | Paused, Complete) => Some(Completed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    pub id: String,
    pub name: String,
    pub version: String,
    pub ecu: String,
    pub compatible_hw: Vec<String>,
    pub artifacts: Vec<Artifact>,
    pub release_notes: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub in_use: bool,
}

/// A validated campaign as stored: the spec with each rule's package
/// resolved to its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub spec: CampaignSpec,
    /// Package id per rule, in rule order.
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub state: CampaignState,
    pub spec_text: String,
    pub plan: Plan,
    pub priority: i32,
    pub created_by: String,
    pub approved_by: Option<String>,
    pub state_reason: String,
    pub current_wave: i32,
    pub wave_opened_at: Option<DateTime<Utc>>,
    pub launched_at: Option<DateTime<Utc>>,
    pub targeted_at: Option<DateTime<Utc>>,
    pub release_budget: f64,
    pub budget_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why the rollout's last ticks of this campaign failed, until one
    /// succeeds.
    pub rollout_error: Option<RolloutError>,
}

/// The rollout failing on one campaign: what went wrong last, when, and how
/// many ticks in a row failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutError {
    pub message: String,
    pub at: DateTime<Utc>,
    pub failed_ticks: u32,
}

impl RolloutError {
    /// The contract's `last_error` and `last_error_at` (empty and none
    /// while the rollout of the campaign works).
    pub fn shown(e: Option<&RolloutError>) -> (String, Option<prost_types::Timestamp>) {
        e.map_or((String::new(), None), |e| {
            (
                e.message.clone(),
                Some(ota_common::vehicle::to_timestamp(e.at)),
            )
        })
    }
}

/// A stored campaign this version cannot read (its plan or state does not
/// parse: stored by a version that accepted more, or edited by hand). It
/// can be shown, and the rollout pauses it, but never rolls it out.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadableCampaign {
    pub id: String,
    pub name: String,
    /// As stored, since it may be what does not parse.
    pub state: String,
    pub spec_text: String,
    pub priority: i32,
    pub created_by: String,
    pub approved_by: Option<String>,
    pub state_reason: String,
    pub current_wave: i32,
    pub wave_opened_at: Option<DateTime<Utc>>,
    pub launched_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub rollout_error: Option<RolloutError>,
    /// Why it cannot be read.
    pub problem: String,
}

impl UnreadableCampaign {
    pub fn error(&self) -> crate::CampaignError {
        crate::CampaignError::Corrupt {
            what: format!("campaign {}", self.id),
            reason: self.problem.clone(),
        }
    }
}

impl Campaign {
    pub fn waves(&self) -> &[f64] {
        &self.plan.spec.rollout.waves
    }
}

/// Wave buckets: 10,000 per campaign, so waves can be set to 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// The vehicle's bucket in a campaign: a hash of (campaign id, VIN), so
/// waves are random across the fleet, different per campaign, and the same
/// on every run.
pub fn bucket(campaign_id: &str, vin: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(campaign_id.as_bytes());
    h.update(b"/");
    h.update(vin.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % BUCKETS
}

/// The first wave whose cumulative percentage covers the bucket.
pub fn wave_of(bucket: u32, waves: &[f64]) -> usize {
    let pos = (bucket as f64 + 1.0) / BUCKETS as f64 * 100.0;
    waves
        .iter()
        .position(|w| pos <= *w + 1e-9)
        .unwrap_or(waves.len().saturating_sub(1))
}

pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_lifecycle() {
        use CampaignState::*;
        use Transition::*;
        assert_eq!(Approve.next_state(Draft), Some(Approved));
        assert_eq!(Launch.next_state(Draft), None);
        assert_eq!(Launch.next_state(Approved), Some(Running));
        assert_eq!(Pause.next_state(Running), Some(Paused));
        assert_eq!(Resume.next_state(Paused), Some(Running));
        assert_eq!(Resume.next_state(Running), None);
        assert_eq!(Abort.next_state(Paused), Some(Aborted));
        assert_eq!(Cancel.next_state(Running), None);
        assert_eq!(Cancel.next_state(Approved), Some(Cancelled));
        for t in [Approve, Launch, Pause, Resume, Abort, Cancel, Complete] {
            assert_eq!(t.next_state(Completed), None);
            assert_eq!(t.next_state(Aborted), None);
            assert_eq!(t.next_state(Cancelled), None);
            assert_eq!(t.next_state(Unspecified), None);
        }
    }

    #[test]
    fn states_round_trip_through_text() {
        for s in CampaignState::ALL {
            assert_eq!(s.as_str().parse::<CampaignState>().unwrap(), s);
        }
        for s in ActionState::ALL {
            assert_eq!(s.as_str().parse::<ActionState>().unwrap(), s);
        }
        assert!(ActionState::parse_reported("staged").is_err());
        assert!("bogus"
            .parse::<CampaignState>()
            .unwrap_err()
            .contains("bogus"));
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(
            bucket("c1", "WVWZZZE1ZMP000001"),
            bucket("c1", "WVWZZZE1ZMP000001")
        );
        assert_ne!(
            bucket("c1", "WVWZZZE1ZMP000001"),
            bucket("c2", "WVWZZZE1ZMP000001")
        );
        let waves = [1.0, 10.0, 50.0, 100.0];
        let mut per_wave = [0u32; 4];
        for i in 0..100_000 {
            let b = bucket("campaign", &format!("WVWZZZE1ZMP{i:06}"));
            per_wave[wave_of(b, &waves)] += 1;
        }
        // Cumulative 1 / 10 / 50 / 100 percent: 1 %, 9 %, 40 %, 50 % per wave.
        let expect = [1_000.0, 9_000.0, 40_000.0, 50_000.0];
        for (got, want) in per_wave.iter().zip(expect) {
            assert!((*got as f64 - want).abs() < want * 0.1, "{per_wave:?}");
        }
    }

    #[test]
    fn wave_edges() {
        let waves = [1.0, 100.0];
        assert_eq!(wave_of(0, &waves), 0);
        assert_eq!(wave_of(99, &waves), 0);
        assert_eq!(wave_of(100, &waves), 1);
        assert_eq!(wave_of(BUCKETS - 1, &waves), 1);
    }
}
