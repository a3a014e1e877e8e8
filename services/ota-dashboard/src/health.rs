//! `/ui/health`: is the platform keeping up? Every role here or at its
//! peer address, up or down (gRPC health); staging's lag and queue; the
//! outbox backlog and the bus's pending events; MQTT connections; poll,
//! report and error rates from this process's metrics, measured between
//! two looks. Every number of the traffic panel is read from the same
//! series `/metrics` exports (docs/metrics.md, "The health page"), so the
//! page and a Prometheus over that process agree: polls are
//! `ota_poll_requests_total`, reports `ota_status_reports_total`, the
//! backlogs `ota_outbox_pending` and `ota_bus_pending_events`, the staging
//! lag `ota_staging_lag_seconds` and the repairs
//! `ota_staging_reconcile_repaired_total`. The staging panel asks staging
//! (Stats), which counts with the same calls as its metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use ota_common::peer::Peer;
use ota_proto::v1 as pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::layout::{self, badge, count, time, ts, Nav};
use crate::session::User;
use crate::{DashError, DashState};

/// How long a peer gets to answer its health check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Rates are measured over at least this long.
const MIN_RATE_WINDOW: Duration = Duration::from_secs(2);

/// Where a role runs, as this process sees it.
#[derive(Clone)]
pub enum Place {
    Here,
    Remote {
        url: String,
        peer: Peer,
    },
    /// Not here and not probed from here: why.
    Elsewhere(String),
}

#[derive(Clone)]
pub struct RoleProbe {
    pub role: String,
    /// The gRPC service name the health service reports (empty for roles
    /// without one).
    pub grpc_service: String,
    pub place: Place,
}

type MetricsText = Arc<dyn Fn() -> String + Send + Sync>;

/// What the health page reads besides the services.
pub struct Health {
    roles: Vec<RoleProbe>,
    metrics: Option<MetricsText>,
    last: Mutex<Option<(Instant, Totals)>>,
}

impl Health {
    pub fn new(roles: Vec<RoleProbe>) -> Self {
        Self {
            roles,
            metrics: None,
            last: Mutex::new(None),
        }
    }

    /// The process's metrics in the Prometheus text format, as `/metrics`
    /// renders them.
    pub fn with_metrics(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.metrics = Some(Arc::new(render));
        self
    }

    /// Counter totals now, and the rates since the previous look (kept
    /// while younger than the window, so two quick loads still have one).
    fn rates(&self) -> Option<(Totals, Option<Rates>)> {
        let text = (self.metrics.as_ref()?)();
        let now = Totals::parse(&text);
        let mut last = self.last.lock().expect("health rates");
        let rates = last.as_ref().and_then(|(at, before)| {
            let secs = at.elapsed().as_secs_f64();
            (secs > 0.0).then(|| now.rates_since(before, secs))
        });
        if last
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= MIN_RATE_WINDOW)
        {
            *last = Some((Instant::now(), now.clone()));
        }
        Some((now, rates))
    }
}

/// The sums the page shows, from the Prometheus text.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    polls: f64,
    reports: f64,
    http_requests: f64,
    http_errors: f64,
    grpc_requests: f64,
    grpc_errors: f64,
    mqtt_connections: f64,
    outbox_pending: f64,
    bus_pending: f64,
    /// `ota_staging_lag_seconds`' sum and count.
    lag_seconds: f64,
    lags: f64,
    reconcile_repaired: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct Rates {
    polls: f64,
    reports: f64,
    http_error_pct: f64,
    grpc_error_pct: f64,
    /// The mean staging lag of the documents staged between the looks.
    lag_mean: Option<f64>,
}

/// One sample line: name, labels, value.
fn samples(text: &str) -> impl Iterator<Item = (&str, HashMap<&str, &str>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter_map(|kv| kv.split_once("=\""))
                .map(|(k, v)| (k.trim_matches(','), v.trim_end_matches('"')))
                .collect();
            Some((name, labels, value))
        })
}

