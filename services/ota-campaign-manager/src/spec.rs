//! Campaign files: parsing and validation.
//!
//! Files are YAML; JSON is accepted as the YAML subset it is. The file is read
//! in one pass into a tree that keeps every node's position and every scalar's
//! text as written ([`yaml`]), so `version: 2.10` stays "2.10" instead of
//! becoming the float 2.1. Validation walks that tree by hand instead of using
//! `#[derive(Deserialize)]`, because derive stops at the first problem and
//! authors want all of them at once.
//!
//! A campaign file is untrusted input (a viewer may validate one), so every
//! dimension of it is bounded: its size ([`MAX_FILE_BYTES`]), its nodes with
//! aliases expanded ([`MAX_NODES`]), its nesting ([`MAX_DEPTH`]), its rules
//! ([`MAX_RULES`]), waves ([`MAX_WAVES`]), durations ([`MAX_DURATION`]) and
//! names, and the problems listed for it ([`MAX_PROBLEMS`]).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

pub use ota_rule_engine::ruleset::MAX_RULES;
pub use yaml::{MAX_DEPTH, MAX_NODES};

use locate::ScalarSource;
use yaml::{Kind, Node, Pos};

pub const MAX_NAME_CHARS: usize = 128;
pub const DEFAULT_MAX_PER_MINUTE: u32 = 1000;
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(72 * 3600);
pub const DEFAULT_MIN_FINISHED: u64 = 10;
pub const MAX_RETRIES: u32 = 10;
pub const MAX_PRIORITY: i32 = 1000;
/// `action_timeout: never` disables the timeout; a missing or null key means the default.
pub const NO_TIMEOUT: &str = "never";
/// Largest campaign file, as the REST API's default body limit.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Longest duration in a campaign file (`wave_soak`, `action_timeout`): 365d.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);
/// Most waves of a rollout; waves are cut in 0.01 % buckets anyway.
pub const MAX_WAVES: usize = 100;
/// Longest package name, version or ECU a rule may name, as packages allow.
pub const MAX_INSTALL_CHARS: usize = 128;
/// Most problems listed for one file; a last entry counts the rest.
pub const MAX_PROBLEMS: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub name: String,
    pub target: String,
    pub rules: Vec<RuleSpec>,
    pub rollout: Rollout,
    pub schedule: Schedule,
    pub priority: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleSpec {
    pub when: Option<String>,
    pub install: Install,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Install {
    pub package: String,
    pub version: String,
    pub ecu: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub waves: Vec<f64>,
    #[serde(with = "duration_text")]
    pub wave_soak: Duration,
    pub advance: Advance,
    pub max_per_minute: u32,
    pub failure_threshold: Option<FailureThreshold>,
    // Serialized as "never" rather than null so that stored JSON fed back to
    // `parse` keeps meaning "no timeout" instead of falling back to the default.
    #[serde(with = "timeout_text")]
    pub action_timeout: Option<Duration>,
    pub max_retries: u32,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            waves: vec![100.0],
            wave_soak: Duration::ZERO,
            advance: Advance::Auto,
            max_per_minute: DEFAULT_MAX_PER_MINUTE,
            failure_threshold: None,
            action_timeout: Some(DEFAULT_ACTION_TIMEOUT),
            max_retries: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Advance {
    Auto,
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureThreshold {
    pub percent: f64,
    pub min_finished: u64,
    pub action: ThresholdAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdAction {
    Pause,
    Abort,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// One problem in a campaign file. `path` is like `rollout.waves[2]` (empty for
/// the file as a whole); line and column are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecError {
    pub path: String,
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A whole-file problem has no path to put in front.
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
            (Some(l), None) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for SpecError {}

const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// Parses `90s`, `15m`, `1h`, `2d`, `1h30m`: whole numbers with units d, h, m, s,
/// largest unit first, each unit at most once.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {s:?}: {why}");
    if s.is_empty() {
        return Err(invalid("it is empty; write e.g. 90s, 15m, 1h or 1h30m"));
    }
    if s.starts_with('-') {
        return Err(invalid("durations cannot be negative"));
    }
    let (mut total, mut rest, mut next_unit) = (0u64, s, 0usize);
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid(&format!("expected a number at {rest:?}")));
        }
        let (num, after) = rest.split_at(digits);
        let unit = after
            .chars()
            .next()
            .ok_or_else(|| invalid(&format!("{num} has no unit; use d, h, m or s")))?;
        let idx = UNITS
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(|| invalid(&format!("unknown unit `{unit}`; use d, h, m or s")))?;
        if idx < next_unit {
            return Err(invalid(
                "units must go from largest to smallest, each at most once",
            ));
        }
        next_unit = idx + 1;
        total = num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(UNITS[idx].1))
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| invalid("it is too large"))?;
        rest = &after[unit.len_utf8()..];
    }
    Ok(Duration::from_secs(total))
}

