use axum::extract::FromRequestParts;
use http::request::Parts;
use ota_auth::{AuthError, Role, TokenInfo};

use crate::{RestError, RestState};

/// The authenticated caller of a request (any valid, unrevoked token).
/// Handlers state the role they need with [`Caller::require`].
pub struct Caller(pub TokenInfo);

impl Caller {
    pub fn require(&self, role: Role) -> Result<&TokenInfo, RestError> {
        self.0.require(role)?;
        Ok(&self.0)
    }
}

impl FromRequestParts<RestState> for Caller {
    type Rejection = RestError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &RestState,
    ) -> Result<Self, Self::Rejection> {
        let result = authenticate(parts, state).await;
        if let Err(e) = &result {
            let reason = match e {
                AuthError::MissingToken => "missing",
                AuthError::BadToken => "invalid",
                _ => "error",
            };
            metrics::counter!("ota_auth_failures_total", "reason" => reason).increment(1);
        }
        Ok(Caller(result?))
    }
}

async fn authenticate(parts: &Parts, state: &RestState) -> Result<TokenInfo, AuthError> {
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?
        .to_str()
        .map_err(|_| AuthError::BadToken)?;
    let secret = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or(AuthError::MissingToken)?;
    state.tokens.authenticate(secret.trim()).await
}
