//! `ota serve`: the one server builder. It creates the roles this process
//! runs (`node`), and serves their gRPC services (with health and
//! reflection) and HTTP routes (with health, readiness and metrics) until
//! SIGTERM or ctrl-c, then drains and stops them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ota_common::peer::{self, GrpcMetricsLayer};
use ota_db::Db;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::{Config, Service};
use crate::node::Node;
use crate::telemetry::Telemetry;

/// How long in-flight requests get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

struct HttpState {
    telemetry: Telemetry,
    db: Option<Db>,
    /// Not ready until its documents are rebuilt (the in-process store
    /// starts empty).
    stager: Option<ota_staging::Stager>,
    services: BTreeSet<Service>,
    /// `http.metrics_token`: when set, `/metrics` wants it as a bearer token.
    metrics_token: Option<String>,
}

pub async fn run(cfg: Config, telemetry: Telemetry) -> anyhow::Result<()> {
    let started = Instant::now();
    crate::metric_catalog::describe();
    let open_files = crate::files::raise_limit();
    log_start(&cfg, open_files);
    if uses_data_dir(&cfg, &cfg.services()) {
        crate::files::private_dir(&cfg.data_dir)?;
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut node = Node::connect(cfg, shutdown_rx.clone(), open_files).await?;
    node.metrics = Some(telemetry.metrics.clone());
    let parts = node.create_roles().await?;
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, draining");
        let _ = shutdown_tx.send(true);
    });

    let grpc = grpc_server(&node, parts.grpc, &parts.grpc_names).await?;
    let cfg = &node.cfg;
    let (http_addr, grpc_addr) = (cfg.http_addr(), cfg.grpc_addr());
    let http_listener = TcpListener::bind(http_addr).await.with_context(|| {
        format!("cannot listen for HTTP on {http_addr} (http_addr / OTA_HTTP_ADDR)")
    })?;
    let state = Arc::new(HttpState {
        telemetry,
        db: node.db.clone(),
        stager: parts.stager,
        services: node.services.clone(),
        metrics_token: cfg.http.metrics_token.clone(),
    });
    let app = with_platform_routes(parts.http, state.clone());
    let (http_limits, http_stop) = (cfg.http_limits(), wait_true(shutdown_rx.clone()));
    let http = async move {
        crate::listener::serve(http_listener, app, http_limits, http_stop).await;
        Ok::<(), std::io::Error>(())
    };
    tracing::info!(%http_addr, %grpc_addr, elapsed_ms = started.elapsed().as_millis() as u64, "ota is serving");

    let pool_gauge = node.db.clone().map(|db| tokio::spawn(report_pool(db)));
    let side_stop = tokio::spawn(stop_after_drain(parts.stops, shutdown_rx.clone()));
    drain(async { tokio::join!(grpc, http) }, shutdown_rx).await?;
    if let Some(g) = pool_gauge {
        g.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(7), side_stop).await;
    // Background loops saw the shutdown signal; give them a moment to end
    // their current step (a status batch, a relay pass).
    for task in parts.tasks.into_iter().chain(node.events.tasks.drain(..)) {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    if let Some(db) = &node.db {
        db.close().await;
    }
    tracing::info!("stopped");
    state.telemetry.shutdown();
    Ok(())
}

fn log_start(cfg: &Config, open_files: Option<u64>) {
    let names: Vec<&str> = cfg.services().iter().map(|s| s.name()).collect();
    #[cfg(unix)]
    let huge_pages = ota_common::alloc::huge_pages();
    #[cfg(not(unix))]
    let huge_pages: Option<String> = None;
    let huge_pages = huge_pages.as_deref().unwrap_or("unknown");
    tracing::info!(services = ?names, version = env!("CARGO_PKG_VERSION"), ?open_files, huge_pages, "starting ota");
}

/// gRPC: every service of this process, plus health and reflection.
async fn grpc_server(
    node: &Node,
    routes: tonic::service::RoutesBuilder,
    names: &[&'static str],
) -> anyhow::Result<impl std::future::Future<Output = Result<(), tonic::transport::Error>>> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in names {
        health_reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ota_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let grpc_addr = node.cfg.grpc_addr();
    let listener = TcpListener::bind(grpc_addr).await.with_context(|| {
        format!("cannot listen for gRPC on {grpc_addr} (grpc_addr / OTA_GRPC_ADDR)")
    })?;
    Ok(tonic::transport::Server::builder()
        .trace_fn(peer::grpc_request_span)
        .layer(GrpcMetricsLayer)
        .add_routes(routes.routes())
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            wait_true(node.shutdown.clone()),
        ))
}