/// Inverse of [`parse_duration`]. Hours are the largest unit so that the common
/// `72h` comes back as written (`2d` comes back as `48h`); sub-second parts, which
/// `parse_duration` never produces, are dropped.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [('h', 3_600), ('m', 60), ('s', 1)] {
        if secs >= size {
            let _ = write!(out, "{}{unit}", secs / size);
            secs %= size;
        }
    }
    out
}

mod duration_text {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_duration(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

mod timeout_text {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.map_or_else(|| NO_TIMEOUT.to_owned(), format_duration))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s == NO_TIMEOUT => Ok(None),
            Some(s) => parse_duration(&s).map(Some).map_err(de::Error::custom),
        }
    }
}

/// A campaign file read and checked: the campaign as far as it could be read,
/// every problem found, and where its parts are, to place the problems that
/// later checks (the rule engine, the package registry) find in it.
#[derive(Debug, Default)]
pub struct Checked {
    /// None when the file is not a campaign mapping at all.
    pub spec: Option<CampaignSpec>,
    /// In no particular order; see [`listed`].
    pub errors: Vec<SpecError>,
    expressions: HashMap<String, ScalarSource>,
    positions: HashMap<String, Pos>,
}

impl Checked {
    /// Where the value at `path` (`rules[2].install.package`, `schedule.end`)
    /// was written.
    pub fn position(&self, path: &str) -> Option<(u32, u32)> {
        self.positions.get(path).map(|p| (p.line, p.column))
    }

    /// Where line `line`, column `column` of the expression at `path`
    /// (`target`, `rules[2].when`) was written in the file.
    pub fn expression_position(&self, path: &str, line: u32, column: u32) -> Option<(u32, u32)> {
        let p = self.expressions.get(path)?.locate(line, column);
        Some((p.line, p.column))
    }
}

/// Reads and checks a campaign file, finding every problem it can.
pub fn check(text: &str) -> Checked {
    let whole_file = |message: String| Checked {
        errors: vec![SpecError::at(String::new(), message, None)],
        ..Checked::default()
    };
    if text.len() > MAX_FILE_BYTES {
        return whole_file(format!(
            "the file is {} bytes long; a campaign file may have at most {MAX_FILE_BYTES}",
            text.len()
        ));
    }
    let root = match yaml::read(text) {
        Ok(Some(root)) if !root.is_null() => root,
        Ok(_) => return whole_file("the file is empty; expected a campaign mapping".into()),
        Err(errors) => {
            return Checked {
                errors: errors
                    .into_iter()
                    .map(|e| SpecError::at(e.path, e.message, e.at))
                    .collect(),
                ..Checked::default()
            }
        }
    };
    if root.as_map().is_none() {
        return whole_file(format!(
            "expected a mapping at the top level, found {}",
            describe(&root)
        ));
    }
    let mut checker = check::Checker {
        text,
        errors: Vec::new(),
        expressions: HashMap::new(),
        positions: HashMap::new(),
    };
    let spec = checker.campaign(&root);
    Checked {
        spec: Some(spec),
        errors: checker.errors,
        expressions: checker.expressions,
        positions: checker.positions,
    }
}

