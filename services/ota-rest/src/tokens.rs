//! `/api/v1/tokens`: an admin issues tokens (for themselves by default, or
//! for another principal they name, provisioning them when new), lists and
//! revokes them. The token store audits every one of these.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use ota_auth::{NewToken, Role, TokenInfo, TokenRequest};
use ota_common::ErrorBody;

use crate::{Caller, RestError, RestState};

/// Create a token (admin); the secret is in this answer only
///
/// The token is the caller's own (their principal's) unless `principal`
/// names another person or service, who is created when new; both are in
/// the audit log under the caller's principal. Another token of the caller
/// cannot approve the caller's campaigns.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    operation_id = "create_token",
    request_body = TokenRequest,
    responses(
        (status = 201, description = "Created", body = NewToken),
        (status = 400, description = "An unknown role or kind, or an invalid name", body = ErrorBody),
        (status = 403, description = "The caller is not an admin", body = ErrorBody),
        (status = 409, description = "The principal exists with another kind", body = ErrorBody),
    ),
)]
pub async fn create(
    caller: Caller,
    State(s): State<RestState>,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, RestError> {
    let by = caller.require(Role::Admin)?;
    let Json(body) = body?;
    let token = s.tokens.issue(by, &body).await?;
    tracing::info!(
        by = %by.principal,
        by_token = %by.name,
        principal = %token.info.principal,
        principal_created = token.principal_created,
        name = %token.info.name,
        role = %token.info.role,
        "token created"
    );
    Ok((StatusCode::CREATED, Json(token)).into_response())
}

/// List tokens (admin)
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    operation_id = "list_tokens",
    responses(
        (status = 200, description = "Every token, revoked ones included", body = Vec<TokenInfo>),
        (status = 403, description = "The caller is not an admin", body = ErrorBody),
    ),
)]
pub async fn list(
    caller: Caller,
    State(s): State<RestState>,
) -> Result<Json<Vec<TokenInfo>>, RestError> {
    caller.require(Role::Admin)?;
    Ok(Json(s.tokens.list().await?))
}

/// Revoke a token (admin)
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    operation_id = "revoke_token",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 200, description = "Revoked (revoking again keeps the first time)", body = TokenInfo),
        (status = 403, description = "The caller is not an admin", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
    ),
)]
pub async fn revoke(
    caller: Caller,
    State(s): State<RestState>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, RestError> {
    let by = caller.require(Role::Admin)?;
    let t = s.tokens.revoke(by, &id).await?;
    tracing::info!(by = %by.principal, principal = %t.principal, name = %t.name, "token revoked");
    Ok(Json(t))
}
