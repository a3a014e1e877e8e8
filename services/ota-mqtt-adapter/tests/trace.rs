//! W3C trace context over MQTT 5, with the embedded broker and with the
//! real Mosquitto at `OTA_TEST_MQTT_URL`: a vehicle's report carrying the
//! user property `traceparent` is recorded in that trace, a malformed one
//! is counted and the report still applied, and a document the adapter
//! publishes carries the trace of the event that caused it.
//!
//! Spans go to an in-memory OpenTelemetry exporter and counters to a
//! Prometheus recorder, both installed for the whole test process (nextest
//! runs each test in a process of its own): the embedded broker records
//! reports on its own tasks, which a thread's default would not reach.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{SpanContext, SpanId, TraceId, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use ota_bus::{topics, StagedEvent};
use ota_campaign_manager::model::ActionState;
use ota_common::trace;
use ota_mqtt_adapter::{MqttAdapterConfig, MqttAdapterHandle};
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use tracing_subscriber::layer::SubscriberExt;

const SUPERUSER: (&str, &str) = ("ota-test-superuser", "superuser-secret-0123456789");
const INVALID: &str = "ota_trace_context_invalid_total{carrier=\"mqtt\"}";

struct Telemetry {
    provider: SdkTracerProvider,
    exporter: InMemorySpanExporter,
    metrics: PrometheusHandle,
}

fn telemetry() -> &'static Telemetry {
    static T: OnceLock<Telemetry> = OnceLock::new();
    T.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per process");
        let recorder = PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        metrics::set_global_recorder(recorder).expect("one recorder per process");
        Telemetry {
            provider,
            exporter,
            metrics,
        }
    })
}

impl Telemetry {
    /// Every span ended so far.
    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().expect("spans flushed");
        self.exporter.get_finished_spans().expect("spans read")
    }

    fn invalid_mqtt_contexts(&self) -> u64 {
        let text = self.metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(INVALID)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// A `traceparent` no test process has sent before.
fn fresh_traceparent() -> (String, TraceId, SpanId) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (
        format!("00-{trace_id}-{span_id}-01"),
        TraceId::from_hex(&trace_id).unwrap(),
        SpanId::from_hex(&span_id).unwrap(),
    )
}

fn with_traceparent(value: &str) -> PublishProperties {
    PublishProperties {
        user_properties: vec![("traceparent".into(), value.into())],
        ..Default::default()
    }
}

/// The `traceparent` user property of a received message, parsed.
fn carried(m: &Publish) -> Option<SpanContext> {
    let props = m.properties.as_ref()?;
    let (_, v) = props
        .user_properties
        .iter()
        .find(|(k, _)| k == "traceparent")?;
    Some(trace::parse(v).expect("a well-formed traceparent"))
}

fn status(action: &str, state: &str, seq: u64) -> Vec<u8> {
    serde_json::json!({"action_id": action, "state": state, "progress": seq, "message": "", "seq": seq})
        .to_string()
        .into_bytes()
}

#[derive(Clone, Copy, PartialEq)]
enum Broker {
    Embedded,
    Mosquitto,
}

/// The adapter on one broker, and MQTT 5 clients of that broker.
struct Setup {
    broker: Broker,
    adapter: MqttAdapterHandle,
    _stop: tokio::sync::watch::Sender<bool>,
    addr: SocketAddr,
    prefix: String,
}

impl Setup {
    async fn start(p: &Platform, broker: Broker) -> Self {
        let (config, prefix) = match broker {
            Broker::Embedded => (
                MqttAdapterConfig {
                    listen: free_addr(),
                    client_id: unique("adapter"),
                    username: Some(SUPERUSER.0.into()),
                    password: Some(SUPERUSER.1.into()),
                    ..Default::default()
                },
                ota_mqtt_adapter::topics::DEFAULT_PREFIX.to_owned(),
            ),
            Broker::Mosquitto => {
                require_mosquitto();
                let prefix = unique("ota-test");
                let config = MqttAdapterConfig {
                    external_url: Some(format!("mqtt://{}", mosquitto())),
                    client_id: unique("adapter"),
                    topic_prefix: prefix.clone(),
                    share_group: unique("g"),
                    ..Default::default()
                };
                (config, prefix)
            }
        };
        let (adapter, stop) = p.start(config).await;
        let addr = adapter.listen.unwrap_or_else(mosquitto);
        Self {
            broker,
            adapter,
            _stop: stop,
            addr,
            prefix,
        }
    }

    fn topic(&self, vin: &str, kind: &str) -> String {
        format!("{}/{vin}/{kind}", self.prefix)
    }

    fn options(&self, client_id: &str) -> rumqttc::v5::MqttOptions {
        let mut o =
            rumqttc::v5::MqttOptions::new(client_id, self.addr.ip().to_string(), self.addr.port());
        o.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(Some(1024 * 1024));
        o
    }

