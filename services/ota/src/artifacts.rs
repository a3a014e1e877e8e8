//! Artifacts the platform hosts: engineers upload them
//! (`POST /api/v1/artifacts`, what `ota packages add --file` calls) and
//! vehicles download them with Range (`GET /artifacts/{sha256}[/{name}]`),
//! authenticated by their own token on every protocol's header style.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::TryStreamExt;
use ota_artifacts::ArtifactStore;
use ota_auth::vehicles::VehicleCredentials;
use ota_auth::{Role, TokenStore};
use ota_common::{ErrorCode, ErrorResponse};
use serde::Deserialize;

#[derive(Clone)]
struct ArtifactsState {
    store: Arc<dyn ArtifactStore>,
    credentials: VehicleCredentials,
    tokens: TokenStore,
    public_url: String,
    gateway_token: Option<String>,
}

pub fn router(
    store: Arc<dyn ArtifactStore>,
    credentials: VehicleCredentials,
    tokens: TokenStore,
    public_url: String,
    gateway_token: Option<String>,
) -> Router {
    let state = ArtifactsState {
        store,
        credentials,
        tokens,
        public_url,
        gateway_token,
    };
    Router::new()
        .route("/api/v1/artifacts", post(upload))
        .route("/artifacts/{sha256}", get(download))
        .route("/artifacts/{sha256}/{name}", get(download_named))
        // Uploads stream to disk; the artifact store enforces its own size
        // limit while writing.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

fn error(code: ErrorCode, message: impl std::fmt::Display) -> Response {
    ErrorResponse::new(code, message).build().into_response()
}

/// The credential of a request, by the schemes the platform's APIs accept:
/// `Bearer` (management and HTTP vehicle API), `TargetToken` and
/// `GatewayToken` (hawkBit DDI). Scheme names are case-insensitive (RFC 9110).
#[derive(Debug, PartialEq)]
enum Credential<'a> {
    Bearer(&'a str),
    Target(&'a str),
    Gateway(&'a str),
}

const DOWNLOAD_SCHEMES: &str = "Bearer, TargetToken or GatewayToken";
/// `WWW-Authenticate` of a download: the same schemes.
const DOWNLOAD_CHALLENGE: &str = "Bearer, TargetToken, GatewayToken";

fn credential(headers: &HeaderMap) -> Result<Credential<'_>, String> {
    let Some(h) = headers.get(http::header::AUTHORIZATION) else {
        return Err("missing Authorization header".into());
    };
    let h = h
        .to_str()
        .map_err(|_| "the Authorization header is not text".to_string())?;
    let (scheme, secret) = h.split_once(' ').unwrap_or((h, ""));
    let secret = secret.trim();
    let shown: String = scheme.chars().take(20).collect();
    if secret.is_empty() {
        return Err(format!(
            "the Authorization header has no credential after {shown:?}"
        ));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => Ok(Credential::Bearer(secret)),
        "targettoken" => Ok(Credential::Target(secret)),
        "gatewaytoken" => Ok(Credential::Gateway(secret)),
        _ => Err(format!("unsupported authorization scheme {shown:?}")),
    }
}

/// `schemes` for people, `challenge` for `WWW-Authenticate`.
fn unauthenticated(message: String, schemes: &str, challenge: &'static str) -> Response {
    ErrorResponse::new(
        ErrorCode::Unauthenticated,
        format!("{message}; use {schemes}"),
    )
    .challenge(challenge)
    .build()
    .into_response()
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

async fn upload(
    State(s): State<ArtifactsState>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let token = match credential(&headers) {
        Ok(Credential::Bearer(t)) => t,
        Ok(_) => {
            return unauthenticated("uploads take a management token".into(), "Bearer", "Bearer");
        }
        Err(e) => return unauthenticated(e, "Bearer", "Bearer"),
    };
    match s.tokens.authenticate(token).await {
        Ok(info) if info.role >= Role::Engineer => {}
        Ok(info) => {
            return error(
                ErrorCode::PermissionDenied,
                format!(
                    "uploading artifacts needs the engineer role; token {:?} has {}",
                    info.name, info.role
                ),
            )
        }
        Err(_) => {
            return ErrorResponse::new(ErrorCode::Unauthenticated, "invalid or revoked token")
                .challenge("Bearer")
                .build()
                .into_response()
        }
    }
    let name = q.filename.unwrap_or_else(|| "artifact.bin".into());
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return error(
            ErrorCode::InvalidArgument,
            format!("filename {name:?} must be 1-255 characters without '/' or control characters"),
        );
    }
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(e.to_string()));
    match s.store.put(Box::pin(stream)).await {
        Ok(a) => (
            StatusCode::CREATED,
            Json(serde_json::json!({
                "sha256": a.sha256, "sha1": a.sha1, "md5": a.md5, "size": a.size,
                // The package keeps the reference; links are made absolute
                // where they leave the server, so they survive a new
                // public URL. `href` is where to fetch it today.
                "url": ota_artifacts::hosted_url("", &a.sha256, Some(&name)),
                "href": ota_artifacts::hosted_url(&s.public_url, &a.sha256, Some(&name)),
            })),
        )
            .into_response(),
        Err(e) => error(ota_common::CodedError::code(&e), e),
    }
}

async fn download(
    State(s): State<ArtifactsState>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(s, sha256, headers).await
}

async fn download_named(
    State(s): State<ArtifactsState>,
    Path((sha256, _name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    serve(s, sha256, headers).await
}

/// Any vehicle with a valid token, or any management token, may download:
/// artifacts are firmware images, not per-vehicle secrets.
async fn serve(s: ArtifactsState, sha256: String, headers: HeaderMap) -> Response {
    let allowed = match credential(&headers) {
        Ok(Credential::Bearer(t)) => {
            s.credentials.authenticate(t).await.is_ok() || s.tokens.authenticate(t).await.is_ok()
        }
        Ok(Credential::Target(t)) => s.credentials.authenticate(t).await.is_ok(),
        Ok(Credential::Gateway(t)) => s
            .gateway_token
            .as_deref()
            .is_some_and(|g| ota_common::secret::constant_time_eq(g.as_bytes(), t.as_bytes())),
        Err(e) => return unauthenticated(e, DOWNLOAD_SCHEMES, DOWNLOAD_CHALLENGE),
    };
    if !allowed {
        return ErrorResponse::new(ErrorCode::Unauthenticated, "invalid or revoked token")
            .challenge(DOWNLOAD_CHALLENGE)
            .build()
            .into_response();
    }
    ota_artifacts::serve(s.store.as_ref(), &sha256, &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn only_the_vehicle_and_management_schemes_are_taken() {
        assert_eq!(
            credential(&with("Bearer abc")),
            Ok(Credential::Bearer("abc"))
        );
        assert_eq!(
            credential(&with("bearer abc")),
            Ok(Credential::Bearer("abc"))
        );
        assert_eq!(
            credential(&with("TargetToken t")),
            Ok(Credential::Target("t"))
        );
        assert_eq!(
            credential(&with("GatewayToken g")),
            Ok(Credential::Gateway("g"))
        );
        let basic = credential(&with("Basic dXNlcjpwYXNz")).unwrap_err();
        assert_eq!(basic, "unsupported authorization scheme \"Basic\"");
        let long = credential(&with(&format!("{} x", "S".repeat(5000)))).unwrap_err();
        assert!(long.len() < 80, "the scheme is echoed cut short: {long}");
        assert!(credential(&with("Bearer"))
            .unwrap_err()
            .contains("no credential"));
        assert!(credential(&HeaderMap::new())
            .unwrap_err()
            .contains("missing"));
    }
}
