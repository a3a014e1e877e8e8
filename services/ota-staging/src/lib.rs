//! Staging: every vehicle's pending actions pre-computed into one document
//! under one key, so a vehicle's fetch is a single lookup.
//!
//! Wiring: a [`Stager`] over a store ([`MemoryStore`] or [`RedisStore`]) and
//! an [`ActionSource`] (the campaign manager client); [`StagingTasks`] runs
//! the start-up rebuild, the bus worker and reconcile; [`StagingService`]
//! serves gRPC and the adapters' [`StagingService::lookup`] fast path.

pub mod document;
mod error;
mod service;
pub mod source;
pub mod stager;
pub mod stats;
pub mod store;
pub mod worker;

pub use document::{Document, StoredDoc};
pub use error::StagingError;
pub use service::{StagingService, MAX_RESTAGE_VINS};
pub use source::{campaign_manager_source, ActionBatches, ActionSource};
pub use stager::{StageOutcome, Stager};
pub use store::{
    MemoryStore, ReconcileRecord, RedisStore, RedisStoreConfig, SharedStore, StagedStore, Stamp,
};
pub use worker::{RunConfig, StagingTasks, Worker, WorkerConfig, GROUP};
