//! `ota serve`: the one server builder. It starts the services this process
//! runs, connects to the peers it does not, and serves gRPC (all local
//! services, health, reflection) and HTTP (health, metrics, the REST API) until
//! SIGTERM or ctrl-c.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ota_auth::TokenStore;
use ota_campaign_manager::{CampaignManager, CampaignManagerService};
use ota_common::peer::{self, GrpcMetricsLayer, Peer};
use ota_db::{Db, DbOptions};
use ota_proto::v1 as pb;
use ota_rule_engine::{RuleEngineService, StoreVehicles};
use ota_vehicle_store::grpc::VehicleStoreService;
use ota_vehicle_store::VehicleStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::{Config, Service};
use crate::events::Events;
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
    let services = cfg.services();
    let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    let open_files = crate::files::raise_limit();
    #[cfg(unix)]
    let huge_pages = ota_common::alloc::huge_pages();
    #[cfg(not(unix))]
    let huge_pages: Option<String> = None;
    let huge_pages = huge_pages.as_deref().unwrap_or("unknown");
    tracing::info!(services = ?names, version = env!("CARGO_PKG_VERSION"), ?open_files, huge_pages, "starting ota");

    if uses_data_dir(&cfg, &services) {
        crate::files::private_dir(&cfg.data_dir)?;
    }

    // The adapters check vehicle credentials, which live in the database.
    let needs_db = services.contains(&Service::VehicleStore)
        || services.contains(&Service::Rest)
        || services.contains(&Service::CampaignManager)
        || services.contains(&Service::HttpAdapter)
        || services.contains(&Service::MqttAdapter);
    let db = if needs_db {
        let url = cfg.database_url();
        let opts = DbOptions {
            max_connections: cfg.database.max_connections,
            acquire_timeout: Duration::from_millis(cfg.database.acquire_timeout_ms),
        };
        let db = tokio::time::timeout(Duration::from_secs(15), Db::connect(&url, &opts))
            .await
            .with_context(|| {
                format!(
                    "timed out connecting to the database {} (database_url / OTA_DATABASE_URL)",
                    ota_db::redact(&url)
                )
            })?
            .with_context(|| {
                "the database is not usable (database_url / OTA_DATABASE_URL)".to_string()
            })?;
        Some(db)
    } else {
        None
    };

    // Local services and the peers everything else reaches them by.
    let vehicle_store_server = match (&db, services.contains(&Service::VehicleStore)) {
        (Some(db), true) => Some(
            VehicleStoreService::new(VehicleStore::new(db, cfg.vehicle_store.precedence.clone()))
                .into_server(),
        ),
        _ => None,
    };
    // Built once, only when something in this process calls the store.
    let vehicle_peer: Option<Peer> = if services.contains(&Service::Rest)
        || services.contains(&Service::RuleEngine)
        || services.contains(&Service::CampaignManager)
        || services.contains(&Service::HttpAdapter)
        || services.contains(&Service::MqttAdapter)
    {
        Some(match &vehicle_store_server {
            Some(s) => peer::in_process(s.clone()),
            None => {
                peer::remote(&cfg.peer_url(Service::VehicleStore)?).map_err(anyhow::Error::msg)?
            }
        })
    } else {
        None
    };
    let rule_engine_server = match (&vehicle_peer, services.contains(&Service::RuleEngine)) {
        (Some(vp), true) => {
            Some(RuleEngineService::new(StoreVehicles::new(vp.clone())).into_server())
        }
        _ => None,
    };
    let rule_peer: Option<Peer> =
        if services.contains(&Service::Rest) || services.contains(&Service::CampaignManager) {
            Some(match &rule_engine_server {
                Some(s) => peer::in_process(s.clone()),
                None => {
                    peer::remote(&cfg.peer_url(Service::RuleEngine)?).map_err(anyhow::Error::msg)?
                }
            })
        } else {
            None
        };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let events = Events::start(&cfg, &services, db.as_ref(), shutdown_rx.clone()).await?;
    let mut background = events.tasks;

    let campaign_server = match (&db, services.contains(&Service::CampaignManager)) {
        (Some(db), true) => {
            let store =
                ota_campaign_manager::store::Store::new(db.clone(), events.relay_waker.clone());
            let manager = CampaignManager::new(
                store,
                rule_peer.clone().expect("built for the campaign manager"),
                Arc::new(StoreVehicles::new(
                    vehicle_peer
                        .clone()
                        .expect("built for the campaign manager"),
                )),
                ota_campaign_manager::Config {
                    tick: Duration::from_millis(cfg.campaigns.tick_ms),
                    status_batch: cfg.campaigns.status_batch,
                },
            )
            .with_inventory(
                vehicle_peer
                    .clone()
                    .expect("built for the campaign manager"),
            );
            background
                .extend(manager.spawn_background(Some(events.bus.clone()), shutdown_rx.clone()));
            Some(CampaignManagerService::new(manager).into_server())
        }
        _ => None,
    };
    let campaign_peer: Option<Peer> = if services.contains(&Service::Rest) {
        Some(match &campaign_server {
            Some(s) => peer::in_process(s.clone()),
            None => peer::remote(&cfg.peer_url(Service::CampaignManager)?)
                .map_err(anyhow::Error::msg)?,
        })
    } else {
        None
    };
    let staging = if services.contains(&Service::Staging) {
        let campaigns = match &campaign_server {
            Some(s) => peer::in_process(s.clone()),
            None => peer::remote(&cfg.peer_url(Service::CampaignManager)?)
                .map_err(anyhow::Error::msg)?,
        };
        let store: ota_staging::SharedStore = match &cfg.redis_url {
            Some(url) => Arc::new(ota_staging::RedisStore::connect(url).await.with_context(
                || {
                    format!(
                        "cannot reach Redis for staged documents at {} (redis_url / OTA_REDIS_URL)",
                        ota_db::redact(url)
                    )
                },
            )?),
            None => Arc::new(ota_staging::MemoryStore::new()),
        };
        let stager = ota_staging::Stager::new(
            store,
            Arc::new(ota_staging::campaign_manager_source(campaigns)),
            cfg.staging.poll_after_s,
        )
        .with_public_url(&cfg.public_url());
        let tasks = ota_staging::StagingTasks::spawn(
            stager.clone(),
            events.bus.clone(),
            ota_staging::RunConfig {
                reconcile_every: Duration::from_secs(cfg.staging.reconcile_interval_s.max(1)),
                worker: ota_staging::WorkerConfig {
                    // The MQTT adapter listens: here, or anywhere Redis
                    // carries events.
                    announce_staged: services.contains(&Service::MqttAdapter)
                        || cfg.redis_url.is_some(),
                    ..Default::default()
                },
            },
        );
        let ready = stager.clone();
        Some((
            ota_staging::StagingService::new(stager, events.bus.clone()),
            tasks,
            ready,
        ))
    } else {
        None
    };
    let staging_local = staging.as_ref().map(|(service, _, _)| service.clone());
    let (staging_server, staging_tasks, stager) = match staging {
        Some((service, tasks, ready)) => (Some(service.into_server()), Some(tasks), Some(ready)),
        None => (None, None, None),
    };

    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, draining");
        let _ = shutdown_tx.send(true);
    });

    let mut http = Router::new();
    let adapters = crate::adapters::start(crate::adapters::Inputs {
        cfg: &cfg,
        services: &services,
        db: db.as_ref(),
        staging: staging_local.clone(),
        campaign_peer: campaign_peer_for_adapters(&cfg, &services, &campaign_server)?,
        vehicle_peer: vehicle_peer.clone(),
        bus: events.bus.clone(),
        open_files,
    })
    .await?;
    http = http.merge(adapters.router);
    if services.contains(&Service::Rest) {
        let db = db.as_ref().expect("rest needs the database");
        let tokens = TokenStore::new(db.clone());
        if let Some(path) = tokens.bootstrap(&cfg.data_dir).await? {
            tracing::info!(path = %path.display(), "created the bootstrap admin token (first start on this database); the CLI reads it from there");
        }
        let limits = ota_rest::Limits {
            max_body_bytes: cfg.limits.max_body_bytes,
            max_import_bytes: cfg.limits.max_import_bytes,
        };
        let vehicle_peer = vehicle_peer.clone().expect("built for rest");
        let rest = ota_rest::RestState::new(
            tokens,
            vehicle_peer,
            rule_peer.clone().expect("built for rest"),
            campaign_peer.clone().expect("built for rest"),
            limits,
        );
        let rest = match &staging_server {
            Some(s) => rest.with_staging(peer::in_process(s.clone())),
            None => match &cfg.peers.staging {
                Some(url) => rest.with_staging(peer::remote(url).map_err(anyhow::Error::msg)?),
                None => rest,
            },
        };
        let rest = rest.with_info(server_info(&cfg, &services));
        http = http
            .merge(ota_rest::routes(rest))
            .fallback(ota_rest::not_found);
    }

    // gRPC: every local service, plus health and reflection.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    if vehicle_store_server.is_some() {
        health_reporter
            .set_serving::<pb::vehicle_store_server::VehicleStoreServer<VehicleStoreService>>()
            .await;
    }
    if rule_engine_server.is_some() {
        health_reporter
            .set_serving::<pb::rule_engine_server::RuleEngineServer<RuleEngineService<StoreVehicles>>>()
            .await;
    }
    if staging_server.is_some() {
        health_reporter
            .set_serving::<pb::staging_server::StagingServer<ota_staging::StagingService>>()
            .await;
    }
    if campaign_server.is_some() {
        health_reporter
            .set_serving::<pb::campaign_manager_server::CampaignManagerServer<CampaignManagerService>>()
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ota_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let grpc_addr = cfg.grpc_addr();
    let grpc_listener = TcpListener::bind(grpc_addr).await.with_context(|| {
        format!("cannot listen for gRPC on {grpc_addr} (grpc_addr / OTA_GRPC_ADDR)")
    })?;
    let grpc = tonic::transport::Server::builder()
        .trace_fn(peer::grpc_request_span)
        .layer(GrpcMetricsLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_optional_service(vehicle_store_server)
        .add_optional_service(rule_engine_server)
        .add_optional_service(staging_server)
        .add_optional_service(campaign_server)
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(grpc_listener),
            wait_true(shutdown_rx.clone()),
        );

    let http_addr = cfg.http_addr();
    let http_listener = TcpListener::bind(http_addr).await.with_context(|| {
        format!("cannot listen for HTTP on {http_addr} (http_addr / OTA_HTTP_ADDR)")
    })?;
    let state = Arc::new(HttpState {
        telemetry,
        db: db.clone(),
        stager,
        services,
        metrics_token: cfg.http.metrics_token.clone(),
    });
    let app = http
        .merge(
            Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route("/readyz", get(readyz))
                .route("/metrics", get(metrics))
                .with_state(state.clone()),
        )
        .layer(axum::middleware::from_fn(http_metrics))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(http_request_span));
    let http_limits = cfg.http_limits();
    let http_stop = wait_true(shutdown_rx.clone());
    let http = async move {
        crate::listener::serve(http_listener, app, http_limits, http_stop).await;
        Ok::<(), std::io::Error>(())
    };
    tracing::info!(%http_addr, %grpc_addr, elapsed_ms = started.elapsed().as_millis() as u64, "ota is serving");

    let pool_gauge = db.clone().map(|db| tokio::spawn(report_pool(db)));
    // The MQTT adapter and staging stop while the servers drain, each within
    // a bounded time: a stuck one must not keep the process from exiting.
    let mqtt = adapters.mqtt;
    let mut stop_rx = shutdown_rx.clone();
    let side_stop = tokio::spawn(async move {
        let _ = stop_rx.wait_for(|v| *v).await;
        if let Some(mqtt) = mqtt {
            if tokio::time::timeout(Duration::from_secs(3), mqtt.stop())
                .await
                .is_err()
            {
                tracing::warn!("the MQTT adapter did not stop within 3 s");
            }
        }
        if let Some(tasks) = staging_tasks {
            if tokio::time::timeout(Duration::from_secs(3), tasks.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("staging did not stop within 3 s");
            }
        }
    });
    let servers = async { tokio::join!(grpc, http) };
    // Draining waits for open connections; a client that never hangs up (a
    // peer's idle channel) must not keep the process alive past the grace.
    let drain_limit = async {
        wait_true(shutdown_rx.clone()).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        (grpc_result, http_result) = servers => {
            grpc_result.context("gRPC server failed")?;
            http_result.context("HTTP server failed")?;
        }
        _ = drain_limit => {
            tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "connections still open after the shutdown grace period; closing them");
        }
    }
    if let Some(g) = pool_gauge {
        g.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), side_stop).await;
    // Background loops saw the shutdown signal; give them a moment to end
    // their current step (a status batch, a relay pass).
    for task in background {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    if let Some(db) = &db {
        db.close().await;
    }
    tracing::info!("stopped");
    state.telemetry.shutdown();
    Ok(())
}

