//! Campaign files: parsing and validation.
//!
//! Files are YAML; JSON is accepted as the YAML subset it is. Validation walks a
//! `serde_yaml_ng::Value` tree by hand instead of using `#[derive(Deserialize)]`,
//! because derive stops at the first problem and authors want all of them at once.
//!
//! `Value` keeps neither positions nor the text of scalars YAML read as numbers,
//! so both are recovered by re-reading the file (see `probe`). That lets
//! `version: 2.10` stay "2.10" instead of becoming the float 2.1; only when the
//! text cannot be found (the version came in through a `<<` merge key) is such a
//! version rejected with a request to quote it.

use std::fmt::{self, Write as _};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use probe::{probe, Goal, SENTINEL};

pub const MAX_NAME_CHARS: usize = 128;
pub const DEFAULT_MAX_PER_MINUTE: u32 = 1000;
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(72 * 3600);
pub const DEFAULT_MIN_FINISHED: u64 = 10;
pub const MAX_RETRIES: u32 = 10;
pub const MAX_PRIORITY: i32 = 1000;
/// `action_timeout: never` disables the timeout; a missing or null key means the default.
pub const NO_TIMEOUT: &str = "never";

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

/// Parses and validates a campaign file, reporting every problem found.
pub fn parse(text: &str) -> Result<CampaignSpec, Vec<SpecError>> {
    let whole_file = |message: String| vec![SpecError::new(String::new(), message, None)];
    let mut root: Value = serde_yaml_ng::from_str(text).map_err(|e| vec![syntax_error(&e)])?;
    root.apply_merge().map_err(|e| vec![syntax_error(&e)])?;
    match &root {
        Value::Mapping(_) => {}
        Value::Null => {
            return Err(whole_file(
                "the file is empty; expected a campaign mapping".into(),
            ))
        }
        other => {
            return Err(whole_file(format!(
                "expected a mapping at the top level, found {}",
                describe(other)
            )))
        }
    }
    let mut checker = Checker {
        text,
        issues: Vec::new(),
    };
    let spec = checker.campaign(&root);
    if checker.issues.is_empty() {
        return Ok(spec);
    }
    let mut errors: Vec<SpecError> = checker.issues.iter().map(|i| i.to_error(text)).collect();
    // Document order reads best; problems without a position go last.
    errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
    Err(errors)
}

impl SpecError {
    fn new(path: String, message: String, at: Option<serde_yaml_ng::Location>) -> Self {
        let line = at.as_ref().map(|l| l.line() as u32);
        let column = at.as_ref().map(|l| l.column() as u32);
        SpecError {
            path,
            message,
            line,
            column,
        }
    }
}

fn syntax_error(e: &serde_yaml_ng::Error) -> SpecError {
    let at = e.location();
    let mut message = e.to_string();
    if let Some(l) = &at {
        message = message.replacen(
            &format!(" at line {} column {}", l.line(), l.column()),
            "",
            1,
        );
    }
    // serde_yaml_ng prefixes errors found below the root (duplicate keys and the
    // like) with their path; libyaml's own messages always contain a space first.
    let mut path = String::new();
    if let Some((prefix, rest)) = message.split_once(": ") {
        if !prefix.is_empty() && !prefix.contains(char::is_whitespace) {
            (path, message) = (prefix.to_owned(), rest.to_owned());
        }
    }
    SpecError::new(path, message, at)
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        let _ = match seg {
            Seg::Key(k) if i == 0 => write!(out, "{k}"),
            Seg::Key(k) => write!(out, ".{k}"),
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

/// Which node's position to report for an issue.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Anchor {
    Value,
    Key,
    /// The enclosing mapping, for fields that are missing and so have no position.
    Parent,
}

struct Issue {
    path: Vec<Seg>,
    anchor: Anchor,
    message: String,
}

impl Issue {
    fn to_error(&self, text: &str) -> SpecError {
        let (target, goal) = match self.anchor {
            Anchor::Value => (&self.path[..], Goal::Locate),
            Anchor::Key => (&self.path[..], Goal::LocateKey),
            Anchor::Parent => (
                &self.path[..self.path.len().saturating_sub(1)],
                Goal::Locate,
            ),
        };
        let at = match probe(text, target, goal) {
            Err(e) if e.to_string().contains(SENTINEL) => e.location(),
            _ => None,
        };
        SpecError::new(path_string(&self.path), self.message.clone(), at)
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", quoted(s)),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// Quotes a user-supplied string for a message, cut short so that a pasted blob
/// cannot flood the error list.
fn quoted(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        return format!("{s:?}");
    }
    format!("{:?}...", s.chars().take(MAX).collect::<String>())
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
    let lower = name.to_lowercase();
    let hint = match allowed.iter().map(|a| (levenshtein(&lower, a), *a)).min() {
        Some((d, a)) if d <= 2 && d * 3 <= a.len() => format!(" did you mean `{a}`?"),
        _ => String::new(),
    };
    format!(
        "unknown field;{hint} expected one of {}",
        allowed.join(", ")
    )
}

/// An optional field with its path. An explicit null counts as missing, since
/// YAML authors write `schedule:` with nothing after it to mean "none".
fn opt<'v>(m: &'v Mapping, path: &[Seg], name: &str) -> Option<(Vec<Seg>, &'v Value)> {
    m.get(name)
        .filter(|v| !v.is_null())
        .map(|v| (key(path, name), v))
}

struct Checker<'t> {
    text: &'t str,
    issues: Vec<Issue>,
}

