//! The in-process bus, for `ota serve` on one machine and for tests. It keeps
//! the semantics of the Redis bus (consumer groups, claim timeout, at least
//! once) so code written against one behaves the same on the other.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{Bus, BusError, Message, Subscription, DEFAULT_CLAIM_TIMEOUT, DEFAULT_MAX_LEN};

/// Topics live in one map behind one lock: every operation is a few map and
/// queue steps, far cheaper than the lock contention it could cause.
#[derive(Clone)]
pub struct MemoryBus {
    state: Arc<Mutex<HashMap<String, Topic>>>,
    claim_timeout: Duration,
    max_len: usize,
}

struct Topic {
    /// Retained payloads; `log[0]` has sequence number `first_seq`.
    log: VecDeque<Arc<str>>,
    first_seq: u64,
    groups: HashMap<String, Group>,
}

struct Group {
    /// Sequence number of the first message no consumer has taken yet.
    next: u64,
    taken: BTreeMap<u64, Taken>,
    /// `taken` ordered by when each message may be handed out again.
    expiries: BTreeSet<(Instant, u64)>,
    notify: Arc<Notify>,
}

struct Taken {
    until: Instant,
    deliveries: u32,
}

impl Topic {
    fn new() -> Self {
        Self {
            log: VecDeque::new(),
            first_seq: 0,
            groups: HashMap::new(),
        }
    }

    fn end_seq(&self) -> u64 {
        self.first_seq + self.log.len() as u64
    }

    /// Drops what every group has acknowledged, then whatever exceeds
    /// `max_len` even if unacknowledged. A topic without groups keeps its
    /// messages so a group created later still sees them.
    fn trim(&mut self, max_len: usize) {
        let acked = self
            .groups
            .values()
            .map(|g| g.taken.keys().next().copied().unwrap_or(g.next).min(g.next))
            .min();
        let mut floor = acked.unwrap_or(self.first_seq);
        floor = floor.max(self.end_seq().saturating_sub(max_len as u64));
        if floor <= self.first_seq {
            return;
        }
        let drop = (floor - self.first_seq) as usize;
        self.log.drain(..drop);
        self.first_seq = floor;
        for g in self.groups.values_mut() {
            g.next = g.next.max(floor);
            while let Some((&seq, _)) = g.taken.first_key_value() {
                if seq >= floor {
                    break;
                }
                let t = g.taken.remove(&seq).expect("first key exists");
                g.expiries.remove(&(t.until, seq));
            }
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            claim_timeout: DEFAULT_CLAIM_TIMEOUT,
            max_len: DEFAULT_MAX_LEN,
        }
    }

    /// How long a consumer may hold a message before another consumer of the
    /// group gets it.
    pub fn with_claim_timeout(mut self, timeout: Duration) -> Self {
        self.claim_timeout = timeout;
        self
    }

    /// Messages a topic retains at most (at least 1); the oldest go first,
    /// acknowledged or not.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Topic>> {
        // Nothing panics halfway through an update unless an invariant is
        // already broken, so a poisoned lock still guards usable state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Bus for MemoryBus {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, topic: &str, payloads: &[String]) -> Result<(), BusError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let mut state = self.lock();
        let t = state.entry(topic.to_owned()).or_insert_with(Topic::new);
        t.log
            .extend(payloads.iter().map(|p| Arc::<str>::from(p.as_str())));
        t.trim(self.max_len);
        for g in t.groups.values() {
            g.notify.notify_waiters();
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let mut state = self.lock();
        let t = state.entry(topic.to_owned()).or_insert_with(Topic::new);
        let first = t.first_seq;
        let g = t.groups.entry(group.to_owned()).or_insert_with(|| Group {
            next: first,
            taken: BTreeMap::new(),
            expiries: BTreeSet::new(),
            notify: Arc::new(Notify::new()),
        });
        Ok(Box::new(MemorySubscription {
            bus: self.clone(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            notify: g.notify.clone(),
        }))
    }

    async fn depth(&self, topic: &str, group: &str) -> Result<u64, BusError> {
        let state = self.lock();
        Ok(state
            .get(topic)
            .and_then(|t| {
                t.groups
                    .get(group)
                    .map(|g| g.taken.len() as u64 + (t.end_seq() - g.next))
            })
            .unwrap_or(0))
    }
}

pub struct MemorySubscription {
    bus: MemoryBus,
    topic: String,
    group: String,
    /// Only for logs: in memory any consumer may finish any message.
    consumer: String,
    notify: Arc<Notify>,
}

impl MemorySubscription {
    /// Hands out expired messages first, then new ones. Returns the batch, or
    /// when empty the instant the next taken message expires.
    fn take(&self, max: usize) -> Result<Vec<Message>, Option<Instant>> {
        let now = Instant::now();
        let claim_timeout = self.bus.claim_timeout;
        let mut state = self.bus.lock();
        let Some(t) = state.get_mut(&self.topic) else {
            return Err(None);
        };
        let end_seq = t.end_seq();
        let Topic {
            log,
            first_seq,
            groups,
        } = t;
        let Some(g) = groups.get_mut(&self.group) else {
            return Err(None);
        };
        let payload = |seq: u64| -> String {
            // Trimming drops taken messages together with their payloads,
            // so whatever is handed out here is retained.
            log[(seq - *first_seq) as usize].to_string()
        };
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&(until, seq)) = g.expiries.first().filter(|(until, _)| *until <= now) else {
                break;
            };
            g.expiries.remove(&(until, seq));
            let taken = g.taken.get_mut(&seq).expect("expiries mirror taken");
            taken.until = now + claim_timeout;
            g.expiries.insert((taken.until, seq));
            out.push(Message {
                id: seq.to_string(),
                topic: self.topic.clone(),
                payload: payload(seq),
                redeliveries: taken.deliveries,
            });
            taken.deliveries += 1;
        }
        if !out.is_empty() {
            tracing::debug!(
                topic = %self.topic,
                group = %self.group,
                consumer = %self.consumer,
                count = out.len(),
                "redelivering messages past their claim timeout"
            );
        }
        while out.len() < max && g.next < end_seq {
            let seq = g.next;
            g.next += 1;
            let until = now + claim_timeout;
            g.taken.insert(
                seq,
                Taken {
                    until,
                    deliveries: 1,
                },
            );
            g.expiries.insert((until, seq));
            out.push(Message {
                id: seq.to_string(),
                topic: self.topic.clone(),
                payload: payload(seq),
                redeliveries: 0,
            });
        }
        if out.is_empty() {
            Err(g.expiries.first().map(|(until, _)| *until))
        } else {
            Ok(out)
        }
    }
}

