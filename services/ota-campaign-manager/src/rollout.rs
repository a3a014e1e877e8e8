//! The rollout loop: once per tick, for every running campaign (highest
//! priority first) it opens scheduled starts, times out silent actions,
//! stops the campaign when failures pass the threshold, opens the next wave
//! when the current one has soaked, hands actions to staging at the
//! configured rate, and completes campaigns with nothing left to do.
//!
//! Only one process runs the loop at a time: on PostgreSQL it holds an
//! advisory lock; SQLite has a single process anyway. The leader also sets
//! the campaigns' gauges after each tick ([`crate::gauges`]).
//!
//! One campaign never stops the others: each campaign's step runs on its
//! own, and an error or a panic in it is logged, counted
//! (`ota_rollout_tick_failures_total{reason}`), recorded on that campaign
//! (its `rollout_error`, cleared by its next good tick) and audited when a
//! run of failures starts. After [`PAUSE_AFTER_FAILED_TICKS`] failures in a
//! row the rollout pauses the campaign. Dates are computed with checked
//! arithmetic: a duration that reaches past what chrono represents is an
//! error of its campaign, never a panic or a wrapped value.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use ota_bus::{topics, SharedBus, VehicleEvent};
use ota_db::Db;
use sqlx::Connection;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::gauges::CampaignGauges;
use crate::manager::CampaignManager;
use crate::model::{ActionState, Campaign, CampaignState, Transition};
use crate::spec::{format_duration, Advance, ThresholdAction};
use crate::store::{Audit, CampaignEntry, StateChange, MAX_ROLLOUT_ERROR_BYTES};
use crate::CampaignError;

/// Failed ticks in a row after which the rollout pauses a campaign. A
/// failure that repeats this often belongs to the campaign (a value out of
/// range, a plan this version cannot read, a bug its data runs into), not
/// to a passing hiccup. Pausing takes its undelivered actions back from the
/// vehicles and says why in the state reason and the audit log; resuming
/// starts the count anew. Failures because the database is unavailable are
/// shown but not counted: they hit every campaign alike and pass.
pub const PAUSE_AFTER_FAILED_TICKS: u32 = 10;

/// Why one campaign's tick failed.
#[derive(Debug)]
enum TickFailure {
    Error(CampaignError),
    Panic(String),
}

impl TickFailure {
    /// The metric's `reason` label: a fixed set of values.
    fn reason(&self) -> &'static str {
        match self {
            Self::Panic(_) => "panic",
            Self::Error(CampaignError::OutOfRange { .. }) => "out_of_range",
            Self::Error(CampaignError::Corrupt { .. }) => "unreadable",
            Self::Error(CampaignError::Unavailable(_)) => "unavailable",
            Self::Error(CampaignError::Database(_)) => "database",
            Self::Error(_) => "other",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Error(e) => e.to_string(),
            Self::Panic(p) => format!("the rollout panicked on this campaign: {p}"),
        }
    }
}

/// Runs one campaign's step so that its error or panic becomes a value.
async fn isolated(
    step: impl std::future::Future<Output = Result<(), CampaignError>>,
) -> Result<(), TickFailure> {
    match AssertUnwindSafe(step).catch_unwind().await {
        Ok(r) => r.map_err(TickFailure::Error),
        Err(p) => Err(TickFailure::Panic(panic_message(&*p))),
    }
}

/// The text a panic carries, when it is text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// `d` as a chrono delta, or the campaign's error naming the setting.
fn delta(campaign: &str, what: &str, d: Duration) -> Result<TimeDelta, CampaignError> {
    TimeDelta::from_std(d).map_err(|_| out_of_range(campaign, what, d))
}

/// `now - d`, or the campaign's error naming the setting when that is no
/// representable date.
fn before(
    campaign: &str,
    what: &str,
    now: DateTime<Utc>,
    d: Duration,
) -> Result<DateTime<Utc>, CampaignError> {
    now.checked_sub_signed(delta(campaign, what, d)?)
        .ok_or_else(|| out_of_range(campaign, what, d))
}

fn out_of_range(campaign: &str, what: &str, d: Duration) -> CampaignError {
    CampaignError::OutOfRange {
        campaign: campaign.to_string(),
        what: format!("{what} {}", format_duration(d)),
        reason: "it reaches past the dates the rollout can compute with (about 262,000 years either side of 1970)".to_string(),
    }
}