impl Checker<'_> {
    fn push(&mut self, path: Vec<Seg>, anchor: Anchor, message: String) {
        self.issues.push(Issue {
            path,
            anchor,
            message,
        });
    }

    fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        self.push(path.to_vec(), Anchor::Value, message.into());
    }

    /// Reports a wrong type; returns None so callers can bail out in one expression.
    fn expected<T>(&mut self, path: &[Seg], what: &str, found: &Value) -> Option<T> {
        self.err(path, format!("expected {what}, found {}", describe(found)));
        None
    }

    fn mapping<'v>(&mut self, path: &[Seg], v: &'v Value, allowed: &[&str]) -> Option<&'v Mapping> {
        let Some(m) = v.as_mapping() else {
            return self.expected(path, "a mapping", v);
        };
        for k in m.keys() {
            match k.as_str() {
                Some(name) if allowed.contains(&name) => {}
                Some(name) => self.push(key(path, name), Anchor::Key, unknown_field(name, allowed)),
                None => self.err(path, format!("keys must be strings, found {}", describe(k))),
            }
        }
        Some(m)
    }

    /// A required field with its path; null is passed on, to be reported as a wrong type.
    fn required<'v>(
        &mut self,
        m: &'v Mapping,
        path: &[Seg],
        name: &str,
    ) -> Option<(Vec<Seg>, &'v Value)> {
        let Some(v) = m.get(name) else {
            self.push(
                key(path, name),
                Anchor::Parent,
                "missing required field".into(),
            );
            return None;
        };
        Some((key(path, name), v))
    }

    fn string(&mut self, path: &[Seg], v: &Value) -> String {
        match v {
            Value::String(s) if !s.trim().is_empty() => s.clone(),
            Value::String(s) => {
                self.err(path, format!("must not be empty, found {}", quoted(s)));
                String::new()
            }
            other => self.expected(path, "a string", other).unwrap_or_default(),
        }
    }

    fn number(&mut self, path: &[Seg], v: &Value) -> Option<f64> {
        v.as_f64().or_else(|| self.expected(path, "a number", v))
    }

    fn integer(&mut self, path: &[Seg], v: &Value, min: i64, max: i64) -> Option<i64> {
        let n = match v {
            Value::Number(n) if !n.is_f64() => n,
            other => return self.expected(path, "an integer", other),
        };
        let i = n.as_i64();
        if i.is_some_and(|i| (min..=max).contains(&i)) {
            return i;
        }
        // Bounds that only guard the storage type are not worth quoting unasked.
        let message = if max < i64::from(u32::MAX) {
            format!("must be between {min} and {max}, found {n}")
        } else if i.is_some_and(|i| i < min) {
            format!("must be at least {min}, found {n}")
        } else {
            format!("must be at most {max}, found {n}")
        };
        self.err(path, message);
        None
    }

    fn duration(&mut self, path: &[Seg], v: &Value) -> Option<Duration> {
        match v {
            Value::String(s) => parse_duration(s).map_err(|e| self.err(path, e)).ok(),
            other => self.expected(path, "a duration such as \"90s\" or \"1h30m\"", other),
        }
    }

    fn choice<'o>(&mut self, path: &[Seg], v: &Value, options: &[&'o str]) -> Option<&'o str> {
        let found = options.iter().find(|o| v.as_str() == Some(**o)).copied();
        found.or_else(|| self.expected(path, &format!("one of {}", options.join(", ")), v))
    }

    fn timestamp(&mut self, path: &[Seg], v: &Value) -> Option<DateTime<Utc>> {
        const WHAT: &str = "an RFC 3339 timestamp such as 2026-12-01T00:00:00Z";
        let Value::String(s) = v else {
            return self.expected(path, WHAT, v);
        };
        DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| self.err(path, format!("{} is not {WHAT} ({e})", quoted(s))))
            .ok()
    }

    fn campaign(&mut self, root: &Value) -> CampaignSpec {
        const KEYS: &[&str] = &["name", "target", "rules", "rollout", "schedule", "priority"];
        let mut spec = CampaignSpec::default();
        let Some(m) = self.mapping(&[], root, KEYS) else {
            return spec;
        };
        if let Some((p, v)) = self.required(m, &[], "name") {
            spec.name = self.name(&p, v);
        }
        if let Some((p, v)) = self.required(m, &[], "target") {
            spec.target = self.string(&p, v);
        }
        if let Some((p, v)) = self.required(m, &[], "rules") {
            spec.rules = self.rules(&p, v);
        }
        if let Some((p, v)) = opt(m, &[], "rollout") {
            spec.rollout = self.rollout(&p, v);
        }
        if let Some((p, v)) = opt(m, &[], "schedule") {
            spec.schedule = self.schedule(&p, v);
        }
        if let Some((p, v)) = opt(m, &[], "priority") {
            let max = i64::from(MAX_PRIORITY);
            spec.priority = self.integer(&p, v, -max, max).unwrap_or(0) as i32;
        }
        spec
    }

    fn name(&mut self, path: &[Seg], v: &Value) -> String {
        let name = self.string(path, v);
        let (q, chars) = (quoted(&name), name.chars().count());
        if chars > MAX_NAME_CHARS {
            self.err(
                path,
                format!("{q} is {chars} characters long; at most {MAX_NAME_CHARS} are allowed"),
            );
        }
        if name.chars().any(char::is_control) {
            self.err(path, format!("{q} contains a control character"));
        }
        name
    }

    fn rules(&mut self, path: &[Seg], v: &Value) -> Vec<RuleSpec> {
        let Some(items) = v.as_sequence() else {
            return self
                .expected(path, "a list of rules", v)
                .unwrap_or_default();
        };
        if items.is_empty() {
            self.err(path, "must contain at least one rule");
        }
        let mut catch_all = None;
        let mut rules = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = child(path, Seg::Index(i));
            let (rule, matches_all) = self.rule(&p, item);
            if let Some(m) = catch_all {
                self.err(
                    &p,
                    format!("unreachable: rules[{m}] has no `when` and matches every vehicle"),
                );
            } else if matches_all {
                catch_all = Some(i);
            }
            rules.push(rule);
        }
        rules
    }

    /// Also tells whether the rule is a catch-all; a rule whose `when` is merely
    /// invalid is not one, or its own error would be buried under "unreachable" ones.
    fn rule(&mut self, path: &[Seg], v: &Value) -> (RuleSpec, bool) {
        let mut rule = RuleSpec::default();
        let Some(m) = self.mapping(path, v, &["when", "install"]) else {
            return (rule, false);
        };
        let when = opt(m, path, "when");
        if let Some((p, w)) = &when {
            rule.when = Some(self.string(p, w));
        }
        let Some((path, v)) = self.required(m, path, "install") else {
            return (rule, when.is_none());
        };
        if let Some(m) = self.mapping(&path, v, &["package", "version", "ecu"]) {
            if let Some((p, v)) = self.required(m, &path, "package") {
                rule.install.package = self.string(&p, v);
            }
            if let Some((p, v)) = self.required(m, &path, "version") {
                rule.install.version = self.version(&p, v);
            }
            if let Some((p, v)) = self.required(m, &path, "ecu") {
                rule.install.ecu = self.string(&p, v);
            }
        }
        (rule, when.is_none())
    }

    fn version(&mut self, path: &[Seg], v: &Value) -> String {
        let Value::Number(n) = v else {
            return self.string(path, v);
        };
        match probe(self.text, path, Goal::Raw) {
            Ok(Some(text)) if !text.trim().is_empty() => text.trim().to_owned(),
            _ => {
                let why = "was written as a number and its exact text cannot be recovered";
                self.err(
                    path,
                    format!("version {n} {why}; quote it, e.g. version: \"{n}\""),
                );
                String::new()
            }
        }
    }

    fn rollout(&mut self, path: &[Seg], v: &Value) -> Rollout {
        const KEYS: &[&str] = &[
            "waves",
            "wave_soak",
            "advance",
            "max_per_minute",
            "failure_threshold",
            "action_timeout",
            "max_retries",
        ];
        let mut r = Rollout::default();
        let Some(m) = self.mapping(path, v, KEYS) else {
            return r;
        };
        if let Some((p, v)) = opt(m, path, "waves") {
            r.waves = self.waves(&p, v);
        }
        if let Some((p, v)) = opt(m, path, "wave_soak") {
            r.wave_soak = self.duration(&p, v).unwrap_or_default();
        }
        if let Some((p, v)) = opt(m, path, "advance") {
            if self.choice(&p, v, &["auto", "manual"]) == Some("manual") {
                r.advance = Advance::Manual;
            }
        }
        if let Some((p, v)) = opt(m, path, "max_per_minute") {
            let n = self.integer(&p, v, 1, i64::from(u32::MAX));
            r.max_per_minute = n.map_or(DEFAULT_MAX_PER_MINUTE, |n| n as u32);
        }
        if let Some((p, v)) = opt(m, path, "failure_threshold") {
            r.failure_threshold = self.failure_threshold(&p, v);
        }
        if let Some((p, v)) = opt(m, path, "action_timeout") {
            if v.as_str() == Some(NO_TIMEOUT) {
                r.action_timeout = None;
            } else if let Some(d) = self.duration(&p, v) {
                if d.is_zero() {
                    let hint = format!("use `{NO_TIMEOUT}` for no timeout");
                    self.err(
                        &p,
                        format!("must be longer than 0s, found {}; {hint}", describe(v)),
                    );
                }
                r.action_timeout = Some(d);
            }
        }
        if let Some((p, v)) = opt(m, path, "max_retries") {
            r.max_retries = self.integer(&p, v, 0, i64::from(MAX_RETRIES)).unwrap_or(0) as u32;
        }
        r
    }

    fn waves(&mut self, path: &[Seg], v: &Value) -> Vec<f64> {
        let Some(items) = v.as_sequence() else {
            return self
                .expected(path, "a list of percentages", v)
                .unwrap_or_default();
        };
        if items.is_empty() {
            self.err(
                path,
                "must contain at least one wave; use [100] to reach everyone at once",
            );
        }
        const RANGE: &str = "a wave is a cumulative percentage above 0 and at most 100";
        let mut waves: Vec<f64> = Vec::with_capacity(items.len());
        let mut last_ok = false;
        for (i, item) in items.iter().enumerate() {
            let p = child(path, Seg::Index(i));
            last_ok = false;
            let Some(w) = self.number(&p, item) else {
                continue;
            };
            let prev = waves.last().copied();
            if !(w > 0.0 && w <= 100.0) {
                self.err(&p, format!("{w} is out of range; {RANGE}"));
            } else if let Some(prev) = prev.filter(|prev| w <= *prev) {
                self.err(&p, format!("{w} is not above the previous wave {prev}"));
            } else {
                waves.push(w);
                last_ok = true;
            }
        }
        // An element that already has an error is not blamed a second time.
        match waves.last() {
            Some(&last) if last_ok && last != 100.0 => {
                let p = child(path, Seg::Index(items.len() - 1));
                let why = "so that every matched vehicle is reached";
                self.err(&p, format!("the last wave must be 100 {why}, found {last}"));
            }
            _ => {}
        }
        waves
    }

    fn failure_threshold(&mut self, path: &[Seg], v: &Value) -> Option<FailureThreshold> {
        let m = self.mapping(path, v, &["percent", "min_finished", "action"])?;
        let mut t = FailureThreshold {
            percent: 0.0,
            min_finished: DEFAULT_MIN_FINISHED,
            action: ThresholdAction::Pause,
        };
        if let Some((p, v)) = self.required(m, path, "percent") {
            t.percent = self.number(&p, v).unwrap_or(0.0);
            if !(0.0..=100.0).contains(&t.percent) {
                self.err(
                    &p,
                    format!("{} is out of range; must be between 0 and 100", t.percent),
                );
            }
        }
        if let Some((p, v)) = opt(m, path, "min_finished") {
            let n = self.integer(&p, v, 0, i64::MAX);
            t.min_finished = n.map_or(DEFAULT_MIN_FINISHED, |n| n as u64);
        }
        if let Some((p, v)) = opt(m, path, "action") {
            if self.choice(&p, v, &["pause", "abort"]) == Some("abort") {
                t.action = ThresholdAction::Abort;
            }
        }
        Some(t)
    }

    fn schedule(&mut self, path: &[Seg], v: &Value) -> Schedule {
        let mut s = Schedule::default();
        let Some(m) = self.mapping(path, v, &["start", "end"]) else {
            return s;
        };
        s.start = opt(m, path, "start").and_then(|(p, v)| self.timestamp(&p, v));
        s.end = opt(m, path, "end").and_then(|(p, v)| self.timestamp(&p, v));
        if let (Some(start), Some(end)) = (s.start, s.end) {
            if start >= end {
                let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
                self.err(
                    &key(path, "end"),
                    format!("end {} is not after start {}", fmt(end), fmt(start)),
                );
            }
        }
        s
    }
}

mod probe;
#[cfg(test)]
mod tests;
