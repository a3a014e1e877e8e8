//! Shared vocabulary of the platform: the error codes every service maps its
//! errors to (and from which gRPC and HTTP statuses follow, with the one
//! HTTP error answer), VIN validation,
//! the vehicle domain types with their protobuf conversions, the
//! per-vehicle rate limit of the vehicle-facing APIs and their batched
//! last-seen times, secret comparison,
//! links to the server's own resources, W3C trace context on every carrier,
//! and the memory allocator of every binary.

#[cfg(unix)]
pub mod alloc;
pub mod error;
pub mod http_error;
pub mod last_seen;
pub mod peer;
pub mod rate;
pub mod reference;
pub mod secret;
pub mod trace;
pub mod vehicle;
pub mod vin;

pub use error::{CodedError, ErrorCode};
pub use http_error::{ErrorBody, ErrorDetail, ErrorResponse};
pub use vin::{Vin, VinError};
