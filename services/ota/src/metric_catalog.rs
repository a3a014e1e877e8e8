//! Every metric `/metrics` exports, in one list: name, type, labels and
//! help text. `ota serve` describes them at start, so `/metrics` carries
//! their `# HELP` line once a series exists; `ota describe` prints the list
//! (`infra/ota-describe.json`). docs/metrics.md documents it, and
//! `tests/metrics.rs` keeps the three in step (this list, the `counter!` /
//! `gauge!` / `histogram!` calls in `services/*/src`, the document) and
//! checks that the Grafana dashboards and alert rules query only these
//! names, against what a simulated campaign's `/metrics` shows.
//!
//! No label holds a VIN, a token or another value without bound: the
//! labels are route templates, fixed outcome names, protocols, states,
//! roles' topics and groups, and campaign ids (only of campaigns that have
//! not finished, see `ota_campaign_actions`).

/// The Prometheus type a metric is exported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn m(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// The platform's own metrics.
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    // Every process: the HTTP listener, the database pool, gRPC.
    m("ota_http_requests_total", Counter, &["route", "method", "status"],
      "HTTP requests answered, by route template, method and status code."),
    m("ota_http_request_duration_seconds", Histogram, &["route", "method"],
      "Time to answer an HTTP request, by route template and method."),
    m("ota_http_connections", Gauge, &[],
      "HTTP connections open now."),
    m("ota_http_connections_refused_total", Counter, &[],
      "HTTP connections refused because http.max_connections were open."),
    m("ota_http_connections_idle_closed_total", Counter, &[],
      "HTTP connections closed after http.idle_timeout_ms without a request."),
    m("ota_db_pool_connections", Gauge, &["state"],
      "Database pool connections, by state (idle, active)."),
    m("ota_grpc_requests_total", Counter, &["service", "method", "code"],
      "gRPC calls, by gRPC service, method and status code (Ok, NotFound, Unavailable, ...)."),
    m("ota_grpc_request_duration_seconds", Histogram, &["service", "method"],
      "Time to answer a gRPC call, by gRPC service and method."),
    // rest (management API and dashboard).
    m("ota_auth_failures_total", Counter, &["reason"],
      "Management API and dashboard requests refused for their token (missing, invalid, error)."),
    // vehicle-store.
    m("ota_vehicles_imported_total", Counter, &["source", "outcome"],
      "Vehicle records imported, by inventory source and outcome (imported, updated, unchanged, rejected)."),
    m("ota_vehicle_store_op_duration_seconds", Histogram, &["op", "backend"],
      "Time of a vehicle-store operation, by operation and database backend."),
    // Adapters: the vehicle-facing APIs.
    m("ota_poll_requests_total", Counter, &["protocol", "outcome"],
      "Vehicle polls for their actions, by protocol (http, ddi) and HTTP status (200, 304, 429, ...)."),
    m("ota_vehicle_requests_total", Counter, &["route", "status"],
      "HTTP vehicle API and MQTT broker hook requests, by route template and status code."),
    m("ota_vehicle_request_duration_seconds", Histogram, &["route"],
      "Time to answer an HTTP vehicle API or broker hook request, by route template."),
    m("ota_vehicle_rate_limited_total", Counter, &["budget"],
      "Vehicle requests refused over a per-vehicle budget (poll, report)."),
    m("ota_mark_delivered_total", Counter, &["outcome"],
      "Calls telling the campaign manager a vehicle fetched its actions (ok, error, dropped when the queue was full)."),
    m("ota_last_seen_batches_total", Counter, &["outcome"],
      "Batches of last-seen times written to the vehicle store (ok, error)."),
    m("ota_last_seen_vehicles_total", Counter, &[],
      "Vehicles whose last-seen time was written."),
    m("ota_last_seen_pending", Gauge, &[],
      "Vehicles whose last-seen time waits for the next batch."),
    m("ota_last_seen_dropped_total", Counter, &[],
      "Last-seen times dropped because too many vehicles were waiting to be written."),
    // mqtt-adapter.
    m("ota_mqtt_connections", Gauge, &[],
      "Vehicles connected to the embedded MQTT broker."),
    m("ota_mqtt_auth_refused_total", Counter, &[],
      "MQTT connections the embedded broker refused (bad credentials, client id not the VIN, bad last will)."),
    m("ota_mqtt_rejected_total", Counter, &["reason"],
      "MQTT messages refused, by reason (acl, retain, presence, will, rate_limited, ...)."),
    m("ota_mqtt_reports_total", Counter, &["kind"],
      "MQTT reports recorded, by topic kind (status, inventory, presence)."),
    m("ota_mqtt_documents_published_total", Counter, &[],
      "Staged documents published to vehicles' retained actions topics."),
    // staging.
    m("ota_staging_events_total", Counter, &[],
      "Events the staging worker processed."),
    m("ota_staging_lag_seconds", Histogram, &[],
      "Time from a change (an action, a vehicle) committing to the vehicle's staged document reflecting it."),
    m("ota_staging_queue_depth", Gauge, &[],
      "Events waiting for this process's staging worker."),
    m("ota_staging_bad_events_total", Counter, &[],
      "Unreadable events the staging worker dropped."),
    m("ota_staging_documents_total", Counter, &["outcome"],
      "Staged documents recomputed, and of those changed."),
    m("ota_staging_build_errors_total", Counter, &[],
      "Staged documents that could not be built (the vehicle keeps its previous one)."),
    m("ota_staging_corrupt_total", Counter, &[],
      "Corrupt staged documents found on a poll and rebuilt."),
    m("ota_staging_reconcile_repaired_total", Counter, &[],
      "Staged documents a reconcile pass found wrong and repaired."),
    m("ota_staging_last_reconcile_timestamp_seconds", Gauge, &[],
      "When the last reconcile pass finished (Unix time)."),
    m("ota_staged_vehicles", Gauge, &[],
      "Vehicles with a staged document."),
    // The bus: the outbox relay (vehicle-store, campaign-manager) and every
    // consumer group of the process.
    m("ota_outbox_pending", Gauge, &[],
      "Outbox rows waiting to be relayed to the bus (an upper bound); grows while the bus is down."),
    m("ota_outbox_relayed_total", Counter, &["topic"],
      "Outbox rows relayed to the bus, by topic."),
    m("ota_bus_pending_events", Gauge, &["topic", "group"],
      "Events a consumer group of this process has not acknowledged yet, by topic and group."),
    // campaign-manager.
    m("ota_campaign_actions", Gauge, &["campaign", "state"],
      "Actions of each running or paused campaign, by state; zero once it finished or another process leads the rollout."),
    m("ota_campaign_failure_threshold", Gauge, &["campaign"],
      "The failure ratio (0 to 1) over which the rollout stops the campaign; 1 while none applies."),
    m("ota_trace_context_invalid_total", Counter, &["carrier"],
      "Received trace contexts (traceparent) that were malformed, by carrier (http, grpc, mqtt, bus); each started a new trace."),
    m("ota_status_reports_total", Counter, &["protocol", "state", "outcome"],
      "Status reports, by protocol (http, ddi, mqtt, other), reported state and outcome (applied, ignored, unknown_action, wrong_vehicle, error)."),
    m("ota_status_batch_seconds", Histogram, &[],
      "Time to write one batch of status reports."),
    m("ota_status_batch_size", Histogram, &[],
      "Status reports per written batch."),
    m("ota_actions_released_total", Counter, &[],
      "Actions the rollout released to vehicles (staged)."),
    m("ota_installs_recorded_total", Counter, &[],
      "Successful installs written to the vehicles' inventory."),
    m("ota_targeting_scan_seconds", Histogram, &[],
      "Time of one targeting scan of the inventory for a campaign."),
    m("ota_targeting_incompatible_total", Counter, &[],
      "Matching vehicles left out because their ECU hardware is not compatible with the package."),
    m("ota_rollout_tick_failures_total", Counter, &["reason"],
      "Rollout ticks of a campaign that failed, by reason (panic, out_of_range, unreadable, database, unavailable, other)."),
    m("ota_rollout_failing_campaigns", Gauge, &[],
      "Campaigns whose last rollout tick failed."),
];

