//! What `tests/metrics.rs` reads: metric names out of PromQL, Grafana
//! dashboards, Prometheus rule files and the infra alert rules; the metric
//! macro calls of the services' sources; the table of docs/metrics.md; and
//! the Prometheus text `/metrics` serves.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// One metric of `ota describe`.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub kind: String,
    pub labels: BTreeSet<String>,
}

/// The catalog as `ota describe` prints it, by name.
pub fn catalog(describe: &Value) -> BTreeMap<String, Described> {
    describe["metrics"]
        .as_array()
        .expect("ota describe has a metrics list")
        .iter()
        .map(|m| {
            let labels = m["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_owned())
                .collect();
            (
                m["name"].as_str().unwrap().to_owned(),
                Described {
                    kind: m["type"].as_str().unwrap().to_owned(),
                    labels,
                },
            )
        })
        .collect()
}

// ---- PromQL ----

/// PromQL words that are neither functions (those are followed by `(`)
/// nor metrics.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "Inf",
    "NaN",
    "start",
    "end",
];
/// Aggregation operators, which may stand before `by (...)` instead of
/// their `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// `expr` without its string literals, label matchers (`{...}`) and
/// ranges (`[...]`), each replaced by a space.
fn strip(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' && c != '`' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
                out.push(' ');
            }
            '#' => {
                // A comment, to the end of the line.
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    let mut plain = String::with_capacity(out.len());
    let mut depth = 0usize;
    for c in out.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                plain.push(' ');
            }
            _ if depth > 0 => {}
            _ => plain.push(c),
        }
    }
    plain
}

/// The metric names a PromQL expression reads: every identifier that is
/// not a function (followed by `(`), a keyword, a label name of `by (...)`
/// and its kin, a Grafana variable (`$x`) or inside a string, a label
/// matcher or a range.
pub fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let s: Vec<char> = strip(expr).chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < s.len() {
        let c = s[i];
        if c == '$' {
            i += 1;
            while i < s.len() && ident_char(s[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (5m, 1e3, 0x1f).
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.' || s[i] == '_') {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < s.len() && ident_char(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let mut j = i;
            while j < s.len() && s[j].is_whitespace() {
                j += 1;
            }
            let call = s.get(j) == Some(&'(');
            if call && LABEL_LISTS.contains(&word.as_str()) {
                // Skip the label names.
                while j < s.len() && s[j] != ')' {
                    j += 1;
                }
                i = j + 1;
            } else if !call
                && !KEYWORDS.contains(&word.as_str())
                && !AGGREGATIONS.contains(&word.as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The PromQL inside a Grafana Prometheus variable query:
/// `label_values(expr, label)` gives `expr`, `label_values(label)` and
/// `label_names()` none, `query_result(expr)` gives `expr`, anything else
/// is PromQL itself.
pub fn variable_promql(query: &str) -> Option<String> {
    let q = query.trim();
    let inner = |prefix: &str| {
        q.strip_prefix(prefix)
            .and_then(|r| r.trim_start().strip_prefix('('))
            .and_then(|r| r.trim_end().strip_suffix(')'))
            .map(str::to_owned)
    };
    if let Some(args) = inner("label_values") {
        // The label is after the last comma outside of braces.
        let mut depth = 0i32;
        let mut split = None;
        for (k, c) in args.char_indices() {
            match c {
                '{' | '(' | '[' => depth += 1,
                '}' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => split = Some(k),
                _ => {}
            }
        }
        return split.map(|k| args[..k].to_owned());
    }
    if q.starts_with("label_names") || q.starts_with("metrics(") {
        return None;
    }
    if let Some(e) = inner("query_result") {
        return Some(e);
    }
    Some(q.to_owned())
}

/// Whether a name a query reads is one the platform exports: a catalog
/// name that is not a histogram, or a histogram's `_bucket`, `_sum` or
/// `_count` series. `up` is Prometheus' own.
pub fn resolve(name: &str, kinds: &BTreeMap<String, String>) -> Result<String, String> {
    if name == "up" {
        return Ok(name.to_owned());
    }
    match kinds.get(name).map(String::as_str) {
        Some("histogram") => {
            return Err(format!(
                "{name} is a histogram: query {name}_bucket, _sum or _count"
            ))
        }
        Some(_) => return Ok(name.to_owned()),
        None => {}
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if kinds.get(base).map(String::as_str) == Some("histogram") {
                return Ok(base.to_owned());
            }
        }
    }
    Err(format!("{name} is not a metric the platform exports"))
}

// ---- Dashboards, rules ----

/// A query and who runs it: `platform: Panel title`, `rollout: variable
/// campaign`, `alert: Name`, `infra alert: Name`.
#[derive(Debug, Clone)]
pub struct Query {
    pub user: String,
    pub expr: String,
}

/// Every panel target and variable query of the Grafana dashboards in
/// `dashboards/`, named by the dashboard's uid without `ota-`.
pub fn dashboard_queries() -> Vec<Query> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        let short = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file} has a uid"))
            .trim_start_matches("ota-")
            .to_owned();
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| {
                    panic!("{file}: panel {} has a target without expr", p["title"])
                });
                out.push(Query {
                    user: format!("{short}: {}", p["title"].as_str().unwrap()),
                    expr: expr.to_owned(),
                });
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] != "query" {
                continue;
            }
            let q = match &v["query"] {
                Value::String(s) => s.clone(),
                q => q["query"].as_str().unwrap_or_default().to_owned(),
            };
            if let Some(expr) = variable_promql(&q) {
                out.push(Query {
                    user: format!("{short}: variable {}", v["name"].as_str().unwrap()),
                    expr,
                });
            }
        }
    }
    out
}