    /// A vehicle speaking MQTT 5: with its token on the embedded broker,
    /// anonymous on Mosquitto (which leaves authentication to its plugins).
    async fn vehicle(&self, p: &Platform, vin: &str) -> Vehicle5 {
        let mut o = self.options(vin);
        if self.broker == Broker::Embedded {
            let token = p.credentials.issue(vin, false).await.unwrap().token;
            o.set_credentials(vin, token);
        } else {
            o.set_client_id(unique("vehicle"));
        }
        connect5(o).await.expect("the vehicle connects")
    }

    /// An MQTT 5 client subscribed to every vehicle's documents (the
    /// superuser on the embedded broker, so no vehicle comes online).
    async fn watcher(&self) -> Vehicle5 {
        let mut o = self.options(&unique("watcher"));
        if self.broker == Broker::Embedded {
            o.set_credentials(SUPERUSER.0, SUPERUSER.1);
        }
        let mut w = connect5(o).await.expect("the watcher connects");
        w.client
            .subscribe(format!("{}/+/actions", self.prefix), QoS::AtLeastOnce)
            .await
            .unwrap();
        let ack = w.next(|p| matches!(p, Packet5::SubAck(_))).await;
        assert!(matches!(ack, Some(Ok(_))), "subscribed: {ack:?}");
        w
    }

    /// Waits until the adapter takes reports: presence reports of `vin`
    /// until one moves its last_seen (through Mosquitto, a report sent
    /// before the adapter subscribed is lost).
    async fn ready(&self, p: &Platform, v: &mut Vehicle5, vin: &str) {
        for _ in 0..30 {
            let code = v
                .publish(&self.topic(vin, "presence"), false, b"online".to_vec())
                .await;
            assert_eq!(code, PubAckReason::Success);
            if eventually(Duration::from_millis(500), || async {
                p.vehicles.get(vin).await.unwrap().last_seen.is_some()
            })
            .await
            {
                return;
            }
        }
        panic!("the adapter never took a report of {vin}");
    }

