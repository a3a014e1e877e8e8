//! The staging worker: consumes `staging` events from the bus and restages
//! the vehicles they name. Delivery is at least once and staging is
//! idempotent, so a batch is acknowledged only after its documents are
//! written; a failed or interrupted batch comes back after the bus's claim
//! timeout, to this worker or another one of the group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_bus::{topics, SharedBus, StagingEvent, Subscription};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::stager::{is_permanent, Stager, CHUNK};
use crate::StagingError;

/// The consumer group every staging process joins.
pub const GROUP: &str = "staging";

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// [`topics::STAGING`]; tests give each run its own.
    pub topic: String,
    pub group: String,
    /// Unique per worker: the bus hands each message to one consumer.
    pub consumer: String,
    /// Messages per batch; their VINs are deduplicated and staged together.
    pub max_batch: usize,
    /// How long to wait for the first message of a batch.
    pub wait: Duration,
    /// Ceiling of the pause after failures, which doubles from 100 ms.
    pub max_backoff: Duration,
    /// A campaign event with more vehicles than this is split into events
    /// of 1000 VINs on the same topic instead of being staged in one go:
    /// the group's workers share a large launch, and no single message
    /// takes longer than the bus's claim timeout (which would hand it to a
    /// second worker while the first still works on it).
    pub fan_out_above: usize,
    /// Publish [`topics::STAGED`] after writing documents, for the MQTT
    /// adapter. Off when nothing consumes it: the bus keeps what no group
    /// has read.
    pub announce_staged: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            announce_staged: false,
            topic: topics::STAGING.to_owned(),
            group: GROUP.to_owned(),
            consumer: format!("staging-{}", uuid::Uuid::new_v4().simple()),
            max_batch: 500,
            wait: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            fan_out_above: 5000,
        }
    }
}

pub struct Worker {
    stager: Stager,
    bus: SharedBus,
    config: WorkerConfig,
    processed: AtomicU64,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);

impl Worker {
    pub fn new(stager: Stager, bus: SharedBus, config: WorkerConfig) -> Self {
        Self {
            stager,
            bus,
            config,
            processed: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Messages this worker processed and acknowledged.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Joins the group and processes batches until `shutdown` turns true.
    /// A batch in progress is finished first.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = MIN_BACKOFF;
        let mut sub = loop {
            match self
                .bus
                .subscribe(
                    &self.config.topic,
                    &self.config.group,
                    &self.config.consumer,
                )
                .await
            {
                Ok(sub) => break sub,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to staging events, retrying");
                    if pause(&mut shutdown, &mut backoff, self.config.max_backoff).await {
                        return;
                    }
                }
            }
        };
        let mut depth_at: Option<Instant> = None;
        backoff = MIN_BACKOFF;
        while !stopped(&shutdown) {
            match self.process(sub.as_mut()).await {
                Ok(_) => backoff = MIN_BACKOFF,
                Err(e) => {
                    tracing::warn!(error = %e, consumer = %self.config.consumer,
                        "staging batch failed; it is redelivered after the claim timeout");
                    if pause(&mut shutdown, &mut backoff, self.config.max_backoff).await {
                        return;
                    }
                }
            }
            if depth_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                depth_at = Some(Instant::now());
                self.update_depth().await;
            }
        }
    }

    /// Takes one batch (waiting up to the configured time), stages its
    /// vehicles and acknowledges it. Returns how many messages it handled;
    /// on error nothing is acknowledged.
    pub async fn process(&self, sub: &mut dyn Subscription) -> Result<usize, StagingError> {
        let msgs = sub.next(self.config.max_batch, self.config.wait).await?;
        if msgs.is_empty() {
            return Ok(0);
        }
        let mut vins = BTreeSet::new();
        let mut campaigns: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut committed_at = Vec::with_capacity(msgs.len());
        let mut traces = Vec::new();
        for m in &msgs {
            match ota_bus::events::decode::<StagingEvent>(&m.payload) {
                Ok((event, trace)) => {
                    traces.extend(trace);
                    match event {
                        StagingEvent::Vins { vins: v, at_ms } => {
                            vins.extend(v);
                            committed_at.push(at_ms);
                        }
                        StagingEvent::Campaign { campaign_id, at_ms } => {
                            campaigns.entry(campaign_id).or_default().push(at_ms);
                        }
                    }
                }
                // It will never parse: acknowledged with the batch so it
                // does not come back forever.
                Err(e) => {
                    metrics::counter!("ota_staging_bad_events_total").increment(1);
                    tracing::error!(error = %e, id = %m.id, payload = %m.payload,
                        "dropping an unreadable staging event");
                }
            }
        }
        // The batch continues the trace of the change that caused it (links
        // to each when several did): the events it publishes carry it on.
        let span = tracing::info_span!("staging.batch", messages = msgs.len());
        ota_common::trace::follow(&span, traces);
        self.stage(sub, &msgs, vins, campaigns, committed_at)
            .instrument(span)
            .await
    }

    async fn stage(
        &self,
        sub: &mut dyn Subscription,
        msgs: &[ota_bus::Message],
        mut vins: BTreeSet<String>,
        campaigns: BTreeMap<String, Vec<i64>>,
        mut committed_at: Vec<i64>,
    ) -> Result<usize, StagingError> {
        let mut fan_out = Vec::new();
        for (campaign, at) in campaigns {
            match self.stager.source().campaign_vins(&campaign).await {
                Ok(v) if v.len() > self.config.fan_out_above => {
                    let at_ms = at.into_iter().min().unwrap_or_default();
                    fan_out.extend(v.chunks(CHUNK).map(|c| {
                        ota_bus::events::encode(&StagingEvent::Vins {
                            vins: c.to_vec(),
                            at_ms,
                        })
                    }));
                }
                Ok(v) => {
                    vins.extend(v);
                    committed_at.extend(at);
                }
                Err(e) if is_permanent(&e) => {
                    tracing::warn!(error = %e, campaign, "skipping the event of a campaign that cannot be staged");
                }
                Err(e) => return Err(e),
            }
        }
        let vins: Vec<String> = vins.into_iter().collect();
        let outcome = self.stager.stage_vins(&vins).await?;
        // The lag ends here, with the documents written: from the change of
        // the vehicles' actions (the event's `at_ms`, the time of the
        // transaction that wrote it) to the staged document a poll reads.
        let staged_ms = chrono::Utc::now().timestamp_millis();
        // Published before the ack: a crash in between repeats the fan-out,
        // which staging tolerates, where the other order could lose it.
        if !fan_out.is_empty() {
            tracing::debug!(events = fan_out.len(), "fanning a large campaign out");
            self.bus.publish(&self.config.topic, &fan_out).await?;
        }
        // Tells the MQTT adapter which documents to republish. Every staged
        // vehicle is named (the adapter skips etags it already published),
        // and before the ack, so a crash repeats rather than loses it.
        if self.config.announce_staged && outcome.changed > 0 {
            let at_ms = chrono::Utc::now().timestamp_millis();
            let staged: Vec<String> = vins
                .chunks(CHUNK)
                .map(|c| {
                    ota_bus::events::encode(&ota_bus::StagedEvent::Changed {
                        vins: c.to_vec(),
                        at_ms,
                    })
                })
                .collect();
            self.bus.publish(topics::STAGED, &staged).await?;
        }
        let ids: Vec<String> = msgs.iter().map(|m| m.id.clone()).collect();
        sub.ack(&ids).await?;

        let stats = self.stager.stats();
        for at_ms in committed_at {
            stats.record_lag((staged_ms - at_ms) as f64 / 1000.0);
        }
        stats.record_events(msgs.len() as u64);
        self.processed
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        self.stager.update_staged_gauge().await;
        tracing::debug!(
            messages = msgs.len(),
            recomputed = outcome.recomputed,
            changed = outcome.changed,
            "staged a batch"
        );
        Ok(msgs.len())
    }

    async fn update_depth(&self) {
        match self.bus.depth(&self.config.topic, &self.config.group).await {
            Ok(d) => metrics::gauge!("ota_staging_queue_depth").set(d as f64),
            Err(e) => tracing::debug!(error = %e, "cannot read the staging queue depth"),
        }
    }
}

