//! `ota simulate`: a fleet of simulated vehicles that behave like real ones
//! over HTTP, hawkBit DDI or MQTT: fetch their actions, download and check
//! the artifacts, report progress and the outcome, report the new
//! inventory. It is the demo and the load generator.
//!
//! Every vehicle notes when it first saw each action; the summary gives the
//! notification latency from the campaign's launch. With `--receive-only`
//! the vehicles stop there (no install, no reports), which measures how fast
//! a launch reaches the fleet; `--ready-file` and `--notifications` are for
//! the scripts that drive such a measurement.

mod vehicle;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
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
    /// MQTT broker of the vehicles. Several, comma-separated, spread the
    /// vehicles over them in turn (brokers of a cluster, or addresses of
    /// one broker). Unset: the broker the server names
    /// (`GET /api/v1/info`).
    #[arg(long)]
    pub mqtt_url: Option<String>,
    /// Stop after this long at the latest.
    #[arg(long, default_value = "10m")]
    pub duration: String,
    /// Stop once no vehicle had anything to do for this long (after the
    /// first action was done). Unset: stop once every campaign the
    /// vehicles took part in has ended (completed, aborted or cancelled),
    /// or after --duration.
    #[arg(long)]
    pub until_idle: Option<String>,
    /// Vehicles take note of their actions but neither install nor report
    /// them: measures how fast a campaign reaches the fleet (the summary's
    /// notification latency). Stops once every vehicle has an action.
    #[arg(long)]
    pub receive_only: bool,
    /// Vehicles that start per second (MQTT connect, first HTTP or DDI
    /// poll); 0 starts them all at once.
    #[arg(long, default_value_t = 0)]
    pub connect_rate: u32,
    /// Once every vehicle is connected and subscribed (MQTT) or has polled
    /// once (HTTP, DDI), or has given up, write `{"connected": N,
    /// "stopped": N, "seconds": S, "started_at": T, "ready_at": T}` to this
    /// file; a script waits for it before it launches a campaign.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// Write one JSON line per vehicle and action to this file when the run
    /// ends: vin, action_id, campaign_id, received_at (when the vehicle first
    /// saw the action), after_launch_ms.
    #[arg(long, value_name = "FILE")]
    pub notifications: Option<PathBuf>,
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
    /// Vehicles connected and subscribed (MQTT) or that polled once.
    pub connected: AtomicU64,
    /// When the last of them did, as millis since the start.
    pub last_connected_ms: AtomicU64,
    /// MQTT connections that failed and were tried again.
    pub reconnects: AtomicU64,
}

/// A vehicle saw an action for the first time.
#[derive(Debug, Clone)]
pub struct Notification {
    pub vin: String,
    pub action_id: String,
    pub campaign_id: String,
    pub received_at: DateTime<Utc>,
}

/// Notification latency from the campaign's launch, in milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
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
    /// MQTT connections that failed and were tried again.
    reconnects: u64,
    /// Vehicles connected and subscribed (MQTT) or that polled once.
    connected: u64,
    /// From the start until the last of them connected.
    connect_seconds: Option<f64>,
    /// Actions the vehicles saw (each vehicle and action once).
    notified: u64,
    /// From the launch of the action's campaign to the vehicle seeing it.
    notify_ms: Option<Latency>,
}

/// What every simulated vehicle shares.
pub struct Fleet {
    pub http: reqwest::Client,
    pub base: String,
    /// Host and port of each MQTT broker; vehicle n uses number n modulo
    /// their count.
    pub mqtt_brokers: Vec<(String, u16)>,
    pub fail_rate: f64,
    pub install_time: Duration,
    pub poll_every: Option<Duration>,
    pub counters: Counters,
    pub started: Instant,
    /// `started` on the wall clock.
    pub started_at: DateTime<Utc>,
    pub receive_only: bool,
    pub notifications: Mutex<Vec<Notification>>,
}

