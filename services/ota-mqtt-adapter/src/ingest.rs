//! Vehicle reports: the adapter's MQTT client consumes status, inventory and
//! presence through shared subscriptions, hands each to the platform, and
//! acknowledges it only once the platform recorded it. Each report is
//! recorded in a span of its own (`mqtt.report`) that continues the trace
//! of the report's `traceparent` user property, if it has one, so the
//! calls to the platform join that trace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ota_common::rate::{Budget, VehicleLimits};
use ota_common::trace::{self, SpanContext};
use ota_common::Vin;
use ota_proto::v1 as pb;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::topics::{Kind, Topics};
use crate::{stopping, Backends, Stopped};

pub(crate) struct Ingest {
    pub client: AsyncClient,
    pub topics: Topics,
    pub share_group: String,
    /// The topics this client consumes. With the embedded broker, status
    /// and inventory are recorded inside the broker before it acknowledges
    /// them ([`Recorder`]), so only presence (whose Last Will the broker
    /// publishes itself) comes through here.
    pub kinds: Vec<Kind>,
    pub recorder: Arc<Recorder>,
    /// Bumped on every connection without a session present (see the
    /// publisher, which then republishes the documents).
    pub fresh_sessions: Arc<AtomicU64>,
}

/// A vehicle whose document is to be published if it was not yet, with
/// the trace of what brought it online (its presence report), if any.
pub(crate) type Ensure = (String, Option<SpanContext>);

/// The `traceparent` user property of an MQTT 5 message (the first, should
/// there be several).
pub(crate) fn traceparent<'a>(
    user_properties: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<&'a str> {
    user_properties
        .into_iter()
        .find(|(k, _)| *k == trace::TRACEPARENT)
        .map(|(_, v)| v)
}

