//! The one error answer of every HTTP API (management REST, the vehicle
//! API, hawkBit DDI, hosted artifacts): `{"error": {"code", "message"}}`
//! with the status of the [`ErrorCode`], and one `Retry-After` policy, so
//! a client or a vehicle reads every API's errors the same way.

use std::fmt::Display;

use http::{header, HeaderValue, Response};
use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// The body of an error answer. Some answers add a field beside `error`,
/// such as `errors` listing every problem of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people; names the offending value. Programs go by `code`.
    pub message: String,
}

/// What a 503 tells clients when nothing more precise is known: soon, but
/// not at once, so a fleet that lost a backend does not retry in lockstep.
pub const UNAVAILABLE_RETRY_AFTER_S: u64 = 5;

/// An error answer being built; [`ErrorResponse::build`] makes the
/// response (axum takes it as it is).
#[derive(Debug)]
#[must_use]
pub struct ErrorResponse {
    code: ErrorCode,
    message: String,
    retry_after_s: Option<u64>,
    challenge: Option<&'static str>,
    detail: Option<(&'static str, serde_json::Value)>,
}

impl ErrorResponse {
    pub fn new(code: ErrorCode, message: impl Display) -> Self {
        Self {
            code,
            message: message.to_string(),
            retry_after_s: None,
            challenge: None,
            detail: None,
        }
    }

    /// When to come back (a rate limit's own wait). Without it a 503 gets
    /// [`UNAVAILABLE_RETRY_AFTER_S`] and other codes none.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// The scheme a 401 asks for (`WWW-Authenticate`), e.g. `Bearer`.
    pub fn challenge(mut self, scheme: &'static str) -> Self {
        self.challenge = Some(scheme);
        self
    }

    /// A field beside `error` in the body (e.g. `errors`: every problem).
    pub fn detail(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.detail = Some((key, value));
        self
    }

    pub fn build(self) -> Response<String> {
        let mut body = serde_json::json!(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        });
        if let Some((key, value)) = self.detail {
            body[key] = value;
        }
        let mut res = Response::new(body.to_string());
        *res.status_mut() = self.code.http_status();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let retry_after = self
            .retry_after_s
            .or((self.code == ErrorCode::Unavailable).then_some(UNAVAILABLE_RETRY_AFTER_S));
        if let Some(s) = retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let (ErrorCode::Unauthenticated, Some(scheme)) = (self.code, self.challenge) {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Response<String>, name: header::HeaderName) -> Option<&str> {
        r.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn the_body_names_the_code_and_the_message() {
        let r = ErrorResponse::new(ErrorCode::NotFound, "vehicle \"X\" not found").build();
        assert_eq!(r.status(), 404);
        assert_eq!(header(&r, header::CONTENT_TYPE), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(r.body()).unwrap();
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(body["error"]["message"], "vehicle \"X\" not found");
        assert_eq!(header(&r, header::RETRY_AFTER), None);
    }

    #[test]
    fn one_retry_after_policy() {
        let down = ErrorResponse::new(ErrorCode::Unavailable, "database down").build();
        assert_eq!(down.status(), 503);
        assert_eq!(header(&down, header::RETRY_AFTER), Some("5"));
        let limited = ErrorResponse::new(ErrorCode::ResourceExhausted, "slow down")
            .retry_after(12)
            .build();
        assert_eq!(limited.status(), 429);
        assert_eq!(header(&limited, header::RETRY_AFTER), Some("12"));
    }

    #[test]
    fn challenges_only_on_401_and_details_beside_the_error() {
        let r = ErrorResponse::new(ErrorCode::Unauthenticated, "no token")
            .challenge("Bearer")
            .build();
        assert_eq!(header(&r, header::WWW_AUTHENTICATE), Some("Bearer"));
        let r = ErrorResponse::new(ErrorCode::PermissionDenied, "not yours")
            .challenge("Bearer")
            .detail("errors", serde_json::json!([1, 2]))
            .build();
        assert_eq!(header(&r, header::WWW_AUTHENTICATE), None);
        let body: serde_json::Value = serde_json::from_str(r.body()).unwrap();
        assert_eq!(body["errors"], serde_json::json!([1, 2]));
    }
}
