//! The management REST API under `/api/v1` (JSON, bearer tokens with roles):
//! what the `ota` CLI and the dashboard talk to. Handlers are thin: they
//! authenticate, translate JSON to the gRPC services' messages and call the
//! services through their clients, in-process or remote alike. The OpenAPI
//! document at `/api/v1/openapi.json` is generated from the same handlers
//! the routes are.

mod auth;
mod campaigns;
mod credentials;
mod error;
mod import;
mod info;
pub mod model;
mod openapi;
mod packages;
mod reports;
mod rules;
pub mod staging;
mod tokens;
mod vehicles;

use axum::extract::DefaultBodyLimit;
use axum::{Json, Router};
use ota_auth::vehicles::VehicleCredentials;
use ota_auth::{TokenInfo, TokenStore};
use ota_common::peer::Peer;
use ota_proto::v1::campaign_manager_client::CampaignManagerClient;
use ota_proto::v1::rule_engine_client::RuleEngineClient;
use ota_proto::v1::staging_client::StagingClient;
use ota_proto::v1::vehicle_store_client::VehicleStoreClient;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::Caller;
pub use error::RestError;
pub use info::{MqttInfo, ServerInfo};
pub use openapi::{openapi_document, served_routes};

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

/// The API with its JSON 404 for unknown paths.
pub fn router(state: RestState) -> Router {
    routes(state).fallback(not_found)
}

/// The API without a fallback, to merge with other routers (axum merges at
/// most one fallback); give the merged router [`not_found`].
pub fn routes(state: RestState) -> Router {
    let (router, _) = api(state.limits).split_for_parts();
    router.with_state(state)
}

/// Every route with its part of the API document. Routes are added only
/// through `routes!`, which takes each one's path and methods from its
/// handler's `#[utoipa::path]`, so none is served without being described.
/// Handlers named together share a path.
fn api(limits: Limits) -> OpenApiRouter<RestState> {
    let import = OpenApiRouter::default()
        .routes(routes!(import::import_vehicles))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limits.max_import_bytes));
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(vehicles::list))
        .routes(routes!(vehicles::get, vehicles::put))
        .routes(routes!(
            credentials::list,
            credentials::issue,
            credentials::revoke_all
        ))
        .routes(routes!(credentials::revoke_one))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(rules::validate))
        .routes(routes!(rules::explain))
        .routes(routes!(rules::preview))
        .routes(routes!(packages::list, packages::create))
        .routes(routes!(packages::get))
        .routes(routes!(campaigns::list, campaigns::create))
        .routes(routes!(campaigns::validate))
        .routes(routes!(campaigns::get, campaigns::action))
        .routes(routes!(campaigns::set_priority))
        .routes(routes!(reports::report))
        .routes(routes!(reports::audit))
        .routes(routes!(staging::stats))
        .routes(routes!(staging::restage))
        .routes(routes!(whoami))
        .routes(routes!(info::info))
        .routes(routes!(openapi::serve))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .merge(import)
}

/// The caller's token, with its principal (any role)
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "server",
    operation_id = "whoami",
    responses(
        (status = 200, description = "The caller's token", body = TokenInfo),
    ),
)]
async fn whoami(caller: Caller) -> Json<TokenInfo> {
    Json(caller.0)
}

pub async fn not_found(uri: http::Uri) -> RestError {
    RestError::NoRoute(uri.path().to_owned())
}
