use axum::response::{IntoResponse, Response};
use ota_auth::AuthError;
use ota_common::{CodedError, ErrorCode, ErrorResponse, VinError};
use ota_staging::StagingError;

/// Every way a vehicle request fails; the answer is the management API's
/// error shape, `{"error": {"code", "message"}}`, with the status that
/// follows from the code.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("missing bearer token")]
    MissingToken,
    /// Bad, unknown and revoked secrets look the same to the caller.
    #[error("invalid or revoked vehicle token")]
    BadToken,
    #[error("this token belongs to vehicle {owner}, not {vin}")]
    WrongVehicle { owner: String, vin: String },
    #[error(transparent)]
    InvalidVin(#[from] VinError),
    #[error("{0}")]
    Invalid(String),
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// Over the poll or the report budget; a refused report was not
    /// recorded.
    #[error("vehicle {vin} is over its {budget} rate; retry in {retry_after_s} s")]
    RateLimited {
        vin: String,
        budget: &'static str,
        retry_after_s: u64,
    },
    /// Credential lookups failing for another reason than a bad secret.
    #[error("{0}")]
    Auth(AuthError),
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// A service's answer; its code carries over (an unknown action stays
    /// NOT_FOUND, another vehicle's action PERMISSION_DENIED).
    #[error("{}", .0.message())]
    Upstream(#[from] tonic::Status),
}

impl From<AuthError> for AdapterError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::MissingToken => Self::MissingToken,
            AuthError::BadToken => Self::BadToken,
            other => Self::Auth(other),
        }
    }
}

impl CodedError for AdapterError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::MissingToken | Self::BadToken => ErrorCode::Unauthenticated,
            Self::WrongVehicle { .. } => ErrorCode::PermissionDenied,
            Self::InvalidVin(_) | Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::TooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::RateLimited { .. } => ErrorCode::ResourceExhausted,
            Self::Auth(e) => e.code(),
            Self::Staging(e) => e.code(),
            Self::Upstream(s) => ErrorCode::from_grpc(s.code()),
        }
    }
}

impl IntoResponse for AdapterError {
    fn into_response(self) -> Response {
        let code = self.code();
        if code == ErrorCode::Internal {
            tracing::error!(error = %self, "vehicle request failed");
        }
        let mut answer = ErrorResponse::new(code, &self).challenge("Bearer");
        if let Self::RateLimited { retry_after_s, .. } = &self {
            answer = answer.retry_after(*retry_after_s);
        }
        answer.build().into_response()
    }
}
