//! The vehicle HTTP API: vehicles authenticate with their own credential,
//! fetch their staged actions (one key lookup, answered 304 when nothing
//! changed), report status and inventory. It also serves the MQTT broker's
//! authentication and authorization hooks, so both protocols check the
//! same vehicle credentials. Everything behind it is reached over gRPC
//! clients, in-process or remote alike.

mod delivered;
mod error;
pub mod mqtt;
mod staging;
mod vehicle;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use ota_auth::vehicles::VehicleCredentials;
use ota_common::last_seen::LastSeen;
use ota_common::peer::Peer;
use ota_proto::v1::campaign_manager_client::CampaignManagerClient;
use ota_proto::v1::vehicle_store_client::VehicleStoreClient;
use ota_staging::StagingPeer;

pub use error::AdapterError;
pub use mqtt::MqttSuperuser;
pub use ota_common::rate::RateLimit;
use ota_common::rate::{VehicleLimits, VehicleRates};

#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// Largest request body; larger get 413.
    pub max_body_bytes: usize,
    /// Polls (`GET .../actions`) per vehicle; over it get 429 with
    /// Retry-After.
    pub rate_limit: RateLimit,
    /// Reports (status, inventory) per vehicle; over it get 429 with
    /// Retry-After, and nothing is recorded.
    pub report_rate_limit: RateLimit,
    /// Each vehicle is told `poll_after_s` scaled into [1 - this, 1 + this]
    /// (at most 0.5), so a fleet does not poll in waves.
    pub poll_jitter: f64,
    /// The broker login allowed every topic (e.g. OTA_MQTT_USERNAME and
    /// OTA_MQTT_PASSWORD); without it only vehicles get in.
    pub mqtt_superuser: Option<MqttSuperuser>,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            rate_limit: RateLimit::POLLS,
            report_rate_limit: RateLimit::REPORTS,
            poll_jitter: 0.2,
            mqtt_superuser: None,
        }
    }
}

/// What the router serves from. Cheap to clone.
#[derive(Clone)]
pub struct AdapterState {
    inner: Arc<Inner>,
}

struct Inner {
    credentials: VehicleCredentials,
    staging: StagingPeer,
    campaigns: CampaignManagerClient<Peer>,
    vehicles: VehicleStoreClient<Peer>,
    config: AdapterConfig,
    limits: Arc<VehicleLimits>,
    delivered: delivered::Delivered,
    /// Where authenticated requests note that their vehicle was seen.
    last_seen: Option<LastSeen>,
}

impl AdapterState {
    pub fn new(
        credentials: VehicleCredentials,
        staging: StagingPeer,
        campaign_manager: Peer,
        vehicle_store: Peer,
        config: AdapterConfig,
    ) -> Self {
        let campaigns = CampaignManagerClient::new(campaign_manager);
        Self {
            inner: Arc::new(Inner {
                credentials,
                staging,
                delivered: delivered::Delivered::new(campaigns.clone()),
                campaigns,
                vehicles: VehicleStoreClient::new(vehicle_store),
                limits: Arc::new(VehicleLimits::new(VehicleRates {
                    polls: config.rate_limit,
                    reports: config.report_rate_limit,
                })),
                config,
                last_seen: None,
            }),
        }
    }

    /// Notes every authenticated vehicle request in `seen`, which the
    /// process writes to the vehicle store in batches.
    pub fn with_last_seen(mut self, seen: LastSeen) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("last-seen is set while the state is built, before it is shared")
            .last_seen = Some(seen);
        self
    }

    /// Takes the vehicles' budgets from `limits` instead of the config's
    /// rates, so the adapters of one process share them: a vehicle gets no
    /// more by switching protocols.
    pub fn with_limits(mut self, limits: Arc<VehicleLimits>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("the limits are set while the state is built, before it is shared")
            .limits = limits;
        self
    }

    pub fn config(&self) -> &AdapterConfig {
        &self.inner.config
    }
}

/// A vehicle's poll for its staged document.
const POLL_ROUTE: &str = "/v1/vehicles/{vin}/actions";

/// The route templates, which are also the metrics' `route` labels.
const ROUTES: [&str; 5] = [
    POLL_ROUTE,
    "/v1/vehicles/{vin}/actions/{action_id}/status",
    "/v1/vehicles/{vin}/inventory",
    "/v1/mqtt/auth",
    "/v1/mqtt/acl",
];

/// Without a fallback of its own: `ota serve` merges this router with the
/// management API's, and axum refuses to merge two fallbacks.
pub fn router(state: AdapterState) -> Router {
    let [actions, status, inventory, mqtt_auth, mqtt_acl] = ROUTES;
    Router::new()
        .route(actions, get(vehicle::actions))
        .route(status, post(vehicle::status))
        .route(inventory, put(vehicle::inventory))
        .route(mqtt_auth, post(mqtt::auth))
        .route(mqtt_acl, post(mqtt::acl))
        .layer(DefaultBodyLimit::max(state.inner.config.max_body_bytes))
        .layer(middleware::from_fn(count))
        .with_state(state)
}

/// Bound on one call to a service: a hung peer must turn into a 503 the
/// vehicle retries, not a connection held open until the vehicle gives up.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn bounded<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::unavailable(format!(
            "no answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// `ota_vehicle_requests_total{route,status}` by route template, so the
/// label set stays bounded however many vehicles there are, and
/// `ota_poll_requests_total{protocol="http",outcome}` for the polls, the
/// number the dashboards and the health page show beside the DDI polls.
/// The labels are static strings: this runs on every poll.
async fn count(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| ROUTES.into_iter().find(|r| *r == p.as_str()))
        .unwrap_or("unmatched");
    let started = Instant::now();
    let res = next.run(req).await;
    let status = status_label(res.status());
    if route == POLL_ROUTE {
        metrics::counter!("ota_poll_requests_total", "protocol" => "http", "outcome" => status.clone())
            .increment(1);
    }
    let route = metrics::SharedString::const_str(route);
    metrics::counter!("ota_vehicle_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("ota_vehicle_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}

/// The status as a label without formatting a string on every request.
fn status_label(status: http::StatusCode) -> metrics::SharedString {
    match status.as_u16() {
        200 => metrics::SharedString::const_str("200"),
        202 => metrics::SharedString::const_str("202"),
        304 => metrics::SharedString::const_str("304"),
        429 => metrics::SharedString::const_str("429"),
        other => metrics::SharedString::from(other.to_string()),
    }
}
