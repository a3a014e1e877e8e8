//! `ota simulate`: a fleet of simulated vehicles that behave like real ones
//! over HTTP, hawkBit DDI or MQTT: fetch their actions, download and check
//! the artifacts, report progress and the outcome, report the new
//! inventory. It is the demo and the load generator.

mod vehicle;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde::Serialize;

use crate::client::{print_json, Connection, Output};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Mqtt,
    Ddi,
    /// A third of the fleet on each.
    Mixed,
}

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// How many vehicles.
    #[arg(long, default_value_t = 100)]
    pub vehicles: u32,
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,
    /// Share of installs that fail, 0.0..=1.0.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// How long an install takes, e.g. 2s.
    #[arg(long, default_value = "2s")]
    pub install_time: String,
    /// First VIN number: vehicles are WVWSMLTR000000000 + n.
    #[arg(long, default_value_t = 0)]
    pub first: u32,
    /// Software version of the BMS the simulated vehicles start with.
    #[arg(long, default_value = "2.2.0")]
    pub bms_version: String,
    /// Region of the simulated vehicles.
    #[arg(long, default_value = "EU")]
    pub region: String,
    /// Poll interval over HTTP and DDI, overriding what the platform says
    /// (for demos; real vehicles follow poll_after_s).
    #[arg(long)]
    pub poll_every: Option<String>,
    /// MQTT broker of the vehicles.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub mqtt_url: String,
    /// Stop after this long at the latest.
    #[arg(long, default_value = "10m")]
    pub duration: String,
    /// Stop once no vehicle had anything to do for this long (after the
    /// first action was done).
    #[arg(long, default_value = "5s")]
    pub until_idle: String,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// What the fleet did, for the summary.
#[derive(Default)]
pub struct Counters {
    pub polls: AtomicU64,
    pub not_modified: AtomicU64,
    pub actions_seen: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub reports: AtomicU64,
    pub downloads: AtomicU64,
    pub downloaded_bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Vehicles that finished at least one action.
    pub vehicles_done: AtomicU64,
    /// Last time any vehicle had work, as millis since the start.
    pub last_work_ms: AtomicU64,
}

#[derive(Debug, Serialize)]
struct Summary {
    vehicles: u32,
    protocol: Protocol,
    seconds: f64,
    polls: u64,
    not_modified: u64,
    actions: u64,
    succeeded: u64,
    failed: u64,
    status_reports: u64,
    downloads: u64,
    downloaded_bytes: u64,
    errors: u64,
}

/// What every simulated vehicle shares.
pub struct Fleet {
    pub http: reqwest::Client,
    pub base: String,
    pub mqtt_url: String,
    pub fail_rate: f64,
    pub install_time: Duration,
    pub poll_every: Option<Duration>,
    pub counters: Counters,
    pub started: Instant,
}

impl Fleet {
    pub fn worked(&self) {
        self.counters
            .last_work_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

pub fn vin(n: u32) -> String {
    format!("WVWSMLTR{n:09}")
}

/// Durations as in campaign files ("90s", "1h30m"), plus milliseconds
/// ("200ms") for fast demos and tests.
fn duration(flag: &str, v: &str) -> anyhow::Result<Duration> {
    if let Some(ms) = v.strip_suffix("ms") {
        return ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| anyhow::anyhow!("--{flag} {v:?}: not a number of milliseconds"));
    }
    ota_campaign_manager::spec::parse_duration(v)
        .map_err(|e| anyhow::anyhow!("--{flag} {v:?}: {e}"))
}

pub async fn run(args: SimulateArgs, conn: &Connection) -> anyhow::Result<i32> {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        anyhow::bail!("--fail-rate {} must be between 0 and 1", args.fail_rate);
    }
    if args.vehicles == 0 {
        anyhow::bail!("--vehicles must be at least 1");
    }
    let install_time = duration("install-time", &args.install_time)?;
    let limit = duration("duration", &args.duration)?;
    let idle = duration("until-idle", &args.until_idle)?;
    let poll_every = args
        .poll_every
        .as_deref()
        .map(|v| duration("poll-every", v))
        .transpose()?;
    let api = conn.api()?;
    let vins: Vec<String> = (args.first..args.first + args.vehicles).map(vin).collect();

