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
use serde::Deserialize;

#[derive(Clone)]
struct ArtifactsState {
    store: Arc<dyn ArtifactStore>,
    credentials: VehicleCredentials,
    tokens: TokenStore,
    public_url: String,
}

pub fn router(
    store: Arc<dyn ArtifactStore>,
    credentials: VehicleCredentials,
    tokens: TokenStore,
    public_url: String,
) -> Router {
    let state = ArtifactsState {
        store,
        credentials,
        tokens,
        public_url,
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

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// The secret of `Authorization: Bearer ...`, `TargetToken ...` or
/// `GatewayToken ...`.
fn secret(headers: &HeaderMap) -> Option<&str> {
    let h = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (_, secret) = h.split_once(' ')?;
    Some(secret.trim())
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
    let Some(token) = secret(&headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing bearer token",
        );
    };
    match s.tokens.authenticate(token).await {
        Ok(info) if info.role >= Role::Engineer => {}
        Ok(info) => {
            return error(
                StatusCode::FORBIDDEN,
                "permission_denied",
                format!(
                    "uploading artifacts needs the engineer role; token {:?} has {}",
                    info.name, info.role
                ),
            )
        }
        Err(_) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "invalid or revoked token",
            )
        }
    }
    let name = q.filename.unwrap_or_else(|| "artifact.bin".into());
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
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
                "url": ota_artifacts::hosted_url(&s.public_url, &a.sha256, Some(&name)),
            })),
        )
            .into_response(),
        Err(e) => {
            let code = ota_common::CodedError::code(&e);
            error(code.http_status(), code.as_str(), e.to_string())
        }
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
    let Some(token) = secret(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "unauthenticated", "missing token");
    };
    let allowed = s.credentials.authenticate(token).await.is_ok()
        || s.tokens.authenticate(token).await.is_ok();
    if !allowed {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "invalid or revoked token",
        );
    }
    ota_artifacts::serve(s.store.as_ref(), &sha256, &headers).await
}
