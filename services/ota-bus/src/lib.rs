//! The event bus: a transactional outbox, a relay that moves outbox rows to
//! the bus, and the bus itself (an in-process channel, or Redis Streams with
//! consumer groups).
