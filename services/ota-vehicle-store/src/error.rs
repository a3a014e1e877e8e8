use ota_common::{CodedError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("vehicle {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A write that would grow the merged record past one of the bounds
    /// of `ota_common::vehicle`; nothing of it was written.
    #[error(
        "vehicle {vin}: {field} would hold {count} entries, above the limit of {limit}; \
         the write was refused"
    )]
    Bound {
        vin: String,
        field: &'static str,
        count: usize,
        limit: usize,
    },
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
            Self::Invalid(_) | Self::Bound { .. } => ErrorCode::InvalidArgument,
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
