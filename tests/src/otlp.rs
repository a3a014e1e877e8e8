//! A stand-in OpenTelemetry collector for end-to-end tests: an OTLP/gRPC
//! trace service on a free local port that records every span exported to
//! it. Point a process at it with `OTEL_EXPORTER_OTLP_ENDPOINT` (the
//! address [`start`] returns) and read what arrived with
//! [`Collector::spans`]; a process flushes its batch exporter when it
//! stops.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

/// One exported span. Ids are lowercase hex, as in a `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The exporting process's `service.name` (`OTEL_SERVICE_NAME`).
    pub service: String,
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// `None` for the root of a trace.
    pub parent_span_id: Option<String>,
    /// The span's links, as (trace id, span id).
    pub links: Vec<(String, String)>,
}

impl Span {
    /// Whether the span is in `trace_id` or links to a span in it.
    pub fn follows(&self, trace_id: &str) -> bool {
        self.trace_id == trace_id || self.links.iter().any(|(t, _)| t == trace_id)
    }
}

/// What the collector received so far, in arrival order.
#[derive(Clone, Default)]
pub struct Collector(Arc<Mutex<Vec<Span>>>);

impl Collector {
    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for sp in ss.spans {
                    spans.push(Span {
                        service: service.clone(),
                        name: sp.name,
                        trace_id: hex(&sp.trace_id),
                        span_id: hex(&sp.span_id),
                        parent_span_id: (!sp.parent_span_id.is_empty()
                            && sp.parent_span_id.iter().any(|b| *b != 0))
                        .then(|| hex(&sp.parent_span_id)),
                        links: sp
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts a collector on a free port of 127.0.0.1; returns it and its
/// endpoint (`http://127.0.0.1:PORT`) for `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub async fn start() -> (Collector, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the OTLP collector");
    let addr = listener.local_addr().unwrap();
    let c = Collector::default();
    let svc = TraceServiceServer::new(c.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (c, format!("http://{addr}"))
}