/// The roles' routes with health, readiness and metrics, measured and
/// traced per route.
fn with_platform_routes(roles: Router, state: Arc<HttpState>) -> Router {
    roles
        .merge(
            Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route("/readyz", get(readyz))
                .route("/metrics", get(metrics))
                .with_state(state),
        )
        .layer(axum::middleware::from_fn(http_metrics))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(http_request_span))
}

/// Runs the servers until they drained after the shutdown signal, or
/// until the grace period: a client that never hangs up (a peer's idle
/// channel) must not keep the process alive.
async fn drain(
    servers: impl std::future::Future<
        Output = (
            Result<(), tonic::transport::Error>,
            Result<(), std::io::Error>,
        ),
    >,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let limit = async {
        wait_true(shutdown).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        (grpc, http) = servers => {
            grpc.context("gRPC server failed")?;
            http.context("HTTP server failed")?;
        }
        _ = limit => {
            tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "connections still open after the shutdown grace period; closing them");
        }
    }
    Ok(())
}

/// The roles' stops (the MQTT adapter, staging), latest role first, each
/// within a bounded time: a stuck one must not keep the process from
/// exiting.
async fn stop_after_drain(
    stops: Vec<(&'static str, crate::node::Stop)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = shutdown.wait_for(|v| *v).await;
    for (name, stop) in stops.into_iter().rev() {
        if tokio::time::timeout(Duration::from_secs(3), stop)
            .await
            .is_err()
        {
            tracing::warn!("{name} did not stop within 3 s");
        }
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    let mut problems = Vec::new();
    if let Some(db) = &s.db {
        if let Err(e) = tokio::time::timeout(Duration::from_secs(2), db.ping())
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        {
            problems.push(format!("database: {e}"));
        }
    }
    if s.stager.as_ref().is_some_and(|st| !st.is_ready()) {
        problems.push("staging: still rebuilding the staged documents".to_string());
    }
    let services: Vec<&str> = s.services.iter().map(|x| x.name()).collect();
    if problems.is_empty() {
        axum::Json(serde_json::json!({"ready": true, "services": services})).into_response()
    } else {
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            [(
                http::header::RETRY_AFTER,
                ota_common::http_error::UNAVAILABLE_RETRY_AFTER_S.to_string(),
            )],
            axum::Json(
                serde_json::json!({"ready": false, "services": services, "problems": problems}),
            ),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<HttpState>>, headers: http::HeaderMap) -> Response {
    if let Some(want) = &s.metrics_token {
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !ota_common::secret::constant_time_eq(given.trim().as_bytes(), want.trim().as_bytes()) {
            let message = "/metrics needs Authorization: Bearer <http.metrics_token>";
            return (
                http::StatusCode::UNAUTHORIZED,
                [(http::header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(
                    serde_json::json!({"error": {"code": "unauthenticated", "message": message}}),
                ),
            )
                .into_response();
        }
    }
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.telemetry.render(),
    )
        .into_response()
}

/// The data directory holds the SQLite database, artifacts and the
/// bootstrap token: only roles that keep one of those create it.
fn uses_data_dir(cfg: &Config, services: &BTreeSet<Service>) -> bool {
    let sqlite = cfg.database_url().starts_with("sqlite:");
    let db_roles = [
        Service::VehicleStore,
        Service::CampaignManager,
        Service::Rest,
        Service::HttpAdapter,
        Service::MqttAdapter,
    ];
    services.contains(&Service::Rest)
        || services.contains(&Service::HttpAdapter)
        || (sqlite && db_roles.iter().any(|r| services.contains(r)))
}

/// One span per HTTP request, named by route template like the metrics,
/// continuing the caller's trace: the vehicle API, DDI and REST alike.
fn http_request_span(req: &http::Request<axum::body::Body>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str())
        .unwrap_or("unmatched");
    ota_common::trace::http_request_span(req.method(), route, req.headers())
}

/// `ota_http_requests_total` and `ota_http_request_duration_seconds` by
/// route template (never the raw path: VINs would explode the cardinality).
async fn http_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("ota_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("ota_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    res
}

async fn report_pool(db: Db) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let (idle, active) = db.pool_usage();
        metrics::gauge!("ota_db_pool_connections", "state" => "idle").set(idle as f64);
        metrics::gauge!("ota_db_pool_connections", "state" => "active").set(active as f64);
    }
}
