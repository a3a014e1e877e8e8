use ota_common::{CodedError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("campaign {id} is {state}: cannot {action} it")]
    IllegalTransition {
        id: String,
        state: String,
        action: &'static str,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("{service} failed: {status}")]
    Upstream {
        service: &'static str,
        status: tonic::Status,
    },
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    /// A campaign's durations or times reach past the dates the rollout can
    /// compute with: that campaign's tick fails, the others go on.
    #[error("campaign {campaign}: {what} is out of range: {reason}")]
    OutOfRange {
        campaign: String,
        what: String,
        reason: String,
    },
    #[error("{0}")]
    Bus(#[from] ota_bus::BusError),
    /// One failure shared by every request of a batch.
    #[error("{message}")]
    Batch { code: ErrorCode, message: String },
}

impl CampaignError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            id: id.into(),
        }
    }

    pub(crate) fn upstream(service: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Upstream { service, status }
    }
}

impl From<sqlx::Error> for CampaignError {
    fn from(e: sqlx::Error) -> Self {
        match ota_db::classify(&e) {
            ErrorCode::Unavailable => Self::Unavailable(e),
            _ => Self::Database(e),
        }
    }
}

impl CodedError for CampaignError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::IllegalTransition { .. } | Self::Conflict(_) => ErrorCode::Conflict,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::Forbidden(_) => ErrorCode::PermissionDenied,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Database(_) | Self::Corrupt { .. } | Self::OutOfRange { .. } => {
                ErrorCode::Internal
            }
            // A peer's own answer keeps its meaning (a NOT_FOUND stays one).
            Self::Upstream { status, .. } => ErrorCode::from_grpc(status.code()),
            Self::Bus(e) => e.code(),
            Self::Batch { code, .. } => *code,
        }
    }
}

impl From<CampaignError> for tonic::Status {
    fn from(e: CampaignError) -> Self {
        e.to_status()
    }
}
