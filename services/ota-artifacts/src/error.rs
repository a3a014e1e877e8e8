use ota_common::{CodedError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("{0:?} is not a sha256 (64 lowercase hex characters)")]
    BadHash(String),
    #[error("artifact {0} not found")]
    NotFound(String),
    /// The upload stream failed (the client went away, a read error).
    #[error("reading the artifact body: {0}")]
    Body(std::io::Error),
    #[error("artifact storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("artifact metadata of {sha256} is corrupt: {reason}")]
    Corrupt { sha256: String, reason: String },
}

impl CodedError for ArtifactError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::BadHash(_) | Self::Body(_) => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Io(_) | Self::Corrupt { .. } => ErrorCode::Internal,
        }
    }
}

impl axum::response::IntoResponse for ArtifactError {
    fn into_response(self) -> axum::response::Response {
        let code = self.code();
        if code == ErrorCode::Internal {
            tracing::error!(error = %self, "artifact request failed");
        }
        let body =
            serde_json::json!({"error": {"code": code.as_str(), "message": self.to_string()}});
        (code.http_status(), axum::Json(body)).into_response()
    }
}
