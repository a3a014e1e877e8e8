//! Vehicle credentials for operators: issue (the secret is shown once),
//! list, and revoke the secrets vehicles authenticate with on every
//! protocol.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use http::StatusCode;
use ota_auth::vehicles::VehicleCredential;
use ota_auth::{AuthError, Role};
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{Caller, RestError, RestState};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    #[serde(default)]
    rotate: bool,
}

#[derive(Debug, Serialize)]
struct Issued {
    id: String,
    vin: String,
    created_at: DateTime<Utc>,
    token: String,
}

#[derive(Debug, Serialize)]
pub struct Revoked {
    revoked: u64,
}

/// Credentials for a vehicle the inventory does not know would let a
/// stranger's device in under a made-up identity.
async fn require_vehicle(s: &RestState, vin: &str) -> Result<(), RestError> {
    s.vehicles
        .clone()
        .get(pb::GetVehicleRequest { vin: vin.into() })
        .await?;
    Ok(())
}

pub async fn issue(
    caller: Caller,
    State(s): State<RestState>,
    Path(vin): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    caller.require(Role::Admin)?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => RestError::TooLarge(s.limits.max_body_bytes),
        _ => RestError::Invalid(e.body_text().to_lowercase()),
    })?;
    // The body is optional: an empty POST issues without rotating.
    let opts: IssueBody = if body.iter().all(u8::is_ascii_whitespace) {
        IssueBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| RestError::Invalid(format!("invalid credential request: {e}")))?
    };
    require_vehicle(&s, &vin).await?;
    let issued = s.credentials.issue(&vin, opts.rotate).await?;
    tracing::info!(by = %caller.0.name, %vin, id = %issued.credential.id, rotate = opts.rotate, "vehicle credential issued");
    let body = Issued {
        id: issued.credential.id,
        vin: issued.credential.vin,
        created_at: issued.credential.created_at,
        token: issued.token,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn list(
    caller: Caller,
    State(s): State<RestState>,
    Path(vin): Path<String>,
) -> Result<Json<Vec<VehicleCredential>>, RestError> {
    caller.require(Role::Admin)?;
    require_vehicle(&s, &vin).await?;
    Ok(Json(s.credentials.list(&vin).await?))
}

pub async fn revoke_all(
    caller: Caller,
    State(s): State<RestState>,
    Path(vin): Path<String>,
) -> Result<Json<Revoked>, RestError> {
    caller.require(Role::Admin)?;
    require_vehicle(&s, &vin).await?;
    let revoked = s.credentials.revoke(&vin, None).await?;
    tracing::info!(by = %caller.0.name, %vin, revoked, "vehicle credentials revoked");
    Ok(Json(Revoked { revoked }))
}

pub async fn revoke_one(
    caller: Caller,
    State(s): State<RestState>,
    Path((vin, id)): Path<(String, String)>,
) -> Result<Json<Revoked>, RestError> {
    caller.require(Role::Admin)?;
    require_vehicle(&s, &vin).await?;
    let revoked = match s.credentials.revoke(&vin, Some(&id)).await {
        Ok(n) => n,
        // Revoking twice is not an error: the credential is revoked either
        // way, and a retried DELETE must not look like a failure.
        Err(AuthError::NotFound(_)) => {
            let known = s.credentials.list(&vin).await?.iter().any(|c| c.id == id);
            if !known {
                return Err(RestError::NotFound(format!(
                    "credential {id} of vehicle {vin} not found"
                )));
            }
            0
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(by = %caller.0.name, %vin, %id, revoked, "vehicle credential revoked");
    Ok(Json(Revoked { revoked }))
}
