//! Which vehicles a campaign reaches: a full scan of the inventory at launch,
//! then, while it runs, the vehicles whose inventory changes (they may join
//! or leave it). Deciding vehicles is CPU work: it runs on the rule engine's
//! shared evaluation pool, in jobs sized by the rule set's static cost,
//! never on the async workers.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use ota_common::vehicle::Vehicle;
use ota_common::CodedError;
use ota_rule_engine::{CompiledRuleSet, EvalPool, RuleEngineError};

use crate::manager::{next_action_id, CampaignManager};
use crate::model::{bucket, wave_of, ActionState, Campaign, CampaignState, Package};
use crate::store::NewAction;
use crate::CampaignError;

/// Batches of later-wave actions the launch scan may run ahead of the
/// database by.
const WRITE_QUEUE: usize = 512;
/// Actions per insert statement during the launch scan.
const INSERT_BATCH: usize = 5000;
/// Vehicles fetched at once when inventory events arrive.
const FETCH_CONCURRENCY: usize = 32;
/// Actions created by one targeting after which the planner's statistics
/// of the table are refreshed ([`crate::store::Store::analyze_actions`]).
const ANALYZE_AFTER: u64 = 10_000;

/// A campaign's targeting, resolved once per pass.
struct Targeting {
    campaign: Campaign,
    rules: Arc<CompiledRuleSet>,
    /// The package of each rule.
    packages: Vec<Package>,
}

impl Targeting {
    /// The action the vehicle gets, if it matches: pending, or succeeded
    /// at once when the vehicle already runs the version.
    fn action_for(&self, v: &Vehicle) -> Option<NewAction> {
        let decision = self.rules.decide(v);
        if !decision.target_matched() {
            return None;
        }
        let rule = decision.rule_index()?;
        let pkg = self.packages.get(rule)?;
        let ecu = v.ecus.get(&pkg.ecu);
        if !pkg.compatible_hw.is_empty() && !ecu.is_some_and(|e| pkg.compatible_hw.contains(&e.hw))
        {
            metrics::counter!("ota_targeting_incompatible_total").increment(1);
            return None;
        }
        let installed = ecu.is_some_and(|e| e.sw == pkg.version);
        let b = bucket(&self.campaign.id, &v.vin);
        Some(NewAction {
            id: next_action_id(),
            vin: v.vin.clone(),
            ecu: pkg.ecu.clone(),
            package_id: pkg.id.clone(),
            rule_index: rule as i32,
            bucket: b as i32,
            wave: wave_of(b, self.campaign.waves()) as i32,
            state: if installed {
                ActionState::Succeeded
            } else {
                ActionState::Pending
            },
            message: if installed {
                ALREADY_INSTALLED.to_string()
            } else {
                String::new()
            },
            model: v.model.clone().unwrap_or_default(),
            platform: v.platform.clone().unwrap_or_default(),
            gateway: v.gateway.clone().unwrap_or_default(),
            region: v.region.clone().unwrap_or_default(),
            hardware: ecu.map(|e| e.hw.clone()).unwrap_or_default(),
        })
    }

    /// The action of each vehicle, in order, decided on the shared
    /// evaluation pool in jobs of a bounded cost, each within the pool's
    /// deadline.
    async fn actions_for(
        self: &Arc<Self>,
        vehicles: Arc<Vec<Vehicle>>,
    ) -> Result<Vec<Option<NewAction>>, CampaignError> {
        let pool = EvalPool::shared();
        let chunk = EvalPool::chunk_len(self.rules.cost());
        let mut actions = Vec::with_capacity(vehicles.len());
        for start in (0..vehicles.len()).step_by(chunk) {
            let (t, vehicles) = (Arc::clone(self), Arc::clone(&vehicles));
            let end = (start + chunk).min(vehicles.len());
            let decided = pool
                .run(move |cancel| {
                    let mut out = Vec::with_capacity(end - start);
                    for v in &vehicles[start..end] {
                        if cancel.is_cancelled() {
                            break;
                        }
                        out.push(t.action_for(v));
                    }
                    out
                })
                .await
                .map_err(targeting_failed)?;
            actions.extend(decided);
        }
        Ok(actions)
    }

    fn installed(&self, v: &Vehicle, package_id: &str) -> bool {
        self.packages
            .iter()
            .find(|p| p.id == package_id)
            .is_some_and(|p| v.ecus.get(&p.ecu).is_some_and(|e| e.sw == p.version))
    }
}

const ALREADY_INSTALLED: &str = "target version already installed";

fn targeting_failed(e: RuleEngineError) -> CampaignError {
    CampaignError::Batch {
        code: e.code(),
        message: format!("deciding vehicles failed: {e}"),
    }
}

impl CampaignManager {
    async fn targeting(&self, c: Campaign) -> Result<Targeting, CampaignError> {
        let rules = self.compiled(&c)?;
        let mut packages = Vec::with_capacity(c.plan.packages.len());
        for id in &c.plan.packages {
            packages.push(self.package(id).await?);
        }
        Ok(Targeting {
            campaign: c,
            rules,
            packages,
        })
    }

