use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use ota_auth::{Role, TokenInfo};
use serde::Deserialize;

use crate::{Caller, RestError, RestState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    name: String,
    role: String,
}

pub async fn create(
    caller: Caller,
    State(s): State<RestState>,
    body: Result<Json<CreateToken>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, RestError> {
    caller.require(Role::Admin)?;
    let Json(body) = body?;
    let role: Role = body.role.parse()?;
    let token = s.tokens.create(&body.name, role).await?;
    tracing::info!(by = %caller.0.name, name = %token.info.name, role = %role, "token created");
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
    caller.require(Role::Admin)?;
    let t = s.tokens.revoke(&id).await?;
    tracing::info!(by = %caller.0.name, name = %t.name, "token revoked");
    Ok(Json(t))
}
