//! Logs (JSON lines on stdout, or readable lines on a terminal), traces (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
//! is set, sampled as OTEL_TRACES_SAMPLER says) and the Prometheus metrics recorder behind `/metrics`.
//! While traces are exported, every log line written inside a span names
//! its `trace_id` and `span_id`, so logs and traces join.

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

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
    let otel_layer = tracer
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("ota")));
    let (json, text) = if format.json() {
        let format = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(true);
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithTraceIds(format));
        (Some(layer), None)
    } else {
        use std::io::IsTerminal;
        let format = tracing_subscriber::fmt::format().with_target(false);
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .event_format(WithTraceIds(format));
        (None, Some(layer))
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .with(otel_layer)
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
        let Some((trace_id, span_id)) = ctx.parent_span().and_then(|span| {
            let ext = span.extensions();
            let data = ext.get::<tracing_opentelemetry::OtelData>()?;
            Some((data.trace_id()?, data.span_id()?))
        }) else {
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
