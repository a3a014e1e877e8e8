//! `GET /api/v1/info`: where vehicles reach this deployment. Tools that act
//! as vehicles (`ota simulate`) and people setting devices up read the
//! broker address and DDI base from here instead of guessing them, since
//! the server's own settings (say `OTA_MQTT_LISTEN` given to `ota serve`
//! alone) are not in their environment.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::{Caller, RestState};

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ServerInfo {
    pub version: String,
    /// The roles this process runs.
    pub services: Vec<String>,
    /// How vehicles reach the HTTP vehicle API, DDI and hosted artifacts.
    pub public_url: String,
    /// The broker vehicles connect to, when MQTT is served.
    pub mqtt: Option<MqttInfo>,
    /// The hawkBit DDI base, `{public_url}/{tenant}/controller/v1/`.
    pub ddi_url: String,
    pub ddi_tenant: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MqttInfo {
    /// `mqtt://host:port`.
    pub url: String,
    /// True for the broker inside `ota serve`, false for an external one.
    pub embedded: bool,
}

/// Where vehicles reach this deployment: public URL, MQTT broker, DDI base (any role)
#[utoipa::path(
    get,
    path = "/api/v1/info",
    tag = "server",
    operation_id = "server_info",
    responses(
        (status = 200, description = "This deployment", body = ServerInfo),
    ),
)]
pub(crate) async fn info(_caller: Caller, State(s): State<RestState>) -> Json<ServerInfo> {
    Json((*s.info).clone())
}