impl Fleet {
    pub fn worked(&self) {
        self.counters
            .last_work_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A vehicle is connected (called once per vehicle).
    pub fn connected(&self) {
        self.counters
            .last_connected_ms
            .fetch_max(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.counters.connected.fetch_add(1, Ordering::Relaxed);
    }

    /// A vehicle saw an action for the first time.
    pub fn notified(&self, vin: &str, action: &serde_json::Value, at: DateTime<Utc>) {
        let s = |k: &str| action[k].as_str().unwrap_or_default().to_string();
        self.notifications
            .lock()
            .expect("notifications")
            .push(Notification {
                vin: vin.to_string(),
                action_id: s("action_id"),
                campaign_id: s("campaign_id"),
                received_at: at,
            });
    }

    /// With `--receive-only`: the action counts as seen and the vehicle as
    /// done, without an install.
    pub fn received_only(&self, first: &mut bool) {
        self.counters.actions_seen.fetch_add(1, Ordering::Relaxed);
        if *first {
            *first = false;
            self.counters.vehicles_done.fetch_add(1, Ordering::Relaxed);
        }
        self.worked();
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
    let idle = args
        .until_idle
        .as_deref()
        .map(|v| duration("until-idle", v))
        .transpose()?;
    let poll_every = args
        .poll_every
        .as_deref()
        .map(|v| duration("poll-every", v))
        .transpose()?;
    let api = conn.api()?;
    let mqtt_url = match (&args.mqtt_url, args.protocol) {
        (Some(url), _) => url.clone(),
        (None, Protocol::Http | Protocol::Ddi) => String::new(),
        (None, _) => server_broker(&api).await?,
    };
    let mqtt_brokers = if mqtt_url.is_empty() {
        Vec::new()
    } else {
        mqtt_url
            .split(',')
            .map(|u| vehicle::broker_address(u.trim()))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
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
        mqtt_brokers,
        fail_rate: args.fail_rate,
        install_time,
        poll_every,
        counters: Counters::default(),
        started: Instant::now(),
        started_at: Utc::now(),
        receive_only: args.receive_only,
        notifications: Mutex::new(Vec::new()),
    });
    let bar = ProgressBar::new(vins.len() as u64).with_style(style("vehicles done"));
    let mut tasks = Vec::with_capacity(vins.len());
    for (i, (v, token)) in vins.iter().zip(tokens).enumerate() {
        let protocol = protocol_of(args.protocol, i);
        let start_after = if args.connect_rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(i as f64 / f64::from(args.connect_rate))
        };
        tasks.push(tokio::spawn(vehicle::run(
            fleet.clone(),
            i,
            v.clone(),
            token,
            protocol,
            start_after,
        )));
    }
    let mut ready_written = false;
    let mut campaigns = CampaignWatch::default();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let c = &fleet.counters;
        bar.set_position(c.vehicles_done.load(Ordering::Relaxed));
        let now = fleet.started.elapsed();
        let last = Duration::from_millis(c.last_work_ms.load(Ordering::Relaxed));
        let any_work = c.actions_seen.load(Ordering::Relaxed) > 0;
        let connected = c.connected.load(Ordering::Relaxed);
        if let (Some(path), false) = (&args.ready_file, ready_written) {
            // Vehicles that gave up before they connected count as settled.
            let stopped = c.errors.load(Ordering::Relaxed);
            if connected + stopped >= u64::from(args.vehicles) {
                let ms = c.last_connected_ms.load(Ordering::Relaxed);
                write_ready(path, connected, stopped, fleet.started_at, ms)?;
                ready_written = true;
            }
        }
        let all_done = c.vehicles_done.load(Ordering::Relaxed) >= u64::from(args.vehicles);
        let idle_over = idle.is_some_and(|idle| any_work && now.saturating_sub(last) >= idle);
        let watching = idle.is_none() && !args.receive_only;
        let campaigns_over = if watching {
            campaigns.note(&fleet);
            campaigns.poll(&api).await
        } else {
            false
        };
        bar.set_message(format!(
            "{} succeeded, {} failed, {} reports{}",
            c.succeeded.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.reports.load(Ordering::Relaxed),
            if watching {
                format!("; {}", campaigns.waiting_for())
            } else {
                String::new()
            }
        ));
        if now >= limit || idle_over || campaigns_over || (args.receive_only && all_done) {
            break;
        }
    }
    for t in &tasks {
        t.abort();
    }
    bar.finish_and_clear();
    let c = &fleet.counters;
    let notifications = std::mem::take(&mut *fleet.notifications.lock().expect("notifications"));
    let launches = launch_times(&api, &notifications).await;
    let after_launch: Vec<Option<f64>> = notifications
        .iter()
        .map(|n| {
            launches.get(&n.campaign_id).map(|l| {
                (n.received_at - *l).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
            })
        })
        .collect();
    if let Some(path) = &args.notifications {
        write_notifications(path, &notifications, &after_launch)?;
    }
    let connected = c.connected.load(Ordering::Relaxed);
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
        reconnects: c.reconnects.load(Ordering::Relaxed),
        connected,
        connect_seconds: (connected > 0)
            .then(|| c.last_connected_ms.load(Ordering::Relaxed) as f64 / 1000.0),
        notified: notifications.len() as u64,
        notify_ms: latency(after_launch.into_iter().flatten().collect()),
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
                ("reconnects", s.reconnects.to_string()),
                (
                    "connected",
                    match s.connect_seconds {
                        Some(secs) => format!("{} (the last after {secs:.1} s)", s.connected),
                        None => "0".to_string(),
                    },
                ),
                (
                    "notified",
                    match &s.notify_ms {
                        Some(l) => format!(
                            "{} (after launch: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms)",
                            s.notified, l.p50, l.p99, l.max
                        ),
                        None => s.notified.to_string(),
                    },
                ),
            ] {
                t.add_row([k.to_string(), v]);
            }
            println!("{t}");
        }
    }
    Ok(if s.errors > 0 { 1 } else { 0 })
}