    async fn stop(self, vins: &[String]) {
        if self.broker == Broker::Mosquitto {
            // Retained documents are left on the shared broker otherwise.
            let w = self.watcher().await;
            for vin in vins {
                let _ = w
                    .client
                    .publish(
                        self.topic(vin, "actions"),
                        QoS::AtLeastOnce,
                        true,
                        Vec::new(),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.adapter.stop().await;
    }
}

/// A malformed `traceparent` on a report is counted and starts a new
/// trace; the report is recorded all the same.
async fn a_malformed_traceparent_is_counted_and_the_report_applied(broker: Broker) {
    let t = telemetry();
    let p = Platform::new().await;
    let campaign = p.campaign(1).await;
    let vin = p.vin(0);
    let s = Setup::start(&p, broker).await;
    let mut v = s.vehicle(&p, &vin).await;
    s.ready(&p, &mut v, &vin).await;
    let action = p.action_of(&campaign, &vin).await;
    let before = t.invalid_mqtt_contexts();

    let code = v
        .publish_with(
            &s.topic(&vin, "status"),
            false,
            status(&action, "downloading", 1),
            with_traceparent("00-not-a-trace-context-01"),
        )
        .await;
    assert_eq!(code, PubAckReason::Success, "the report is acknowledged");
    assert!(
        eventually(Duration::from_secs(15), || async {
            p.count(&campaign, ActionState::Downloading).await == 1
        })
        .await,
        "the report is applied"
    );
    assert_eq!(
        t.invalid_mqtt_contexts(),
        before + 1,
        "and the bad value counted"
    );
    let report = t
        .spans()
        .into_iter()
        .find(|s| {
            s.name == "mqtt.report"
                && attribute(s, "vin").map(Value::as_str).as_deref() == Some(vin.as_str())
                && attribute(s, "kind").map(Value::as_str).as_deref() == Some("status")
        })
        .expect("the report's span");
    assert_eq!(report.parent_span_id, SpanId::INVALID, "a trace of its own");
    s.stop(&[vin]).await;
}

/// A report's `traceparent` is the parent of the span it is recorded in.
async fn a_report_is_recorded_in_the_trace_it_carries(broker: Broker) {
    let t = telemetry();
    let p = Platform::new().await;
    let campaign = p.campaign(1).await;
    let vin = p.vin(0);
    let s = Setup::start(&p, broker).await;
    let mut v = s.vehicle(&p, &vin).await;
    s.ready(&p, &mut v, &vin).await;
    let action = p.action_of(&campaign, &vin).await;
    let (traceparent, trace_id, parent) = fresh_traceparent();

    let code = v
        .publish_with(
            &s.topic(&vin, "status"),
            false,
            status(&action, "installing", 1),
            with_traceparent(&traceparent),
        )
        .await;
    assert_eq!(code, PubAckReason::Success);
    assert!(
        eventually(Duration::from_secs(15), || async {
            p.count(&campaign, ActionState::Installing).await == 1
        })
        .await,
        "the report is applied"
    );
    let spans = t.spans();
    let report = spans
        .iter()
        .find(|s| s.name == "mqtt.report" && s.span_context.trace_id() == trace_id)
        .unwrap_or_else(|| panic!("no adapter span in trace {trace_id}"));
    assert_eq!(
        report.parent_span_id, parent,
        "the sender's span is its parent"
    );
    assert!(report.parent_span_is_remote);
    assert_eq!(
        attribute(report, "vin").map(Value::as_str).as_deref(),
        Some(vin.as_str())
    );
    s.stop(&[vin]).await;
}

/// A document published because of a traced bus event carries that trace
/// in its `traceparent` property, from a publishing span that the event's
/// span is the parent of.
async fn a_document_carries_the_trace_that_caused_it(broker: Broker) {
    let t = telemetry();
    let p = Platform::new().await;
    p.campaign(1).await;
    let vin = p.vin(0);
    let s = Setup::start(&p, broker).await;
    let mut watcher = s.watcher().await;

    // As staging does: the event carries the trace of the work behind it.
    let cause = tracing::info_span!("test.staging");
    let cause_cx = cause
        .in_scope(trace::current_context)
        .expect("the test's span is traced");
    let mut event = serde_json::to_value(StagedEvent::Changed {
        vins: vec![vin.clone()],
        at_ms: 0,
    })
    .unwrap();
    event["traceparent"] = trace::format(&cause_cx).unwrap().into();
    p.bus
        .publish(topics::STAGED, &[event.to_string()])
        .await
        .unwrap();
    drop(cause);

    let actions = s.topic(&vin, "actions");
    let doc = match watcher
        .next(|m| matches!(m, Packet5::Publish(m) if m.topic == actions.as_bytes()))
        .await
    {
        Some(Ok(Packet5::Publish(m))) => m,
        other => panic!("no document: {other:?}"),
    };
    assert_eq!(doc.payload, p.staging.lookup(&vin).await.unwrap().json);
    let sent = carried(&doc).expect("the document carries a traceparent");
    assert_eq!(sent.trace_id(), cause_cx.trace_id(), "the cause's trace");
    assert_ne!(
        sent.span_id(),
        cause_cx.span_id(),
        "sent from a span of its own"
    );

    let spans = t.spans();
    let publish = spans
        .iter()
        .find(|s| s.name == "mqtt.publish" && s.span_context.span_id() == sent.span_id())
        .expect("the publishing span");
    assert_eq!(publish.span_context.trace_id(), cause_cx.trace_id());
    assert_eq!(
        publish.parent_span_id,
        cause_cx.span_id(),
        "the event's span is its parent"
    );

    // The vehicle, subscribing later, gets the retained document with it.
    let mut v = s.vehicle(&p, &vin).await;
    v.client
        .subscribe(&actions, QoS::AtLeastOnce)
        .await
        .unwrap();
    let retained = match v
        .next(|m| matches!(m, Packet5::Publish(m) if m.topic == actions.as_bytes()))
        .await
    {
        Some(Ok(Packet5::Publish(m))) => m,
        other => panic!("no retained document: {other:?}"),
    };
    assert!(retained.retain);
    assert_eq!(
        carried(&retained).map(|c| c.trace_id()),
        Some(cause_cx.trace_id()),
        "the retained document keeps its trace"
    );
    s.stop(&[vin]).await;
}

#[tokio::test]
async fn embedded_a_malformed_traceparent_is_counted_and_the_report_applied() {
    a_malformed_traceparent_is_counted_and_the_report_applied(Broker::Embedded).await;
}

#[tokio::test]
async fn mosquitto_a_malformed_traceparent_is_counted_and_the_report_applied() {
    a_malformed_traceparent_is_counted_and_the_report_applied(Broker::Mosquitto).await;
}

#[tokio::test]
async fn embedded_a_report_is_recorded_in_the_trace_it_carries() {
    a_report_is_recorded_in_the_trace_it_carries(Broker::Embedded).await;
}

#[tokio::test]
async fn mosquitto_a_report_is_recorded_in_the_trace_it_carries() {
    a_report_is_recorded_in_the_trace_it_carries(Broker::Mosquitto).await;
}

#[tokio::test]
async fn embedded_a_document_carries_the_trace_that_caused_it() {
    a_document_carries_the_trace_that_caused_it(Broker::Embedded).await;
}

#[tokio::test]
async fn mosquitto_a_document_carries_the_trace_that_caused_it() {
    a_document_carries_the_trace_that_caused_it(Broker::Mosquitto).await;
}
