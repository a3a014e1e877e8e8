//! Turning open actions into stored documents: for a set of VINs (events,
//! Restage), for the whole fleet (start-up rebuild), and as a repair pass
//! (reconcile).
//!
//! Writers do not coordinate: the worker, Restage and reconcile may stage
//! one vehicle at the same moment, and the one that read the campaign
//! manager earlier can write last. Every change of open actions emits an
//! event, so the next event or reconcile corrects such a document.
//!
//! Reconcile acts only on differences that outlast the events in flight
//! (see [`Stager::reconcile`]): a document whose event is still on its way
//! is not broken, and a reconcile that wrote it from its own earlier read
//! could overwrite what the worker wrote meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use ota_bus::SharedBus;
use ota_common::{ErrorCode, Vin};
use ota_proto::v1 as pb;

use crate::document::{self, StoredDoc};
use crate::source::ActionSource;
use crate::stats::StagingStats;
use crate::store::{ReconcileRecord, SharedStore};
use crate::StagingError;

/// VINs per campaign-manager call and per store write.
pub const CHUNK: usize = 1000;

/// Chunks [`Stager::stage_vins`] works on at once.
const CHUNKS_IN_FLIGHT: usize = 2;

/// The reconcile lock's lease; renewed after every batch, so it only runs
/// out when the holder died.
const RECONCILE_LEASE: Duration = Duration::from_secs(120);
const RECONCILE_LOCK: &str = "reconcile";

/// Vehicles whose documents differed at reconcile's first look that it
/// holds before looking again (about 40 bytes each).
const CONFIRM_AT: usize = 50 * CHUNK;
/// How long an event committed before reconcile's look may take to reach
/// the bus: the outbox relay is woken by each commit of its process and
/// looks every 100 ms otherwise.
const RELAY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait for the staging queue to empty before a second look. The
/// queue of a busy fleet may never be empty; reconcile then repairs what
/// still differs after this, which may include documents in flight.
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);
const CATCH_UP_POLL: Duration = Duration::from_millis(50);

/// What staging some vehicles did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StageOutcome {
    /// Vehicles whose document was recomputed.
    pub recomputed: u64,
    /// Of those, documents written or deleted because they differed.
    pub changed: u64,
}

impl std::ops::AddAssign for StageOutcome {
    fn add_assign(&mut self, o: Self) {
        self.recomputed += o.recomputed;
        self.changed += o.changed;
    }
}

/// The staging core shared by the worker, the gRPC service and the HTTP
/// adapter's fast path. Cheap to clone.
#[derive(Clone)]
pub struct Stager {
    inner: Arc<Inner>,
}

struct Inner {
    store: SharedStore,
    source: Arc<dyn ActionSource>,
    poll_after_s: u32,
    /// See [`Stager::with_public_url`].
    public_url: String,
    stats: StagingStats,
    /// False while a store that starts empty waits for its first rebuild:
    /// answering "no actions" then would be a lie.
    ready: AtomicBool,
    /// When this process last rebuilt every document (unix ms, 0 never):
    /// as good as a reconcile for deciding when the next one is due.
    rebuilt_at_ms: AtomicI64,
    /// The staging events' queue, once a worker runs here
    /// ([`Stager::watch_queue`]).
    queue: OnceLock<Queue>,
}

/// Where the staging events wait for the workers: a topic's consumer group.
struct Queue {
    bus: SharedBus,
    topic: String,
    group: String,
}

/// What writing a plan did.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    /// Documents written or deleted.
    changed: u64,
    /// Of those, documents deleted that existed (the store's own answer).
    deleted: u64,
}

/// How to bring some vehicles' documents in line with their open actions.
#[derive(Default)]
struct Plan {
    puts: Vec<(String, StoredDoc)>,
    /// Per put: whether it replaces a stored value.
    replaces: Vec<bool>,
    deletes: Vec<String>,
}

impl Plan {
    fn vins(self) -> impl Iterator<Item = String> {
        self.puts
            .into_iter()
            .map(|(vin, _)| vin)
            .chain(self.deletes)
    }
}

impl Stager {
    pub fn new(store: SharedStore, source: Arc<dyn ActionSource>, poll_after_s: u32) -> Self {
        let ready = !store.needs_rebuild();
        Self {
            inner: Arc::new(Inner {
                store,
                source,
                poll_after_s,
                public_url: String::new(),
                stats: StagingStats::default(),
                ready: AtomicBool::new(ready),
                rebuilt_at_ms: AtomicI64::new(0),
                queue: OnceLock::new(),
            }),
        }
    }

