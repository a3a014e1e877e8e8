//! Staging: every vehicle's pending actions pre-computed into one document
//! under one key, so a vehicle's fetch is a single lookup. A [`Stager`]
//! writes documents into a [`StagedStore`]; [`StagingTasks`] keeps them
//! current; [`StagingService`] serves them, and [`StagingPeer`] is how adapters
//! reach it, in this process or another.

pub mod document;
mod error;
mod peer;
mod service;
pub mod source;
pub mod stager;
pub mod stats;
pub mod store;
pub mod worker;

pub use document::{Document, StoredDoc};
pub use error::StagingError;
pub use peer::{Found, StagingPeer};
pub use service::{StagingService, MAX_RESTAGE_VINS};
pub use source::{campaign_manager_source, ActionBatches, ActionSource};
pub use stager::{StageOutcome, Stager};
pub use store::{
    MemoryStore, ReconcileRecord, RedisStore, RedisStoreConfig, SharedStore, StagedStore, Stamp,
};
pub use worker::{RunConfig, StagingTasks, Worker, WorkerConfig, GROUP};