#[async_trait::async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a publish between the look and
            // the wait still wakes this consumer.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_expiry = match self.take(max) {
                Ok(batch) => return Ok(batch),
                Err(next_expiry) => next_expiry,
            };
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let wake = next_expiry.map_or(deadline, |e| e.min(deadline));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), BusError> {
        let seqs = ids
            .iter()
            .map(|id| {
                id.parse::<u64>().map_err(|_| {
                    BusError::Internal(format!(
                        "invalid message id {id:?} for topic {}: expected a sequence number",
                        self.topic
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_len = self.bus.max_len;
        let mut state = self.bus.lock();
        let Some(t) = state.get_mut(&self.topic) else {
            return Ok(());
        };
        let Some(g) = t.groups.get_mut(&self.group) else {
            return Ok(());
        };
        for seq in seqs {
            if let Some(taken) = g.taken.remove(&seq) {
                g.expiries.remove(&(taken.until, seq));
            }
        }
        t.trim(max_len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acknowledged_messages_are_trimmed() {
        let bus = MemoryBus::new();
        let mut a = bus.subscribe("t", "a", "c").await.unwrap();
        let mut b = bus.subscribe("t", "b", "c").await.unwrap();
        bus.publish("t", &["1".into(), "2".into()]).await.unwrap();
        let ids: Vec<String> = a
            .next(10, Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        a.ack(&ids).await.unwrap();
        assert_eq!(bus.lock()["t"].log.len(), 2, "group b still needs both");
        let ids: Vec<String> = b
            .next(1, Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        b.ack(&ids).await.unwrap();
        assert_eq!(bus.lock()["t"].log.len(), 1);
        assert_eq!(bus.lock()["t"].first_seq, 1);
    }

    #[tokio::test]
    async fn max_len_drops_the_oldest_even_unacknowledged() {
        let bus = MemoryBus::new().with_max_len(3);
        let mut s = bus.subscribe("t", "g", "c").await.unwrap();
        bus.publish("t", &["1".into()]).await.unwrap();
        assert_eq!(s.next(1, Duration::ZERO).await.unwrap()[0].payload, "1");
        let five: Vec<String> = (2..=6).map(|i| i.to_string()).collect();
        bus.publish("t", &five).await.unwrap();
        let rest: Vec<String> = s
            .next(10, Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.payload)
            .collect();
        assert_eq!(rest, ["4", "5", "6"]);
        assert_eq!(bus.depth("t", "g").await.unwrap(), 3);
    }

    #[tokio::test]
    async fn rejects_ids_it_never_issued_by_name() {
        let bus = MemoryBus::new();
        let mut s = bus.subscribe("t", "g", "c").await.unwrap();
        let err = s.ack(&["1700000000000-0".into()]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "event bus error: invalid message id \"1700000000000-0\" for topic t: expected a sequence number"
        );
    }
}