    /// The queue this process's worker consumes (`topic` and `group` on
    /// `bus`), so reconcile can tell when the events in flight are staged.
    /// [`crate::StagingTasks::spawn`] sets it; the first call wins.
    pub fn watch_queue(&self, bus: SharedBus, topic: &str, group: &str) {
        let _ = self.inner.queue.set(Queue {
            bus,
            topic: topic.to_owned(),
            group: group.to_owned(),
        });
    }

    /// This server as vehicles reach it: hosted artifacts are stored as
    /// references (`/artifacts/...`) and their URLs in the documents start
    /// with this. Documents staged under another public URL are rewritten
    /// by the next reconcile, which runs at once when the URL changed
    /// (`reconcile_if_due`).
    pub fn with_public_url(mut self, public_url: &str) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("the public URL is set while the stager is built, before it is shared")
            .public_url = public_url.trim_end_matches('/').to_owned();
        self
    }

    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    pub fn source(&self) -> &Arc<dyn ActionSource> {
        &self.inner.source
    }

    pub fn stats(&self) -> &StagingStats {
        &self.inner.stats
    }

    pub fn poll_after_s(&self) -> u32 {
        self.inner.poll_after_s
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// A vehicle's document, as served: its etag and JSON bytes, the empty
    /// document when it has no open actions. A corrupt stored value is
    /// recomputed, stored and served.
    pub async fn lookup(&self, vin: &str) -> Result<StoredDoc, StagingError> {
        Vin::parse(vin)?;
        if !self.is_ready() {
            return Err(StagingError::NotReady(
                "the staged documents are being rebuilt".to_owned(),
            ));
        }
        let found = match self.inner.store.get_in_process(vin) {
            Some(found) => Ok(found),
            None => self.inner.store.get(vin).await,
        };
        match found {
            Ok(Some(doc)) => Ok(doc),
            Ok(None) => Ok(document::empty(vin, self.inner.poll_after_s)),
            Err(StagingError::Corrupt { vin, reason }) => {
                metrics::counter!("ota_staging_corrupt_total").increment(1);
                tracing::warn!(%vin, %reason, "corrupt staged document, restaging it");
                self.restage_one(&vin).await
            }
            Err(e) => Err(e),
        }
    }

    /// Recomputes one vehicle's document and writes it whatever is stored
    /// (the stored value may be damaged behind an intact stamp).
    pub async fn restage_one(&self, vin: &str) -> Result<StoredDoc, StagingError> {
        let vins = [vin.to_owned()];
        let open = self.inner.source.open_actions(&vins).await?;
        let actions = open
            .into_iter()
            .find(|v| v.vin == vin)
            .map(|v| v.actions)
            .unwrap_or_default();
        let poll = self.inner.poll_after_s;
        match document::build(vin, &actions, poll, &self.inner.public_url)? {
            Some(doc) => {
                // For the store's count (a rare path: one more read is cheap).
                let existed = self.inner.store.stamps(&vins).await?[0].is_some();
                self.inner
                    .store
                    .put_many(&[(vin.to_owned(), doc.clone())], &[existed])
                    .await?;
                Ok(doc)
            }
            None => {
                self.inner.store.delete_many(&vins).await?;
                Ok(document::empty(vin, poll))
            }
        }
    }

    /// Recomputes these vehicles' documents: writes the ones that changed,
    /// deletes the ones of vehicles left without open actions. Invalid VINs
    /// are skipped (logged): they can never have a document.
    pub async fn stage_vins(&self, vins: &[String]) -> Result<StageOutcome, StagingError> {
        let mut seen = HashSet::with_capacity(vins.len());
        let mut valid = Vec::with_capacity(vins.len());
        for vin in vins {
            if let Err(e) = Vin::parse(vin) {
                tracing::warn!(error = %e, "skipping a vin that cannot be staged");
                continue;
            }
            if seen.insert(vin.as_str()) {
                valid.push(vin.clone());
            }
        }
        // Two chunks in flight: one chunk's source call and document
        // building overlap the other's store round trips (a remote store's
        // CPU and this process's then work at once). The chunks hold
        // different vehicles, so their order does not matter.
        let mut outcome = StageOutcome::default();
        let mut chunks = valid.chunks(CHUNK);
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < CHUNKS_IN_FLIGHT {
                match chunks.next() {
                    Some(chunk) => in_flight.push(self.stage_chunk(chunk)),
                    None => break,
                }
            }
            match in_flight.next().await {
                Some(done) => outcome += done?,
                None => break,
            }
        }
        metrics::counter!("ota_staging_documents_total", "outcome" => "recomputed")
            .increment(outcome.recomputed);
        metrics::counter!("ota_staging_documents_total", "outcome" => "changed")
            .increment(outcome.changed);
        Ok(outcome)
    }

    /// Recomputes every vehicle of a campaign.
    pub async fn stage_campaign(&self, campaign_id: &str) -> Result<StageOutcome, StagingError> {
        let vins = self.inner.source.campaign_vins(campaign_id).await?;
        self.stage_vins(&vins).await
    }

    async fn stage_chunk(&self, vins: &[String]) -> Result<StageOutcome, StagingError> {
        let open = self.inner.source.open_actions(vins).await?;
        self.apply(vins, &open).await
    }

    /// Brings the documents of `vins` in line with `open`, their open
    /// actions (a vehicle absent from `open` has none).
    async fn apply(
        &self,
        vins: &[String],
        open: &[pb::VehicleActions],
    ) -> Result<StageOutcome, StagingError> {
        let plan = self.plan(vins, open).await?;
        Ok(StageOutcome {
            recomputed: vins.len() as u64,
            changed: self.write(plan).await?.changed,
        })
    }

    /// What [`apply`](Self::apply) would write, from the stored stamps.
    async fn plan(
        &self,
        vins: &[String],
        open: &[pb::VehicleActions],
    ) -> Result<Plan, StagingError> {
        let (mut docs, failed) = self.build_all(open);
        let stamps = self.inner.store.stamps(vins).await?;
        let mut plan = Plan::default();
        for (vin, stamp) in vins.iter().zip(stamps) {
            match docs.remove(vin.as_str()) {
                Some(doc) if stamp.as_ref().is_some_and(|s| s.matches(&doc)) => {}
                Some(doc) => {
                    plan.puts.push((vin.clone(), doc));
                    plan.replaces.push(stamp.is_some());
                }
                // Keep what is stored: a newer build of this vehicle failed.
                None if failed.contains(vin.as_str()) => {}
                None if stamp.is_some() => plan.deletes.push(vin.clone()),
                None => {}
            }
        }
        Ok(plan)
    }

    async fn write(&self, plan: Plan) -> Result<Written, StagingError> {
        self.inner
            .store
            .put_many(&plan.puts, &plan.replaces)
            .await?;
        let deleted = self.inner.store.delete_many(&plan.deletes).await?;
        Ok(Written {
            changed: (plan.puts.len() + plan.deletes.len()) as u64,
            deleted,
        })
    }

    /// Documents of the vehicles with open actions, by VIN, and the VINs
    /// whose document could not be built. One malformed action must not
    /// block the other 999 vehicles of a batch forever, so it is logged and
    /// counted rather than returned.
    fn build_all<'a>(
        &self,
        open: &'a [pb::VehicleActions],
    ) -> (HashMap<&'a str, StoredDoc>, HashSet<&'a str>) {
        let mut docs = HashMap::with_capacity(open.len());
        let mut failed = HashSet::new();
        for v in open {
            match document::build(
                &v.vin,
                &v.actions,
                self.inner.poll_after_s,
                &self.inner.public_url,
            ) {
                Ok(Some(doc)) => {
                    docs.insert(v.vin.as_str(), doc);
                }
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!("ota_staging_build_errors_total").increment(1);
                    tracing::error!(error = %e, "cannot build a staged document");
                    failed.insert(v.vin.as_str());
                }
            }
        }
        (docs, failed)
    }

    /// Writes the document of every vehicle with open actions without
    /// comparing (the store is empty), then marks staging ready. Returns
    /// how many documents it wrote. On a shared store, which need not be
    /// empty, it reads the stamps first, only to keep the store's count.
    pub async fn full_rebuild(&self) -> Result<u64, StagingError> {
        let started = std::time::Instant::now();
        let mut batches = self.inner.source.scan_all(CHUNK as u32).await?;
        let mut written = 0u64;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let (docs, _) = self.build_all(&batch);
            let docs: Vec<(String, StoredDoc)> = docs
                .into_iter()
                .map(|(vin, doc)| (vin.to_owned(), doc))
                .collect();
            let existed = if self.inner.store.needs_rebuild() {
                vec![false; docs.len()]
            } else {
                let vins: Vec<String> = docs.iter().map(|(vin, _)| vin.clone()).collect();
                let stamps = self.inner.store.stamps(&vins).await?;
                stamps.iter().map(Option::is_some).collect()
            };
            self.inner.store.put_many(&docs, &existed).await?;
            written += docs.len() as u64;
        }
        self.inner.ready.store(true, Ordering::Release);
        self.inner
            .rebuilt_at_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        self.update_staged_gauge().await;
        tracing::info!(
            documents = written,
            seconds = started.elapsed().as_secs_f64(),
            "staged documents rebuilt"
        );
        Ok(written)
    }

    /// Compares every stored document with the open actions and repairs what
    /// differs: missing, outdated or damaged documents are written, documents
    /// of vehicles without open actions are deleted. `None` when another
    /// process holds the reconcile lock.
    ///
    /// A difference is repaired, and counted, only when it outlasts the
    /// events in flight. Its first look at a vehicle can come between a
    /// commit and the worker's staging of its event: a launch's released
    /// vehicles have no document yet, a closed action's document is not
    /// deleted yet. Repairing those counted documents that were never lost
    /// (reconciles that fell due during a 1M-vehicle launch reported
    /// repairs though nothing was lost), and writing from that earlier
    /// read could replace the worker's newer document with an outdated one
    /// that no further event corrects. So the vehicles that differ are
    /// looked at again, from a fresh read, once the staging queue has been
    /// seen empty (the events of the first look are staged then) or after
    /// [`CATCH_UP_WAIT`].
    pub async fn reconcile(&self) -> Result<Option<ReconcileRecord>, StagingError> {
        let store = &self.inner.store;
        let token = uuid::Uuid::new_v4().to_string();
        if !store
            .try_lock(RECONCILE_LOCK, &token, RECONCILE_LEASE)
            .await?
        {
            return Ok(None);
        }
        let result = self.reconcile_locked(&token).await;
        if let Err(e) = store.unlock(RECONCILE_LOCK, &token).await {
            tracing::warn!(error = %e, "cannot release the reconcile lock; it expires by itself");
        }
        let repaired = result?;
        let record = ReconcileRecord {
            at_ms: chrono::Utc::now().timestamp_millis(),
            repaired,
            public_url: self.inner.public_url.clone(),
        };
        store.record_reconcile(&record).await?;
        metrics::counter!("ota_staging_reconcile_repaired_total").increment(repaired);
        metrics::gauge!("ota_staging_last_reconcile_timestamp_seconds")
            .set(record.at_ms as f64 / 1000.0);
        self.update_staged_gauge().await;
        if repaired > 0 {
            tracing::warn!(repaired, "reconcile repaired staged documents");
        } else {
            tracing::info!("reconcile found every staged document correct");
        }
        Ok(Some(record))
    }

    async fn reconcile_locked(&self, token: &str) -> Result<u64, StagingError> {
        let store = &self.inner.store;
        let mut repaired = 0u64;
        // Vehicles whose documents differed at the first look.
        let mut suspects: Vec<String> = Vec::new();

        // Pass 1: every vehicle with open actions has its current document.
        let mut batches = self.inner.source.scan_all(CHUNK as u32).await?;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let vins: Vec<String> = batch.iter().map(|v| v.vin.clone()).collect();
            suspects.extend(self.plan(&vins, &batch).await?.vins());
            if suspects.len() >= CONFIRM_AT {
                repaired += self.confirm(&mut suspects, token).await?.1.changed;
            }
            self.renew(token).await?;
        }
        repaired += self.confirm(&mut suspects, token).await?.1.changed;

        // Pass 2: no stored document belongs to a vehicle without open
        // actions. Asking the campaign manager about stored VINs, rather
        // than remembering pass 1's VINs, keeps memory flat at any fleet
        // size.
        let before = store.len().await?;
        let (mut walked, mut deleted) = (0u64, 0u64);
        let mut cursor = 0;
        loop {
            let (vins, next) = store.scan_vins(cursor, CHUNK).await?;
            for chunk in vins.chunks(CHUNK) {
                let open = self.inner.source.open_actions(chunk).await?;
                let with_actions: HashSet<&str> = open
                    .iter()
                    .filter(|v| !v.actions.is_empty())
                    .map(|v| v.vin.as_str())
                    .collect();
                let extras = chunk
                    .iter()
                    .filter(|v| !with_actions.contains(v.as_str()))
                    .cloned();
                let before_extras = suspects.len();
                suspects.extend(extras);
                walked += (chunk.len() - (suspects.len() - before_extras)) as u64;
            }
            if suspects.len() >= CONFIRM_AT || next == 0 {
                let (looked, done) = self.confirm(&mut suspects, token).await?;
                repaired += done.changed;
                deleted += done.deleted;
                // Those still stored had open actions by the second look:
                // documents of the walk too (when nobody else wrote, the
                // only case in which the count is corrected below).
                walked += looked - done.deleted;
            }
            self.renew(token).await?;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if store
            .correct_count(before.saturating_sub(deleted), walked)
            .await?
            && before.saturating_sub(deleted) != walked
        {
            tracing::warn!(
                counted = before.saturating_sub(deleted),
                walked,
                "corrected the staged vehicle count"
            );
        }
        Ok(repaired)
    }

    /// Takes the reconcile lock for another lease; an error when another
    /// process took it.
    async fn renew(&self, token: &str) -> Result<(), StagingError> {
        if self
            .inner
            .store
            .try_lock(RECONCILE_LOCK, token, RECONCILE_LEASE)
            .await?
        {
            Ok(())
        } else {
            Err(StagingError::Store(
                "lost the reconcile lock to another process".to_owned(),
            ))
        }
    }

    /// The second look at `suspects` (emptied): once the events in flight
    /// at the first look are staged, their documents are compared with a
    /// fresh read of their open actions and what still differs is
    /// repaired. Returns how many vehicles it looked at, and what it wrote.
    async fn confirm(
        &self,
        suspects: &mut Vec<String>,
        token: &str,
    ) -> Result<(u64, Written), StagingError> {
        if suspects.is_empty() {
            return Ok((0, Written::default()));
        }
        self.wait_for_staging().await;
        // A store walk may name a vehicle twice.
        suspects.sort_unstable();
        suspects.dedup();
        let mut done = Written::default();
        for chunk in suspects.chunks(CHUNK) {
            let open = self.inner.source.open_actions(chunk).await?;
            let plan = self.plan(chunk, &open).await?;
            let w = self.write(plan).await?;
            done.changed += w.changed;
            done.deleted += w.deleted;
        }
        let looked = suspects.len() as u64;
        suspects.clear();
        self.renew(token).await?;
        Ok((looked, done))
    }

    /// Returns once the staging events committed before now are staged:
    /// when the queue of this process's worker is seen empty, at least
    /// [`RELAY_DELAY`] from now (the time events take to reach it). Without
    /// a worker here, after that delay; with a queue that does not empty,
    /// after [`CATCH_UP_WAIT`].
    async fn wait_for_staging(&self) {
        let since = tokio::time::Instant::now();
        tokio::time::sleep(RELAY_DELAY).await;
        let Some(q) = self.inner.queue.get() else {
            return;
        };
        loop {
            match q.bus.depth(&q.topic, &q.group).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cannot read the staging queue depth"),
            }
            if since.elapsed() >= CATCH_UP_WAIT {
                tracing::info!(
                    seconds = CATCH_UP_WAIT.as_secs(),
                    "the staging queue did not empty; reconcile repairs what still differs"
                );
                return;
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }

    /// Reconciles when no process did within `every` (Redis deployments
    /// share the record, so N processes do not reconcile N times) and this
    /// process did not rebuild everything within it.
    pub async fn reconcile_if_due(
        &self,
        every: Duration,
    ) -> Result<Option<ReconcileRecord>, StagingError> {
        let record = self.inner.store.last_reconcile().await?;
        // Documents staged under another public URL hold artifact links
        // vehicles can no longer use: rewrite them now.
        if let Some(r) = record
            .as_ref()
            .filter(|r| r.public_url != self.inner.public_url)
        {
            // Processes sharing a store must share one public URL, or they
            // take turns rewriting each other's documents.
            tracing::warn!(
                from = %r.public_url,
                to = %self.inner.public_url,
                "the staged documents were staged under another public URL; restaging them"
            );
            return self.reconcile().await;
        }
        let reconciled = record.map(|r| r.at_ms);
        let rebuilt = self.inner.rebuilt_at_ms.load(Ordering::Relaxed);
        let last = reconciled.unwrap_or(0).max(rebuilt);
        let age_ms = chrono::Utc::now().timestamp_millis() - last;
        if last > 0 && age_ms >= 0 && (age_ms as u128) < every.as_millis() {
            return Ok(None);
        }
        self.reconcile().await
    }

    pub(crate) async fn update_staged_gauge(&self) {
        match self.inner.store.len().await {
            Ok(n) => metrics::gauge!("ota_staged_vehicles").set(n as f64),
            Err(e) => tracing::debug!(error = %e, "cannot count staged vehicles"),
        }
    }
}

/// Campaign lookups that will never succeed (the campaign is gone) must not
/// hold up the events queued behind them.
pub(crate) fn is_permanent(e: &StagingError) -> bool {
    matches!(
        e,
        StagingError::Source {
            code: ErrorCode::NotFound | ErrorCode::InvalidArgument,
            ..
        }
    )
}