/// Parses and validates a campaign file, reporting every problem found (at
/// most [`MAX_PROBLEMS`] of them; see [`listed`]).
pub fn parse(text: &str) -> Result<CampaignSpec, Vec<SpecError>> {
    let checked = check(text);
    match checked.spec {
        Some(spec) if checked.errors.is_empty() => Ok(spec),
        _ => Err(listed(checked.errors)),
    }
}

/// Problems as they are reported: in document order (those without a
/// position last), at most [`MAX_PROBLEMS`], then one entry saying how many
/// more there are.
pub fn listed(mut errors: Vec<SpecError>) -> Vec<SpecError> {
    errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
    if errors.len() > MAX_PROBLEMS {
        let more = errors.len() - MAX_PROBLEMS;
        errors.truncate(MAX_PROBLEMS);
        errors.push(SpecError::at(
            String::new(),
            format!(
                "... and {more} more problem{}; only the first {MAX_PROBLEMS} are listed",
                if more == 1 { "" } else { "s" }
            ),
            None,
        ));
    }
    errors
}

impl SpecError {
    fn at(path: String, message: String, at: Option<Pos>) -> Self {
        SpecError {
            path,
            message,
            line: at.map(|p| p.line),
            column: at.map(|p| p.column),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `rules[0].install.ecu`. A key that is not a field (an unknown one) is cut
/// short like a quoted value, so that a pasted blob cannot make a path huge.
fn path_string(path: &[Seg]) -> String {
    const MAX_KEY: usize = 60;
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        let _ = match seg {
            Seg::Key(k) => {
                if i > 0 {
                    out.push('.');
                }
                if k.chars().count() > MAX_KEY {
                    let cut: String = k.chars().take(MAX_KEY).collect();
                    write!(out, "{cut}...")
                } else {
                    write!(out, "{k}")
                }
            }
            Seg::Index(i) => write!(out, "[{i}]"),
        };
    }
    out
}

fn child(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(seg);
    p
}

fn key(path: &[Seg], k: &str) -> Vec<Seg> {
    child(path, Seg::Key(k.to_owned()))
}

fn describe(v: &Node) -> String {
    use yaml::Resolved;
    if let Some(tag) = &v.tag {
        return format!("a value tagged {tag}");
    }
    match &v.kind {
        Kind::Scalar(s) => match s.value {
            Resolved::Null => "null".to_owned(),
            Resolved::Bool(b) => format!("boolean {b}"),
            Resolved::Int(_) | Resolved::Float(_) => format!("number {}", cut(&s.text)),
            Resolved::Str => format!("string {}", quoted(&s.text)),
        },
        Kind::Seq(_) => "a list".to_owned(),
        Kind::Map(_) => "a mapping".to_owned(),
    }
}

const MAX_QUOTED: usize = 60;

/// Quotes a user-supplied string for a message, cut short so that a pasted blob
/// cannot flood the error list.
fn quoted(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED {
        return format!("{s:?}");
    }
    format!("{:?}...", s.chars().take(MAX_QUOTED).collect::<String>())
}

/// Like [`quoted`], for text shown as written (numbers).
fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED {
        return s.to_owned();
    }
    format!("{}...", s.chars().take(MAX_QUOTED).collect::<String>())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            (diag, row[j + 1]) = (row[j + 1], next);
        }
    }
    row[b.len()]
}

fn unknown_field(name: &str, allowed: &[&str]) -> String {
    // Only a near miss gets a suggestion, and a long key is none: skipping it
    // keeps a file of huge keys from costing a distance computation each.
    let lower = name.to_lowercase();
    let hint = match allowed
        .iter()
        .filter(|_| lower.chars().count() <= 2 * MAX_QUOTED)
        .map(|a| (levenshtein(&lower, a), *a))
        .min()
    {
        Some((d, a)) if d <= 2 && d * 3 <= a.len() => format!(" did you mean `{a}`?"),
        _ => String::new(),
    };
    format!(
        "unknown field;{hint} expected one of {}",
        allowed.join(", ")
    )
}

mod check;
mod locate;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_limits;
mod yaml;