fn publish_traceparent(p: &Publish) -> Option<&str> {
    let props: &PublishProperties = p.properties.as_ref()?;
    traceparent(
        props
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// Turns vehicle reports into calls to the platform.
pub(crate) struct Recorder {
    pub topics: Topics,
    pub max_payload: usize,
    pub backends: Backends,
    /// VINs that came online: their document is published if needed.
    pub ensure: mpsc::Sender<Ensure>,
    /// Every report takes from its vehicle's report budget.
    pub limits: Arc<VehicleLimits>,
    /// Notes vehicles heard from, for their `last_seen`.
    pub last_seen: Option<ota_common::last_seen::LastSeen>,
}

impl Recorder {
    /// Notes that `vin` (authenticated) was heard from now.
    pub fn saw(&self, vin: &str) {
        if let Some(s) = &self.last_seen {
            s.record(vin);
        }
    }
}

/// What became of one report.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Recorded,
    /// Refused for good (garbage, unknown action, ...): counted, logged and
    /// acknowledged, since sending it again cannot help. The reason is the
    /// `reason` label of `ota_mqtt_rejected_total`, the detail what was
    /// wrong (for an MQTT 5 reason string).
    Rejected(&'static str, String),
    /// Over the vehicle's report budget: not recorded, counted; the same
    /// report is welcome again after this long.
    Limited(Duration),
    /// The platform stayed unavailable past the caller's patience: the
    /// report must not be acknowledged.
    Unavailable,
}

#[derive(Deserialize)]
struct StatusReport {
    action_id: String,
    state: String,
    #[serde(default)]
    progress: u32,
    #[serde(default)]
    message: String,
    seq: u64,
}

#[derive(Deserialize)]
struct InventoryReport {
    #[serde(default)]
    ecus: HashMap<String, EcuReport>,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

#[derive(Deserialize)]
struct EcuReport {
    #[serde(default)]
    hw: String,
    #[serde(default)]
    sw: String,
}

/// Why a report was not recorded: refused (the `reason` label of
/// `ota_mqtt_rejected_total`), over the vehicle's report budget, or the
/// platform did not answer in time.
#[derive(Debug)]
enum Rejected {
    Refused(&'static str, String),
    Limited(String, Duration),
    Unavailable,
}

impl Ingest {
    pub async fn run(self, mut eventloop: EventLoop, mut stopped: Stopped) {
        let this = Arc::new(self);
        // Bumped on every (re)connect: a packet id is only meaningful on the
        // connection it arrived on, so a report finished after a reconnect is
        // not acknowledged (the broker redelivers it; reports are idempotent).
        let connection = Arc::new(AtomicU64::new(0));
        // Reports are spread over lanes by VIN: one vehicle's reports are
        // recorded in the order they arrived (an inventory report has no
        // sequence number to settle a race), and the platform sees at most
        // LANES calls at a time however much the broker hands over.
        let mut workers = JoinSet::new();
        let lanes: Vec<mpsc::UnboundedSender<(Publish, u64)>> = (0..LANES)
            .map(|_| {
                let (tx, mut rx) = mpsc::unbounded_channel::<(Publish, u64)>();
                let (this, connection) = (this.clone(), connection.clone());
                workers.spawn(async move {
                    while let Some((p, on)) = rx.recv().await {
                        // A topic that is not UTF-8 is none of ours: refused.
                        let topic = String::from_utf8_lossy(&p.topic);
                        let outcome = this
                            .recorder
                            .record(&topic, &p.payload, p.retain, None, publish_traceparent(&p))
                            .await;
                        let presence =
                            matches!(this.topics.parse(&topic), Some((_, Kind::Presence)));
                        if presence && matches!(outcome, Outcome::Rejected(..)) {
                            this.clear_retained(&topic).await;
                        }
                        if connection.load(Ordering::SeqCst) == on {
                            if let Err(e) = this.client.ack(&p).await {
                                tracing::debug!(error = %e, "acknowledging an MQTT report");
                            }
                        }
                    }
                });
                tx
            })
            .collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            let event = tokio::select! {
                _ = stopping(&mut stopped) => break,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    connection.fetch_add(1, Ordering::SeqCst);
                    if !ack.session_present {
                        this.fresh_sessions.fetch_add(1, Ordering::SeqCst);
                    }
                    backoff = Duration::from_millis(100);
                    tracing::info!(
                        session_present = ack.session_present,
                        "MQTT adapter connected"
                    );
                    // Subscribing again is harmless when the session kept the
                    // subscriptions, and needed when the broker lost them.
                    let filters = this.kinds.iter().map(|k| {
                        Filter::new(
                            format!("$share/{}/{}", this.share_group, this.topics.filter(*k)),
                            QoS::AtLeastOnce,
                        )
                    });
                    if let Err(e) = this.client.try_subscribe_many(filters) {
                        tracing::error!(error = %e, "MQTT adapter could not subscribe");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as C;
                    if ack.return_codes.iter().any(|c| !matches!(c, C::Success(_))) {
                        tracing::error!(?ack, "MQTT broker refused the adapter's subscriptions");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // The broker's in-flight window for this client bounds
                    // what can wait in the lanes.
                    let on = connection.load(Ordering::SeqCst);
                    let lane = lane_of(&p.topic);
                    let _ = lanes[lane].send((p, on));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "MQTT adapter connection lost");
                    tokio::select! {
                        _ = stopping(&mut stopped) => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Reports still being recorded stay unacknowledged: redelivered.
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
}

impl Ingest {
    /// An external broker may have retained a presence that is neither
    /// `online` nor `offline` (the ACL hook cannot see payloads): the
    /// adapter, which may publish anywhere, deletes it, so it is not
    /// replayed to later subscribers. The deletion (an empty retained
    /// message) comes back here and is ignored.
    async fn clear_retained(&self, topic: &str) {
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, Vec::new())
            .await
        {
            tracing::warn!(topic, error = %e, "clearing an invalid retained presence");
        }
    }
}

impl Recorder {
    /// Records one report, in a span that continues the trace of the
    /// report's `traceparent` (a malformed one is counted, and the report
    /// recorded in a new trace). A transient failure is retried for
    /// `patience` (`None`: until it works), the report unacknowledged
    /// meanwhile.
    pub async fn record(
        &self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        patience: Option<Duration>,
        traceparent: Option<&str>,
    ) -> Outcome {
        let kind = self.topics.parse(topic).map(|(_, k)| k);
        let span = report_span(kind);
        trace::continue_from(&span, traceparent, "mqtt");
        self.record_in(topic, kind, payload, retain, patience)
            .instrument(span)
            .await
    }

    async fn record_in(
        &self,
        topic: &str,
        kind: Option<Kind>,
        payload: &[u8],
        retain: bool,
        patience: Option<Duration>,
    ) -> Outcome {
        let give_up = patience.map(|p| tokio::time::Instant::now() + p);
        match self.process(topic, payload, retain, give_up).await {
            Ok(()) => {
                metrics::counter!("ota_mqtt_reports_total", "kind" => kind.map_or("other", |k| k.as_str()))
                    .increment(1);
                Outcome::Recorded
            }
            Err(Rejected::Refused(reason, detail)) => {
                metrics::counter!("ota_mqtt_rejected_total", "reason" => reason).increment(1);
                tracing::warn!(topic, reason, detail, "MQTT report rejected");
                Outcome::Rejected(reason, detail)
            }
            Err(Rejected::Limited(vin, wait)) => {
                metrics::counter!("ota_mqtt_rejected_total", "reason" => "rate_limited")
                    .increment(1);
                tracing::info!(%vin, topic, retry_in_ms = wait.as_millis() as u64, "MQTT report over the vehicle's report budget; not recorded");
                Outcome::Limited(wait)
            }
            Err(Rejected::Unavailable) => {
                tracing::warn!(
                    topic,
                    "MQTT report not recorded in time; left unacknowledged"
                );
                Outcome::Unavailable
            }
        }
    }

    async fn process(
        &self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        give_up: Option<tokio::time::Instant>,
    ) -> Result<(), Rejected> {
        let (vin, kind) = self
            .topics
            .parse(topic)
            .ok_or_else(|| Rejected::Refused("topic", topic.to_owned()))?;
        if payload.len() > self.max_payload {
            return Err(Rejected::Refused(
                "too_large",
                format!("{} bytes from {vin}", payload.len()),
            ));
        }
        let vin = Vin::parse(vin)
            .map_err(|e| Rejected::Refused("vin", e.to_string()))?
            .to_string();
        tracing::Span::current().record("vin", vin.as_str());
        let online = match (kind, payload) {
            (Kind::Presence, b"online") => true,
            (Kind::Presence, b"offline") => false,
            // The deletion of a retained presence (the adapter's own, see
            // `Ingest::clear_retained`, or the vehicle's): nothing to record.
            (Kind::Presence, b"") => return Ok(()),
            (Kind::Presence, _) => {
                return Err(Rejected::Refused(
                    "presence",
                    format!("presence of {vin} is neither online nor offline"),
                ))
            }
            _ => false,
        };
        // A retained presence is replayed on every (re)subscribe; it says
        // nothing about when the vehicle was last seen, and was no request
        // of the vehicle's.
        if kind == Kind::Presence && retain {
            return Ok(());
        }
        if let Err(wait) = self.limits.check(&vin, Budget::Report) {
            return Err(Rejected::Limited(vin, wait));
        }
        if kind != Kind::Presence {
            self.saw(&vin);
        }
        match kind {
            Kind::Status => {
                let r: StatusReport = serde_json::from_slice(payload)
                    .map_err(|e| Rejected::Refused("payload", format!("status of {vin}: {e}")))?;
                // Refused as the campaign manager refuses it over gRPC.
                let state = pb::ActionState::parse_reported(&r.state)
                    .map_err(|e| Rejected::Refused("invalid", e))?;
                let req = pb::ReportStatusRequest {
                    vin,
                    action_id: r.action_id,
                    state: state.into(),
                    progress: r.progress,
                    message: r.message,
                    seq: r.seq,
                    protocol: "mqtt".into(),
                };
                self.retry(give_up, || {
                    let mut c = self.backends.campaigns.clone();
                    let req = req.clone();
                    async move { c.report_status(req).await.map(|_| ()) }
                })
                .await
            }
            Kind::Inventory => {
                let r: InventoryReport = serde_json::from_slice(payload).map_err(|e| {
                    Rejected::Refused("payload", format!("inventory of {vin}: {e}"))
                })?;
                let req = pb::ReportInventoryRequest {
                    vin,
                    ecus: r
                        .ecus
                        .into_iter()
                        .map(|(k, e)| (k, pb::Ecu { hw: e.hw, sw: e.sw }))
                        .collect(),
                    attributes: r.attributes,
                };
                self.report_inventory(req, give_up).await
            }
            Kind::Presence => {
                if online {
                    let _ = self
                        .ensure
                        .try_send((vin.clone(), trace::current_context()));
                }
                // An inventory report with no changes moves last_seen.
                self.report_inventory(
                    pb::ReportInventoryRequest {
                        vin,
                        ..Default::default()
                    },
                    give_up,
                )
                .await
            }
            Kind::Actions => Err(Rejected::Refused("topic", topic.to_owned())),
        }
    }

    async fn report_inventory(
        &self,
        req: pb::ReportInventoryRequest,
        give_up: Option<tokio::time::Instant>,
    ) -> Result<(), Rejected> {
        self.retry(give_up, || {
            let mut c = self.backends.vehicles.clone();
            let req = req.clone();
            async move { c.report_inventory(req).await.map(|_| ()) }
        })
        .await
    }

    /// Calls until the platform answers or `give_up` passes: a transient
    /// failure is retried (the report stays unacknowledged meanwhile), a
    /// refusal is final.
    async fn retry<F, Fut>(
        &self,
        give_up: Option<tokio::time::Instant>,
        call: F,
    ) -> Result<(), Rejected>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), tonic::Status>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            match call().await {
                Ok(()) => return Ok(()),
                Err(s) if transient(s.code()) => {
                    if give_up.is_some_and(|t| tokio::time::Instant::now() + backoff > t) {
                        return Err(Rejected::Unavailable);
                    }
                    tracing::warn!(code = ?s.code(), message = s.message(), "recording an MQTT report failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(s) => {
                    let reason = match s.code() {
                        tonic::Code::NotFound => "not_found",
                        tonic::Code::InvalidArgument => "invalid",
                        _ => "refused",
                    };
                    return Err(Rejected::Refused(reason, s.message().to_owned()));
                }
            }
        }
    }
}

/// The span one report is recorded in: a root of its own (whatever span
/// the broker's task is in), continued from the report's trace by the
/// caller. The VIN is recorded once it is known to be one.
fn report_span(kind: Option<Kind>) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "mqtt.report",
        kind = kind.map_or("other", Kind::as_str),
        vin = tracing::field::Empty,
    )
}

/// Concurrent report recordings per adapter. The campaign manager writes
/// concurrent status reports in one transaction, so throughput grows with
/// this (about 4,400 status reports/s at 64, against 18,000/s unbounded on
/// two cores); the broker's in-flight window for the adapter caps it too.
const LANES: usize = 1024;

/// The lane of a report: by the VIN in its topic (FNV-1a of the topic up to
/// the kind, so a vehicle's status and inventory share one lane).
fn lane_of(topic: &[u8]) -> usize {
    let vehicle = topic
        .iter()
        .rposition(|b| *b == b'/')
        .map_or(topic, |end| &topic[..end]);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in vehicle {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % LANES as u64) as usize
}

fn transient(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable | DeadlineExceeded | ResourceExhausted | Aborted | Cancelled | Unknown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vehicles_reports_share_a_lane_and_vehicles_spread() {
        let t = Topics::new(crate::topics::DEFAULT_PREFIX).unwrap();
        let vin = "WVWZZZE1ZMP000001";
        let lane = lane_of(t.topic(vin, Kind::Status).as_bytes());
        assert_eq!(lane_of(t.topic(vin, Kind::Inventory).as_bytes()), lane);
        assert_eq!(lane_of(t.topic(vin, Kind::Presence).as_bytes()), lane);
        let used: std::collections::HashSet<usize> = (0..1000)
            .map(|i| {
                lane_of(
                    t.topic(&format!("WVWZZZE1ZMP{i:06}"), Kind::Status)
                        .as_bytes(),
                )
            })
            .collect();
        assert!(used.len() > LANES / 2, "only {} lanes used", used.len());
        assert!(used.iter().all(|l| *l < LANES));
    }
}
