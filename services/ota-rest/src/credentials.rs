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
use ota_common::ErrorBody;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{Caller, RestError, RestState};

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    /// Revoke the vehicle's earlier credentials in the same transaction.
    #[serde(default)]
    rotate: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct IssuedCredential {
    id: String,
    vin: String,
    created_at: DateTime<Utc>,
    /// The secret, shown in this answer only.
    token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    /// How many credentials this call revoked.
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

/// Issue a vehicle credential; the secret is shown once (admin)
#[utoipa::path(
    post,
    path = "/api/v1/vehicles/{vin}/credentials",
    tag = "credentials",
    operation_id = "issue_credential",
    params(("vin" = String, Path)),
    request_body(content = Option<IssueRequest>, description = "Optional; empty issues without rotating"),
    responses(
        (status = 201, description = "Issued", body = IssuedCredential),
        (status = 400, description = "A body that is not the JSON above", body = ErrorBody),
        (status = 403, description = "The caller is not an admin", body = ErrorBody),
        (status = 404, description = "No such vehicle", body = ErrorBody),
    ),
)]
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
    let opts: IssueRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IssueRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| RestError::Invalid(format!("invalid credential request: {e}")))?
    };
    require_vehicle(&s, &vin).await?;
    let issued = s.credentials.issue(&vin, opts.rotate).await?;
    tracing::info!(by = %caller.0.name, %vin, id = %issued.credential.id, rotate = opts.rotate, "vehicle credential issued");
    let body = IssuedCredential {
        id: issued.credential.id,
        vin: issued.credential.vin,
        created_at: issued.credential.created_at,
        token: issued.token,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A vehicle's credentials, revoked ones included, never their secrets (admin)
#[utoipa::path(
    get,
    path = "/api/v1/vehicles/{vin}/credentials",
    tag = "credentials",
    operation_id = "list_credentials",
    params(("vin" = String, Path)),
    responses(
        (status = 200, description = "Credentials, oldest first", body = Vec<VehicleCredential>),
        (status = 403, description = "The caller is not an admin", body = ErrorBody),
        (status = 404, description = "No such vehicle", body = ErrorBody),
    ),
)]
pub async fn list(
    caller: Caller,
    State(s): State<RestState>,
    Path(vin): Path<String>,
) -> Result<Json<Vec<VehicleCredential>>, RestError> {
    caller.require(Role::Admin)?;
    require_vehicle(&s, &vin).await?;
    Ok(Json(s.credentials.list(&vin).await?))
}

/// Revoke every credential of a vehicle (admin)
#[utoipa::path(
    delete,
    path = "/api/v1/vehicles/{vin}/credentials",
    tag = "credentials",
    operation_id = "revoke_credentials",
    params(("vin" = String, Path)),
    responses(
        (status = 200, description = "How many were revoked now", body = Revoked),
        (status = 403, description = "The caller is not an admin", body = ErrorBody),
        (status = 404, description = "No such vehicle", body = ErrorBody),
    ),
)]
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

/// Revoke one credential of a vehicle (admin)
#[utoipa::path(
    delete,
    path = "/api/v1/vehicles/{vin}/credentials/{id}",
    tag = "credentials",
    operation_id = "revoke_credential",
    params(("vin" = String, Path), ("id" = String, Path, description = "Credential id")),
    responses(
        (status = 200, description = "Revoked (0 when it already was)", body = Revoked),
        (status = 403, description = "The caller is not an admin", body = ErrorBody),
        (status = 404, description = "No such vehicle, or no such credential of it", body = ErrorBody),
    ),
)]
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