/// The vehicle-facing broker, as the server names it.
async fn server_broker(api: &crate::client::Api) -> anyhow::Result<String> {
    let info: serde_json::Value = api
        .send(api.request(Method::GET, "/api/v1/info"))
        .await
        .context("asking the server where its MQTT broker is (GET /api/v1/info); give --mqtt-url to skip that")?;
    info["mqtt"]["url"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| {
            "the server serves no MQTT broker (it runs without the mqtt-adapter role and has no mqtt_url); give --mqtt-url or use --protocol http or ddi".to_string()
        })
}

/// The campaigns the simulated vehicles took part in, and whether they have
/// all ended: the run's natural end, rather than a guess at idle time that
/// a wave's soak can outlast.
#[derive(Default)]
struct CampaignWatch {
    /// Campaign id to its last known state and name.
    seen: HashMap<String, (String, String)>,
    noted: usize,
    last_poll: Option<Instant>,
}

impl CampaignWatch {
    fn note(&mut self, fleet: &Fleet) {
        let n = fleet.notifications.lock().expect("notifications");
        for x in &n[self.noted..] {
            if !x.campaign_id.is_empty() {
                self.seen.entry(x.campaign_id.clone()).or_default();
            }
        }
        self.noted = n.len();
    }

    /// True once at least one campaign was seen and every one has ended.
    async fn poll(&mut self, api: &crate::client::Api) -> bool {
        if self.seen.is_empty() {
            return false;
        }
        if self
            .last_poll
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return self.all_ended();
        }
        self.last_poll = Some(Instant::now());
        for (id, (state, name)) in self.seen.iter_mut() {
            if ended(state) {
                continue;
            }
            let path = format!("/api/v1/campaigns/{id}");
            if let Ok(c) = api
                .send::<serde_json::Value>(api.request(Method::GET, &path))
                .await
            {
                *state = c["state"].as_str().unwrap_or_default().to_owned();
                *name = c["name"].as_str().unwrap_or_default().to_owned();
            }
        }
        self.all_ended()
    }

    fn all_ended(&self) -> bool {
        !self.seen.is_empty() && self.seen.values().all(|(state, _)| ended(state))
    }

    /// What the run waits for, for the progress line.
    fn waiting_for(&self) -> String {
        let open: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, (state, _))| !ended(state))
            .map(|(id, (state, name))| {
                let label = if name.is_empty() { id } else { name };
                let state = if state.is_empty() { "?" } else { state };
                format!("{label} ({state})")
            })
            .collect();
        match open.len() {
            0 if self.seen.is_empty() => "waiting for an action".into(),
            0 => String::new(),
            _ => format!("until {} ends", open.join(", ")),
        }
    }
}

