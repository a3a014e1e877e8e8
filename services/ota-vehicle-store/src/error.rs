use ota_common::{CodedError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("vehicle {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("stored record of vehicle {vin} is corrupt: {reason}")]
    Corrupt { vin: String, reason: String },
    #[error("import stream failed: {0}")]
    Stream(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match ota_db::classify(&e) {
            ErrorCode::Unavailable => Self::Unavailable(e),
            _ => Self::Database(e),
        }
    }
}

impl CodedError for StoreError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Database(_) | Self::Corrupt { .. } => ErrorCode::Internal,
            Self::Stream(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        e.to_status()
    }
}
