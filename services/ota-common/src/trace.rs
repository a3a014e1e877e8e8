//! W3C trace context (`traceparent`) on every carrier the platform speaks:
//! HTTP and gRPC headers, MQTT 5 user properties and bus events. One
//! parser and one formatter, so a malformed value is treated (and counted)
//! the same wherever it arrives.
//!
//! With tracing export off no span has an OpenTelemetry context: `current`
//! returns `None` (nothing is added to what is sent) and a received value
//! is only checked, so the poll path pays a header lookup at most.

pub use opentelemetry::trace::SpanContext;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header, metadata key and MQTT user property name.
pub const TRACEPARENT: &str = "traceparent";

/// The current span's context as a `traceparent` value, or `None` when no
/// span carries one (tracing export off, or outside every span).
pub fn current() -> Option<String> {
    current_context().as_ref().and_then(format)
}

/// The current span's context, to hand to work that runs elsewhere (a
/// batch writer, another task) and continues it there with [`follow`].
pub fn current_context() -> Option<SpanContext> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// `00-<trace id>-<span id>-<flags>` of a valid context.
pub fn format(sc: &SpanContext) -> Option<String> {
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// What is wrong with a received `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "traceparent {value:?} is not <version 00>-<32 hex trace id>-<16 hex span id>-<2 hex flags>"
)]
pub struct Malformed {
    pub value: String,
}

/// Parses a W3C Trace Context `traceparent` (version 00, lowercase hex,
/// ids not all zero) into the remote parent's context.
pub fn parse(value: &str) -> Result<SpanContext, Malformed> {
    let malformed = || Malformed {
        value: value.chars().take(80).collect(),
    };
    let v = value.trim();
    let mut parts = v.split('-');
    let (Some(version), Some(trace), Some(span), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed());
    };
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if version != "00" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return Err(malformed());
    }
    let trace_id = TraceId::from_hex(trace).map_err(|_| malformed())?;
    let span_id = SpanId::from_hex(span).map_err(|_| malformed())?;
    let flags = u8::from_str_radix(flags, 16).map_err(|_| malformed())?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        TraceState::default(),
    );
    if sc.is_valid() {
        Ok(sc)
    } else {
        Err(malformed())
    }
}

/// Parses a value that arrived on `carrier` ("http", "grpc", "mqtt",
/// "bus"). A malformed one is counted and logged at debug level, and
/// yields `None`: the work starts a new trace instead of failing.
pub fn received(value: &str, carrier: &'static str) -> Option<SpanContext> {
    match parse(value) {
        Ok(sc) => Some(sc),
        Err(e) => {
            metrics::counter!("ota_trace_context_invalid_total", "carrier" => carrier).increment(1);
            tracing::debug!(carrier, error = %e, "ignoring the received trace context");
            None
        }
    }
}

/// Makes `span` (not yet entered) continue the trace of a received
/// `traceparent`; with none, or a malformed one, the span starts a trace.
pub fn continue_from(span: &tracing::Span, value: Option<&str>, carrier: &'static str) {
    if let Some(sc) = value.and_then(|v| received(v, carrier)) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    }
}

/// The `traceparent` header of a request; one that is not text is handed
/// on as empty, to be counted as malformed.
pub fn header(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(TRACEPARENT)
        .map(|v| v.to_str().unwrap_or_default())
}

/// The span of one HTTP request, named by its route template (never the
/// raw path, which holds VINs), continuing the trace of a `traceparent`
/// the caller sent: a vehicle, an operator's tool or a peer.
pub fn http_request_span(
    method: &http::Method,
    route: &str,
    headers: &http::HeaderMap,
) -> tracing::Span {
    let span = tracing::info_span!("http.request", method = %method, route = %route);
    continue_from(&span, header(headers), "http");
    span
}

/// Work done for several traced requests or events at once (a batch): the
/// span (not yet entered) continues the trace when they all belong to one,
/// and otherwise starts its own, linked to each of theirs, as
/// OpenTelemetry advises for batches.
pub fn follow(span: &tracing::Span, contexts: impl IntoIterator<Item = SpanContext>) {
    let mut contexts: Vec<SpanContext> = contexts.into_iter().collect();
    contexts.sort_by_key(|sc| (sc.trace_id().to_bytes(), sc.span_id().to_bytes()));
    contexts.dedup_by_key(|sc| (sc.trace_id(), sc.span_id()));
    let Some(first) = contexts.first() else {
        return;
    };
    if contexts.iter().all(|sc| sc.trace_id() == first.trace_id()) {
        let _ =
            span.set_parent(opentelemetry::Context::new().with_remote_span_context(first.clone()));
    } else {
        for sc in contexts {
            span.add_link(sc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_same_value() {
        let sc = parse(VALID).unwrap();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(format(&sc).as_deref(), Some(VALID));
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn refuses_what_is_not_a_traceparent_naming_it() {
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn a_malformed_value_is_counted_by_carrier() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        assert!(received("nonsense", "mqtt").is_none());
        assert!(received(VALID, "mqtt").is_some());
        let text = handle.render();
        assert!(
            text.lines()
                .any(|l| l == r#"ota_trace_context_invalid_total{carrier="mqtt"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_sent() {
        let span = tracing::info_span!("x");
        continue_from(&span, Some(VALID), "http");
        assert_eq!(span.in_scope(current), None);
    }
}
