//! The admin dashboard under `/ui`: server-rendered pages (maud, escaped by
//! default; CSS, script and charts compiled into the binary) to follow a
//! campaign, triage its failures and diagnose one vehicle. It logs in with a
//! management token and then holds a session cookie; it reads through the
//! same service clients as the REST API ([`ota_rest::RestState`]), so a
//! dashboard in a split deployment calls remote peers like any other role.

mod assets;
mod campaigns;
mod chart;
mod error;
mod health;
mod layout;
mod session;
mod vehicles;

use std::sync::Arc;

use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;
use ota_auth::sessions::Sessions;
use ota_rest::RestState;

pub use error::DashError;
pub use health::{Health, Place, RoleProbe};

#[derive(Clone)]
pub struct DashState {
    /// The service clients and token store the REST API uses.
    pub api: RestState,
    pub sessions: Sessions,
    /// Cookies get `Secure` when the dashboard is reached over HTTPS.
    pub secure_cookies: bool,
    pub health: Arc<Health>,
}

impl DashState {
    pub fn new(api: RestState, health: Health) -> Self {
        Self {
            sessions: Sessions::new(api.tokens.clone()),
            api,
            secure_cookies: false,
            health: Arc::new(health),
        }
    }

    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }
}

/// The dashboard's pages, to merge into the HTTP router (no fallback).
pub fn routes(state: DashState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/campaigns") }))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/campaigns", get(campaigns::list))
        .route("/ui/campaigns/{id}", get(campaigns::page))
        .route("/ui/campaigns/{id}/action", post(campaigns::action))
        .route("/ui/campaigns/{id}/retry", post(campaigns::retry))
        .route(
            "/ui/campaigns/{id}/failures.csv",
            get(campaigns::failures_csv),
        )
        .route("/ui/vehicles", get(vehicles::search))
        .route("/ui/vehicles/{vin}", get(vehicles::page))
        .route("/ui/health", get(health::page))
        .route("/ui/{*rest}", get(error::no_page))
        .with_state(state)
}