/// What `metrics_process` exports for the process (Prometheus' standard
/// process metrics); it describes them itself.
#[rustfmt::skip]
pub const PROCESS_METRICS: &[Metric] = &[
    m("process_cpu_seconds_total", Counter, &[],
      "CPU time used by the process."),
    m("process_resident_memory_bytes", Gauge, &[],
      "Resident memory of the process."),
    m("process_virtual_memory_bytes", Gauge, &[],
      "Virtual memory of the process."),
    m("process_virtual_memory_max_bytes", Gauge, &[],
      "The process's virtual memory limit."),
    m("process_open_fds", Gauge, &[],
      "Open file descriptors."),
    m("process_max_fds", Gauge, &[],
      "The process's file descriptor limit."),
    m("process_start_time_seconds", Gauge, &[],
      "When the process started (Unix time)."),
    m("process_threads", Gauge, &[],
      "Threads of the process."),
];

/// Gives every metric of [`METRICS`] its help text in the installed
/// recorder.
pub fn describe() {
    for m in METRICS {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Both lists as `ota describe` prints them: name, type, labels, help.
pub fn contract() -> serde_json::Value {
    METRICS
        .iter()
        .chain(PROCESS_METRICS)
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "type": m.kind.as_str(),
                "labels": m.labels,
                "help": m.help,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_well_formed_and_typed_by_their_suffix() {
        let mut seen = BTreeSet::new();
        for m in METRICS.iter().chain(PROCESS_METRICS) {
            assert!(seen.insert(m.name), "{} is listed twice", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.name.ends_with("_total"),
                m.kind == Kind::Counter,
                "{}: counters, and only counters, end in _total",
                m.name
            );
            assert!(!m.help.is_empty() && m.help.ends_with('.'), "{}", m.name);
        }
        for m in METRICS {
            assert!(m.name.starts_with("ota_"), "{}", m.name);
        }
    }

    #[test]
    fn no_label_is_unbounded() {
        let unbounded = [
            "vin",
            "controller",
            "token",
            "principal",
            "url",
            "path",
            "id",
        ];
        for m in METRICS {
            for l in m.labels {
                assert!(!unbounded.contains(l), "{} is labelled by {l}", m.name);
            }
        }
    }

    #[test]
    fn describing_gives_every_series_its_help() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            metrics::counter!("ota_poll_requests_total", "protocol" => "http", "outcome" => "200")
                .increment(1);
        });
        let text = handle.render();
        assert!(
            text.contains("# HELP ota_poll_requests_total Vehicle polls for their actions"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ota_poll_requests_total counter"),
            "{text}"
        );
    }
}