/// The dashboards' JSON, by file name.
pub fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let d: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            (name, d)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
pub fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The alert and recording rules of a Prometheus rule file.
pub fn rule_queries(yaml: &str) -> Vec<Query> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("the rule file is YAML");
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let (kind, name) = match (r["alert"].as_str(), r["record"].as_str()) {
                (Some(a), _) => ("alert", a),
                (None, Some(rec)) => ("record", rec),
                _ => panic!("a rule without alert or record: {r:?}"),
            };
            out.push(Query {
                user: format!("{kind}: {name}"),
                expr: r["expr"].as_str().expect("expr").to_owned(),
            });
        }
    }
    out
}

/// The alert rules infra/ ships as a PrometheusRule: each `alert: "Name"`
/// with the template text of its `expr` up to `for:`. `${...}` selectors
/// are label matchers there.
pub fn infra_alert_queries(ts: &str) -> Vec<Query> {
    ts.split("alert: \"")
        .skip(1)
        .map(|chunk| {
            let name = chunk.split('"').next().unwrap();
            let expr = chunk
                .split_once("expr:")
                .and_then(|(_, rest)| rest.split_once("for:"))
                .map(|(e, _)| e)
                .unwrap_or_else(|| panic!("infra alert {name} has expr: ... for:"));
            // Only the template literals' text: `a` + `b`.
            let expr: String = expr
                .split('`')
                .skip(1)
                .step_by(2)
                .collect::<Vec<_>>()
                .join("")
                .replace("${sel}", "x=\"\"")
                .replace("${jobs}", "");
            Query {
                user: format!("infra alert: {name}"),
                expr,
            }
        })
        .collect()
}

// ---- Source code ----

/// One `counter!` / `gauge!` / `histogram!` call.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub at: String,
    pub kind: &'static str,
    pub name: Result<String, String>,
    pub labels: BTreeSet<String>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The arguments of the macro call whose `(` is at `open`, split at the
/// top-level commas.
fn macro_args(src: &str, open: usize) -> Vec<String> {
    let mut args = vec![String::new()];
    let mut depth = 0i32;
    let mut in_str = false;
    let mut escaped = false;
    for c in src[open..].chars() {
        if in_str {
            args.last_mut().unwrap().push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '(' | '[' | '{' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                args.push(String::new());
                continue;
            }
            _ => {}
        }
        args.last_mut().unwrap().push(c);
    }
    args.into_iter().map(|a| a.trim().to_owned()).collect()
}

fn literal(s: &str) -> Option<String> {
    s.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .map(str::to_owned)
}

/// The value of `const name: &str = "...";` in `src`.
fn const_str(src: &str, name: &str) -> Option<String> {
    let is_ident = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !is_ident {
        return None;
    }
    let decl = format!("const {name}: &str = ");
    let rest = &src[src.find(&decl)? + decl.len()..];
    literal(rest.split(';').next()?.trim())
}

/// Every metric macro call in `services/*/src`.
pub fn emitted() -> Vec<Emitted> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(repo().join("services")).unwrap() {
        let src = e.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(repo()).unwrap_or(&f).display().to_string();
        for kind in ["counter", "gauge", "histogram"] {
            let pat = format!("{kind}!(");
            for (at, _) in text.match_indices(&pat) {
                let before = &text[..at];
                // describe_counter! and the like name no series.
                if before.ends_with("describe_") || before.ends_with('_') {
                    continue;
                }
                let args = macro_args(&text, at + pat.len() - 1);
                let line = before.matches('\n').count() + 1;
                // A literal, or a `const NAME: &str = "..."` of the file.
                let name = literal(&args[0])
                    .or_else(|| const_str(&text, &args[0]))
                    .ok_or_else(|| args[0].clone());
                let labels = args[1..]
                    .iter()
                    .filter_map(|a| a.split_once("=>"))
                    .map(|(k, _)| literal(k.trim()).unwrap_or_else(|| k.trim().to_owned()))
                    .collect();
                out.push(Emitted {
                    at: format!("{rel}:{line}"),
                    kind,
                    name,
                    labels,
                });
            }
        }
    }
    out
}

// ---- docs/metrics.md ----

/// A row of a metric table of docs/metrics.md.
#[derive(Debug, Clone)]
pub struct DocRow {
    pub name: String,
    pub kind: String,
    pub labels: BTreeSet<String>,
    pub used_by: BTreeSet<String>,
}