    // The fleet in the inventory (merged with what is there: a vehicle's
    // own reports keep precedence over this import).
    let ndjson: String = vins
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let protocol = protocol_of(args.protocol, i);
            serde_json::json!({"vin": v, "model": "ID.4", "platform": "MEB", "region": args.region,
                "gateway": if i % 2 == 0 { "hcp3" } else { "hcp1" }, "protocol": protocol_name(protocol),
                "tags": ["simulated"], "ecus": {"BMS": {"hw": "H2", "sw": args.bms_version}}})
            .to_string()
                + "\n"
        })
        .collect();
    api.send_raw(
        api.request(Method::POST, "/api/v1/vehicles:import?source=manufacturing")
            .header("content-type", "application/x-ndjson")
            .body(ndjson),
    )
    .await
    .context("importing the simulated fleet")?;

    let setup = ProgressBar::new(vins.len() as u64).with_style(style("credentials"));
    let tokens: Vec<anyhow::Result<String>> = futures::stream::iter(vins.clone())
        .map(|v| {
            let api = &api;
            let setup = &setup;
            async move {
                let r: serde_json::Value = api
                    .send(
                        api.request(Method::POST, &format!("/api/v1/vehicles/{v}/credentials"))
                            .json(&serde_json::json!({"rotate": true})),
                    )
                    .await
                    .with_context(|| format!("issuing the credential of {v}"))?;
                setup.inc(1);
                r["token"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("no token in the answer for {v}: {r}"))
            }
        })
        .buffered(32)
        .collect()
        .await;
    setup.finish_and_clear();
    let tokens = tokens.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    let fleet = Arc::new(Fleet {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        base: api.base.clone(),
        mqtt_url: args.mqtt_url.clone(),
        fail_rate: args.fail_rate,
        install_time,
        poll_every,
        counters: Counters::default(),
        started: Instant::now(),
    });
    let bar = ProgressBar::new(vins.len() as u64).with_style(style("vehicles done"));
    let mut tasks = Vec::with_capacity(vins.len());
    for (i, (v, token)) in vins.iter().zip(tokens).enumerate() {
        let protocol = protocol_of(args.protocol, i);
        tasks.push(tokio::spawn(vehicle::run(
            fleet.clone(),
            v.clone(),
            token,
            protocol,
        )));
    }
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let c = &fleet.counters;
        bar.set_position(c.vehicles_done.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{} succeeded, {} failed, {} reports",
            c.succeeded.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.reports.load(Ordering::Relaxed)
        ));
        let now = fleet.started.elapsed();
        let last = Duration::from_millis(c.last_work_ms.load(Ordering::Relaxed));
        let any_work = c.actions_seen.load(Ordering::Relaxed) > 0;
        if now >= limit || (any_work && now.saturating_sub(last) >= idle) {
            break;
        }
    }
    for t in &tasks {
        t.abort();
    }
    bar.finish_and_clear();
    let c = &fleet.counters;
    let s = Summary {
        vehicles: args.vehicles,
        protocol: args.protocol,
        seconds: fleet.started.elapsed().as_secs_f64(),
        polls: c.polls.load(Ordering::Relaxed),
        not_modified: c.not_modified.load(Ordering::Relaxed),
        actions: c.actions_seen.load(Ordering::Relaxed),
        succeeded: c.succeeded.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        status_reports: c.reports.load(Ordering::Relaxed),
        downloads: c.downloads.load(Ordering::Relaxed),
        downloaded_bytes: c.downloaded_bytes.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
    };
    match args.output {
        Output::Json => print_json(&s)?,
        Output::Table => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
            for (k, v) in [
                ("vehicles", s.vehicles.to_string()),
                ("protocol", protocol_name(s.protocol).to_string()),
                ("seconds", format!("{:.1}", s.seconds)),
                ("polls (304)", format!("{} ({})", s.polls, s.not_modified)),
                ("actions", s.actions.to_string()),
                ("succeeded", s.succeeded.to_string()),
                ("failed", s.failed.to_string()),
                ("status reports", s.status_reports.to_string()),
                (
                    "downloads",
                    format!("{} ({} bytes)", s.downloads, s.downloaded_bytes),
                ),
                ("errors", s.errors.to_string()),
            ] {
                t.add_row([k.to_string(), v]);
            }
            println!("{t}");
        }
    }
    Ok(if s.errors > 0 { 1 } else { 0 })
}

fn protocol_of(p: Protocol, i: usize) -> Protocol {
    match p {
        Protocol::Mixed => [Protocol::Http, Protocol::Mqtt, Protocol::Ddi][i % 3],
        other => other,
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Mqtt => "mqtt",
        Protocol::Ddi => "ddi",
        Protocol::Mixed => "mixed",
    }
}

fn style(what: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{{spinner}} {what} {{pos}}/{{len}} [{{bar:30}}] {{msg}}"
    ))
    .expect("valid template")
}
