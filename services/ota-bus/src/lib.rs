//! The event bus: a transactional outbox, a relay that moves outbox rows to
//! the bus, and the bus itself (an in-process channel, or Redis Streams with
//! consumer groups).
//!
//! A service that changes state other services react to writes the event into
//! the `outbox` table in the same database transaction ([`outbox::enqueue`]),
//! so the change and its event commit together. The [`outbox::Relay`] publishes
//! outbox rows to the bus and deletes them once published. Consumers read
//! through a consumer group: each message goes to one consumer of the group,
//! and a message a consumer took but never acknowledged (it crashed) is handed
//! to another consumer after the claim timeout. Delivery is at least once;
//! consumers are idempotent.

pub mod events;
pub mod memory;
pub mod outbox;
pub mod pending;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use ota_common::{CodedError, ErrorCode};

pub use events::{topics, Install, InstalledEvent, StagedEvent, StagingEvent, VehicleEvent};
pub use memory::MemoryBus;
pub use redis::RedisBus;

/// How long a consumer may hold a message unacknowledged before another
/// consumer of its group gets it.
pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages a topic retains at most (approximately, on Redis).
pub const DEFAULT_MAX_LEN: usize = 1_000_000;

/// One message as a consumer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Bus-assigned id, what [`Subscription::ack`] takes.
    pub id: String,
    pub topic: String,
    /// JSON text (one of the types in [`events`]).
    pub payload: String,
    /// How many times this message was handed out before (0 the first time).
    pub redeliveries: u32,
}

#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// "memory" or "redis".
    fn name(&self) -> &'static str;
    /// Appends messages to a topic, in order.
    async fn publish(&self, topic: &str, payloads: &[String]) -> Result<(), BusError>;
    /// Joins consumer `consumer` to `group` on `topic` (created on first use,
    /// starting from the oldest retained message).
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Box<dyn Subscription>, BusError>;
    /// Messages of `topic` that `group` has not acknowledged yet (waiting or
    /// taken but unacknowledged): the queue depth.
    async fn depth(&self, topic: &str, group: &str) -> Result<u64, BusError>;
}

#[async_trait::async_trait]
pub trait Subscription: Send {
    /// Up to `max` messages, waiting at most `wait` for the first one. Includes
    /// messages other consumers of the group took and left unacknowledged for
    /// longer than the claim timeout.
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, BusError>;
    /// Marks messages as done for this group.
    async fn ack(&mut self, ids: &[String]) -> Result<(), BusError>;
}

pub type SharedBus = Arc<dyn Bus>;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    #[error("event bus error: {0}")]
    Internal(String),
    #[error("database error in the outbox: {0}")]
    Db(#[from] sqlx::Error),
}

impl CodedError for BusError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
            Self::Db(e) => ota_db::classify(e),
        }
    }
}
