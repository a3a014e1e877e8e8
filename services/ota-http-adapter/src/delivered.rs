//! Telling the campaign manager which actions a vehicle was handed, off the
//! request path: the poll is answered first, and a campaign manager that is
//! slow or down must not fail or slow it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ota_common::peer::Peer;
use ota_proto::v1 as pb;
use pb::campaign_manager_client::CampaignManagerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Deliveries waiting for the campaign manager; beyond this they are
/// dropped (counted). The next 200 for the vehicle reports them again, and a
/// status report moves the action on regardless.
const QUEUE: usize = 10_000;
/// MarkDelivered calls in flight at once.
const CONCURRENCY: usize = 16;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a delivery of one document counts as done. A vehicle that
/// polls without If-None-Match is handed the same document on every poll,
/// and marking the same actions again changes nothing but costs the
/// campaign manager a database write per poll (at fleet scale, most of the
/// database's write capacity). An action staged again for a retry without a
/// report in between (a timeout; the document is unchanged) is marked at
/// most this much later.
const RECENT_TTL: Duration = Duration::from_secs(60);
/// Vehicles remembered at most; past it the expired entries go, and if
/// that is not enough, all of them (a few repeated marks, not an error).
const RECENT_MAX: usize = 200_000;

type Delivery = (String, String, Vec<String>);

pub(crate) struct Delivered {
    client: CampaignManagerClient<Peer>,
    /// Started on first use, from a handler, so building the state does not
    /// need a runtime.
    tx: OnceLock<mpsc::Sender<Delivery>>,
    recent: Recent,
    /// When the last "queue full" warning was logged, in ms since `epoch`:
    /// a full queue means thousands of drops a second, and a log line each
    /// would cost more than the polls themselves.
    warned_ms: AtomicU64,
    epoch: Instant,
}

impl Delivered {
    pub fn new(client: CampaignManagerClient<Peer>) -> Self {
        Self {
            client,
            tx: OnceLock::new(),
            recent: Recent::default(),
            warned_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// `etag` is the document's: the same etag means the same actions.
    pub fn send(&self, vin: &str, etag: &str, action_ids: Vec<String>) {
        if action_ids.is_empty() || !self.recent.claim(vin, etag, Instant::now()) {
            return;
        }
        let tx = self
            .tx
            .get_or_init(|| start(self.client.clone(), self.recent.clone()));
        if tx
            .try_send((vin.to_owned(), etag.to_owned(), action_ids))
            .is_err()
        {
            self.recent.release(vin, etag);
            metrics::counter!("ota_mark_delivered_total", "outcome" => "dropped").increment(1);
            let now = self.epoch.elapsed().as_millis() as u64;
            let last = self.warned_ms.load(Ordering::Relaxed);
            if (last == 0 || now.saturating_sub(last) >= 1000)
                && self
                    .warned_ms
                    .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(%vin, "delivery queue full, not marking the actions delivered (logged at most once a second; see ota_mark_delivered_total)");
            }
        }
    }

    /// The vehicle reported on an action: a failure may stage the same
    /// actions again under the same etag, and that delivery must be marked.
    pub fn forget(&self, vin: &str) {
        self.recent.forget(vin);
    }
}

/// VIN to the etag of the document whose delivery is being (or was
/// recently) marked, and when.
type RecentMap = HashMap<Box<str>, (Box<str>, Instant)>;

#[derive(Clone, Default)]
struct Recent(std::sync::Arc<Mutex<RecentMap>>);

impl Recent {
    /// True when this delivery is to be marked: not marked (or being
    /// marked) within the TTL. It then counts as marked until `release`.
    fn claim(&self, vin: &str, etag: &str, now: Instant) -> bool {
        let mut map = self.0.lock().expect("recent deliveries");
        if let Some((e, at)) = map.get_mut(vin) {
            if &**e == etag && now.saturating_duration_since(*at) < RECENT_TTL {
                return false;
            }
            *e = etag.into();
            *at = now;
            return true;
        }
        if map.len() >= RECENT_MAX {
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < RECENT_TTL);
            if map.len() >= RECENT_MAX {
                map.clear();
            }
        }
        map.insert(vin.into(), (etag.into(), now));
        true
    }

    /// The mark did not happen: the next poll tries again.
    fn release(&self, vin: &str, etag: &str) {
        let mut map = self.0.lock().expect("recent deliveries");
        if map.get(vin).is_some_and(|(e, _)| &**e == etag) {
            map.remove(vin);
        }
    }

    fn forget(&self, vin: &str) {
        self.0.lock().expect("recent deliveries").remove(vin);
    }
}

fn start(client: CampaignManagerClient<Peer>, recent: Recent) -> mpsc::Sender<Delivery> {
    let (tx, rx) = mpsc::channel::<Delivery>(QUEUE);
    tokio::spawn(ReceiverStream::new(rx).for_each_concurrent(
        CONCURRENCY,
        move |(vin, etag, action_ids)| {
            let mut client = client.clone();
            let recent = recent.clone();
            async move {
                let call = client.mark_delivered(pb::MarkDeliveredRequest {
                    vin: vin.clone(),
                    action_ids,
                });
                let outcome = match tokio::time::timeout(CALL_TIMEOUT, call).await {
                    Ok(Ok(_)) => "ok",
                    Ok(Err(status)) => {
                        tracing::warn!(%vin, error = %status.message(), "marking actions delivered failed");
                        "error"
                    }
                    Err(_) => {
                        tracing::warn!(%vin, "marking actions delivered timed out");
                        "error"
                    }
                };
                if outcome != "ok" {
                    recent.release(&vin, &etag);
                }
                metrics::counter!("ota_mark_delivered_total", "outcome" => outcome).increment(1);
            }
        },
    ));
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mark_per_document_until_it_changes_expires_or_is_released() {
        let r = Recent::default();
        let t0 = Instant::now();
        assert!(r.claim("V1", "e1", t0));
        assert!(
            !r.claim("V1", "e1", t0 + Duration::from_secs(1)),
            "same document"
        );
        assert!(r.claim("V2", "e1", t0), "another vehicle");
        assert!(
            r.claim("V1", "e2", t0 + Duration::from_secs(2)),
            "new document"
        );
        assert!(!r.claim("V1", "e2", t0 + Duration::from_secs(3)));
        assert!(
            r.claim("V1", "e2", t0 + Duration::from_secs(2) + RECENT_TTL),
            "expired"
        );
        r.release("V1", "e1");
        assert!(
            !r.claim("V1", "e2", t0 + Duration::from_secs(2) + RECENT_TTL),
            "another etag's release leaves it"
        );
        r.release("V1", "e2");
        assert!(
            r.claim("V1", "e2", t0 + Duration::from_secs(2) + RECENT_TTL),
            "a failed mark is retried"
        );
        r.forget("V1");
        assert!(
            r.claim("V1", "e2", t0 + Duration::from_secs(2) + RECENT_TTL),
            "a report forgets it"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let r = Recent::default();
        let t0 = Instant::now();
        for i in 0..RECENT_MAX + 10 {
            r.claim(&format!("V{i}"), "e", t0);
        }
        assert!(r.0.lock().unwrap().len() <= RECENT_MAX);
        let later = t0 + RECENT_TTL;
        for i in 0..RECENT_MAX {
            r.claim(&format!("W{i}"), "e", later);
        }
        let held = r.0.lock().unwrap().len();
        assert!(held <= RECENT_MAX, "{held}");
        assert!(
            !r.claim(&format!("W{}", RECENT_MAX - 1), "e", later),
            "fresh entries survive the sweep"
        );
    }
}
