//! The vehicle data store: every vehicle's model, platform, gateway, market
//! and ECU versions, merged from several sources (manufacturing, dealer, the
//! vehicle itself) by a configured per-field source precedence.
//!
//! [`VehicleStore`] is the one entry point; it runs on SQLite or PostgreSQL
//! ([`backend`]), and [`grpc::VehicleStoreService`] serves it as the
//! `ota.v1.VehicleStore` gRPC service. [`parse`] turns NDJSON and CSV import
//! files into records.

pub mod backend;
pub mod error;
pub mod grpc;
pub mod parse;
mod postgres;
pub mod precedence;
mod sqlite;
mod store;

pub use error::StoreError;
pub use precedence::Precedence;
pub use store::{
    ImportError, ImportItem, ImportSummary, VehicleFilter, VehicleStore, MAX_LISTED_ERRORS,
    MAX_PAGE,
};
