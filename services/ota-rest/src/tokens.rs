//! `/api/v1/tokens`: an admin issues tokens (for themselves by default, or
//! for another principal they name, provisioning them when new), lists and
//! revokes them. The token store audits every one of these.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use ota_auth::{Role, TokenInfo, TokenRequest};

use crate::{Caller, RestError, RestState};

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

pub async fn list(
    caller: Caller,
    State(s): State<RestState>,
) -> Result<Json<Vec<TokenInfo>>, RestError> {
    caller.require(Role::Admin)?;
    Ok(Json(s.tokens.list().await?))
}

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
