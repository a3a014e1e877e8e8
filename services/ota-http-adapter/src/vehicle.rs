//! The vehicle's own endpoints: its pending actions, status reports on
//! them, and its inventory.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, RawPathParams, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use ota_common::rate::Budget;
use ota_common::Vin;
use ota_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{AdapterError, AdapterState};

/// A request made by the vehicle its path names: the bearer token is a
/// valid credential of exactly that VIN, and the vehicle is within its
/// budget: reads (the poll) take from its poll budget, writes (status and
/// inventory reports) from its report budget.
pub struct Authed {
    pub vin: String,
}

impl FromRequestParts<AdapterState> for Authed {
    type Rejection = AdapterError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdapterState,
    ) -> Result<Self, Self::Rejection> {
        let secret = bearer(&parts.headers)?;
        let identity = state.inner.credentials.authenticate(secret).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| AdapterError::Invalid(e.body_text().to_lowercase()))?;
        let vin = params
            .iter()
            .find(|(k, _)| *k == "vin")
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        Vin::parse(&vin)?;
        if identity.vin != vin {
            return Err(AdapterError::WrongVehicle {
                owner: identity.vin,
                vin,
            });
        }
        if let Some(seen) = &state.inner.last_seen {
            seen.record(&vin);
        }
        // Counted after authentication, so nobody can use up another
        // vehicle's budget without its secret.
        let budget = match parts.method {
            http::Method::GET | http::Method::HEAD => Budget::Poll,
            _ => Budget::Report,
        };
        if let Err(wait) = state.inner.limits.check(&vin, budget) {
            return Err(AdapterError::RateLimited {
                vin,
                budget: budget.as_str(),
                retry_after_s: ota_common::rate::retry_after_s(wait),
            });
        }
        Ok(Authed { vin })
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, AdapterError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .ok_or(AdapterError::MissingToken)?
        .to_str()
        .map_err(|_| AdapterError::BadToken)?;
    let secret = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or(AdapterError::MissingToken)?;
    Ok(secret.trim())
}

/// Whether the vehicle's `If-None-Match` names this etag (quoted or not,
/// weak or strong, or `*`).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == etag)
}

fn etag_header(etag: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{etag}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// `GET /v1/vehicles/{vin}/actions`: the staged document, or 304 when the
/// vehicle already has it.
pub async fn actions(
    vehicle: Authed,
    State(s): State<AdapterState>,
    headers: HeaderMap,
) -> Result<Response, AdapterError> {
    let found = s.inner.staging.find(&vehicle.vin).await?;
    let etag = etag_header(found.etag());
    if not_modified(&headers, found.etag()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let doc_etag = found.etag().to_owned();
    let served = crate::staging::serve(found, &vehicle.vin, s.inner.config.poll_jitter)?;
    s.inner
        .delivered
        .send(&vehicle.vin, &doc_etag, served.action_ids);
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from(served.body),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    state: String,
    #[serde(default)]
    progress: u32,
    #[serde(default)]
    message: String,
    seq: u64,
}

#[derive(Serialize)]
struct StatusAnswer {
    applied: bool,
    state: pb::ActionState,
}

/// `POST /v1/vehicles/{vin}/actions/{action_id}/status`: 202 once the
/// campaign manager has recorded it (or found it a duplicate).
pub async fn status(
    vehicle: Authed,
    State(s): State<AdapterState>,
    Path((_, action_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdapterError> {
    let body: StatusBody = json_body(&s, body, "status report")?;
    let state = pb::ActionState::parse_reported(&body.state).map_err(AdapterError::Invalid)?;
    if body.progress > 100 {
        return Err(AdapterError::Invalid(format!(
            "progress {} is above 100",
            body.progress
        )));
    }
    let mut campaigns = s.inner.campaigns.clone();
    let r = crate::bounded(campaigns.report_status(pb::ReportStatusRequest {
        vin: vehicle.vin.clone(),
        action_id,
        state: state.into(),
        progress: body.progress,
        message: body.message,
        seq: body.seq,
        protocol: "http".into(),
    }))
    .await?;
    s.inner.delivered.forget(&vehicle.vin);
    if state.is_finishing_report() {
        s.inner.staging.restage_after_finish(&vehicle.vin).await;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(StatusAnswer {
            applied: r.applied,
            state: r.state(),
        }),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EcuBody {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    hw: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sw: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryBody {
    #[serde(default)]
    ecus: HashMap<String, EcuBody>,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

#[derive(Serialize)]
pub struct InventoryAnswer {
    vin: String,
    ecus: std::collections::BTreeMap<String, EcuBody>,
    attributes: std::collections::BTreeMap<String, String>,
}

/// `PUT /v1/vehicles/{vin}/inventory`: the vehicle's own ECU versions and
/// attributes (source `vehicle`). The answer is the inventory as merged,
/// which may keep another source's value where precedence says so.
pub async fn inventory(
    vehicle: Authed,
    State(s): State<AdapterState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<InventoryAnswer>, AdapterError> {
    let body: InventoryBody = json_body(&s, body, "inventory")?;
    let mut vehicles = s.inner.vehicles.clone();
    let v = crate::bounded(
        vehicles.report_inventory(pb::ReportInventoryRequest {
            vin: vehicle.vin,
            ecus: body
                .ecus
                .into_iter()
                .map(|(k, e)| (k, pb::Ecu { hw: e.hw, sw: e.sw }))
                .collect(),
            attributes: body.attributes,
        }),
    )
    .await?;
    let answer = InventoryAnswer {
        vin: v.vin,
        ecus: v
            .ecus
            .into_iter()
            .map(|(k, e)| (k, EcuBody { hw: e.hw, sw: e.sw }))
            .collect(),
        attributes: v.attributes.into_iter().collect(),
    };
    Ok(Json(answer))
}

pub(crate) fn json_body<T: DeserializeOwned>(
    s: &AdapterState,
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T, AdapterError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AdapterError::TooLarge(s.inner.config.max_body_bytes),
        _ => AdapterError::Invalid(e.body_text().to_lowercase()),
    })?;
    serde_json::from_slice(&body).map_err(|e| AdapterError::Invalid(format!("invalid {what}: {e}")))
}
