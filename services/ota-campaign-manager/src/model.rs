//! The campaign and action state machines, and the rows the store returns.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::CampaignSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CampaignState {
    Draft,
    Approved,
    Running,
    Paused,
    Completed,
    Aborted,
    Cancelled,
}

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
}

impl CampaignState {
    pub const ALL: [CampaignState; 7] = [
        Self::Draft,
        Self::Approved,
        Self::Running,
        Self::Paused,
        Self::Completed,
        Self::Aborted,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Approved => "approved",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state `t` leads to from this one, or None when it is illegal.
    /// draft -> approved -> running <-> paused -> completed | aborted; a
    /// campaign that never ran is cancelled instead of aborted.
    pub fn apply(self, t: Transition) -> Option<CampaignState> {
        use CampaignState::*;
        use Transition::*;
        match (self, t) {
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

    /// Launched and not finished: its actions are live.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

impl fmt::Display for CampaignState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CampaignState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown campaign state {s:?}: expected one of draft, approved, running, paused, completed, aborted, cancelled"
                )
            })
    }
}

/// A vehicle's action in one campaign. `pending` (matched, its wave not open
/// or the rate limit not reached yet) and `waiting` (a higher-priority
/// campaign holds the same ECU) come before the action is staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionState {
    Pending,
    Waiting,
    Staged,
    Delivered,
    Accepted,
    Downloading,
    Installing,
    Succeeded,
    Failed,
    Rejected,
    Cancelled,
    TimedOut,
}

impl ActionState {
    pub const ALL: [ActionState; 12] = [
        Self::Pending,
        Self::Waiting,
        Self::Staged,
        Self::Delivered,
        Self::Accepted,
        Self::Downloading,
        Self::Installing,
        Self::Succeeded,
        Self::Failed,
        Self::Rejected,
        Self::Cancelled,
        Self::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Waiting => "waiting",
            Self::Staged => "staged",
            Self::Delivered => "delivered",
            Self::Accepted => "accepted",
            Self::Downloading => "downloading",
            Self::Installing => "installing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// Handed to staging and not finished: at most one per (vehicle, ECU).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::Staged | Self::Delivered | Self::Accepted | Self::Downloading | Self::Installing
        )
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Rejected | Self::Cancelled | Self::TimedOut
        )
    }

    /// Counts against the failure threshold.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Rejected | Self::TimedOut)
    }

    /// The vehicle has seen it (it may be mid-install): pausing a campaign
    /// leaves such actions in place.
    pub fn is_delivered(self) -> bool {
        self.is_open() && self != Self::Staged
    }

    /// States a vehicle may report.
    pub fn parse_reported(s: &str) -> Result<Self, String> {
        match s {
            "accepted" => Ok(Self::Accepted),
            "downloading" => Ok(Self::Downloading),
            "installing" => Ok(Self::Installing),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "rejected" => Ok(Self::Rejected),
            other => Err(format!(
                "unknown status {other:?}: expected accepted, downloading, installing, succeeded, failed or rejected"
            )),
        }
    }

    /// SQL list of the states matching `f`, e.g. `('staged','delivered')`.
    pub fn sql_list(f: impl Fn(ActionState) -> bool) -> String {
        let names: Vec<String> = Self::ALL
            .into_iter()
            .filter(|s| f(*s))
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("({})", names.join(","))
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown action state {s:?}"))
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
        assert_eq!(Draft.apply(Approve), Some(Approved));
        assert_eq!(Draft.apply(Launch), None);
        assert_eq!(Approved.apply(Launch), Some(Running));
        assert_eq!(Running.apply(Pause), Some(Paused));
        assert_eq!(Paused.apply(Resume), Some(Running));
        assert_eq!(Running.apply(Resume), None);
        assert_eq!(Paused.apply(Abort), Some(Aborted));
        assert_eq!(Running.apply(Cancel), None);
        assert_eq!(Approved.apply(Cancel), Some(Cancelled));
        for t in [Approve, Launch, Pause, Resume, Abort, Cancel, Complete] {
            assert_eq!(Completed.apply(t), None);
            assert_eq!(Aborted.apply(t), None);
            assert_eq!(Cancelled.apply(t), None);
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
