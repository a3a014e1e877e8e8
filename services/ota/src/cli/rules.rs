use std::path::PathBuf;

use anyhow::{bail, Context};
use comfy_table::Table;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use ota_rule_engine::preview::sorted_counts;
use ota_rule_engine::{ExplainNode, Explanation, Preview};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{print_json, Connection, Output};

#[derive(clap::Subcommand, Debug)]
pub enum RulesCmd {
    /// Check a CEL target expression, or the target and rules of a campaign
    /// file (-f). Exits 0 when valid, 2 with every positioned error otherwise.
    Check {
        expression: Option<String>,
        /// A campaign file (YAML or JSON) whose `target` and `rules[].when` to check.
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show how an expression evaluates for one vehicle, node by node.
    Explain {
        #[arg(long)]
        vin: String,
        expression: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Count the vehicles an expression matches across the whole inventory.
    Preview {
        expression: String,
        /// Matching VINs to list.
        #[arg(long, default_value_t = 10)]
        sample: u32,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// Exit code of `rules check` for invalid rules.
pub const EXIT_INVALID: i32 = 2;

pub async fn run(cmd: RulesCmd, conn: &Connection) -> anyhow::Result<i32> {
    let api = conn.api()?;
    match cmd {
        RulesCmd::Check {
            expression,
            file,
            output,
        } => {
            let body = match (expression, file) {
                (Some(e), None) => json!({"expression": e}),
                (None, Some(f)) => campaign_rules(&f)?,
                _ => bail!("give an expression or -f FILE (not both)"),
            };
            let v: Value = api
                .send(
                    api.request(Method::POST, "/api/v1/rules/validate")
                        .json(&body),
                )
                .await?;
            let valid = v["valid"].as_bool().unwrap_or(false);
            match output {
                Output::Json => print_json(&v)?,
                Output::Table if valid => println!("valid"),
                Output::Table => {
                    for e in v["errors"].as_array().into_iter().flatten() {
                        eprintln!(
                            "{}:{}:{}: {}\n{}",
                            e["path"].as_str().unwrap_or_default(),
                            e["line"],
                            e["column"],
                            e["message"].as_str().unwrap_or_default(),
                            indent(e["excerpt"].as_str().unwrap_or_default())
                        );
                    }
                }
            }
            Ok(if valid { 0 } else { EXIT_INVALID })
        }
        RulesCmd::Explain {
            vin,
            expression,
            output,
        } => {
            let res = api
                .send_raw(
                    api.request(Method::POST, "/api/v1/rules/explain")
                        .json(&json!({"expression": expression, "vin": vin})),
                )
                .await?;
            let x: Explanation = res.json().await?;
            match output {
                Output::Json => print_json(&x)?,
                Output::Table => {
                    print_node(&x.target, 0);
                    let r = &x.result;
                    match (&r.error, r.target_matched) {
                        (Some(e), _) => println!("=> {vin} does not match: {e}"),
                        (None, true) => println!("=> {vin} matches"),
                        (None, false) => println!("=> {vin} does not match"),
                    }
                }
            }
            Ok(0)
        }
        RulesCmd::Preview {
            expression,
            sample,
            output,
        } => {
            let res = api
                .send_raw(
                    api.request(Method::POST, "/api/v1/rules/preview")
                        .query(&[("progress", "true")])
                        .json(&json!({"expression": expression, "sample_size": sample})),
                )
                .await
                .context("preview failed")?;
            let bar = if output == Output::Table {
                ProgressBar::new(0)
            } else {
                ProgressBar::hidden()
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "scanning {pos}/{len} vehicles [{bar:30}] {per_sec}, eta {eta}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            let mut lines = res.bytes_stream();
            let mut buf = Vec::new();
            let mut result: Option<Preview> = None;
            while let Some(chunk) = lines.next().await {
                buf.extend_from_slice(&chunk?);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let msg: Value =
                        serde_json::from_slice(&line).context("unreadable progress line")?;
                    if let Some(r) = msg.get("result") {
                        result = Some(serde_json::from_value(r.clone())?);
                    } else if let Some(e) = msg.get("error") {
                        bar.abandon();
                        bail!(
                            "preview failed: {}",
                            e["message"].as_str().unwrap_or_default()
                        );
                    } else {
                        bar.set_length(msg["total"].as_u64().unwrap_or(0));
                        bar.set_position(msg["scanned"].as_u64().unwrap_or(0));
                    }
                }
            }
            bar.finish_and_clear();
            let p = result.context("the server ended the preview without a result")?;
            match output {
                Output::Json => print_json(&p)?,
                Output::Table => print_preview(&p),
            }
            Ok(0)
        }
    }
}

/// The `target` and `rules[].when` of a campaign file, as a validate body.
fn campaign_rules(path: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not valid YAML or JSON", path.display()))?;
    let target = doc
        .get("target")
        .and_then(|t| t.as_str())
        .with_context(|| format!("{}: missing string field `target`", path.display()))?;
    let rules: Vec<Value> = doc
        .get("rules")
        .and_then(|r| r.as_sequence())
        .map(|seq| {
            seq.iter()
                .enumerate()
                .map(|(i, r)| {
                    let when = r.get("when").and_then(|w| w.as_str()).unwrap_or_default();
                    json!({"when": when, "action": rule_action(i, r)})
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({"target": target, "rules": rules}))
}

/// How a campaign rule's action reads in an explanation: its place and
/// what it installs (`rules[1]: bms-fw 2.3.1 on BMS`).
fn rule_action(i: usize, rule: &serde_yaml_ng::Value) -> String {
    let install = rule.get("install");
    let field = |k: &str| {
        install
            .and_then(|m| m.get(k))
            .map(|v| match v {
                serde_yaml_ng::Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            })
            .unwrap_or_default()
    };
    match (field("package"), field("version"), field("ecu")) {
        (p, v, e) if !p.is_empty() => format!("rules[{i}]: {p} {v} on {e}"),
        _ => format!("rules[{i}]"),
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_node(n: &ExplainNode, depth: usize) {
    // The bare variable is the whole record at every leaf: noise for a
    // person (`--output json` keeps it).
    if n.expression == "vehicle" {
        return;
    }
    let pad = "  ".repeat(depth);
    match (&n.value, &n.error) {
        (_, Some(e)) => println!("{pad}{}  !! {e}", n.expression),
        (Some(v), None) => println!("{pad}{}  = {v}", n.expression),
        (None, None) => println!("{pad}{}", n.expression),
    }
    for c in &n.children {
        print_node(c, depth + 1);
    }
}

fn print_preview(p: &Preview) {
    println!(
        "matched {} of {} vehicles ({:.1}%), {} evaluation errors",
        p.matched,
        p.scanned,
        if p.scanned == 0 {
            0.0
        } else {
            100.0 * p.matched as f64 / p.scanned as f64
        },
        p.errors
    );
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(["breakdown", "value", "vehicles"]);
    for (name, counts) in [
        ("model", &p.by_model),
        ("platform", &p.by_platform),
        ("gateway", &p.by_gateway),
        ("region", &p.by_region),
    ] {
        for (k, n) in sorted_counts(counts) {
            t.add_row([name.to_owned(), k, n.to_string()]);
        }
    }
    println!("{t}");
    if !p.sample_vins.is_empty() {
        println!("sample: {}", p.sample_vins.join(" "));
    }
}
