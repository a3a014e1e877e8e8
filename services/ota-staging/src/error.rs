use ota_bus::BusError;
use ota_common::{CodedError, ErrorCode, VinError};

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error(transparent)]
    InvalidVin(#[from] VinError),
    #[error("{0}")]
    Invalid(String),
    /// The document store (Redis) is down or too slow; the caller may retry.
    #[error("staged document store unavailable: {0}")]
    Unavailable(String),
    /// Staging has not finished building its documents since it started.
    #[error("staging is not ready: {0}")]
    NotReady(String),
    #[error("staged document of vehicle {vin} is corrupt: {reason}")]
    Corrupt { vin: String, reason: String },
    #[error("staged document store error: {0}")]
    Store(String),
    /// The campaign manager answered with an error; its code is kept so a
    /// NOT_FOUND campaign stays NOT_FOUND for our caller.
    #[error("campaign manager: {message}")]
    Source { code: ErrorCode, message: String },
    /// A staging service in another process answered with an error.
    #[error("staging service: {message}")]
    Peer { code: ErrorCode, message: String },
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("building the staged document of vehicle {vin}: {reason}")]
    Build { vin: String, reason: String },
}

impl StagingError {
    pub fn source_status(status: &tonic::Status) -> Self {
        Self::Source {
            code: ErrorCode::from_grpc(status.code()),
            message: status.message().to_owned(),
        }
    }
}

impl From<redis::RedisError> for StagingError {
    fn from(e: redis::RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        let down = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
            || matches!(
                e.kind(),
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                )
            );
        if down {
            Self::Unavailable(e.to_string())
        } else {
            Self::Store(e.to_string())
        }
    }
}

impl CodedError for StagingError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidVin(_) | Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::Unavailable(_) | Self::NotReady(_) => ErrorCode::Unavailable,
            Self::Corrupt { .. } | Self::Store(_) | Self::Build { .. } => ErrorCode::Internal,
            Self::Source { code, .. } | Self::Peer { code, .. } => *code,
            Self::Bus(e) => e.code(),
        }
    }
}

impl From<StagingError> for tonic::Status {
    fn from(e: StagingError) -> Self {
        e.to_status()
    }
}