    /// Runs the launch scan in the background, once per campaign per process.
    pub(crate) fn spawn_targeting(&self, id: String) {
        if !self.inner.scanning.lock().expect("lock").insert(id.clone()) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.target_campaign(&id).await {
                Ok(n) => tracing::info!(campaign = %id, actions = n, "targeting scan finished"),
                Err(e) => {
                    tracing::warn!(campaign = %id, error = %e, "targeting scan failed; the rollout retries it")
                }
            }
            this.inner.scanning.lock().expect("lock").remove(&id);
        });
    }

    /// Creates an action for every vehicle the campaign matches. Safe to run
    /// again (vehicles that already have an action are skipped). Returns how
    /// many actions it created.
    pub async fn target_campaign(&self, id: &str) -> Result<u64, CampaignError> {
        // A launch starts a scan in the background and a caller may ask for
        // one too: the second waits for the first, then finds nothing to do.
        let turn = self.scan_turn(id).await;
        let result = self.scan(id).await;
        self.end_turn(id, turn);
        result
    }

    async fn scan_turn(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = Arc::clone(
            self.inner
                .scan_turns
                .lock()
                .expect("lock")
                .entry(id.to_string())
                .or_default(),
        );
        turn.lock_owned().await
    }

    fn end_turn(&self, id: &str, turn: tokio::sync::OwnedMutexGuard<()>) {
        let mut turns = self.inner.scan_turns.lock().expect("lock");
        // Held by the map and by this guard only: nobody waits, so the entry
        // goes and the map stays as small as the scans running.
        if turns.get(id).is_some_and(|t| {
            Arc::strong_count(t) == 2 && Arc::ptr_eq(t, tokio::sync::OwnedMutexGuard::mutex(&turn))
        }) {
            turns.remove(id);
        }
        drop(turn);
    }

    async fn scan(&self, id: &str) -> Result<u64, CampaignError> {
        let c = self.campaign(id).await?;
        if !c.state.is_active() {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let t = Arc::new(self.targeting(c).await?);
        let early = self.target_open_waves(&t).await?;
        let mut batches = self
            .inner
            .vehicles
            .scan()
            .await
            .map_err(CampaignError::upstream("vehicle store"))?;
        // Vehicles of the open waves are written as they are found, so the
        // first wave reaches staging while the scan goes on; the rest queue
        // for a writer that overlaps with the scan (the queue holds up to
        // WRITE_QUEUE batches, so a slow database slows the scan only then).
        let open_wave = t.campaign.current_wave.max(0);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewAction>>(WRITE_QUEUE);
        let store = self.inner.store.clone();
        let campaign_id = id.to_string();
        let writer = tokio::spawn(async move {
            let mut created = 0u64;
            let mut pending: Vec<NewAction> = Vec::new();
            while let Some(actions) = rx.recv().await {
                pending.extend(actions);
                while pending.len() < INSERT_BATCH {
                    match rx.try_recv() {
                        Ok(more) => pending.extend(more),
                        Err(_) => break,
                    }
                }
                created += store
                    .insert_actions(&campaign_id, &pending, Utc::now())
                    .await?;
                pending.clear();
            }
            Ok::<u64, CampaignError>(created)
        });
        let mut scanned = 0u64;
        let mut created_now = 0u64;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(CampaignError::upstream("vehicle store"))?;
            scanned += batch.len() as u64;
            let (now, later): (Vec<NewAction>, Vec<NewAction>) = t
                .actions_for(Arc::new(batch))
                .await?
                .into_iter()
                .flatten()
                .partition(|a| a.wave <= open_wave);
            if !now.is_empty() {
                created_now += self
                    .inner
                    .store
                    .insert_actions(id, &now, Utc::now())
                    .await?;
            }
            if !later.is_empty() && tx.send(later).await.is_err() {
                break;
            }
        }
        drop(tx);
        let created = early
            + created_now
            + writer
                .await
                .map_err(|e| CampaignError::Conflict(format!("targeting writer failed: {e}")))??;
        self.inner.store.set_targeted(id, Utc::now()).await?;
        if created >= ANALYZE_AFTER {
            self.inner.store.analyze_actions().await?;
        }
        metrics::histogram!("ota_targeting_scan_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(campaign = %id, scanned, created, elapsed_ms = started.elapsed().as_millis() as u64, "campaign targeted");
        Ok(created)
    }

    /// Re-decides running campaigns for vehicles whose inventory changed: a
    /// vehicle that now matches joins, one that no longer does leaves (if
    /// its action was not delivered yet), one that runs the target version
    /// is done.
    pub async fn on_vehicles_changed(&self, vins: &[String]) -> Result<(), CampaignError> {
        let campaigns: Vec<Campaign> = self
            .inner
            .store
            .list_campaigns(&[CampaignState::Running, CampaignState::Paused])
            .await?
            .into_iter()
            // Campaigns still scanning too: the scan may have passed these
            // vehicles before they changed.
            .filter(|c| c.launched_at.is_some())
            .collect();
        if campaigns.is_empty() || vins.is_empty() {
            return Ok(());
        }
        let mut unique: Vec<String> = vins.to_vec();
        unique.sort();
        unique.dedup();
        let vehicles = Arc::new(self.fetch_vehicles(&unique).await?);
        let now = Utc::now();
        for c in campaigns {
            let t = Arc::new(self.targeting(c).await?);
            let actions = t.actions_for(Arc::clone(&vehicles)).await?;
            let existing = self
                .inner
                .store
                .campaign_actions_for(&t.campaign.id, &unique)
                .await?;
            let (mut joins, mut leaves, mut done) = (Vec::new(), Vec::new(), Vec::new());
            for (v, action) in vehicles.iter().zip(actions) {
                match (action, existing.get(&v.vin)) {
                    (Some(a), None) => joins.push(a),
                    (Some(_), Some(row)) => {
                        let state: ActionState =
                            row.state.parse().unwrap_or(ActionState::Cancelled);
                        if !state.is_final() && t.installed(v, &row.package_id) {
                            done.push(row.id.clone());
                        }
                    }
                    (None, Some(row)) => {
                        let state: ActionState =
                            row.state.parse().unwrap_or(ActionState::Cancelled);
                        if !state.is_final() && t.installed(v, &row.package_id) {
                            done.push(row.id.clone());
                        } else if matches!(
                            state,
                            ActionState::Pending | ActionState::Waiting | ActionState::Staged
                        ) {
                            leaves.push(row.id.clone());
                        }
                    }
                    (None, None) => {}
                }
            }
            let id = &t.campaign.id;
            let joined = self.inner.store.insert_actions(id, &joins, now).await?;
            let left = self
                .inner
                .store
                .close_actions(
                    &leaves,
                    ActionState::Cancelled,
                    "no longer matches the target",
                    now,
                )
                .await?;
            let finished = self
                .inner
                .store
                .close_actions(&done, ActionState::Succeeded, ALREADY_INSTALLED, now)
                .await?;
            if joined > 0 || !left.is_empty() || !finished.is_empty() {
                tracing::info!(campaign = %id, joined, left = left.len(), already_installed = finished.len(), "inventory changes re-targeted");
            }
        }
        Ok(())
    }

    /// The first pass of a launch: the vehicles of the open waves, found by
    /// VIN alone (a vehicle's wave depends only on its VIN), fetched and
    /// decided before the full scan, so the first wave reaches staging in
    /// seconds whatever the fleet size. The full scan decides them again,
    /// which changes nothing for those already created.
    async fn target_open_waves(&self, t: &Arc<Targeting>) -> Result<u64, CampaignError> {
        let c = &t.campaign;
        let open_wave = c.current_wave.max(0) as usize;
        if c.waves().get(open_wave).is_none_or(|pct| *pct >= 100.0) {
            return Ok(0);
        }
        let mut vins = self
            .inner
            .vehicles
            .scan_vins()
            .await
            .map_err(CampaignError::upstream("vehicle store"))?;
        let mut early = Vec::new();
        while let Some(batch) = vins.next().await {
            let batch = batch.map_err(CampaignError::upstream("vehicle store"))?;
            early.extend(
                batch
                    .into_iter()
                    .filter(|vin| wave_of(bucket(&c.id, vin), c.waves()) <= open_wave),
            );
        }
        let mut created = 0;
        for chunk in early.chunks(INSERT_BATCH) {
            let vehicles = Arc::new(self.fetch_vehicles(chunk).await?);
            let actions: Vec<NewAction> = t
                .actions_for(vehicles)
                .await?
                .into_iter()
                .flatten()
                .collect();
            created += self
                .inner
                .store
                .insert_actions(&c.id, &actions, Utc::now())
                .await?;
        }
        Ok(created)
    }

    /// These vehicles, fetched concurrently; unknown VINs are left out.
    async fn fetch_vehicles(&self, vins: &[String]) -> Result<Vec<Vehicle>, CampaignError> {
        let source = self.inner.vehicles.clone();
        let fetched: Vec<Result<Vehicle, tonic::Status>> = futures::stream::iter(vins.to_vec())
            .map(|vin| {
                let source = source.clone();
                async move { source.get(&vin).await }
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        let mut vehicles = Vec::with_capacity(fetched.len());
        for v in fetched {
            match v {
                Ok(v) => vehicles.push(v),
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(CampaignError::upstream("vehicle store")(s)),
            }
        }
        Ok(vehicles)
    }

    /// Launched campaigns whose scan did not finish (a restart mid-scan).
    pub(crate) async fn resume_targeting(&self) -> Result<(), CampaignError> {
        let pending: HashSet<String> = self
            .inner
            .store
            .list_campaigns(&[CampaignState::Running, CampaignState::Paused])
            .await?
            .into_iter()
            .filter(|c| c.targeted_at.is_none())
            .map(|c| c.id)
            .collect();
        for id in pending {
            self.spawn_targeting(id);
        }
        Ok(())
    }
}