impl Totals {
    fn parse(text: &str) -> Self {
        let mut t = Totals::default();
        for (name, labels, v) in samples(text) {
            let label = |k: &str| labels.get(k).copied().unwrap_or("");
            match name {
                // HTTP and DDI polls, whatever their answer.
                "ota_poll_requests_total" => t.polls += v,
                "ota_status_reports_total" => t.reports += v,
                "ota_http_requests_total" => {
                    t.http_requests += v;
                    if label("status").starts_with('5') {
                        t.http_errors += v;
                    }
                }
                "ota_grpc_requests_total" => {
                    t.grpc_requests += v;
                    if !matches!(label("code"), "" | "Ok") {
                        t.grpc_errors += v;
                    }
                }
                "ota_mqtt_connections" => t.mqtt_connections += v,
                "ota_outbox_pending" => t.outbox_pending += v,
                "ota_bus_pending_events" => t.bus_pending += v,
                "ota_staging_lag_seconds_sum" => t.lag_seconds += v,
                "ota_staging_lag_seconds_count" => t.lags += v,
                "ota_staging_reconcile_repaired_total" => t.reconcile_repaired += v,
                _ => {}
            }
        }
        t
    }

    fn rates_since(&self, before: &Totals, secs: f64) -> Rates {
        let d = |now: f64, then: f64| (now - then).max(0.0);
        let pct = |errors: f64, total: f64| {
            if total > 0.0 {
                errors * 100.0 / total
            } else {
                0.0
            }
        };
        Rates {
            polls: d(self.polls, before.polls) / secs,
            reports: d(self.reports, before.reports) / secs,
            http_error_pct: pct(
                d(self.http_errors, before.http_errors),
                d(self.http_requests, before.http_requests),
            ),
            grpc_error_pct: pct(
                d(self.grpc_errors, before.grpc_errors),
                d(self.grpc_requests, before.grpc_requests),
            ),
            lag_mean: {
                let n = d(self.lags, before.lags);
                (n > 0.0).then(|| d(self.lag_seconds, before.lag_seconds) / n)
            },
        }
    }
}

async fn probe(p: &RoleProbe) -> (&'static str, String) {
    match &p.place {
        Place::Here => ("here", "in this process".into()),
        Place::Elsewhere(why) => ("elsewhere", why.clone()),
        Place::Remote { url, peer } => {
            let mut client = HealthClient::new(peer.clone());
            let check = client.check(HealthCheckRequest {
                service: p.grpc_service.clone(),
            });
            match tokio::time::timeout(PROBE_TIMEOUT, check).await {
                Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving => ("up", url.clone()),
                Ok(Ok(r)) => ("down", format!("{url}: {:?}", r.get_ref().status())),
                Ok(Err(e)) => ("down", format!("{url}: {}", e.message())),
                Err(_) => ("down", format!("{url}: no answer within {PROBE_TIMEOUT:?}")),
            }
        }
    }
}

pub async fn page(user: User, State(s): State<DashState>) -> Result<Response, DashError> {
    let probes = futures::future::join_all(s.health.roles.iter().map(probe)).await;
    let staging = match s.api.staging.clone() {
        Some(mut c) => Some(c.stats(pb::StatsRequest {}).await.map(|r| r.into_inner())),
        None => None,
    };
    let metrics = s.health.rates();
    let body = html! {
        h1 { "Health" span #updated {} }
        div #health data-live {
            div.grid {
                div.panel {
                    h2 { "Roles" }
                    table {
                        thead { tr { th { "Role" } th { "Status" } th { "Where" } } }
                        tbody {
                            @for (p, (status, place)) in s.health.roles.iter().zip(&probes) {
                                tr { td { (p.role) } td { (badge(status)) } td.muted { (place) } }
                            }
                        }
                    }
                }
                div.panel {
                    h2 { "Staging" }
                    @match &staging {
                        None => p.muted { "Staging is not reachable from this process." },
                        Some(Err(e)) => div.alert { "Staging did not answer: " (e.message()) },
                        Some(Ok(st)) => (staging_stats(st)),
                    }
                }
                div.panel {
                    h2 { "Traffic (this process)" }
                    @match &metrics {
                        None => p.muted { "Metrics are not recorded in this process." },
                        Some((t, rates)) => (traffic(t, rates.as_ref())),
                    }
                }
            }
        }
    };
    Ok(layout::page(&user, "Health", Nav::Health, true, body).into_response())
}

