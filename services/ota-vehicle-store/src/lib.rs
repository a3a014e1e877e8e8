//! The vehicle data store: every vehicle's model, platform, gateway, market
//! and ECU versions, merged from several sources (manufacturing, dealer, the
//! vehicle itself) by a configured per-field source precedence.
//!
//! [`VehicleStore`] is the one entry point; it runs on SQLite or PostgreSQL
//! (one implementation, with the dialects' differences spelled out in
//! `sql`), and [`grpc::VehicleStoreService`] serves it as the
//! `ota.v1.VehicleStore` gRPC service. [`parse`] turns NDJSON and CSV import
//! files into records.

pub mod error;
pub mod grpc;
pub mod parse;
pub mod precedence;
mod sql;
mod store;

pub use error::StoreError;
pub use precedence::Precedence;
pub use store::{
    ImportError, ImportItem, ImportSummary, VehicleFilter, VehicleStore, MAX_LISTED_ERRORS,
    MAX_PAGE,
};