/// Advisory lock key of the rollout leader ("ota" rollout).
const LEADER_LOCK: i64 = 0x6f74_6172;

/// Holds the leadership of the rollout loop.
enum Leader {
    Sqlite,
    Postgres(Option<sqlx::PgConnection>),
}

impl Leader {
    fn new(db: &Db) -> Self {
        match db {
            Db::Sqlite(_) => Self::Sqlite,
            Db::Postgres(_) => Self::Postgres(None),
        }
    }

    /// Whether this process leads now, taking the lock when it is free.
    async fn check(&mut self, db: &Db) -> bool {
        let Self::Postgres(held) = self else {
            return true;
        };
        if let Some(conn) = held {
            if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
                return true;
            }
            *held = None;
        }
        let Db::Postgres(pool) = db else { return false };
        let url_opts = pool.connect_options();
        let Ok(mut conn) = sqlx::PgConnection::connect_with(&url_opts).await else {
            return false;
        };
        let got: Result<(bool,), _> = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await;
        if matches!(got, Ok((true,))) {
            tracing::info!("this process now runs the campaign rollout");
            *held = Some(conn);
            true
        } else {
            let _ = conn.close().await;
            false
        }
    }
}

impl CampaignManager {
    /// Starts the rollout loop and, with a bus, the inventory-change
    /// consumer. They stop when `shutdown` turns true.
    pub fn spawn_background(
        &self,
        bus: Option<SharedBus>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let this = self.clone();
        let mut stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut leader = Leader::new(this.inner.store.db());
            let mut gauges = CampaignGauges::default();
            let mut resumed = false;
            let mut interval = tokio::time::interval(this.inner.config.tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stop.wait_for(|v| *v) => break,
                }
                if !leader.check(this.inner.store.db()).await {
                    gauges.clear();
                    continue;
                }
                // A panic here must not end the loop: campaigns' own panics
                // are caught in `tick`, this catches the rest.
                if !resumed {
                    resumed = matches!(
                        AssertUnwindSafe(this.resume_targeting()).catch_unwind().await,
                        Ok(Ok(_))
                    );
                }
                match AssertUnwindSafe(this.tick()).catch_unwind().await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "rollout tick failed"),
                    Err(p) => tracing::error!(panic = %panic_message(&*p), "rollout tick panicked; the loop goes on"),
                }
                if let Err(e) = this.publish_gauges(&mut gauges).await {
                    tracing::debug!(error = %e, "updating the campaign gauges failed; retrying next tick");
                }
            }
        }));
        if let (Some(bus), Some(inventory)) = (&bus, &self.inner.inventory) {
            let (this, bus, inventory) = (self.clone(), bus.clone(), inventory.clone());
            let mut stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = this.consume_installed_events(bus, inventory) => {}
                    _ = stop.wait_for(|v| *v) => {}
                }
            }));
        }
        if let Some(bus) = bus {
            let this = self.clone();
            let mut stop = shutdown;
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = this.consume_vehicle_events(bus) => {}
                    _ = stop.wait_for(|v| *v) => {}
                }
            }));
        }
        tasks
    }

    async fn consume_vehicle_events(&self, bus: SharedBus) {
        let consumer = format!("cm-{}", uuid::Uuid::new_v4().simple());
        let mut sub = loop {
            match bus
                .subscribe(topics::VEHICLES, "campaign-manager", &consumer)
                .await
            {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to vehicle events; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        loop {
            let messages = match sub.next(200, Duration::from_secs(1)).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "reading vehicle events failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            let mut vins = Vec::new();
            let mut traces = Vec::new();
            for m in &messages {
                match ota_bus::events::decode::<VehicleEvent>(&m.payload) {
                    Ok((VehicleEvent::Changed { vins: v, .. }, trace)) => {
                        vins.extend(v);
                        traces.extend(trace);
                    }
                    Err(e) => {
                        tracing::warn!(id = %m.id, error = %e, "dropping an unreadable vehicle event")
                    }
                }
            }
            // Continues the trace of the inventory change (an import, a
            // report); the staging events it writes carry it on.
            let span = tracing::info_span!("vehicles.changed", vehicles = vins.len());
            ota_common::trace::follow(&span, traces);
            let outcome = AssertUnwindSafe(self.on_vehicles_changed(&vins).instrument(span))
                .catch_unwind()
                .await
                .unwrap_or_else(|p| {
                    Err(CampaignError::Corrupt {
                        what: "re-targeting of changed vehicles".into(),
                        reason: format!("panicked: {}", panic_message(&*p)),
                    })
                });
            match outcome {
                Ok(()) => {
                    let ids: Vec<String> = messages.into_iter().map(|m| m.id).collect();
                    if let Err(e) = sub.ack(&ids).await {
                        tracing::warn!(error = %e, "acknowledging vehicle events failed");
                    }
                }
                // Unacknowledged: the bus hands the events out again.
                Err(e) => {
                    tracing::warn!(error = %e, vehicles = vins.len(), "re-targeting changed vehicles failed; will retry");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One pass over every running campaign, highest priority first. A
    /// campaign whose step fails (an error, a panic, or a record that cannot
    /// be read) gets the failure recorded on it; the others go on.
    pub async fn tick(&self) -> Result<(), CampaignError> {
        // Keeps the counter reads short; they are exact without it.
        if let Err(e) = self.inner.store.fold_counts().await {
            tracing::warn!(error = %e, "folding the action counters failed; retrying next tick");
        }
        let entries = self
            .inner
            .store
            .list_campaign_entries(&[CampaignState::Running])
            .await?;
        let mut failing = 0u32;
        for entry in entries {
            let (id, had_error, outcome) = match entry {
                CampaignEntry::Readable(c) => {
                    let id = c.id.clone();
                    let had_error = c.rollout_error.is_some();
                    (id, had_error, isolated(self.tick_campaign(*c)).await)
                }
                CampaignEntry::Unreadable(u) => (
                    u.id.clone(),
                    u.rollout_error.is_some(),
                    Err(TickFailure::Error(u.error())),
                ),
            };
            match outcome {
                Ok(()) if had_error => {
                    if let Err(e) = self.inner.store.clear_rollout_error(&id, Utc::now()).await {
                        tracing::warn!(campaign = %id, error = %e, "clearing the rollout error failed");
                    } else {
                        tracing::info!(campaign = %id, "the rollout of this campaign works again");
                    }
                }
                Ok(()) => {}
                Err(f) => {
                    failing += 1;
                    self.tick_failed(&id, f).await;
                }
            }
        }
        metrics::gauge!("ota_rollout_failing_campaigns").set(f64::from(failing));
        Ok(())
    }

    /// Counts, logs and records a failed tick of one campaign, and pauses
    /// the campaign once it has failed too often in a row.
    async fn tick_failed(&self, id: &str, f: TickFailure) {
        let store = &self.inner.store;
        let reason = f.reason();
        let message = f.message();
        metrics::counter!("ota_rollout_tick_failures_total", "reason" => reason).increment(1);
        tracing::warn!(campaign = %id, reason, error = %message, "rollout step failed; the other campaigns go on");
        let counts = !matches!(f, TickFailure::Error(CampaignError::Unavailable(_)));
        let failed = match store
            .record_rollout_failure(id, &message, counts, Utc::now())
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(campaign = %id, error = %e, "recording the rollout failure failed");
                return;
            }
        };
        if failed < PAUSE_AFTER_FAILED_TICKS {
            return;
        }
        let why = format!("the rollout failed {failed} times in a row: {message}");
        let why = crate::store::truncate(&why, MAX_ROLLOUT_ERROR_BYTES);
        match store
            .set_state_of(
                id,
                CampaignState::Running,
                CampaignState::Paused,
                StateChange::default(),
                &Audit::system(why),
                "auto-pause",
            )
            .await
        {
            Ok(true) => {
                tracing::warn!(campaign = %id, failed, "campaign paused: its rollout keeps failing")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(campaign = %id, error = %e, "pausing the failing campaign failed")
            }
        }
    }

    async fn tick_campaign(&self, mut c: Campaign) -> Result<(), CampaignError> {
        let store = &self.inner.store;
        let now = Utc::now();
        let spec = c.plan.spec.clone();
        let rollout = &spec.rollout;

        if let Some(end) = spec.schedule.end {
            if now >= end {
                let reason = format!("the schedule ended at {}", end.to_rfc3339());
                return self
                    .system_transition(&c, Transition::Complete, &reason, "complete")
                    .await;
            }
        }
        if c.current_wave < 0 {
            match spec.schedule.start {
                Some(start) if now < start => return Ok(()),
                _ => {
                    store
                        .open_wave(&c, 0, &Audit::system("the scheduled start was reached"))
                        .await?;
                    c = store.get_campaign(&c.id).await?;
                }
            }
        }
        if let Some(timeout) = rollout.action_timeout {
            let cutoff = before(&c.id, "rollout.action_timeout", now, timeout)?;
            let (timed_out, retried) = store
                .expire(
                    &c.id,
                    cutoff,
                    rollout.max_retries,
                    &format_duration(timeout),
                    now,
                )
                .await?;
            if timed_out + retried > 0 {
                tracing::info!(campaign = %c.id, timed_out, retried, "silent actions timed out");
            }
        }

        let counts = store.state_counts(&c.id).await?;
        let count = |s: ActionState| counts.get(&s).copied().unwrap_or(0);
        let finished: u64 = ActionState::ALL
            .into_iter()
            .filter(|s| s.is_final() && *s != ActionState::Cancelled)
            .map(count)
            .sum();
        let failures: u64 = ActionState::ALL
            .into_iter()
            .filter(|s| s.is_failure())
            .map(count)
            .sum();
        if let Some(th) = &rollout.failure_threshold {
            let rate = percent(failures, finished);
            if finished >= th.min_finished.max(1) && rate > th.percent {
                let reason = format!(
                    "failure rate {rate:.1}% ({failures} of {finished} finished actions) is above the {}% threshold",
                    th.percent
                );
                let (t, action) = match th.action {
                    ThresholdAction::Pause => (Transition::Pause, "auto-pause"),
                    ThresholdAction::Abort => (Transition::Abort, "auto-abort"),
                };
                tracing::warn!(campaign = %c.id, %reason, "failure threshold crossed");
                return self.system_transition(&c, t, &reason, action).await;
            }
        }

        let targeted = c.targeted_at.is_some();
        if !targeted {
            self.spawn_targeting(c.id.clone());
        }
        let last_wave = c.waves().len() as i32 - 1;
        if rollout.advance == Advance::Auto && c.current_wave < last_wave && targeted {
            self.maybe_advance(&c, now).await?;
            c = store.get_campaign(&c.id).await?;
        }

        self.release(&c, now).await?;

        let unfinished: u64 = ActionState::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .map(count)
            .sum();
        if targeted && c.current_wave == last_wave && unfinished == 0 {
            let reason = format!("every targeted vehicle finished ({finished} actions)");
            return self
                .system_transition(&c, Transition::Complete, &reason, "complete")
                .await;
        }
        Ok(())
    }

    /// Opens the next wave once the current one has soaked, everything in
    /// it has been handed out, and its failure rate is under the threshold.
    async fn maybe_advance(&self, c: &Campaign, now: DateTime<Utc>) -> Result<(), CampaignError> {
        let rollout = &c.plan.spec.rollout;
        let opened = c.wave_opened_at.unwrap_or(now);
        let soak = delta(&c.id, "rollout.wave_soak", rollout.wave_soak)?;
        // A difference of two dates always fits a TimeDelta.
        if now.signed_duration_since(opened) < soak {
            return Ok(());
        }
        let waves = self.inner.store.wave_counts(&c.id).await?;
        let current = |w: &&crate::store::WaveCounts| w.wave <= c.current_wave;
        let pending: i64 = waves
            .iter()
            .filter(current)
            .filter(|w| w.state == ActionState::Pending)
            .map(|w| w.count)
            .sum();
        if pending > 0 {
            return Ok(());
        }
        let in_wave = |w: &&crate::store::WaveCounts| w.wave == c.current_wave;
        let finished: i64 = waves
            .iter()
            .filter(in_wave)
            .filter(|w| w.state.is_final() && w.state != ActionState::Cancelled)
            .map(|w| w.count)
            .sum();
        let failed: i64 = waves
            .iter()
            .filter(in_wave)
            .filter(|w| w.state.is_failure())
            .map(|w| w.count)
            .sum();
        let rate = percent(failed as u64, finished as u64);
        if let Some(th) = &rollout.failure_threshold {
            if rate > th.percent {
                return Ok(());
            }
        }
        let next = c.current_wave + 1;
        let reason = format!(
            "wave {} soaked {} with a failure rate of {rate:.1}%",
            c.current_wave,
            format_duration(rollout.wave_soak)
        );
        if self
            .inner
            .store
            .open_wave(c, next, &Audit::system(reason))
            .await?
        {
            tracing::info!(campaign = %c.id, wave = next, "wave opened");
        }
        Ok(())
    }

    /// Hands out as many actions as the rate limit allows now.
    async fn release(&self, c: &Campaign, now: DateTime<Utc>) -> Result<(), CampaignError> {
        let store = &self.inner.store;
        let per_second = c.plan.spec.rollout.max_per_minute as f64 / 60.0;
        // The bucket holds at most two ticks' worth, so a pause in the loop
        // does not turn into a burst.
        let cap = (per_second * 2.0 * self.inner.config.tick.as_secs_f64()).max(1.0);
        let since = c.budget_at.unwrap_or(now);
        let elapsed = now.signed_duration_since(since).num_milliseconds().max(0) as f64 / 1000.0;
        let mut budget = (c.release_budget + elapsed * per_second).min(cap);
        let limit = budget.floor() as u32;
        if limit > 0 {
            let mut released = store.release(&c.id, c.current_wave, limit, now).await?;
            if (released.len() as u32) < limit {
                // Blocked by lower-priority campaigns' undelivered actions?
                let preempted = store
                    .preempt(&c.id, c.priority, c.current_wave, now)
                    .await?;
                if !preempted.is_empty() {
                    let more = store
                        .release(&c.id, c.current_wave, limit - released.len() as u32, now)
                        .await?;
                    released.extend(more);
                }
            }
            budget -= released.len() as f64;
            if !released.is_empty() {
                metrics::counter!("ota_actions_released_total").increment(released.len() as u64);
            }
        }
        store.set_budget(&c.id, budget, now).await
    }

    async fn system_transition(
        &self,
        c: &Campaign,
        t: Transition,
        reason: &str,
        action: &str,
    ) -> Result<(), CampaignError> {
        let Some(to) = t.next_state(c.state) else {
            return Ok(());
        };
        self.inner
            .store
            .set_state(
                c,
                to,
                StateChange::default(),
                &Audit::system(reason),
                action,
            )
            .await?;
        tracing::info!(campaign = %c.id, to = %to, %reason, "campaign state changed by the rollout");
        Ok(())
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_that_panics_becomes_a_failure_of_its_own() {
        let f = isolated(async { panic!("boom at {}", 42) })
            .await
            .unwrap_err();
        assert_eq!(f.reason(), "panic");
        assert_eq!(
            f.message(),
            "the rollout panicked on this campaign: boom at 42"
        );
        let f = isolated(async { panic!("static text") }).await.unwrap_err();
        assert!(f.message().ends_with(": static text"), "{}", f.message());
        let f = isolated(async {
            Err(CampaignError::Corrupt {
                what: "campaign c".into(),
                reason: "plan does not parse".into(),
            })
        })
        .await
        .unwrap_err();
        assert_eq!(f.reason(), "unreadable");
        assert!(isolated(async { Ok(()) }).await.is_ok());
    }

    #[test]
    fn date_arithmetic_out_of_range_is_an_error_naming_the_setting() {
        let now = Utc::now();
        let huge = Duration::from_secs(100_000_000 * 86_400);
        let e = before("c1", "rollout.action_timeout", now, huge).unwrap_err();
        assert_eq!(
            e.to_string(),
            "campaign c1: rollout.action_timeout 2400000000h is out of range: it reaches past the dates the rollout can compute with (about 262,000 years either side of 1970)"
        );
        // Too large even for a TimeDelta.
        let e = delta("c1", "rollout.wave_soak", Duration::from_secs(u64::MAX)).unwrap_err();
        assert!(matches!(e, CampaignError::OutOfRange { .. }), "{e}");
        let day = Duration::from_secs(86_400);
        assert_eq!(
            before("c1", "rollout.action_timeout", now, day).unwrap(),
            now - TimeDelta::days(1)
        );
    }
}