/// The rows whose first cell is a backticked metric name. Columns:
/// metric, type, labels, role, meaning, used by. Labels and users are
/// separated by `,` and `;`; `—` stands for none.
pub fn doc_rows(md: &str) -> Vec<DocRow> {
    md.lines()
        .filter(|l| l.starts_with("| `ota_") || l.starts_with("| `process_"))
        .map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            assert_eq!(cells.len(), 6, "docs/metrics.md: six columns in {l}");
            let list = |cell: &str, sep: char| -> BTreeSet<String> {
                if cell == "—" {
                    return BTreeSet::new();
                }
                cell.split(sep)
                    .map(|x| x.trim().trim_matches('`').to_owned())
                    .filter(|x| !x.is_empty())
                    .collect()
            };
            DocRow {
                name: cells[0].trim_matches('`').to_owned(),
                kind: cells[1].to_owned(),
                labels: list(cells[2], ','),
                used_by: list(cells[5], ';'),
            }
        })
        .collect()
}

// ---- Prometheus text ----

/// A scrape: each metric family's `# TYPE` and `# HELP`, and the label
/// names of its samples.
#[derive(Debug, Default)]
pub struct Scrape {
    pub types: BTreeMap<String, String>,
    pub helps: BTreeSet<String>,
    /// Sample name (with `_bucket` and the like) to its label names.
    pub samples: BTreeMap<String, BTreeSet<String>>,
    /// Sample lines as they are, for values.
    pub lines: Vec<String>,
}

pub fn parse_scrape(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            s.types.insert(name.to_owned(), kind.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            s.helps.insert(rest.split(' ').next().unwrap().to_owned());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let series = line.rsplit_once(' ').map_or(line, |(a, _)| a);
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let keys = labels
                .trim_end_matches('}')
                .split("\",")
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, _)| k.trim_matches(',').trim().to_owned())
                .collect::<BTreeSet<_>>();
            s.samples.entry(name.to_owned()).or_default().extend(keys);
            s.lines.push(line.to_owned());
        }
    }
    s
}

impl Scrape {
    /// The sum of a family's samples whose labels include every pair of
    /// `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.lines
            .iter()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| {
                with.iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        promql_metrics(expr).into_iter().collect()
    }

    #[test]
    fn promql_names_leave_out_functions_keywords_labels_strings_and_variables() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (le, route) (rate(ota_x_seconds_bucket{namespace=~"$namespace", route!="up"}[$__rate_interval])))"#
            ),
            ["ota_x_seconds_bucket"]
        );
        assert_eq!(
            names("sum(rate(a_total[5m] offset 1d)) without (pod) / on (campaign) group_left (state) max by (campaign) (b) > bool 0.5 and up == 0 or vector(0)"),
            ["a_total", "b", "up"]
        );
        assert_eq!(
            names("time() - max(ota_t_seconds) > 3600 # up in a comment\n unless ota_u"),
            ["ota_t_seconds", "ota_u"]
        );
        assert_eq!(names("sum(x) by (le) + 1e3 * 2m"), ["x"]);
        assert_eq!(names("sum by (le) (y) / count without (a) (z)"), ["y", "z"]);
    }

    #[test]
    fn variable_queries_yield_their_promql() {
        assert_eq!(
            variable_promql(r#"label_values(ota_a_total{ns=~"$ns", b=","}, campaign)"#).as_deref(),
            Some(r#"ota_a_total{ns=~"$ns", b=","}"#)
        );
        assert_eq!(variable_promql("label_values(namespace)"), None);
        assert_eq!(
            variable_promql("query_result(topk(5, ota_b))").as_deref(),
            Some("topk(5, ota_b)")
        );
    }

    #[test]
    fn histograms_are_read_through_their_series() {
        let kinds: BTreeMap<String, String> =
            [("ota_h_seconds", "histogram"), ("ota_c_total", "counter")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect();
        assert_eq!(
            resolve("ota_h_seconds_bucket", &kinds).unwrap(),
            "ota_h_seconds"
        );
        assert!(resolve("ota_h_seconds", &kinds).is_err());
        assert!(resolve("ota_c_total_count", &kinds).is_err());
        assert!(resolve("ota_nope", &kinds).is_err());
        assert_eq!(resolve("up", &kinds).unwrap(), "up");
    }

    #[test]
    fn a_name_may_be_a_const_of_the_file() {
        let src = "pub const NAME: &str = \"ota_b_total\";\nfn f() {}";
        assert_eq!(const_str(src, "NAME").as_deref(), Some("ota_b_total"));
        assert_eq!(const_str(src, "OTHER"), None);
        assert_eq!(const_str(src, "m.name"), None);
    }

    #[test]
    fn macro_calls_give_name_and_label_keys() {
        let src = r#"x; metrics::counter!("ota_a_total", "k" => f("a, b"), "j" => v.clone()).increment(1);"#;
        let open = src.find('(').unwrap();
        assert_eq!(
            macro_args(src, open),
            [
                r#""ota_a_total""#,
                r#""k" => f("a, b")"#,
                r#""j" => v.clone()"#
            ]
        );
    }
}
