//! One simulated vehicle: the protocol loop that finds its actions, and the
//! install it carries out for each, whichever protocol reports it.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::Utc;
use ota_proto::v1::ActionState;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{Fleet, Protocol};

pub async fn run(
    fleet: Arc<Fleet>,
    n: usize,
    vin: String,
    token: String,
    protocol: Protocol,
    start_after: Duration,
) {
    tokio::time::sleep(start_after).await;
    let result = match protocol {
        Protocol::Http | Protocol::Mixed => http(&fleet, &vin, &token).await,
        Protocol::Ddi => ddi(&fleet, &vin, &token).await,
        Protocol::Mqtt => mqtt(&fleet, n, &vin, &token).await,
    };
    if let Err(e) = result {
        fleet.counters.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("simulated vehicle {vin} stopped: {e:#}");
    }
}

/// How a vehicle tells the platform about one action.
enum Reporter<'a> {
    Http {
        vin: &'a str,
        token: &'a str,
        action_id: String,
    },
    Ddi {
        feedback: String,
        token: &'a str,
        action_id: String,
    },
    Mqtt {
        client: &'a rumqttc::AsyncClient,
        vin: &'a str,
        action_id: String,
    },
}

impl Reporter<'_> {
    async fn report(
        &self,
        f: &Fleet,
        state: ActionState,
        progress: u32,
        message: &str,
    ) -> anyhow::Result<()> {
        // Microseconds since the fleet started: increasing for every report
        // of a vehicle, whatever the protocol.
        let seq = f.started.elapsed().as_micros() as u64;
        match self {
            Reporter::Http {
                vin,
                token,
                action_id,
            } => {
                let r = f
                    .http
                    .post(format!("{}/v1/vehicles/{vin}/actions/{action_id}/status", f.base))
                    .bearer_auth(token)
                    .json(&json!({"state": state, "progress": progress, "message": message, "seq": seq}))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!(
                        "status {state} for action {action_id}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
            }
            Reporter::Ddi {
                feedback,
                token,
                action_id,
            } => {
                let (execution, finished) = match state {
                    ActionState::Accepted => ("proceeding", "none"),
                    ActionState::Downloading => ("download", "none"),
                    ActionState::Installing => ("proceeding", "none"),
                    ActionState::Succeeded => ("closed", "success"),
                    ActionState::Failed => ("closed", "failure"),
                    ActionState::Rejected => ("rejected", "none"),
                    other => bail!("no DDI feedback for state {other}"),
                };
                let r = f
                    .http
                    .post(feedback)
                    .header("authorization", format!("TargetToken {token}"))
                    .json(&json!({"id": action_id, "status": {"execution": execution,
                        "result": {"finished": finished, "progress": {"cnt": progress, "of": 100}},
                        "details": [message]}}))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!(
                        "DDI feedback {execution} for action {action_id}: {}",
                        r.status()
                    );
                }
            }
            Reporter::Mqtt {
                client,
                vin,
                action_id,
            } => {
                client
                    .publish(
                        format!("ota/v1/vehicles/{vin}/status"),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        json!({"action_id": action_id, "state": state, "progress": progress, "message": message, "seq": seq})
                            .to_string(),
                    )
                    .await?;
            }
        }
        f.counters.reports.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Downloads an artifact and checks its size and SHA-256.
async fn download(
    f: &Fleet,
    url: &str,
    auth: (&str, &str),
    sha256: &str,
    size: u64,
) -> anyhow::Result<()> {
    let r = f
        .http
        .get(url)
        .header("authorization", format!("{} {}", auth.0, auth.1))
        .send()
        .await
        .with_context(|| format!("downloading {url}"))?;
    if !r.status().is_success() {
        bail!("downloading {url}: {}", r.status());
    }
    let body = r.bytes().await?;
    let got = hex::encode(Sha256::digest(&body));
    if !sha256.is_empty() && got != sha256.to_ascii_lowercase() {
        bail!("{url}: sha256 {got} does not match {sha256}");
    }
    if size > 0 && body.len() as u64 != size {
        bail!("{url}: {} bytes, expected {size}", body.len());
    }
    f.counters.downloads.fetch_add(1, Ordering::Relaxed);
    f.counters
        .downloaded_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Carries out one install: accept, download and check, install, report
/// the outcome. Returns the version now installed on success.
async fn install(
    f: &Fleet,
    vin: &str,
    reporter: &Reporter<'_>,
    artifacts: &[(String, String, u64)],
    auth: (&str, &str),
    first: &mut bool,
) -> anyhow::Result<bool> {
    f.counters.actions_seen.fetch_add(1, Ordering::Relaxed);
    f.worked();
    reporter.report(f, ActionState::Accepted, 0, "").await?;
    reporter.report(f, ActionState::Downloading, 10, "").await?;
    for (url, sha256, size) in artifacts {
        if let Err(e) = download(f, url, auth, sha256, *size).await {
            reporter
                .report(
                    f,
                    ActionState::Failed,
                    0,
                    &format!("download failed: {e:#}"),
                )
                .await?;
            f.counters.failed.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
    }
    reporter.report(f, ActionState::Installing, 50, "").await?;
    tokio::time::sleep(f.install_time).await;
    let (draw, reason) = outcome(vin, artifacts);
    let ok = draw >= f.fail_rate;
    if ok {
        reporter.report(f, ActionState::Succeeded, 100, "").await?;
        f.counters.succeeded.fetch_add(1, Ordering::Relaxed);
    } else {
        reporter
            .report(
                f,
                ActionState::Failed,
                60,
                &format!("simulated install failure: {reason}"),
            )
            .await?;
        f.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    if *first {
        *first = false;
        f.counters.vehicles_done.fetch_add(1, Ordering::Relaxed);
    }
    f.worked();
    Ok(ok)
}

/// Whether a vehicle's install of these artifacts fails is drawn from a
/// hash of the VIN and the artifacts' file names, not at random: the same fleet and package fail the same
/// way on every run (a demo or a test gets the same count each time), and a
/// retry of a failing install fails again, as a real fault would. The
/// reason varies, so failures fall into a few groups.
fn outcome(vin: &str, artifacts: &[(String, String, u64)]) -> (f64, &'static str) {
    const REASONS: [&str; 3] = [
        "not enough free space",
        "battery too low",
        "ecu did not answer after flashing",
    ];
    // By file name, not content: the README's firmware is random bytes,
    // and its quickstart must end the same way every time.
    let mut h = Sha256::new();
    h.update(vin.as_bytes());
    for (url, _, _) in artifacts {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        h.update(path.rsplit('/').next().unwrap_or_default().as_bytes());
    }
    let d = h.finalize();
    let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    let draw = (n >> 11) as f64 / (1u64 << 53) as f64;
    (draw, REASONS[usize::from(d[8]) % REASONS.len()])
}

fn artifacts_of(package: &Value) -> Vec<(String, String, u64)> {
    package["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["url"].as_str().unwrap_or_default().to_string(),
                a["sha256"].as_str().unwrap_or_default().to_string(),
                a["size"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The actions a vehicle has taken on, each attempt once: a retry comes
/// as the same action with the next `attempt` (DDI: a new action id), so a
/// document still in flight when a failure was reported is not one.
#[derive(Default)]
struct Taken(HashSet<String>);

impl Taken {
    /// Whether this attempt is new; it counts as taken from now on.
    fn take(&mut self, a: &Value) -> bool {
        let attempt = a["attempt"].as_u64().unwrap_or(1);
        self.0.insert(format!("{}#{attempt}", action_id(a)))
    }
}

fn action_id(a: &Value) -> &str {
    a["action_id"].as_str().unwrap_or_default()
}

fn inventory(ecu: &str, version: &str) -> Value {
    json!({"ecus": {ecu: {"hw": "H2", "sw": version}}})
}

async fn http(f: &Fleet, vin: &str, token: &str) -> anyhow::Result<()> {
    let mut etag: Option<String> = None;
    let mut taken = Taken::default();
    let mut first = true;
    let mut wait = Duration::from_secs(1);
    let mut connected = false;
    loop {
        let mut req = f
            .http
            .get(format!("{}/v1/vehicles/{vin}/actions", f.base))
            .bearer_auth(token);
        if let Some(e) = &etag {
            req = req.header("if-none-match", e);
        }
        let r = req.send().await?;
        let at = Utc::now();
        f.counters.polls.fetch_add(1, Ordering::Relaxed);
        if !connected && matches!(r.status().as_u16(), 200 | 304) {
            connected = true;
            f.connected();
        }
        match r.status().as_u16() {
            304 => {
                f.counters.not_modified.fetch_add(1, Ordering::Relaxed);
            }
            200 => {
                etag = r
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let doc: Value = r.json().await?;
                wait = Duration::from_secs(doc["poll_after_s"].as_u64().unwrap_or(1));
                for a in doc["actions"].as_array().into_iter().flatten() {
                    if !taken.take(a) {
                        continue;
                    }
                    let id = action_id(a).to_string();
                    f.notified(vin, a, at);
                    if f.receive_only {
                        f.received_only(&mut first);
                        continue;
                    }
                    let reporter = Reporter::Http {
                        vin,
                        token,
                        action_id: id.clone(),
                    };
                    let ecu = a["ecu"].as_str().unwrap_or_default();
                    let version = a["package"]["version"].as_str().unwrap_or_default();
                    let ok = install(
                        f,
                        vin,
                        &reporter,
                        &artifacts_of(&a["package"]),
                        ("Bearer", token),
                        &mut first,
                    )
                    .await?;
                    if ok {
                        f.http
                            .put(format!("{}/v1/vehicles/{vin}/inventory", f.base))
                            .bearer_auth(token)
                            .json(&inventory(ecu, version))
                            .send()
                            .await?
                            .error_for_status()?;
                    }
                    // The document changes after a report: fetch it again.
                    etag = None;
                }
            }
            429 | 503 => {}
            s => bail!("GET actions of {vin}: {s}"),
        }
        tokio::time::sleep(f.poll_every.unwrap_or(wait)).await;
    }
}

/// `HH:MM:SS` from a DDI poll answer.
fn ddi_sleep(v: &Value) -> Option<Duration> {
    let s = v["config"]["polling"]["sleep"].as_str()?;
    let parts: Vec<u64> = s
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts[..] {
        [h, m, s] => Some(Duration::from_secs(h * 3600 + m * 60 + s)),
        _ => None,
    }
}

async fn ddi(f: &Fleet, vin: &str, token: &str) -> anyhow::Result<()> {
    let auth = format!("TargetToken {token}");
    let mut taken = Taken::default();
    let mut first = true;
    let mut connected = false;
    loop {
        let r = f
            .http
            .get(format!("{}/default/controller/v1/{vin}", f.base))
            .header("authorization", &auth)
            .send()
            .await?;
        f.counters.polls.fetch_add(1, Ordering::Relaxed);
        if matches!(r.status().as_u16(), 429 | 503) {
            // Too fast, or the platform is busy: come back later.
            tokio::time::sleep(f.poll_every.unwrap_or(Duration::from_secs(1))).await;
            continue;
        }
        if !r.status().is_success() {
            bail!("DDI poll of {vin}: {}", r.status());
        }
        if !connected {
            connected = true;
            f.connected();
        }
        let poll: Value = r.json().await?;
        let wait = ddi_sleep(&poll).unwrap_or(Duration::from_secs(1));
        if let Some(href) = poll["_links"]["deploymentBase"]["href"].as_str() {
            let d: Value = f
                .http
                .get(href)
                .header("authorization", &auth)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let at = Utc::now();
            let id = d["id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| d["id"].to_string());
            if taken.take(&json!({ "action_id": id })) {
                // DDI does not name the campaign: no latency from its launch.
                f.notified(vin, &json!({ "action_id": id }), at);
                if f.receive_only {
                    f.received_only(&mut first);
                    tokio::time::sleep(f.poll_every.unwrap_or(wait)).await;
                    continue;
                }
                let mut artifacts = Vec::new();
                for chunk in d["deployment"]["chunks"].as_array().into_iter().flatten() {
                    for a in chunk["artifacts"].as_array().into_iter().flatten() {
                        let link = a["_links"]["download-http"]["href"]
                            .as_str()
                            .or(a["_links"]["download"]["href"].as_str())
                            .unwrap_or_default();
                        artifacts.push((
                            link.to_string(),
                            a["hashes"]["sha256"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            a["size"].as_u64().unwrap_or(0),
                        ));
                    }
                }
                let base = href.split('?').next().unwrap_or(href);
                let reporter = Reporter::Ddi {
                    feedback: format!("{base}/feedback"),
                    token,
                    action_id: id.clone(),
                };
                // Only what a DDI device can do: the platform moves the
                // inventory itself when the feedback says succeeded.
                install(
                    f,
                    vin,
                    &reporter,
                    &artifacts,
                    ("TargetToken", token),
                    &mut first,
                )
                .await?;
                continue;
            }
        }
        tokio::time::sleep(f.poll_every.unwrap_or(wait)).await;
    }
}

/// Connection attempts in a row before an MQTT vehicle gives up.
const MQTT_ATTEMPTS: u32 = 5;

async fn mqtt(f: &Fleet, n: usize, vin: &str, token: &str) -> anyhow::Result<()> {
    let (host, port) = f.mqtt_brokers[n % f.mqtt_brokers.len()].clone();
    let mut opts = rumqttc::MqttOptions::new(vin, host, port);
    opts.set_credentials(vin, token);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
    let actions = format!("ota/v1/vehicles/{vin}/actions");
    // The event loop must keep running while an install takes its time: the
    // documents go to a worker through a channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Value, chrono::DateTime<Utc>)>(8);
    let pump = async {
        let mut connected = false;
        let mut failures = 0;
        loop {
            match events.poll().await {
                // A clean session each time: subscribe on every connect.
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    failures = 0;
                    client.try_subscribe(&actions, rumqttc::QoS::AtLeastOnce)?;
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let at = Utc::now();
                    f.counters.polls.fetch_add(1, Ordering::Relaxed);
                    if let Ok(doc) = serde_json::from_slice::<Value>(&p.payload) {
                        let _ = tx.send((doc, at)).await;
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        return Err(anyhow::anyhow!(
                            "the broker refused {vin} its actions topic"
                        ));
                    }
                    if !connected {
                        connected = true;
                        f.connected();
                    }
                }
                Ok(_) => {}
                // Refused for good (a wrong token); a full broker's refusal
                // is tried again below.
                Err(
                    e @ rumqttc::ConnectionError::ConnectionRefused(
                        rumqttc::ConnectReturnCode::BadUserNamePassword
                        | rumqttc::ConnectReturnCode::NotAuthorized
                        | rumqttc::ConnectReturnCode::BadClientId
                        | rumqttc::ConnectReturnCode::RefusedProtocolVersion,
                    ),
                ) => {
                    return Err::<(), anyhow::Error>(anyhow::anyhow!(
                        "mqtt connection of {vin}: {e}"
                    ));
                }
                // Like a vehicle: try again after a while, a few times.
                Err(e) => {
                    failures += 1;
                    if failures >= MQTT_ATTEMPTS {
                        return Err(anyhow::anyhow!(
                            "mqtt connection of {vin}, {failures} attempts: {e}"
                        ));
                    }
                    f.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    let backoff = Duration::from_millis(500 << failures)
                        + Duration::from_millis(rand::random::<u64>() % 1000);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    };
    let work = async {
        let mut taken = Taken::default();
        let mut first = true;
        while let Some((doc, at)) = rx.recv().await {
            for a in doc["actions"].as_array().into_iter().flatten() {
                if !taken.take(a) {
                    continue;
                }
                let id = action_id(a).to_string();
                f.notified(vin, a, at);
                if f.receive_only {
                    f.received_only(&mut first);
                    continue;
                }
                let reporter = Reporter::Mqtt {
                    client: &client,
                    vin,
                    action_id: id.clone(),
                };
                let ecu = a["ecu"].as_str().unwrap_or_default();
                let version = a["package"]["version"].as_str().unwrap_or_default();
                let ok = install(
                    f,
                    vin,
                    &reporter,
                    &artifacts_of(&a["package"]),
                    ("Bearer", token),
                    &mut first,
                )
                .await?;
                if ok {
                    client
                        .publish(
                            format!("ota/v1/vehicles/{vin}/inventory"),
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            inventory(ecu, version).to_string(),
                        )
                        .await?;
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        r = pump => r,
        r = work => r,
    }
}

/// Host and port of `mqtt://host:port` (or `tcp://`).
pub fn broker_address(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .with_context(|| format!("mqtt url {url:?} must start with mqtt:// or tcp://"))?;
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) => Ok((
            host.to_string(),
            port.parse()
                .with_context(|| format!("mqtt url {url:?}: bad port {port:?}"))?,
        )),
        None => Ok((rest.to_string(), 1883)),
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::*;

    #[test]
    fn each_attempt_is_taken_once() {
        let mut t = Taken::default();
        assert!(t.take(&json!({"action_id": "a"})));
        assert!(
            !t.take(&json!({"action_id": "a"})),
            "seen again: not a retry"
        );
        assert!(!t.take(&json!({"action_id": "a", "attempt": 1})));
        assert!(t.take(&json!({"action_id": "a", "attempt": 2})), "a retry");
        assert!(t.take(&json!({"action_id": "b"})));
    }

    #[test]
    fn failures_are_the_same_every_run_and_near_the_rate() {
        let art = vec![(
            "https://ota.example/artifacts/ab/bms-2.3.1.bin".to_string(),
            "ab".repeat(32),
            1,
        )];
        // The same file over another protocol's link: the same outcome.
        let ddi = vec![(
            "https://ota.example/default/controller/v1/X/softwaremodules/7/artifacts/bms-2.3.1.bin"
                .to_string(),
            "ef".repeat(32),
            1,
        )];
        assert_eq!(
            outcome("WVWSMLTR000000007", &art),
            outcome("WVWSMLTR000000007", &ddi)
        );
        assert_eq!(
            outcome("WVWSMLTR000000007", &art),
            outcome("WVWSMLTR000000007", &art)
        );
        let failing = (0..10_000)
            .filter(|n| outcome(&crate::simulate::vin(*n), &art).0 < 0.05)
            .count();
        assert!(
            (400..=600).contains(&failing),
            "{failing} of 10,000 below 0.05"
        );
        let other = vec![(
            "https://ota.example/artifacts/cd/bms-2.4.0.bin".to_string(),
            "cd".repeat(32),
            1,
        )];
        assert_ne!(
            (0..100)
                .map(|n| outcome(&crate::simulate::vin(n), &art).0 < 0.5)
                .collect::<Vec<_>>(),
            (0..100)
                .map(|n| outcome(&crate::simulate::vin(n), &other).0 < 0.5)
                .collect::<Vec<_>>(),
            "another package draws anew"
        );
    }
}