/// Shutdown was asked for, or its sender is gone (nobody can ask anymore).
fn stopped(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Sleeps for `backoff` and doubles it; true when shutdown came first.
async fn pause(
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Duration,
    max: Duration,
) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(max);
    tokio::select! {
        _ = tokio::time::sleep(wait) => stopped(shutdown),
        _ = shutdown.changed() => true,
    }
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub worker: WorkerConfig,
    /// How often the fleet is reconciled (by whichever process gets to it).
    pub reconcile_every: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            worker: WorkerConfig::default(),
            reconcile_every: Duration::from_secs(3600),
        }
    }
}

/// The background half of staging: the start-up rebuild (for a store that
/// starts empty), the worker, and periodic reconcile.
pub struct StagingTasks {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    worker: Arc<Worker>,
}

impl StagingTasks {
    pub fn spawn(stager: Stager, bus: SharedBus, config: RunConfig) -> Self {
        let (shutdown, rx) = watch::channel(false);
        // Reconcile looks at this queue to tell documents in flight from
        // lost ones.
        stager.watch_queue(bus.clone(), &config.worker.topic, &config.worker.group);
        let worker = Arc::new(Worker::new(stager.clone(), bus, config.worker.clone()));
        let mut tasks = Vec::new();

        let (w, s, mut stop) = (worker.clone(), stager.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            // Events that arrive during the rebuild wait in the bus: a
            // worker writing meanwhile could be overwritten by the rebuild's
            // older reading of the same vehicle.
            if !s.is_ready() {
                let mut backoff = MIN_BACKOFF;
                loop {
                    let rebuilt = tokio::select! {
                        r = s.full_rebuild() => r,
                        _ = stop.changed() => return,
                    };
                    match rebuilt {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "rebuilding the staged documents failed, retrying");
                            if pause(&mut stop, &mut backoff, Duration::from_secs(10)).await {
                                return;
                            }
                        }
                    }
                }
            }
            w.run(stop).await;
        }));

        let (s, mut stop, every) = (stager, rx, config.reconcile_every);
        // Checking often against the shared record (rather than sleeping a
        // whole interval) lets a restarted process, or a new deployment on
        // an empty Redis, catch up on a reconcile that is overdue.
        let mut check = tokio::time::interval(every.min(Duration::from_secs(60)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = check.tick() => {}
                    _ = stop.changed() => return,
                }
                if !s.is_ready() {
                    continue;
                }
                // Abandoning a reconcile at shutdown is safe: it only
                // repairs, and its lock lapses after the lease.
                tokio::select! {
                    r = s.reconcile_if_due(every) => if let Err(e) = r {
                        tracing::warn!(error = %e, "reconcile failed; it is retried at the next check");
                    },
                    _ = stop.changed() => return,
                }
            }
        }));
        Self {
            shutdown,
            tasks,
            worker,
        }
    }

    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// Stops after the batch in progress and waits for the tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
