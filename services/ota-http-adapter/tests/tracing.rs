//! One vehicle's status report is one trace, in one process: the request
//! that carried the vehicle's `traceparent`, the campaign manager's batch
//! that recorded it, the outbox event, the staging batch that restaged the
//! vehicle's document, and the `staged` event the MQTT adapter publishes
//! from. Spans are read from an in-memory exporter.

mod common;

use std::time::Duration;

use axum::extract::MatchedPath;
use common::*;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use ota_bus::{topics, StagedEvent};
use ota_http_adapter::AdapterConfig;
use ota_staging::worker::{Worker, WorkerConfig, GROUP};
use tracing_subscriber::layer::SubscriberExt;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const VEHICLE_SPAN: &str = "00f067aa0ba902b7";

/// Every span goes to the returned exporter as soon as it ends.
fn traced() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
    (provider, exporter)
}

/// The adapter's router as `ota serve` wraps it: one span per request,
/// made by the same function.
async fn serve_traced(p: &Platform) -> String {
    let router = ota_http_adapter::router(p.state(AdapterConfig::default())).layer(
        tower_http::trace::TraceLayer::new_for_http().make_span_with(
            |req: &http::Request<axum::body::Body>| {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map(|m| m.as_str().to_owned())
                    .unwrap_or_default();
                ota_common::trace::http_request_span(req.method(), &route, req.headers())
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span in the trace: {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reports_spans_link_up_from_the_request_to_the_restaged_document() {
    let (provider, exporter) = traced();
    let p = Platform::new(ota_tests::db::sqlite().await).await;
    let token = p.fleet(1).await.remove(0);
    let campaign = p.campaign().await;
    let (action, _) = p.action_of(&campaign, &vin(0)).await;
    let base = serve_traced(&p).await;
    let worker = Worker::new(
        p.stager.clone(),
        p.bus.clone(),
        WorkerConfig {
            announce_staged: true,
            wait: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
    );
    let mut staging = p.bus.subscribe(topics::STAGING, GROUP, "w").await.unwrap();
    let mut staged = p.bus.subscribe(topics::STAGED, "mqtt", "m").await.unwrap();

    let before = p.stager.store().get(&vin(0)).await.unwrap().unwrap();
    let res = reqwest::Client::new()
        .post(format!(
            "{base}/v1/vehicles/{}/actions/{action}/status",
            vin(0)
        ))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE}-{VEHICLE_SPAN}-01"))
        .json(&serde_json::json!({"state": "succeeded", "progress": 100, "message": "installed", "seq": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());

    // The adapter restaged the vehicle itself after the final report; as
    // if that had been lost (a crash right after the report), the event
    // path removes the stale document and announces it.
    p.stager
        .store()
        .put_many(&[(vin(0), before)], &[false])
        .await
        .unwrap();
    // The outbox row goes to the bus, and staging takes it from there.
    assert!(
        p.relay.relay_once().await.unwrap() > 0,
        "the report wrote no event"
    );
    assert!(worker.process(staging.as_mut()).await.unwrap() > 0);
    let announced = staged.next(10, Duration::from_secs(2)).await.unwrap();
    assert!(!announced.is_empty(), "staging announced no document");
    let (event, cx) = ota_bus::events::decode::<StagedEvent>(&announced[0].payload).unwrap();
    assert!(matches!(&event, StagedEvent::Changed { vins, .. } if vins.contains(&vin(0))));
    let cx = cx.expect("the staged event carries the trace");
    assert_eq!(cx.trace_id().to_string(), TRACE);

    provider.force_flush().unwrap();
    let trace = TraceId::from_hex(TRACE).unwrap();
    let spans: Vec<SpanData> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    let request = named(&spans, "http.request");
    assert_eq!(
        request.parent_span_id,
        SpanId::from_hex(VEHICLE_SPAN).unwrap(),
        "the request joins the vehicle's trace"
    );
    // The batch that recorded the report runs in another task: it
    // continues the request's trace rather than nesting by accident.
    let batch = named(&spans, "status.batch");
    assert!(
        spans
            .iter()
            .any(|s| s.span_context.span_id() == batch.parent_span_id),
        "status.batch's parent is a span of the request: {spans:#?}"
    );
    let staging_batch = named(&spans, "staging.batch");
    assert_eq!(
        staging_batch.parent_span_id,
        batch.span_context.span_id(),
        "staging continues from the event the batch wrote"
    );
    assert_eq!(
        cx.span_id(),
        staging_batch.span_context.span_id(),
        "the staged event names the staging batch"
    );
}

/// A `traceparent` that is not one starts a new trace: the report is
/// applied and the malformed value counted, never refused.
#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace_and_is_counted() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let p = Platform::new(ota_tests::db::sqlite().await).await;
    let token = p.fleet(1).await.remove(0);
    let campaign = p.campaign().await;
    let (action, _) = p.action_of(&campaign, &vin(0)).await;
    // Current-thread: the server's tasks count into this test's recorder.
    let base = serve_traced(&p).await;
    let res = reqwest::Client::new()
        .post(format!(
            "{base}/v1/vehicles/{}/actions/{action}/status",
            vin(0)
        ))
        .bearer_auth(&token)
        .header("traceparent", "00-not-a-trace-01")
        .json(&serde_json::json!({"state": "accepted", "progress": 0, "message": "", "seq": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    assert_eq!(p.action_of(&campaign, &vin(0)).await.1, "accepted");
    let text = metrics.render();
    assert!(
        text.lines()
            .any(|l| l == r#"ota_trace_context_invalid_total{carrier="http"} 1"#),
        "{text}"
    );
}
