//! The campaign manager: software packages, update campaigns and their
//! rollout in waves, every targeted vehicle's action state, approvals, the
//! audit log and reports.
//!
//! A campaign file ([`spec`]) is validated whole, approved by a second
//! person, then launched: a targeting scan creates one action per matching
//! vehicle ([`targeting`]), and the rollout loop ([`rollout`]) hands them to
//! staging wave by wave at the configured rate, times them out, retries
//! them and stops the campaign when failures climb. Vehicles' status reports
//! are written in batches ([`status`]). Every change that alters a vehicle's
//! pending actions leaves an event in the outbox for staging.
//!
//! Reports read counters the store keeps with every change of an action
//! (`store::Counts`), never a scan of a campaign's actions; each action
//! keeps its recent history, and admins diagnose failures by reason and
//! retry them ([`diagnose`]).

mod diagnose;
mod error;
pub mod gauges;
pub mod grpc;
mod installed;
pub mod manager;
pub mod model;
mod report;
pub mod rollout;
pub mod spec;
pub mod status;
pub mod store;
pub mod targeting;

pub use error::CampaignError;
pub use grpc::CampaignManagerService;
pub use manager::{Actor, CampaignManager, Config};
