use axum::response::{IntoResponse, Response};
use axum::Json;
use ota_auth::AuthError;
use ota_common::{CodedError, ErrorCode};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// An error a service answered with; its code carries over.
    #[error("{}", .0.message())]
    Upstream(#[from] tonic::Status),
    #[error("{0}")]
    Invalid(String),
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("no such endpoint {0}")]
    NoRoute(String),
}

impl CodedError for RestError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Auth(e) => e.code(),
            Self::Upstream(s) => ErrorCode::from_grpc(s.code()),
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::TooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::NoRoute(_) => ErrorCode::NotFound,
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let code = self.code();
        if code == ErrorCode::Internal {
            tracing::error!(error = %self, "request failed");
        }
        let body = Json(json!({"error": {"code": code.as_str(), "message": self.to_string()}}));
        let mut res = (code.http_status(), body).into_response();
        match code {
            ErrorCode::Unavailable => {
                res.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("5"),
                );
            }
            ErrorCode::Unauthenticated => {
                res.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        res
    }
}

/// Turns a JSON body rejection into our error shape with its real status
/// (400 for bad JSON, 413 over the limit, 415 without a JSON content type).
pub fn json_rejection(r: axum::extract::rejection::JsonRejection) -> Response {
    let status = r.status();
    let code = match status.as_u16() {
        413 => ErrorCode::PayloadTooLarge,
        _ => ErrorCode::InvalidArgument,
    };
    (
        status,
        Json(json!({"error": {"code": code.as_str(), "message": r.body_text().to_lowercase()}})),
    )
        .into_response()
}