fn ended(state: &str) -> bool {
    state
        .parse()
        .is_ok_and(ota_proto::v1::CampaignState::is_final)
}

/// When each campaign the vehicles saw was launched.
async fn launch_times(
    api: &crate::client::Api,
    notifications: &[Notification],
) -> HashMap<String, DateTime<Utc>> {
    let mut out = HashMap::new();
    let mut ids: Vec<&str> = notifications
        .iter()
        .map(|n| n.campaign_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let c: anyhow::Result<serde_json::Value> = api
            .send(api.request(Method::GET, &format!("/api/v1/campaigns/{id}")))
            .await;
        match c.map(|c| c["launched_at"].as_str().map(DateTime::parse_from_rfc3339)) {
            Ok(Some(Ok(t))) => {
                out.insert(id.to_string(), t.with_timezone(&Utc));
            }
            Ok(_) => eprintln!("campaign {id} has no launch time: no latency for its actions"),
            Err(e) => eprintln!("cannot read campaign {id}: {e:#}"),
        }
    }
    out
}

fn latency(mut ms: Vec<f64>) -> Option<Latency> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(f64::total_cmp);
    let q = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Some(Latency {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: ms[ms.len() - 1],
    })
}

/// Written whole under another name, then renamed: a reader never sees
/// half of it.
fn write_ready(
    path: &Path,
    connected: u64,
    stopped: u64,
    started_at: DateTime<Utc>,
    ms: u64,
) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    let ready_at = started_at + chrono::Duration::milliseconds(ms as i64);
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let line = serde_json::json!({"connected": connected, "stopped": stopped, "seconds": ms as f64 / 1000.0,
        "started_at": at(started_at), "ready_at": at(ready_at)});
    std::fs::write(&tmp, format!("{line}\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn write_notifications(
    path: &Path,
    notifications: &[Notification],
    after_launch: &[Option<f64>],
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?,
    );
    for (n, ms) in notifications.iter().zip(after_launch) {
        let line = serde_json::json!({
            "vin": n.vin,
            "action_id": n.action_id,
            "campaign_id": n.campaign_id,
            "received_at": n.received_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "after_launch_ms": ms,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_observed_values() {
        assert!(latency(Vec::new()).is_none());
        let l = latency((1..=200).rev().map(f64::from).collect()).unwrap();
        assert_eq!((l.p50, l.p90, l.p99, l.max), (100.0, 180.0, 198.0, 200.0));
        let one = latency(vec![7.5]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (7.5, 7.5, 7.5));
    }

    #[test]
    fn several_brokers_are_read_from_one_flag() {
        let brokers: Vec<_> = "mqtt://127.0.0.1:1883, tcp://broker"
            .split(',')
            .map(|u| vehicle::broker_address(u.trim()).unwrap())
            .collect();
        assert_eq!(
            brokers,
            [
                ("127.0.0.1".to_string(), 1883),
                ("broker".to_string(), 1883)
            ]
        );
        assert!(vehicle::broker_address("http://x").is_err());
    }
}
