use axum::response::{IntoResponse, Response};
use ota_artifacts::ArtifactError;
use ota_auth::AuthError;
use ota_common::{CodedError, ErrorCode, ErrorResponse};
use ota_staging::StagingError;

#[derive(Debug, thiserror::Error)]
pub enum DdiError {
    #[error("missing Authorization: TargetToken or GatewayToken")]
    MissingToken,
    #[error("authorization scheme {0:?} is not accepted here: use TargetToken (the vehicle's token) or GatewayToken")]
    WrongScheme(String),
    #[error("invalid or revoked token")]
    BadToken,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("this token belongs to vehicle {token_vin}, not to controller {controller}")]
    WrongVehicle {
        token_vin: String,
        controller: String,
    },
    /// Over the poll or the report budget; a refused report was not
    /// recorded.
    #[error("controller {controller} is over its {budget} rate; retry in {retry_after_s} s")]
    RateLimited {
        controller: String,
        budget: &'static str,
        retry_after_s: u64,
    },
    #[error("unknown tenant {0:?}: this server has only \"default\"")]
    UnknownTenant(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A body that is not the JSON the resource takes; the message names
    /// the problem and where it is.
    #[error("{0}")]
    Invalid(String),
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// A service answered with an error; its code carries over.
    #[error("{}", .0.message())]
    Upstream(#[from] tonic::Status),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The DDI action ids (`ids.rs`) could not be read or written.
    #[error("ddi action ids: {message}")]
    Database { code: ErrorCode, message: String },
}

impl CodedError for DdiError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::MissingToken | Self::WrongScheme(_) | Self::BadToken => {
                ErrorCode::Unauthenticated
            }
            Self::Auth(e) => e.code(),
            Self::WrongVehicle { .. } => ErrorCode::PermissionDenied,
            Self::RateLimited { .. } => ErrorCode::ResourceExhausted,
            Self::UnknownTenant(_) | Self::NotFound(_) => ErrorCode::NotFound,
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::TooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::Staging(e) => e.code(),
            Self::Upstream(s) => ErrorCode::from_grpc(s.code()),
            Self::Artifact(e) => e.code(),
            Self::Database { code, .. } => *code,
        }
    }
}

impl IntoResponse for DdiError {
    fn into_response(self) -> Response {
        let code = self.code();
        if code == ErrorCode::Internal {
            tracing::error!(error = %self, "ddi request failed");
        }
        let mut answer = ErrorResponse::new(code, &self).challenge("TargetToken");
        if let Self::RateLimited { retry_after_s, .. } = &self {
            answer = answer.retry_after(*retry_after_s);
        }
        answer.build().into_response()
    }
}
