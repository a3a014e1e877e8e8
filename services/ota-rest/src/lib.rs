//! The management REST API under `/api/v1` (JSON, bearer tokens with roles):
//! what the `ota` CLI and the dashboard talk to. Handlers are thin: they
//! authenticate, translate JSON to the gRPC services' messages and call the
//! services through their clients, in-process or remote alike.

mod auth;
mod campaigns;
mod credentials;
mod error;
mod import;
mod info;
pub mod model;
mod packages;
mod reports;
mod rules;
pub mod staging;
mod tokens;
mod vehicles;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ota_auth::vehicles::VehicleCredentials;
use ota_auth::TokenStore;
use ota_common::peer::Peer;
use ota_proto::v1::campaign_manager_client::CampaignManagerClient;
use ota_proto::v1::rule_engine_client::RuleEngineClient;
use ota_proto::v1::staging_client::StagingClient;
use ota_proto::v1::vehicle_store_client::VehicleStoreClient;
use tower_http::limit::RequestBodyLimitLayer;

pub use auth::Caller;
pub use error::RestError;
pub use info::{MqttInfo, ServerInfo};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Largest vehicle import body.
    pub max_import_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_import_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

#[derive(Clone)]
pub struct RestState {
    pub tokens: TokenStore,
    /// Vehicle secrets, in the same database as the tokens.
    pub credentials: VehicleCredentials,
    pub vehicles: VehicleStoreClient<Peer>,
    pub rules: RuleEngineClient<Peer>,
    pub campaigns: CampaignManagerClient<Peer>,
    /// Unset when this process cannot reach staging.
    pub staging: Option<StagingClient<Peer>>,
    pub limits: Limits,
    /// What `GET /api/v1/info` tells.
    pub info: std::sync::Arc<ServerInfo>,
}

impl RestState {
    pub fn new(
        tokens: TokenStore,
        vehicle_store: Peer,
        rule_engine: Peer,
        campaign_manager: Peer,
        limits: Limits,
    ) -> Self {
        let vehicles = VehicleStoreClient::new(vehicle_store)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let campaigns = CampaignManagerClient::new(campaign_manager)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024);
        Self {
            credentials: VehicleCredentials::new(tokens.db().clone()),
            tokens,
            vehicles,
            rules: RuleEngineClient::new(rule_engine),
            campaigns,
            staging: None,
            limits,
            info: Default::default(),
        }
    }
}

impl RestState {
    /// Serves staging's statistics and restaging too.
    pub fn with_staging(mut self, staging: Peer) -> Self {
        self.staging = Some(StagingClient::new(staging));
        self
    }

    pub fn with_info(mut self, info: ServerInfo) -> Self {
        self.info = std::sync::Arc::new(info);
        self
    }
}

pub const OPENAPI: &str = include_str!("openapi.json");

/// The API with its JSON 404 for unknown paths.
pub fn router(state: RestState) -> Router {
    routes(state).fallback(not_found)
}

/// The API without a fallback, to merge with other routers (axum merges at
/// most one fallback); give the merged router [`not_found`].
pub fn routes(state: RestState) -> Router {
    let import = Router::new()
        .route("/api/v1/vehicles:import", post(import::import_vehicles))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(state.limits.max_import_bytes));
    Router::new()
        .route("/api/v1/vehicles", get(vehicles::list))
        .route(
            "/api/v1/vehicles/{vin}",
            get(vehicles::get).put(vehicles::put),
        )
        .route(
            "/api/v1/vehicles/{vin}/credentials",
            get(credentials::list)
                .post(credentials::issue)
                .delete(credentials::revoke_all),
        )
        .route(
            "/api/v1/vehicles/{vin}/credentials/{id}",
            axum::routing::delete(credentials::revoke_one),
        )
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/api/v1/rules/validate", post(rules::validate))
        .route("/api/v1/rules/explain", post(rules::explain))
        .route("/api/v1/rules/preview", post(rules::preview))
        .route(
            "/api/v1/packages",
            get(packages::list).post(packages::create),
        )
        .route("/api/v1/packages/{id}", get(packages::get))
        .route(
            "/api/v1/campaigns",
            get(campaigns::list).post(campaigns::create),
        )
        .route("/api/v1/campaigns:validate", post(campaigns::validate))
        .route(
            "/api/v1/campaigns/{target}",
            get(campaigns::get).post(campaigns::action),
        )
        .route(
            "/api/v1/campaigns/{id}/priority",
            put(campaigns::set_priority),
        )
        .route("/api/v1/campaigns/{id}/report", get(reports::report))
        .route("/api/v1/audit", get(reports::audit))
        .route("/api/v1/staging/stats", get(staging::stats))
        .route("/api/v1/staging:restage", post(staging::restage))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/info", get(info::info))
        .route("/api/v1/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .merge(import)
        .with_state(state)
}

async fn whoami(caller: Caller) -> Json<ota_auth::TokenInfo> {
    Json(caller.0)
}

async fn openapi() -> impl axum::response::IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub async fn not_found(uri: http::Uri) -> RestError {
    RestError::NoRoute(uri.path().to_owned())
}
