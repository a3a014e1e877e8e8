//! What a page shows when it cannot show what was asked: an HTML page with
//! the status the shared error code gives, never a stack trace.

use axum::response::{IntoResponse, Response};
use maud::html;
use ota_auth::AuthError;
use ota_common::{CodedError, ErrorCode};

use crate::layout;

#[derive(Debug, thiserror::Error)]
pub enum DashError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A service's answer; its code carries over.
    #[error("{}", .0.message())]
    Upstream(#[from] tonic::Status),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A form without the session's CSRF token.
    #[error("this form is out of date or was not sent by the dashboard (missing or wrong csrf token); reload the page and try again")]
    Csrf,
    #[error("{0}")]
    Forbidden(String),
}

impl CodedError for DashError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Auth(e) => e.code(),
            Self::Upstream(s) => ErrorCode::from_grpc(s.code()),
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::Csrf | Self::Forbidden(_) => ErrorCode::PermissionDenied,
        }
    }
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let code = self.code();
        if code == ErrorCode::Internal {
            tracing::error!(error = %self, "dashboard page failed");
        }
        let status = code.http_status();
        let title = status.canonical_reason().unwrap_or("Error");
        let body = html! {
            section.error {
                h1 { (status.as_u16()) " " (title) }
                p.message { (self.to_string()) }
                p { a href="/ui/campaigns" { "Back to campaigns" } }
            }
        };
        (status, layout::bare(title, body)).into_response()
    }
}

/// Any `/ui/...` path no page answers (after login, like every page).
pub async fn no_page(_user: crate::session::User, uri: http::Uri) -> DashError {
    DashError::NotFound(format!("no page {}", uri.path()))
}
