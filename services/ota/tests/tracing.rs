//! One vehicle report, one trace, across two `ota serve` processes split by
//! `--services`, on PostgreSQL with Redis Streams as the bus (and Redis as
//! the staging store), both exporting over OTLP to a stand-in collector.
//!
//! - `ota-core` runs `vehicle-store,rule-engine,campaign-manager,rest`: the
//!   status writer and the outbox relay. None of its roles calls a role of
//!   the other process, so it needs no peer address.
//! - `ota-edge` runs `staging,mqtt-adapter,http-adapter`, with
//!   `peers.vehicle_store` and `peers.campaign_manager` at `ota-core`.
//!
//! The vehicle speaks MQTT 5 to the edge's embedded broker and reports its
//! action `succeeded` with a `traceparent` user property (sampled). A
//! finishing state is the one that makes the whole chain happen: the
//! status batch writes a staging event to the outbox only for a final (or
//! retried) action, and over MQTT nothing restages the vehicle directly
//! (only the HTTP and DDI adapters do), so the document changes only
//! through the bus. A non-final state such as `downloading` writes no
//! staging event at all. The chain:
//!
//! vehicle (traceparent) → `mqtt.report` (edge) → gRPC `ReportStatus` →
//! `grpc.request` (core) → `status.batch` (core) → outbox row → relay →
//! Redis Streams → `staging.batch` (edge) → staged event → `mqtt.publish`
//! (edge) → the vehicle's new document, carrying `traceparent`.

mod common;

use std::time::Duration;

use common::*;
use ota_tests::otlp::Span;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};

const CORE: &str = "ota-core";
const EDGE: &str = "ota-edge";
/// This test's Redis database (other tests use 11 to 13).
const REDIS_DB: u8 = 14;

/// A vehicle speaking MQTT 5, polled in the background.
struct Vehicle5 {
    client: AsyncClient,
    packets: tokio::sync::mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Vehicle5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Vehicle5 {
    /// Connects to the embedded broker at `mqtt://127.0.0.1:PORT` with the
    /// vehicle's credential (user name = VIN) and waits for the CONNACK.
    async fn connect(broker: &str, vin: &str, token: &str) -> Self {
        let port: u16 = broker.rsplit(':').next().unwrap().parse().unwrap();
        let mut o = MqttOptions::new(vin, "127.0.0.1", port);
        o.set_credentials(vin, token)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(Some(1024 * 1024));
        let (client, mut el) = AsyncClient::new(o, 100);
        let (tx, packets) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let p = match el.poll().await {
                    Ok(Event::Incoming(p)) => Ok(p),
                    Ok(_) => continue,
                    Err(e) => Err(e.to_string()),
                };
                let failed = p.is_err();
                if tx.send(p).is_err() || failed {
                    return;
                }
            }
        });
        let mut v = Vehicle5 {
            client,
            packets,
            task,
        };
        v.next("the CONNACK", Duration::from_secs(10), |p| {
            matches!(p, Packet::ConnAck(_)).then_some(())
        })
        .await;
        v
    }

    /// The first packet `pick` selects within `wait`; fails the test when
    /// none arrives or the connection ends.
    async fn next<T>(
        &mut self,
        what: &str,
        wait: Duration,
        mut pick: impl FnMut(&Packet) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.packets.recv()).await {
                Ok(Some(Ok(p))) => {
                    if let Some(t) = pick(&p) {
                        return t;
                    }
                }
                Ok(Some(Err(e))) => {
                    panic!("the vehicle's connection failed waiting for {what}: {e}")
                }
                Ok(None) => panic!("the vehicle's connection ended waiting for {what}"),
                Err(_) => panic!("no {what} within {wait:?}"),
            }
        }
    }

    /// The next document on `topic` that `pick` accepts.
    async fn document(
        &mut self,
        what: &str,
        topic: &str,
        pick: impl Fn(&Value) -> bool,
    ) -> (Publish, Value) {
        self.next(what, Duration::from_secs(30), |p| match p {
            Packet::Publish(m) if m.topic == topic.as_bytes() => {
                let doc: Value = serde_json::from_slice(&m.payload).ok()?;
                pick(&doc).then(|| (m.clone(), doc))
            }
            _ => None,
        })
        .await
    }
}

