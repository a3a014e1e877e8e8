use std::sync::Arc;

use ota_common::{CodedError, ErrorCode};

use crate::diagnostics::ExpressionError;

#[derive(Debug, thiserror::Error)]
pub enum RuleEngineError {
    #[error("invalid rule set: {}", list(.0))]
    InvalidRuleSet(Arc<[ExpressionError]>),
    #[error("{0}")]
    Invalid(String),
    /// The vehicle source's own status, passed on unchanged.
    #[error("{}", .0.message())]
    Source(tonic::Status),
    /// An evaluation ran out of time, or found no free slot in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
}

fn list(errors: &[ExpressionError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl CodedError for RuleEngineError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidRuleSet(_) | Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::DeadlineExceeded(_) => ErrorCode::DeadlineExceeded,
            Self::Internal(_) => ErrorCode::Internal,
            Self::Source(status) => ErrorCode::from_grpc(status.code()),
        }
    }
}

impl From<RuleEngineError> for tonic::Status {
    fn from(e: RuleEngineError) -> Self {
        match e {
            RuleEngineError::Source(status) => status,
            other => other.to_status(),
        }
    }
}
