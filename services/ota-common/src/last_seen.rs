//! When vehicles were last heard from (HTTP and DDI requests, MQTT logins
//! and reports), written in batches. A request only notes the time in memory ([`LastSeen::record`]: a map insert
//! under one of several locks); a background task sends everything noted
//! since its last run to the vehicle store in one `MarkSeen` call every few
//! seconds, so a fleet polling at any rate costs the database one write per
//! interval, not one per poll.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ota_proto::v1 as pb;
use pb::vehicle_store_client::VehicleStoreClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::peer::Peer;

/// How often the noted times are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Vehicles sent per `MarkSeen` call (the store takes up to 100,000).
const PER_CALL: usize = 10_000;
/// Vehicles noted between two writes before further ones are dropped (and
/// counted): bounds memory when the vehicle store is unreachable for long.
const MAX_PENDING: usize = 2_000_000;
/// Locks the map is split over, so concurrent polls rarely wait.
const SHARDS: usize = 16;

/// Shared by the vehicle adapters of a process. Cheap to clone.
#[derive(Clone, Default)]
pub struct LastSeen {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    shards: [Mutex<HashMap<Box<str>, i64>>; SHARDS],
    pending: AtomicU64,
    dropped: AtomicU64,
}

/// What one [`LastSeen::flush`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Distinct vehicles sent.
    pub vehicles: u64,
    /// `MarkSeen` calls made.
    pub calls: u64,
    /// Vehicles whose `last_seen` moved.
    pub updated: u64,
}

impl LastSeen {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `vin` (already authenticated) was heard from now.
    pub fn record(&self, vin: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut m = self.inner.shards[shard(vin)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(t) = m.get_mut(vin) {
            *t = now;
        } else if self.inner.pending.load(Ordering::Relaxed) < MAX_PENDING as u64 {
            m.insert(vin.into(), now);
            self.inner.pending.fetch_add(1, Ordering::Relaxed);
        } else {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Vehicles noted and not yet written.
    pub fn pending(&self) -> u64 {
        self.inner.pending.load(Ordering::Relaxed)
    }

    /// Takes everything noted so far.
    fn take(&self) -> Vec<(Box<str>, i64)> {
        let mut out = Vec::with_capacity(self.pending() as usize);
        for s in &self.inner.shards {
            let m = std::mem::take(&mut *s.lock().unwrap_or_else(|e| e.into_inner()));
            self.inner
                .pending
                .fetch_sub(m.len() as u64, Ordering::Relaxed);
            out.extend(m);
        }
        out
    }

    /// Puts back what could not be written, unless a later poll of the same
    /// vehicle was noted meanwhile.
    fn restore(&self, seen: impl IntoIterator<Item = (Box<str>, i64)>) {
        for (vin, at) in seen {
            let mut m = self.inner.shards[shard(&vin)]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(t) = m.get_mut(&vin) {
                *t = (*t).max(at);
            } else if self.inner.pending.load(Ordering::Relaxed) < MAX_PENDING as u64 {
                m.insert(vin, at);
                self.inner.pending.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes everything noted so far. What a failed call carried is kept
    /// for the next flush.
    pub async fn flush(&self, store: &VehicleStoreClient<Peer>) -> Result<Flushed, tonic::Status> {
        let dropped = self.inner.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            metrics::counter!("ota_last_seen_dropped_total").increment(dropped);
            tracing::warn!(
                dropped,
                "last-seen polls dropped: more than {MAX_PENDING} vehicles waiting to be written"
            );
        }
        let seen = self.take();
        let mut done = Flushed::default();
        let mut chunks = seen.chunks(PER_CALL);
        while let Some(chunk) = chunks.next() {
            let req = pb::MarkSeenRequest {
                seen: chunk
                    .iter()
                    .map(|(vin, at)| pb::SeenVehicle {
                        vin: vin.to_string(),
                        at: Some(prost_types::Timestamp {
                            seconds: at.div_euclid(1000),
                            nanos: (at.rem_euclid(1000) * 1_000_000) as i32,
                        }),
                    })
                    .collect(),
            };
            match store.clone().mark_seen(req).await {
                Ok(r) => {
                    metrics::counter!("ota_last_seen_batches_total", "outcome" => "ok")
                        .increment(1);
                    done.calls += 1;
                    done.vehicles += chunk.len() as u64;
                    done.updated += r.into_inner().updated;
                }
                Err(e) => {
                    metrics::counter!("ota_last_seen_batches_total", "outcome" => "error")
                        .increment(1);
                    self.restore(chunk.iter().cloned());
                    for rest in chunks {
                        self.restore(rest.iter().cloned());
                    }
                    return Err(e);
                }
            }
        }
        metrics::counter!("ota_last_seen_vehicles_total").increment(done.vehicles);
        Ok(done)
    }

    /// Flushes every `every` until shutdown, then once more.
    pub fn spawn_flusher(
        &self,
        store: VehicleStoreClient<Peer>,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                metrics::gauge!("ota_last_seen_pending").set(this.pending() as f64);
                if let Err(e) = this.flush(&store).await {
                    tracing::warn!(error = %e.message(), pending = this.pending(), "writing last-seen times failed; retrying");
                }
            }
            // Bounded: the store may be stopping too.
            let last = tokio::time::timeout(Duration::from_secs(3), this.flush(&store)).await;
            if !matches!(last, Ok(Ok(_))) {
                tracing::warn!(
                    pending = this.pending(),
                    "last-seen times not written at shutdown"
                );
            }
        })
    }
}

/// The serial number ends a VIN, so its last bytes spread vehicles evenly.
fn shard(vin: &str) -> usize {
    let b = vin.as_bytes();
    let h = b
        .iter()
        .rev()
        .take(4)
        .fold(0usize, |h, &c| h.wrapping_mul(31).wrapping_add(c as usize));
    h % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vehicle_is_noted_once_with_its_latest_time() {
        let s = LastSeen::new();
        s.record("WVWZZZE1ZMP000001");
        s.record("WVWZZZE1ZMP000002");
        s.record("WVWZZZE1ZMP000001");
        assert_eq!(s.pending(), 2);
        let mut taken = s.take();
        taken.sort();
        assert_eq!(taken.len(), 2);
        assert_eq!(&*taken[0].0, "WVWZZZE1ZMP000001");
        assert_eq!(s.pending(), 0, "taking empties the map");
        assert!(s.take().is_empty());
    }

    #[test]
    fn a_failed_write_is_kept_without_hiding_a_later_poll() {
        let s = LastSeen::new();
        s.record("WVWZZZE1ZMP000001");
        let taken = s.take();
        let later = taken[0].1 + 10_000;
        s.inner.shards[shard("WVWZZZE1ZMP000001")]
            .lock()
            .unwrap()
            .insert("WVWZZZE1ZMP000001".into(), later);
        s.inner.pending.fetch_add(1, Ordering::Relaxed);
        s.restore(taken.into_iter().chain([("WVWZZZE1ZMP000009".into(), 5)]));
        let mut back = s.take();
        back.sort();
        assert_eq!(back[0], ("WVWZZZE1ZMP000001".into(), later));
        assert_eq!(back[1], ("WVWZZZE1ZMP000009".into(), 5));
    }

    #[test]
    fn vehicles_spread_over_the_shards() {
        let mut used = [0usize; SHARDS];
        for i in 0..1600 {
            used[shard(&format!("WVWZZZE1ZMP{i:06}"))] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "{used:?}");
    }
}
