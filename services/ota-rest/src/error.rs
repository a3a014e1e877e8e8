use axum::response::{IntoResponse, Response};
use ota_auth::AuthError;
use ota_common::{CodedError, ErrorCode, ErrorResponse};
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
    #[error("{0}")]
    NotFound(String),
    /// A body that is not the JSON the endpoint takes (bad syntax, wrong
    /// content type, over the size limit).
    #[error("{}", .0.body_text().to_lowercase())]
    Json(#[from] axum::extract::rejection::JsonRejection),
    /// CEL rules that do not validate; every positioned error is listed.
    #[error("invalid rules: {}", .0.first().map(|e| e.to_string()).unwrap_or_default())]
    InvalidRules(Vec<ota_rule_engine::ExpressionError>),
    /// A campaign file with problems; every one is listed.
    #[error("campaign file has {} problem{}", crate::model::SpecProblem::count(.0), if crate::model::SpecProblem::count(.0) == 1 { "" } else { "s" })]
    InvalidCampaign(Vec<crate::model::SpecProblem>),
    /// `POST /api/v1/campaigns/{id}:ACTION` with an action that does not exist.
    #[error("unknown campaign action {0:?}: expected one of {actions}", actions = crate::campaigns::action_names())]
    UnknownAction(String),
}

impl CodedError for RestError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Auth(e) => e.code(),
            Self::Upstream(s) => ErrorCode::from_grpc(s.code()),
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::TooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::NoRoute(_) | Self::NotFound(_) | Self::UnknownAction(_) => ErrorCode::NotFound,
            Self::Json(r) if r.status() == http::StatusCode::PAYLOAD_TOO_LARGE => {
                ErrorCode::PayloadTooLarge
            }
            Self::Json(_) | Self::InvalidRules(_) | Self::InvalidCampaign(_) => {
                ErrorCode::InvalidArgument
            }
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let code = self.code();
        if code == ErrorCode::Internal {
            tracing::error!(error = %self, "request failed");
        }
        let mut answer = ErrorResponse::new(code, &self).challenge("Bearer");
        match self {
            Self::InvalidRules(errors) => answer = answer.detail("errors", json!(errors)),
            Self::InvalidCampaign(errors) => answer = answer.detail("errors", json!(errors)),
            _ => {}
        }
        answer.build().into_response()
    }
}