fn staging_stats(st: &pb::StatsResponse) -> Markup {
    html! {
        table.kv { tbody {
            tr { th { "Store" } td { (st.store) } }
            tr { th { "Staged vehicles" } td { (count(st.staged_vehicles)) } }
            tr { th { "Lag p50 / p99" } td { (format!("{:.2} s / {:.2} s", st.lag_p50_seconds, st.lag_p99_seconds)) } }
            tr { th { "Queue depth" } td { (count(st.queue_depth)) } }
            tr { th { "Events processed" } td { (count(st.events_processed)) } }
            tr { th { "Last reconcile" } td { (time(ts(&st.last_reconcile))) " · " (st.last_reconcile_repaired) " repaired" } }
        } }
    }
}

fn traffic(t: &Totals, rates: Option<&Rates>) -> Markup {
    let rate = |f: fn(&Rates) -> f64, unit: &str| match rates {
        Some(r) => format!("{:.1}{unit}", f(r)),
        None => "measuring…".into(),
    };
    html! {
        table.kv { tbody {
            tr { th { "Vehicle polls" } td { (rate(|r| r.polls, " /s")) } }
            tr { th { "Status reports" } td { (rate(|r| r.reports, " /s")) } }
            tr { th { "HTTP 5xx" } td { (rate(|r| r.http_error_pct, " %")) } }
            tr { th { "gRPC errors" } td { (rate(|r| r.grpc_error_pct, " %")) } }
            tr { th { "MQTT connections" } td { (count(t.mqtt_connections as u64)) } }
            tr { th { "Outbox backlog" } td { (count(t.outbox_pending as u64)) } }
            tr { th { "Bus pending events" } td { (count(t.bus_pending as u64)) } }
            tr { th { "Staging lag (mean)" } td { (match rates {
                None => "measuring…".to_owned(),
                Some(Rates { lag_mean: Some(s), .. }) => format!("{s:.2} s"),
                Some(_) => "nothing staged".to_owned(),
            }) } }
            tr { th { "Repaired by reconciles" } td { (count(t.reconcile_repaired as u64)) } }
        } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE ota_poll_requests_total counter
ota_poll_requests_total{protocol="http",outcome="200"} 8
ota_poll_requests_total{protocol="http",outcome="304"} 2
ota_poll_requests_total{protocol="ddi",outcome="200"} 5
ota_vehicle_requests_total{route="/v1/vehicles/{vin}/actions",status="200"} 10
ota_vehicle_requests_total{route="/v1/vehicles/{vin}/inventory",status="200"} 4
ota_http_requests_total{route="/{tenant}/controller/v1/{controller}",method="GET",status="200"} 5
ota_status_reports_total{protocol="mqtt",state="installing",outcome="applied"} 7
ota_http_requests_total{route="/x",method="GET",status="200"} 85
ota_http_requests_total{route="/x",method="GET",status="503"} 10
ota_mqtt_connections 3
ota_outbox_pending 12
ota_bus_pending_events{topic="staging",group="staging"} 4
ota_bus_pending_events{topic="vehicles",group="campaign-manager"} 1
ota_staging_lag_seconds_bucket{le="+Inf"} 4
ota_staging_lag_seconds_sum 2
ota_staging_lag_seconds_count 4
ota_staging_reconcile_repaired_total 3
"#;

    #[test]
    fn totals_come_from_the_metrics_text() {
        let t = Totals::parse(TEXT);
        assert_eq!(t.polls, 15.0);
        assert_eq!(t.reports, 7.0);
        assert_eq!((t.http_requests, t.http_errors), (100.0, 10.0));
        assert_eq!(t.mqtt_connections, 3.0);
        assert_eq!(t.outbox_pending, 12.0);
        assert_eq!(t.bus_pending, 5.0);
        assert_eq!((t.lag_seconds, t.lags), (2.0, 4.0));
        assert_eq!(t.reconcile_repaired, 3.0);
        let later = Totals {
            polls: 35.0,
            http_requests: 205.0,
            http_errors: 10.0,
            lag_seconds: 5.0,
            lags: 6.0,
            ..t.clone()
        };
        let r = later.rates_since(&t, 2.0);
        assert_eq!(r.polls, 10.0);
        assert_eq!(r.http_error_pct, 0.0);
        assert_eq!(
            r.lag_mean,
            Some(1.5),
            "3 s over the 2 documents staged since"
        );
        assert_eq!(t.rates_since(&t, 2.0).lag_mean, None);
    }
}
