//! The walk over a campaign file's tree: every field checked, every problem
//! recorded with the position of the node it is about.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::locate::ScalarSource;
use super::yaml::{Node, Pos};
use super::*;

type Entries = [(std::sync::Arc<Node>, std::sync::Arc<Node>)];

pub(super) struct Checker<'t> {
    pub text: &'t str,
    pub errors: Vec<SpecError>,
    /// The CEL expressions, to place the rule engine's errors in the file.
    pub expressions: HashMap<String, ScalarSource>,
    /// Positions of the values problems may be found with later.
    pub positions: HashMap<String, Pos>,
}

/// An optional field with its path. An explicit null counts as missing, since
/// YAML authors write `schedule:` with nothing after it to mean "none".
fn opt<'v>(m: &'v Node, path: &[Seg], name: &str) -> Option<(Vec<Seg>, &'v Node)> {
    m.get(name)
        .filter(|v| !v.is_null())
        .map(|v| (key(path, name), &**v))
}

impl Checker<'_> {
    fn err(&mut self, path: &[Seg], at: Pos, message: impl Into<String>) {
        self.errors
            .push(SpecError::at(path_string(path), message.into(), Some(at)));
    }

    /// Reports a wrong type; returns None so callers can bail out in one expression.
    fn expected<T>(&mut self, path: &[Seg], what: &str, found: &Node) -> Option<T> {
        self.err(
            path,
            found.at,
            format!("expected {what}, found {}", describe(found)),
        );
        None
    }

    fn mapping<'v>(&mut self, path: &[Seg], v: &'v Node, allowed: &[&str]) -> Option<&'v Entries> {
        let Some(m) = v.as_map() else {
            return self.expected(path, "a mapping", v);
        };
        for (k, _) in m {
            match k.as_str() {
                Some(name) if allowed.contains(&name) => {}
                Some(name) => self.err(&key(path, name), k.at, unknown_field(name, allowed)),
                None => self.err(
                    path,
                    v.at,
                    format!("keys must be strings, found {}", describe(k)),
                ),
            }
        }
        Some(m)
    }

    /// A required field with its path; null is passed on, to be reported as a
    /// wrong type. A missing one is reported at the mapping that lacks it.
    fn required<'v>(
        &mut self,
        m: &'v Node,
        path: &[Seg],
        name: &str,
    ) -> Option<(Vec<Seg>, &'v Node)> {
        let Some(v) = m.get(name) else {
            self.err(&key(path, name), m.at, "missing required field");
            return None;
        };
        Some((key(path, name), &**v))
    }

    fn string(&mut self, path: &[Seg], v: &Node) -> String {
        match v.as_str() {
            Some(s) if !s.trim().is_empty() => s.to_owned(),
            Some(s) => {
                self.err(
                    path,
                    v.at,
                    format!("must not be empty, found {}", quoted(s)),
                );
                String::new()
            }
            None => self.expected(path, "a string", v).unwrap_or_default(),
        }
    }

    /// A string of at most `max` characters.
    fn short_string(&mut self, path: &[Seg], v: &Node, max: usize) -> String {
        let s = self.string(path, v);
        let chars = s.chars().count();
        if chars > max {
            let q = quoted(&s);
            self.err(
                path,
                v.at,
                format!("{q} is {chars} characters long; at most {max} are allowed"),
            );
        }
        s
    }

    fn number(&mut self, path: &[Seg], v: &Node) -> Option<f64> {
        v.as_f64().or_else(|| self.expected(path, "a number", v))
    }

    fn integer(&mut self, path: &[Seg], v: &Node, min: i64, max: i64) -> Option<i64> {
        let Some(n) = v.as_int() else {
            return self.expected(path, "an integer", v);
        };
        if (i128::from(min)..=i128::from(max)).contains(&n) {
            return i64::try_from(n).ok();
        }
        let below = n < i128::from(min);
        let n = v.scalar().map_or_else(|| n.to_string(), |s| cut(&s.text));
        // Bounds that only guard the storage type are not worth quoting unasked.
        let message = if max < i64::from(u32::MAX) {
            format!("must be between {min} and {max}, found {n}")
        } else if below {
            format!("must be at least {min}, found {n}")
        } else {
            format!("must be at most {max}, found {n}")
        };
        self.err(path, v.at, message);
        None
    }

    fn duration(&mut self, path: &[Seg], v: &Node) -> Option<Duration> {
        let Some(s) = v.as_str() else {
            return self.expected(path, "a duration such as \"90s\" or \"1h30m\"", v);
        };
        match parse_duration(s) {
            Ok(d) if d > MAX_DURATION => {
                let max = format_duration_days(MAX_DURATION);
                self.err(
                    path,
                    v.at,
                    format!("{} is too long; durations are at most {max}", quoted(s)),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, v.at, e);
                None
            }
        }
    }

    fn choice<'o>(&mut self, path: &[Seg], v: &Node, options: &[&'o str]) -> Option<&'o str> {
        let found = options.iter().find(|o| v.as_str() == Some(**o)).copied();
        found.or_else(|| self.expected(path, &format!("one of {}", options.join(", ")), v))
    }

    fn timestamp(&mut self, path: &[Seg], v: &Node) -> Option<DateTime<Utc>> {
        const WHAT: &str = "an RFC 3339 timestamp such as 2026-12-01T00:00:00Z";
        let Some(s) = v.as_str() else {
            return self.expected(path, WHAT, v);
        };
        match DateTime::parse_from_rfc3339(s.trim()) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                self.err(path, v.at, format!("{} is not {WHAT} ({e})", quoted(s)));
                None
            }
        }
    }

    /// A CEL expression, kept with its source to place the rule engine's errors.
    fn expression(&mut self, path: &[Seg], v: &Node) -> String {
        let s = self.string(path, v);
        if !s.is_empty() {
            if let Some(src) = ScalarSource::capture(self.text, v) {
                self.expressions.insert(path_string(path), src);
            }
        }
        s
    }

    pub fn campaign(&mut self, root: &Node) -> CampaignSpec {
        const KEYS: &[&str] = &["name", "target", "rules", "rollout", "schedule", "priority"];
        let mut spec = CampaignSpec::default();
        if self.mapping(&[], root, KEYS).is_none() {
            return spec;
        }
        if let Some((p, v)) = self.required(root, &[], "name") {
            spec.name = self.name(&p, v);
        }
        if let Some((p, v)) = self.required(root, &[], "target") {
            spec.target = self.expression(&p, v);
        }
        if let Some((p, v)) = self.required(root, &[], "rules") {
            spec.rules = self.rules(&p, v);
        }
        if let Some((p, v)) = opt(root, &[], "rollout") {
            spec.rollout = self.rollout(&p, v);
        }
        if let Some((p, v)) = opt(root, &[], "schedule") {
            spec.schedule = self.schedule(&p, v);
        }
        if let Some((p, v)) = opt(root, &[], "priority") {
            let max = i64::from(MAX_PRIORITY);
            spec.priority = self.integer(&p, v, -max, max).unwrap_or(0) as i32;
        }
        spec
    }

    fn name(&mut self, path: &[Seg], v: &Node) -> String {
        let name = self.short_string(path, v, MAX_NAME_CHARS);
        if name.chars().any(char::is_control) {
            self.err(
                path,
                v.at,
                format!("{} contains a control character", quoted(&name)),
            );
        }
        name
    }

    fn rules(&mut self, path: &[Seg], v: &Node) -> Vec<RuleSpec> {
        let Some(items) = v.as_seq() else {
            return self
                .expected(path, "a list of rules", v)
                .unwrap_or_default();
        };
        if items.is_empty() {
            self.err(path, v.at, "must contain at least one rule");
        }
        if items.len() > MAX_RULES {
            self.err(
                path,
                v.at,
                format!(
                    "too many rules: {}; at most {MAX_RULES} are allowed",
                    items.len()
                ),
            );
        }
        let mut catch_all = None;
        let mut rules = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = child(path, Seg::Index(i));
            let (rule, matches_all) = self.rule(&p, item);
            if let Some(m) = catch_all {
                self.err(
                    &p,
                    item.at,
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
    fn rule(&mut self, path: &[Seg], v: &Node) -> (RuleSpec, bool) {
        let mut rule = RuleSpec::default();
        if self.mapping(path, v, &["when", "install"]).is_none() {
            return (rule, false);
        }
        let when = opt(v, path, "when");
        if let Some((p, w)) = &when {
            rule.when = Some(self.expression(p, w));
        }
        let Some((path, install)) = self.required(v, path, "install") else {
            return (rule, when.is_none());
        };
        if self
            .mapping(&path, install, &["package", "version", "ecu"])
            .is_some()
        {
            if let Some((p, v)) = self.required(install, &path, "package") {
                rule.install.package = self.install_field(&p, v, false);
            }
            if let Some((p, v)) = self.required(install, &path, "version") {
                rule.install.version = self.install_field(&p, v, true);
            }
            if let Some((p, v)) = self.required(install, &path, "ecu") {
                rule.install.ecu = self.install_field(&p, v, false);
            }
        }
        (rule, when.is_none())
    }

    /// A package name, version or ECU. A version YAML read as a number keeps
    /// its text as written: `2.10` is "2.10", not 2.1.
    fn install_field(&mut self, path: &[Seg], v: &Node, version: bool) -> String {
        self.positions.insert(path_string(path), v.at);
        match v.scalar() {
            Some(s) if version && v.as_f64().is_some() => s.text.trim().to_owned(),
            _ => self.short_string(path, v, MAX_INSTALL_CHARS),
        }
    }

    fn rollout(&mut self, path: &[Seg], v: &Node) -> Rollout {
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
        if self.mapping(path, v, KEYS).is_none() {
            return r;
        }
        if let Some((p, w)) = opt(v, path, "waves") {
            r.waves = self.waves(&p, w);
        }
        if let Some((p, d)) = opt(v, path, "wave_soak") {
            r.wave_soak = self.duration(&p, d).unwrap_or_default();
        }
        if let Some((p, a)) = opt(v, path, "advance") {
            if self.choice(&p, a, &["auto", "manual"]) == Some("manual") {
                r.advance = Advance::Manual;
            }
        }
        if let Some((p, n)) = opt(v, path, "max_per_minute") {
            let n = self.integer(&p, n, 1, i64::from(u32::MAX));
            r.max_per_minute = n.map_or(DEFAULT_MAX_PER_MINUTE, |n| n as u32);
        }
        if let Some((p, t)) = opt(v, path, "failure_threshold") {
            r.failure_threshold = self.failure_threshold(&p, t);
        }
        if let Some((p, t)) = opt(v, path, "action_timeout") {
            if t.as_str() == Some(NO_TIMEOUT) {
                r.action_timeout = None;
            } else if let Some(d) = self.duration(&p, t) {
                if d.is_zero() {
                    let hint = format!("use `{NO_TIMEOUT}` for no timeout");
                    self.err(
                        &p,
                        t.at,
                        format!("must be longer than 0s, found {}; {hint}", describe(t)),
                    );
                }
                r.action_timeout = Some(d);
            }
        }
        if let Some((p, n)) = opt(v, path, "max_retries") {
            r.max_retries = self.integer(&p, n, 0, i64::from(MAX_RETRIES)).unwrap_or(0) as u32;
        }
        r
    }

    fn waves(&mut self, path: &[Seg], v: &Node) -> Vec<f64> {
        let Some(items) = v.as_seq() else {
            return self
                .expected(path, "a list of percentages", v)
                .unwrap_or_default();
        };
        if items.is_empty() {
            self.err(
                path,
                v.at,
                "must contain at least one wave; use [100] to reach everyone at once",
            );
        }
        if items.len() > MAX_WAVES {
            let n = items.len();
            self.err(
                path,
                v.at,
                format!("too many waves: {n}; at most {MAX_WAVES} are allowed"),
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
                self.err(&p, item.at, format!("{w} is out of range; {RANGE}"));
            } else if let Some(prev) = prev.filter(|prev| w <= *prev) {
                self.err(
                    &p,
                    item.at,
                    format!("{w} is not above the previous wave {prev}"),
                );
            } else {
                waves.push(w);
                last_ok = true;
            }
        }
        // An element that already has an error is not blamed a second time.
        match (waves.last(), items.last()) {
            (Some(&last), Some(item)) if last_ok && last != 100.0 => {
                let p = child(path, Seg::Index(items.len() - 1));
                let why = "so that every matched vehicle is reached";
                self.err(
                    &p,
                    item.at,
                    format!("the last wave must be 100 {why}, found {last}"),
                );
            }
            _ => {}
        }
        waves
    }

    fn failure_threshold(&mut self, path: &[Seg], v: &Node) -> Option<FailureThreshold> {
        self.mapping(path, v, &["percent", "min_finished", "action"])?;
        let mut t = FailureThreshold {
            percent: 0.0,
            min_finished: DEFAULT_MIN_FINISHED,
            action: ThresholdAction::Pause,
        };
        if let Some((p, n)) = self.required(v, path, "percent") {
            t.percent = self.number(&p, n).unwrap_or(0.0);
            if !(0.0..=100.0).contains(&t.percent) {
                self.err(
                    &p,
                    n.at,
                    format!("{} is out of range; must be between 0 and 100", t.percent),
                );
            }
        }
        if let Some((p, n)) = opt(v, path, "min_finished") {
            let n = self.integer(&p, n, 0, i64::MAX);
            t.min_finished = n.map_or(DEFAULT_MIN_FINISHED, |n| n as u64);
        }
        if let Some((p, a)) = opt(v, path, "action") {
            if self.choice(&p, a, &["pause", "abort"]) == Some("abort") {
                t.action = ThresholdAction::Abort;
            }
        }
        Some(t)
    }

    fn schedule(&mut self, path: &[Seg], v: &Node) -> Schedule {
        let mut s = Schedule::default();
        if self.mapping(path, v, &["start", "end"]).is_none() {
            return s;
        }
        s.start = opt(v, path, "start").and_then(|(p, t)| self.timestamp(&p, t));
        let end = opt(v, path, "end");
        if let Some((p, t)) = &end {
            self.positions.insert(path_string(p), t.at);
            s.end = self.timestamp(p, t);
        }
        if let (Some(start), Some(end_t), Some((p, t))) = (s.start, s.end, end) {
            if start >= end_t {
                let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
                self.err(
                    &p,
                    t.at,
                    format!("end {} is not after start {}", fmt(end_t), fmt(start)),
                );
            }
        }
        s
    }
}

/// `365d` rather than `8760h`, for the limit's message.
fn format_duration_days(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else {
        format_duration(d)
    }
}
