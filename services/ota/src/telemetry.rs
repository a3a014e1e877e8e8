//! Logs (JSON lines on stdout, or readable lines on a terminal), traces (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
//! is set, sampled as OTEL_TRACES_SAMPLER says) and the Prometheus metrics recorder behind `/metrics`.
//! While traces are exported, every log line written inside a span names
//! its `trace_id` and `span_id`, so logs and traces join.

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;

pub struct Telemetry {
    pub metrics: PrometheusHandle,
    tracer: Option<SdkTracerProvider>,
}

/// How log lines look: `auto` is `text` on a terminal and `json` elsewhere
/// (a log collector, a file, a pipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Auto,
    Json,
    Text,
}

impl LogFormat {
    fn json(self) -> bool {
        use std::io::IsTerminal;
        match self {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => !std::io::stdout().is_terminal(),
        }
    }
}

pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter).with_context(|| {
        format!("invalid configuration: log: {filter:?} is not a valid log filter")
    })?;
    let tracer = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .with_context(|| format!("cannot set up the OTLP exporter for {endpoint}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(
                    std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "ota".into()),
                )
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        _ => None,
    };
    subscriber(filter, format.json(), tracer.as_ref(), std::io::stdout)
        .try_init()
        .context("logging was already initialised")?;
    let metrics = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .expect("static buckets")
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    metrics_process::Collector::default().describe();
    Ok(Telemetry { metrics, tracer })
}

impl Telemetry {
    /// Renders `/metrics`, refreshing the process gauges first.
    pub fn render(&self) -> String {
        metrics_process::Collector::default().collect();
        self.metrics.render()
    }

    /// Flushes buffered spans to the collector.
    pub fn shutdown(&self) {
        if let Some(t) = &self.tracer {
            if let Err(e) = t.shutdown() {
                tracing::warn!(error = %e, "flushing traces failed");
            }
        }
    }
}

/// What exported traces hold, whatever the log filter says: a process
/// logging at `warn` still exports its request spans. The libraries'
/// chatter stays out, and the exporter's own events too (no loop).
const TRACE_FILTER: &str = "info,sqlx=warn,h2=warn,hyper=warn,hyper_util=warn,tower=warn,tonic=warn,rumqttc=warn,rmqtt=warn,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Log lines through `filter` to `writer`, and spans through
/// [`TRACE_FILTER`] to the tracer when traces are exported. Each layer has
/// its own filter, so with export off an `info` span is never created
/// under a `warn` log filter: nothing is added to the poll path.
fn subscriber<W>(
    filter: EnvFilter,
    json: bool,
    tracer: Option<&SdkTracerProvider>,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json_format())
            .with_writer(writer)
            .boxed()
    } else {
        use std::io::IsTerminal;
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format().with_target(false),
            ))
            .with_writer(writer)
            .boxed()
    };
    let traces = tracer.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("ota"))
            .and_then(EnteredIds)
            .with_filter(EnvFilter::new(TRACE_FILTER))
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
}

/// JSON lines: the event's fields at the top level, with the trace ids.
fn json_format() -> WithTraceIds<Format<Json>> {
    WithTraceIds(
        tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(true),
    )
}

thread_local! {
    /// The ids of the traced spans entered on this thread, innermost last
    /// (`None` for one without an OpenTelemetry context).
    static ENTERED: std::cell::RefCell<Vec<Option<(TraceId, SpanId)>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps [`ENTERED`] for the log lines. The log layer cannot look the span
/// up itself: its filter (`warn`, say) hides the `info` spans that are
/// traced, and a subscriber cannot ask the dispatcher for the current span
/// while it handles an event.
struct EnteredIds;

impl<S> tracing_subscriber::Layer<S> for EnteredIds
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let ids = ctx.span(id).and_then(|span| {
            let ext = span.extensions();
            let data = ext.get::<tracing_opentelemetry::OtelData>()?;
            Some((data.trace_id()?, data.span_id()?))
        });
        ENTERED.with(|e| e.borrow_mut().push(ids));
    }

    fn on_exit(&self, _id: &tracing::span::Id, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        ENTERED.with(|e| {
            e.borrow_mut().pop();
        });
    }
}

/// Adds the OpenTelemetry ids of the span a log line was written in: the
/// last two members of a JSON line, or the end of a text line. Lines
/// outside any traced span are written as the inner format has them.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = ENTERED.with(|e| e.borrow().last().copied().flatten())
        else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        match body.strip_suffix('}') {
            Some(open) if body.starts_with('{') => writeln!(
                writer,
                r#"{open},"trace_id":"{trace_id}","span_id":"{span_id}"}}"#
            ),
            _ => writeln!(writer, "{body} trace_id={trace_id} span_id={span_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A line logged inside a traced span names the span's ids; one outside
    /// every span is the plain JSON line. The log filter does not decide
    /// what is traced.
    #[test]
    fn json_lines_carry_the_trace_and_span_ids() {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let lines = Lines::default();
        let writer = lines.clone();
        // Logs at warn: the info span is still traced, and a warning
        // inside it names it.
        let subscriber = subscriber(EnvFilter::new("warn"), true, Some(&provider), move || {
            writer.clone()
        });
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(vin = "V1", "outside");
            let span = tracing::info_span!("work");
            let _in = span.enter();
            tracing::info!("filtered out");
            tracing::warn!(vin = "V1", "inside");
            let sc = ota_common::trace::current_context().expect("a traced span");
            (sc.trace_id().to_string(), sc.span_id().to_string())
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(parsed.len(), 2, "{text}");
        assert_eq!(parsed[0]["message"], "outside");
        assert!(parsed[0].get("trace_id").is_none(), "{text}");
        assert_eq!(parsed[1]["message"], "inside");
        assert_eq!(parsed[1]["vin"], "V1");
        assert_eq!(parsed[1]["trace_id"], trace_id.as_str());
        assert_eq!(parsed[1]["span_id"], span_id.as_str());
        let spans = exporter.get_finished_spans().unwrap();
        assert!(
            spans
                .iter()
                .any(|s| s.name == "work" && s.span_context.span_id().to_string() == span_id),
            "{spans:?}"
        );
    }
}
