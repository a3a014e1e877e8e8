//! The JSON shapes of the campaign-manager endpoints: the gRPC messages with
//! snake_case fields, RFC 3339 timestamps and `null` for what is unset.
//! States are the contract's enums, written with their one text name. The
//! CLI reads the answers back with these same types.

use chrono::{DateTime, Utc};
use ota_common::vehicle::from_timestamp;
use ota_common::ErrorDetail;
use ota_proto::v1 as pb;
use ota_rule_engine::ExpressionError;
use pb::{ActionState, CampaignState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub url: String,
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sha256: String,
    pub size: u64,
}

/// The body of `POST /api/v1/packages` (and of a package file for the CLI).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPackage {
    pub name: String,
    pub version: String,
    pub ecu: String,
    #[serde(default)]
    pub compatible_hw: Vec<String>,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    #[serde(default)]
    pub release_notes: String,
}

impl From<NewPackage> for pb::Package {
    fn from(p: NewPackage) -> Self {
        pb::Package {
            name: p.name,
            version: p.version,
            ecu: p.ecu,
            compatible_hw: p.compatible_hw,
            artifacts: p
                .artifacts
                .into_iter()
                .map(|a| pb::Artifact {
                    url: a.url,
                    sha256: a.sha256,
                    size: a.size,
                })
                .collect(),
            release_notes: p.release_notes,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Package {
    pub id: String,
    pub name: String,
    pub version: String,
    pub ecu: String,
    pub compatible_hw: Vec<String>,
    pub artifacts: Vec<Artifact>,
    pub release_notes: String,
    /// True once a campaign refers to it; it is then immutable.
    pub in_use: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub created_by: String,
}

impl From<pb::Package> for Package {
    fn from(p: pb::Package) -> Self {
        Package {
            created_at: p.created_at.as_ref().map(from_timestamp),
            id: p.id,
            name: p.name,
            version: p.version,
            ecu: p.ecu,
            compatible_hw: p.compatible_hw,
            artifacts: p
                .artifacts
                .into_iter()
                .map(|a| Artifact {
                    url: a.url,
                    sha256: a.sha256,
                    size: a.size,
                })
                .collect(),
            release_notes: p.release_notes,
            in_use: p.in_use,
            created_by: p.created_by,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub state: CampaignState,
    /// Why the campaign is in its state, empty when nobody said.
    pub state_reason: String,
    pub priority: i32,
    pub target: String,
    /// Cumulative percent of the matched vehicles per wave.
    pub waves: Vec<f64>,
    /// The highest open wave, counted from 1 as everywhere people read
    /// wave numbers (tables, CSV, audit); 0 before launch.
    pub current_wave: u32,
    pub created_by: String,
    pub approved_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub launched_at: Option<DateTime<Utc>>,
    pub wave_opened_at: Option<DateTime<Utc>>,
    /// The campaign file as submitted.
    pub spec: String,
    /// Why the rollout failed on this campaign at its last ticks; absent
    /// once a tick of it succeeds. Other campaigns go on meanwhile.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Rollout ticks failed in a row (a database outage does not count); the
    /// rollout pauses the campaign after 10.
    #[serde(default)]
    pub failed_ticks: u32,
}

/// A wave as people count it: the gRPC contract's index 0 is wave 1, and
/// "none yet" (-1) is 0.
pub fn wave_number(index: i32) -> u32 {
    u32::try_from(index.saturating_add(1)).unwrap_or(0)
}

impl From<pb::Campaign> for Campaign {
    fn from(c: pb::Campaign) -> Self {
        Campaign {
            created_at: c.created_at.as_ref().map(from_timestamp),
            updated_at: c.updated_at.as_ref().map(from_timestamp),
            launched_at: c.launched_at.as_ref().map(from_timestamp),
            wave_opened_at: c.wave_opened_at.as_ref().map(from_timestamp),
            state: c.state(),
            id: c.id,
            name: c.name,
            state_reason: c.state_reason,
            priority: c.priority,
            target: c.target,
            waves: c.waves,
            current_wave: wave_number(c.current_wave),
            created_by: c.created_by,
            approved_by: (!c.approved_by.is_empty()).then_some(c.approved_by),
            spec: c.spec,
            last_error: (!c.last_error.is_empty()).then_some(c.last_error),
            last_error_at: c.last_error_at.as_ref().map(from_timestamp),
            failed_ticks: c.failed_ticks,
        }
    }
}

/// One problem of a campaign file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SpecProblem {
    /// Where in the file, e.g. `rollout.waves[2]`; empty for the whole file.
    pub path: String,
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

impl SpecProblem {
    /// How many problems a list stands for: the campaign manager lists a
    /// bounded number, then one last entry `... and N more problems`.
    pub fn count(problems: &[SpecProblem]) -> usize {
        let more = problems.last().and_then(|p| {
            let rest = p.message.strip_prefix("... and ")?;
            let (n, _) = rest.split_once(" more problem")?;
            n.parse::<usize>().ok().filter(|_| p.path.is_empty())
        });
        match more {
            Some(n) => problems.len() - 1 + n,
            None => problems.len(),
        }
    }
}

impl std::fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        match (self.line, self.column) {
            (Some(l), Some(c)) if c > 0 => write!(f, " (line {l}, column {c})"),
            (Some(l), _) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

impl From<pb::SpecError> for SpecProblem {
    fn from(e: pb::SpecError) -> Self {
        SpecProblem {
            path: e.path,
            message: e.message,
            line: e.position.as_ref().map(|p| p.line),
            column: e.position.as_ref().map(|p| p.column),
        }
    }
}

/// The answer of `POST /api/v1/campaigns:validate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CampaignValidation {
    pub valid: bool,
    pub errors: Vec<SpecProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StateCount {
    pub state: ActionState,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WaveReport {
    /// Counted from 1.
    #[schema(minimum = 1)]
    pub wave: u32,
    /// Cumulative percent of the matched vehicles.
    pub percent: f64,
    pub open: bool,
    pub opened_at: Option<DateTime<Utc>>,
    pub total: u64,
    pub by_state: Vec<StateCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupReport {
    pub key: String,
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub in_progress: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FailureReason {
    pub reason: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompletionPoint {
    pub at: Option<DateTime<Utc>>,
    /// Finished actions up to this time (cumulative).
    pub finished: u64,
    pub succeeded: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CampaignReport {
    pub campaign_id: String,
    pub name: String,
    pub state: CampaignState,
    pub state_reason: String,
    /// As on `Campaign`: the rollout's current failure on this campaign.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub total: u64,
    pub by_state: Vec<StateCount>,
    /// Failed, rejected and timed out over finished, in percent.
    pub failure_rate: f64,
    pub retries: u64,
    pub waves: Vec<WaveReport>,
    pub by_model: Vec<GroupReport>,
    pub by_platform: Vec<GroupReport>,
    pub by_gateway: Vec<GroupReport>,
    pub by_region: Vec<GroupReport>,
    pub top_failures: Vec<FailureReason>,
    pub completion: Vec<CompletionPoint>,
}

fn state_counts(v: Vec<pb::StateCount>) -> Vec<StateCount> {
    v.into_iter()
        .map(|s| StateCount {
            state: s.state(),
            count: s.count,
        })
        .collect()
}

fn groups(v: Vec<pb::GroupReport>) -> Vec<GroupReport> {
    v.into_iter()
        .map(|g| GroupReport {
            key: g.key,
            total: g.total,
            succeeded: g.succeeded,
            failed: g.failed,
            in_progress: g.in_progress,
        })
        .collect()
}

impl From<pb::CampaignReport> for CampaignReport {
    fn from(r: pb::CampaignReport) -> Self {
        CampaignReport {
            state: r.state(),
            campaign_id: r.campaign_id,
            name: r.name,
            state_reason: r.state_reason,
            last_error: (!r.last_error.is_empty()).then_some(r.last_error),
            last_error_at: r.last_error_at.as_ref().map(from_timestamp),
            total: r.total,
            by_state: state_counts(r.by_state),
            failure_rate: r.failure_rate,
            retries: r.retries,
            waves: r
                .waves
                .into_iter()
                .map(|w| WaveReport {
                    wave: w.index + 1,
                    percent: w.percent,
                    open: w.open,
                    opened_at: w.opened_at.as_ref().map(from_timestamp),
                    total: w.total,
                    by_state: state_counts(w.by_state),
                })
                .collect(),
            by_model: groups(r.by_model),
            by_platform: groups(r.by_platform),
            by_gateway: groups(r.by_gateway),
            by_region: groups(r.by_region),
            top_failures: r
                .top_failures
                .into_iter()
                .map(|f| FailureReason {
                    reason: f.reason,
                    count: f.count,
                })
                .collect(),
            completion: r
                .completion
                .into_iter()
                .map(|p| CompletionPoint {
                    at: p.at.as_ref().map(from_timestamp),
                    finished: p.finished,
                    succeeded: p.succeeded,
                })
                .collect(),
        }
    }
}

/// Sums the counts of the states `f` picks, e.g. [`ActionState::is_final`].
pub fn count_of(by_state: &[StateCount], f: impl Fn(ActionState) -> bool) -> u64 {
    by_state
        .iter()
        .filter(|s| f(s.state))
        .map(|s| s.count)
        .sum()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: u64,
    pub at: Option<DateTime<Utc>>,
    pub actor: String,
    /// `campaign`, `package`, `principal` or `token`.
    pub entity: String,
    pub entity_id: String,
    /// create, approve, launch, pause, resume, abort, cancel, advance,
    /// complete, priority, auto-pause, auto-abort, wave-open, ...
    pub action: String,
    pub reason: String,
    /// The details of the change (JSON), `null` when there are none.
    pub detail: serde_json::Value,
}

impl From<pb::AuditEntry> for AuditEntry {
    fn from(e: pb::AuditEntry) -> Self {
        let detail = if e.detail.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::String(e.detail))
        };
        AuditEntry {
            id: e.id,
            at: e.at.as_ref().map(from_timestamp),
            actor: e.actor,
            entity: e.entity,
            entity_id: e.entity_id,
            action: e.action,
            reason: e.reason,
            detail,
        }
    }
}

/// A page of `GET /api/v1/audit`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next_before: Option<u64>,
}

/// The answer of `POST /api/v1/vehicles:import`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportSummary {
    pub imported: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// The first rejected lines, in file order.
    pub errors: Vec<ImportError>,
    /// Strict mode found a rejected line, so nothing was imported.
    pub aborted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportError {
    pub line: u64,
    /// Left out when the line names no VIN.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vin: String,
    pub reason: String,
}

impl From<pb::ImportVehiclesResponse> for ImportSummary {
    fn from(r: pb::ImportVehiclesResponse) -> Self {
        ImportSummary {
            imported: r.imported,
            updated: r.updated,
            unchanged: r.unchanged,
            rejected: r.rejected,
            aborted: r.aborted,
            errors: r
                .errors
                .into_iter()
                .map(|e| ImportError {
                    line: e.line,
                    vin: e.vin,
                    reason: e.reason,
                })
                .collect(),
        }
    }
}

/// A 400 answer where a campaign file may be at fault: the error, and when
/// the file has problems, every one of them beside it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CampaignProblems {
    pub error: ErrorDetail,
    #[serde(default)]
    pub errors: Vec<SpecProblem>,
}

/// A 400 answer where rules may be at fault: the error, and when the rules
/// do not validate, every positioned problem beside it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuleProblems {
    pub error: ErrorDetail,
    #[serde(default)]
    pub errors: Vec<ExpressionError>,
}

/// The columns of the per-vehicle CSV report.
pub const CSV_HEADER: [&str; 13] = [
    "vin",
    "action_id",
    "state",
    "wave",
    "ecu",
    "package",
    "version",
    "attempts",
    "progress",
    "message",
    "updated_at",
    "model",
    "region",
];