/// The campaign manager as the vehicle adapters reach it, when this process
/// runs one.
fn campaign_peer_for_adapters(
    cfg: &Config,
    services: &BTreeSet<Service>,
    local: &Option<pb::campaign_manager_server::CampaignManagerServer<CampaignManagerService>>,
) -> anyhow::Result<Option<Peer>> {
    if !(services.contains(&Service::HttpAdapter) || services.contains(&Service::MqttAdapter)) {
        return Ok(None);
    }
    Ok(Some(match local {
        Some(s) => peer::in_process(s.clone()),
        None => {
            peer::remote(&cfg.peer_url(Service::CampaignManager)?).map_err(anyhow::Error::msg)?
        }
    }))
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

/// What `GET /api/v1/info` tells: where vehicles reach this deployment.
fn server_info(cfg: &Config, services: &BTreeSet<Service>) -> ota_rest::ServerInfo {
    let public_url = cfg.public_url();
    let mqtt = match (&cfg.mqtt_url, services.contains(&Service::MqttAdapter)) {
        (Some(url), _) => Some(ota_rest::MqttInfo {
            url: url.clone(),
            embedded: false,
        }),
        (None, true) => {
            let listen: std::net::SocketAddr = cfg.mqtt_listen.parse().expect("validated");
            // A broker on every interface is reached by the public host.
            let host = if listen.ip().is_unspecified() {
                http::Uri::try_from(public_url.as_str())
                    .ok()
                    .and_then(|u| u.host().map(str::to_owned))
                    .unwrap_or_else(|| "127.0.0.1".into())
            } else {
                listen.ip().to_string()
            };
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            Some(ota_rest::MqttInfo {
                url: format!("mqtt://{host}:{}", listen.port()),
                embedded: true,
            })
        }
        (None, false) => None,
    };
    ota_rest::ServerInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        services: services.iter().map(|s| s.name().to_owned()).collect(),
        ddi_url: format!("{public_url}/{}/controller/v1/", ota_ddi::TENANT),
        ddi_tenant: ota_ddi::TENANT.into(),
        public_url,
        mqtt,
    }
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

/// One span per HTTP request, named by route template like the metrics.
fn http_request_span(req: &http::Request<axum::body::Body>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str())
        .unwrap_or("unmatched");
    tracing::info_span!("http.request", method = %req.method(), route = %route)
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