/// The `traceparent` user property of a message.
fn traceparent(m: &Publish) -> Option<&str> {
    m.properties
        .as_ref()?
        .user_properties
        .iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.as_str())
}

/// Whether the document offers `action`.
fn offers(doc: &Value, action: &str) -> bool {
    doc["actions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["action_id"] == action))
}

/// The spans of one trace, one per line, for failure messages.
fn listing(spans: &[&Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "\n  {} {} span {} parent {:?} links {:?}",
                s.service, s.name, s.span_id, s.parent_span_id, s.links
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mqtt_report_is_one_trace_across_split_processes_over_redis() {
    let (collector, endpoint) = ota_tests::otlp::start().await;
    let pg = ota_tests::db::postgres().await;
    let (redis_url, _flushed) = redis_db(REDIS_DB).await;

    let core = Server::start(
        &[
            ("OTA_DATABASE_URL", &pg.url),
            ("OTA_REDIS_URL", &redis_url),
            ("OTA_CAMPAIGNS__TICK_MS", "200"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", CORE),
        ],
        &[
            "--services",
            "vehicle-store,rule-engine,campaign-manager,rest",
        ],
    );
    let edge = Server::start(
        &[
            ("OTA_DATABASE_URL", &pg.url),
            ("OTA_REDIS_URL", &redis_url),
            ("OTA_PEERS__VEHICLE_STORE", &core.grpc),
            ("OTA_PEERS__CAMPAIGN_MANAGER", &core.grpc),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", EDGE),
        ],
        &["--services", "staging,mqtt-adapter,http-adapter"],
    );

    // Two vehicles in the campaign, so that one finishing does not complete
    // it: a completion would stage the campaign from a trace of its own.
    let admin = core.admin_token();
    let api = |p: &str| format!("{}/api/v1{p}", core.http);
    let fleet: Vec<Value> = [0, 2]
        .into_iter()
        .map(|n| {
            let mut v = vehicle(n);
            v["protocol"] = "mqtt".into();
            v
        })
        .collect();
    let vin = fleet[0]["vin"].as_str().unwrap().to_owned();
    import(&core.http, &admin, &fleet).await;
    post(
        api("/packages"),
        &admin,
        json!({"name": "bms-fw", "version": "2.3.1", "ecu": "BMS",
               "artifacts": [{"url": "https://cdn.example/bms-2.3.1.bin", "sha256": "ab".repeat(32), "size": 1}]}),
    )
    .await;
    create_approve_launch(
        &core.http,
        &admin,
        "name: traced\ntarget: 'vehicle.region == \"EU\"'\n\
         rules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\n\
         rollout:\n  max_per_minute: 60000\n",
    )
    .await;
    let token = credential(&core.http, &admin, &vin).await;

    // The vehicle on the edge's broker, subscribed to its document, waits
    // for its action: staged by the edge from the core's events.
    let mut v = Vehicle5::connect(&edge.mqtt, &vin, &token).await;
    let actions_topic = format!("ota/v1/vehicles/{vin}/actions");
    v.client
        .subscribe(&actions_topic, QoS::AtLeastOnce)
        .await
        .unwrap();
    let (_, doc) = v
        .document("the document with the staged action", &actions_topic, |d| {
            d["actions"].get(0).is_some()
        })
        .await;
    let action = doc["actions"][0]["action_id"].as_str().unwrap().to_owned();

    // The report, in trace T under the vehicle's own span S.
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let vehicle_span = format!("{:016x}", rand::random::<u64>() | 1);
    let properties = PublishProperties {
        user_properties: vec![(
            "traceparent".into(),
            format!("00-{trace_id}-{vehicle_span}-01"),
        )],
        ..Default::default()
    };
    v.client
        .publish_with_properties(
            format!("ota/v1/vehicles/{vin}/status"),
            QoS::AtLeastOnce,
            false,
            json!({"action_id": action, "state": "succeeded", "progress": 100, "message": "", "seq": 1})
                .to_string(),
            properties,
        )
        .await
        .unwrap();
    let reason = v
        .next(
            "the PUBACK of the report",
            Duration::from_secs(15),
            |p| match p {
                Packet::PubAck(ack) => Some(ack.reason),
                _ => None,
            },
        )
        .await;
    assert_eq!(reason, PubAckReason::Success, "the report is recorded");
    // The document without the finished action: restaged by the edge from
    // the event the core's outbox put on Redis.
    let (after, _) = v
        .document(
            "the document without the finished action",
            &actions_topic,
            |d| !offers(d, &action),
        )
        .await;
    let carried = traceparent(&after)
        .unwrap_or_else(|| panic!("the new document carries no traceparent: {after:?}"))
        .to_owned();
    drop(v);

    // Stopping flushes the batch exporters: the edge first (it calls the
    // core), then the core.
    let (status, _) = edge.terminate();
    assert!(status.success(), "ota-edge exited with {status}");
    let (status, _) = core.terminate();
    assert!(status.success(), "ota-core exited with {status}");

    let spans = collector.spans();
    let traced: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let all = listing(&traced);
    let find = |service: &str, name: &str, pick: &dyn Fn(&Span) -> bool| -> Span {
        traced
            .iter()
            .find(|s| s.service == service && s.name == name && pick(s))
            .map(|s| (*s).clone())
            .unwrap_or_else(|| panic!("no such {service} {name} span in trace {trace_id}:{all}"))
    };
    for service in [CORE, EDGE] {
        assert!(
            traced.iter().any(|s| s.service == service),
            "no span of {service} in trace {trace_id}:{all}"
        );
    }

    // The edge's entry span continues the vehicle's span.
    let report = find(EDGE, "mqtt.report", &|s| {
        s.parent_span_id.as_deref() == Some(vehicle_span.as_str())
    });
    // The core's gRPC span continues the adapter's call...
    let grpc = find(CORE, "grpc.request", &|s| {
        s.parent_span_id.as_ref() == Some(&report.span_id)
    });
    // ...and the status batch that writes the report continues that.
    let batch = find(CORE, "status.batch", &|s| {
        s.parent_span_id.as_ref() == Some(&grpc.span_id)
    });
    // The edge's staging batch, fed from Redis Streams with the event the
    // core's outbox wrote in that status batch (the edge has no relay),
    // continues it: as its child in T, or linked to it when the batch
    // served several traces.
    let staging = spans
        .iter()
        .find(|s| {
            s.service == EDGE
                && s.name == "staging.batch"
                && (s.parent_span_id.as_ref() == Some(&batch.span_id)
                    || s.links.contains(&(trace_id.clone(), batch.span_id.clone())))
        })
        .unwrap_or_else(|| {
            panic!(
                "no staging.batch of {EDGE} follows the status batch {}:{all}",
                batch.span_id
            )
        });
    assert!(staging.follows(&trace_id));

    // The document reached the vehicle in T, from the edge's publishing
    // span, which continues the staging batch that restaged the vehicle.
    let sent = ota_common::trace::parse(&carried).expect("a well-formed traceparent");
    assert_eq!(
        sent.trace_id().to_string(),
        trace_id,
        "the document carries trace T: {carried}"
    );
    let publish = find(EDGE, "mqtt.publish", &|s| {
        s.span_id == sent.span_id().to_string()
    });
    let staging_spans: Vec<&String> = traced
        .iter()
        .filter(|s| s.service == EDGE && s.name == "staging.batch")
        .map(|s| &s.span_id)
        .collect();
    assert!(
        publish
            .parent_span_id
            .as_ref()
            .is_some_and(|p| staging_spans.contains(&p)),
        "the publishing span continues a staging batch of trace {trace_id}:{all}"
    );
}
