//! The campaign manager's operations: what the gRPC service, the rollout
//! loop and the event consumers call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ota_auth::Role;
use ota_common::peer::Peer;
use ota_proto::v1 as pb;
use ota_rule_engine::{CompiledRuleSet, Rule, RuleSet, VehicleSource};
use pb::rule_engine_client::RuleEngineClient;

use crate::model::{ActionState, Campaign, CampaignState, Package, Plan, Transition};
use crate::spec::{self, CampaignSpec, SpecError};
use crate::status::StatusWriter;
use crate::store::{Audit, CampaignEntry, OpenActionRow, StateChange, Store};
use crate::CampaignError;

#[derive(Debug, Clone)]
pub struct Config {
    /// How often the rollout re-decides every running campaign.
    pub tick: Duration,
    /// Status reports written per transaction, at most.
    pub status_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            status_batch: 2000,
        }
    }
}

/// Who asks: the principal (the person or service a token belongs to, not
/// the token's own name) and the token's role, as the REST layer
/// authenticated them.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub role: String,
}

#[derive(Clone)]
pub struct CampaignManager {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Store,
    pub rules: RuleEngineClient<Peer>,
    pub vehicles: Arc<dyn VehicleSource>,
    pub config: Config,
    pub status: StatusWriter,
    /// Packages by id: immutable once a campaign uses them, so cached for good.
    packages: RwLock<HashMap<String, Package>>,
    compiled: Mutex<HashMap<String, Arc<CompiledRuleSet>>>,
    /// Per campaign, what bounds an action's deadline: the action timeout
    /// and the schedule's end. Fixed at creation, so cached for good.
    deadlines: RwLock<HashMap<String, Deadline>>,
    /// Campaign ids whose targeting scan runs in this process.
    pub scanning: Mutex<std::collections::HashSet<String>>,
    /// One scan of a campaign at a time: two scans insert the same rows and
    /// would wait on each other's uncommitted inserts (see `scan_turn`).
    pub(crate) scan_turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Where finished installs are recorded (see `installed`); unset in
    /// tests that have no vehicle store.
    pub inventory: Option<pb::vehicle_store_client::VehicleStoreClient<Peer>>,
}

impl CampaignManager {
    pub fn new(
        store: Store,
        rule_engine: Peer,
        vehicles: Arc<dyn VehicleSource>,
        config: Config,
    ) -> Self {
        let status = StatusWriter::start(store.clone(), config.status_batch);
        Self {
            inner: Arc::new(Inner {
                store,
                rules: RuleEngineClient::new(rule_engine),
                vehicles,
                config,
                status,
                packages: RwLock::new(HashMap::new()),
                compiled: Mutex::new(HashMap::new()),
                deadlines: RwLock::new(HashMap::new()),
                scanning: Mutex::new(Default::default()),
                scan_turns: Mutex::new(HashMap::new()),
                inventory: None,
            }),
        }
    }

    /// Records finished installs in the inventory through this vehicle
    /// store (in this process or remote); needs the bus of
    /// `spawn_background`.
    pub fn with_inventory(mut self, vehicle_store: Peer) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("the inventory is set while the manager is built, before it is shared")
            .inventory = Some(pb::vehicle_store_client::VehicleStoreClient::new(
            vehicle_store,
        ));
        self
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    // ---- packages ----

    pub async fn create_package(
        &self,
        p: pb::Package,
        actor: &str,
    ) -> Result<Package, CampaignError> {
        let problems = check_package(&p);
        if !problems.is_empty() {
            return Err(CampaignError::Invalid(format!(
                "invalid package: {}",
                problems.join("; ")
            )));
        }
        let pkg = Package {
            id: uuid::Uuid::now_v7().to_string(),
            name: p.name.trim().to_string(),
            version: p.version.trim().to_string(),
            ecu: p.ecu.trim().to_string(),
            compatible_hw: p.compatible_hw,
            artifacts: p
                .artifacts
                .into_iter()
                .map(|a| crate::model::Artifact {
                    url: a.url,
                    sha256: a.sha256.to_ascii_lowercase(),
                    size: a.size,
                })
                .collect(),
            release_notes: p.release_notes,
            created_by: actor.to_string(),
            created_at: now_ms_precision(),
            in_use: false,
        };
        self.inner.store.insert_package(&pkg).await?;
        Ok(pkg)
    }

    pub async fn package(&self, id: &str) -> Result<Package, CampaignError> {
        if let Some(p) = read(&self.inner.packages).get(id) {
            return Ok(p.clone());
        }
        let p = self.inner.store.get_package(id).await?;
        if p.in_use {
            write(&self.inner.packages).insert(p.id.clone(), p.clone());
        }
        Ok(p)
    }

    /// A vehicle's status report, durable when this returns.
    pub async fn report_status(
        &self,
        report: crate::status::StatusReport,
    ) -> Result<crate::status::StatusResult, CampaignError> {
        self.inner.status.submit(report).await
    }

    // ---- campaigns ----

    /// Every problem of a campaign file at once, each with its path and
    /// position in the file: its structure, its CEL expressions, the
    /// packages it names and its schedule (at most
    /// [`spec::MAX_PROBLEMS`] of them listed). The parsed plan when there
    /// are none.
    ///
    /// Reading the file is one pass within fixed limits (size, nodes once
    /// aliases are expanded, rules), so the work a request can cause here is
    /// bounded; the rule engine and package look-ups after it are awaited,
    /// so they stop when the caller goes away.
    pub async fn validate(
        &self,
        text: &str,
    ) -> Result<Result<Plan, Vec<SpecError>>, CampaignError> {
        let mut checked = spec::check(text);
        let mut errors = std::mem::take(&mut checked.errors);
        let Some(spec) = &checked.spec else {
            return Ok(Err(spec::listed(errors)));
        };
        // An expression the file check already rejected (missing, empty, not
        // a string) gets no second error from the rule engine.
        let known: std::collections::HashSet<String> =
            errors.iter().map(|e| e.path.clone()).collect();
        let mut rules = rule_set(spec);
        rules.rules.truncate(spec::MAX_RULES);
        let validation = self
            .inner
            .rules
            .clone()
            .validate(pb::ValidateRequest {
                rules: Some(rules.into()),
            })
            .await
            .map_err(CampaignError::upstream("rule engine"))?
            .into_inner();
        for e in validation.errors {
            if known.contains(&e.path) {
                continue;
            }
            let at = e
                .position
                .as_ref()
                .and_then(|p| checked.expression_position(&e.path, p.line, p.column));
            errors.push(SpecError {
                line: at.map(|a| a.0),
                column: at.map(|a| a.1),
                path: e.path,
                message: e.message,
            });
        }
        let at = |path: &str| checked.position(path).unzip();
        let mut packages = Vec::with_capacity(spec.rules.len());
        let mut found: HashMap<String, Option<Package>> = HashMap::new();
        for (i, rule) in spec.rules.iter().enumerate() {
            let install = &rule.install;
            // A rule the file check faulted names no package to look up.
            if install.package.is_empty() || install.version.is_empty() || install.ecu.is_empty() {
                continue;
            }
            let id = format!("{}@{}", install.package, install.version);
            let p = match found.get(&id) {
                Some(p) => p.clone(),
                None => {
                    let p = match self.inner.store.get_package(&id).await {
                        Ok(p) => Some(p),
                        Err(CampaignError::NotFound { .. }) => None,
                        Err(e) => return Err(e),
                    };
                    found.insert(id, p.clone());
                    p
                }
            };
            match p {
                Some(p) => {
                    if p.ecu != install.ecu {
                        let path = format!("rules[{i}].install.ecu");
                        let (line, column) = at(&path);
                        errors.push(SpecError {
                            message: format!(
                                "package {}@{} is for ECU {:?}, not {:?}",
                                p.name, p.version, p.ecu, install.ecu
                            ),
                            path,
                            line,
                            column,
                        });
                    }
                    packages.push(p.id);
                }
                None => {
                    let path = format!("rules[{i}].install.package");
                    let (line, column) = at(&path);
                    errors.push(SpecError {
                        message: format!(
                            "package {:?} version {:?} does not exist (register it with `ota packages add`)",
                            install.package, install.version
                        ),
                        path,
                        line,
                        column,
                    });
                }
            }
        }
        if let Some(end) = spec.schedule.end {
            if end <= Utc::now() {
                let (line, column) = at("schedule.end");
                errors.push(SpecError {
                    path: "schedule.end".into(),
                    message: format!("{} is in the past", end.to_rfc3339()),
                    line,
                    column,
                });
            }
        }
        if errors.is_empty() {
            let spec = checked.spec.unwrap_or_default();
            Ok(Ok(Plan { spec, packages }))
        } else {
            Ok(Err(spec::listed(errors)))
        }
    }

    pub async fn create_campaign(
        &self,
        text: &str,
        actor: &str,
    ) -> Result<Result<Campaign, Vec<SpecError>>, CampaignError> {
        let plan = match self.validate(text).await? {
            Ok(p) => p,
            Err(errors) => return Ok(Err(errors)),
        };
        let now = now_ms_precision();
        let c = Campaign {
            id: uuid::Uuid::now_v7().to_string(),
            name: plan.spec.name.clone(),
            state: CampaignState::Draft,
            spec_text: text.to_string(),
            priority: plan.spec.priority,
            plan,
            created_by: actor.to_string(),
            approved_by: None,
            state_reason: String::new(),
            current_wave: -1,
            wave_opened_at: None,
            launched_at: None,
            targeted_at: None,
            release_budget: 0.0,
            budget_at: None,
            created_at: now,
            updated_at: now,
            rollout_error: None,
        };
        self.inner.store.insert_campaign(&c).await?;
        Ok(Ok(c))
    }

    pub async fn campaign(&self, id: &str) -> Result<Campaign, CampaignError> {
        self.inner.store.get_campaign(id).await
    }

    /// An engineer's transition, checked against the lifecycle and, for
    /// approval, the four-eyes rule.
    pub async fn transition(
        &self,
        id: &str,
        t: Transition,
        actor: &Actor,
        reason: &str,
    ) -> Result<Campaign, CampaignError> {
        let c = self.campaign(id).await?;
        let to = t
            .next_state(c.state)
            .ok_or_else(|| CampaignError::IllegalTransition {
                id: c.id.clone(),
                state: c.state.to_string(),
                action: t.verb(),
            })?;
        let mut change = StateChange::default();
        match t {
            Transition::Approve => {
                let role: Option<Role> = actor.role.parse().ok();
                if role.is_none_or(|r| r < Role::Approver) {
                    return Err(CampaignError::Forbidden(format!(
                        "approving needs the approver role; {} has the {} role",
                        actor.name, actor.role
                    )));
                }
                // Actors are principals (people or services), not tokens:
                // another token of the creator is still the creator.
                if actor.name == c.created_by {
                    return Err(CampaignError::Forbidden(format!(
                        "{} created campaign {} and cannot approve it too, with any of their tokens: approval needs a second person",
                        actor.name, c.id
                    )));
                }
                change.approved_by = Some(actor.name.clone());
            }
            Transition::Launch => {
                if let Some(end) = c.plan.spec.schedule.end {
                    if end <= Utc::now() {
                        return Err(CampaignError::Conflict(format!(
                            "campaign {} cannot launch: its schedule ended at {}",
                            c.id,
                            end.to_rfc3339()
                        )));
                    }
                }
                change.launched = true;
                change.open_first_wave = c
                    .plan
                    .spec
                    .schedule
                    .start
                    .is_none_or(|start| start <= Utc::now());
            }
            _ => {}
        }
        let audit = Audit::new(&actor.name, reason);
        if !self
            .inner
            .store
            .set_state(&c, to, change, &audit, t.verb())
            .await?
        {
            // Someone else moved it first: report the state it is in now.
            let now = self.campaign(id).await?;
            return Err(CampaignError::IllegalTransition {
                id: now.id,
                state: now.state.to_string(),
                action: t.verb(),
            });
        }
        if t == Transition::Launch {
            self.spawn_targeting(id.to_string());
        }
        self.campaign(id).await
    }

    /// Opens the next wave now (manual advance, or ahead of the soak time).
    pub async fn advance(
        &self,
        id: &str,
        actor: &Actor,
        reason: &str,
    ) -> Result<Campaign, CampaignError> {
        let c = self.campaign(id).await?;
        if c.state != CampaignState::Running {
            return Err(CampaignError::IllegalTransition {
                id: c.id,
                state: c.state.to_string(),
                action: "advance",
            });
        }
        let next = c.current_wave + 1;
        if next as usize >= c.waves().len() {
            return Err(CampaignError::Conflict(format!(
                "campaign {} already has its last wave ({}%) open",
                c.id,
                c.waves().last().copied().unwrap_or(100.0)
            )));
        }
        if !self
            .inner
            .store
            .open_wave(&c, next, &Audit::new(&actor.name, reason))
            .await?
        {
            return Err(CampaignError::Conflict(format!(
                "campaign {} changed wave meanwhile; retry",
                c.id
            )));
        }
        self.campaign(id).await
    }

    pub async fn set_priority(
        &self,
        id: &str,
        priority: i32,
        actor: &Actor,
        reason: &str,
    ) -> Result<Campaign, CampaignError> {
        if !(-1000..=1000).contains(&priority) {
            return Err(CampaignError::Invalid(format!(
                "priority {priority} is out of range -1000..=1000"
            )));
        }
        let c = self.campaign(id).await?;
        if matches!(
            c.state,
            CampaignState::Completed | CampaignState::Aborted | CampaignState::Cancelled
        ) {
            return Err(CampaignError::IllegalTransition {
                id: c.id,
                state: c.state.to_string(),
                action: "change the priority of",
            });
        }
        self.inner
            .store
            .set_priority(&c, priority, &Audit::new(&actor.name, reason))
            .await?;
        self.campaign(id).await
    }

    /// The campaign's rule set, compiled once per campaign.
    pub(crate) fn compiled(&self, c: &Campaign) -> Result<Arc<CompiledRuleSet>, CampaignError> {
        if let Some(r) = lock(&self.inner.compiled).get(&c.id) {
            return Ok(r.clone());
        }
        let compiled = CompiledRuleSet::compile(&rule_set(&c.plan.spec)).map_err(|errors| {
            CampaignError::Corrupt {
                what: format!("targeting of campaign {}", c.id),
                reason: errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        })?;
        let compiled = Arc::new(compiled);
        lock(&self.inner.compiled).insert(c.id.clone(), compiled.clone());
        Ok(compiled)
    }
}

type Deadline = (Option<Duration>, Option<DateTime<Utc>>);

impl CampaignManager {
    /// Open actions grouped per vehicle, in the order the vehicle should
    /// carry them out (highest priority first), as staging needs them.
    pub async fn vehicle_actions(
        &self,
        rows: Vec<OpenActionRow>,
    ) -> Result<Vec<pb::VehicleActions>, CampaignError> {
        let mut out: Vec<pb::VehicleActions> = Vec::new();
        for r in rows {
            let pkg = self.package(&r.package_id).await?;
            let (timeout, end) = self.deadline_rule(&r.campaign_id).await?;
            // A deadline past the last representable date is no deadline:
            // it can never pass.
            let by_timeout = match (r.staged_at, timeout) {
                (Some(at), Some(t)) => chrono::TimeDelta::from_std(t).ok().and_then(|t| {
                    chrono::DateTime::from_timestamp_millis(at)?.checked_add_signed(t)
                }),
                _ => None,
            };
            let deadline = match (by_timeout, end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let action = pb::OpenAction {
                action_id: r.id,
                campaign_id: r.campaign_id,
                ecu: r.ecu,
                priority: r.priority,
                package: Some(pb::StagedPackage {
                    name: pkg.name,
                    version: pkg.version,
                    artifacts: pkg
                        .artifacts
                        .into_iter()
                        .map(|a| pb::Artifact {
                            url: a.url,
                            sha256: a.sha256,
                            size: a.size,
                        })
                        .collect(),
                }),
                deadline: deadline.map(ota_common::vehicle::to_timestamp),
                // Staging does not need it: a stored state this version
                // cannot read goes out unspecified rather than failing the
                // vehicle's document.
                state: r.state.parse().unwrap_or(ActionState::Unspecified).into(),
                attempt: r.attempts.max(1) as u32,
            };
            match out.last_mut() {
                Some(v) if v.vin == r.vin => v.actions.push(action),
                _ => out.push(pb::VehicleActions {
                    vin: r.vin,
                    actions: vec![action],
                }),
            }
        }
        for v in &mut out {
            v.actions.sort_by(|a, b| {
                b.priority
                    .cmp(&a.priority)
                    .then_with(|| a.campaign_id.cmp(&b.campaign_id))
                    .then_with(|| a.action_id.cmp(&b.action_id))
            });
        }
        Ok(out)
    }

    async fn deadline_rule(&self, campaign_id: &str) -> Result<Deadline, CampaignError> {
        if let Some(d) = read(&self.inner.deadlines).get(campaign_id) {
            return Ok(*d);
        }
        let c = match self.inner.store.get_campaign_entry(campaign_id).await? {
            CampaignEntry::Readable(c) => *c,
            // Its actions still go to the vehicles that have them, with no
            // deadline, rather than failing the documents of every vehicle
            // that also has actions of other campaigns. Not cached: a fixed
            // record is read again.
            CampaignEntry::Unreadable(u) => {
                tracing::warn!(campaign = %u.id, problem = %u.problem, "campaign cannot be read: its actions get no deadline");
                return Ok((None, None));
            }
        };
        let d = (c.plan.spec.rollout.action_timeout, c.plan.spec.schedule.end);
        write(&self.inner.deadlines).insert(campaign_id.to_string(), d);
        Ok(d)
    }
}

/// The rule engine's view of a campaign: the action of each rule is its index.
pub fn rule_set(spec: &CampaignSpec) -> RuleSet {
    RuleSet {
        target: spec.target.clone(),
        rules: spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule {
                when: r.when.clone().unwrap_or_default(),
                action: i.to_string(),
            })
            .collect(),
    }
}

fn check_package(p: &pb::Package) -> Vec<String> {
    let mut problems = Vec::new();
    for (field, value) in [("name", &p.name), ("version", &p.version), ("ecu", &p.ecu)] {
        let v = value.trim();
        if v.is_empty() {
            problems.push(format!("{field} is required"));
        } else if v.len() > 128 || v.chars().any(|c| c.is_control() || c == '@' || c == '/') {
            problems.push(format!(
                "{field} {v:?} must be at most 128 characters without control characters, '@' or '/'"
            ));
        }
    }
    for (i, a) in p.artifacts.iter().enumerate() {
        if a.url.trim().is_empty() {
            problems.push(format!("artifacts[{i}].url is required"));
        }
        if a.sha256.len() != 64 || !a.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            problems.push(format!(
                "artifacts[{i}].sha256 {:?} is not 64 hexadecimal characters",
                a.sha256
            ));
        }
    }
    problems
}

// The caches hold plain values, whole after any panic: a panic the rollout
// caught while one was held must not turn every later use into a panic.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Millisecond precision, as stored, so what is returned equals what is read
/// back later.
pub(crate) fn now_ms_precision() -> DateTime<Utc> {
    crate::model::from_millis(Utc::now().timestamp_millis())
}

static LAST_ACTION_ID: AtomicU64 = AtomicU64::new(0);

/// Action ids are decimal numbers (DDI clients expect numeric action ids):
/// milliseconds since the epoch shifted left, plus random bits so two
/// processes rarely collide, kept strictly increasing within a process.
pub(crate) fn next_action_id() -> String {
    let candidate = ((Utc::now().timestamp_millis() as u64) << 22) | (rand_bits() & 0x3FF) << 12;
    let mut last = LAST_ACTION_ID.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last + 1);
        match LAST_ACTION_ID.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return next.to_string(),
            Err(seen) => last = seen,
        }
    }
}

fn rand_bits() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_ids_are_unique_and_numeric() {
        let ids: Vec<String> = (0..10_000).map(|_| next_action_id()).collect();
        let set: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
        for id in &ids {
            let n: i64 = id.parse().expect("fits in i64");
            assert!(n > 0);
        }
    }

    #[test]
    fn package_checks_name_every_problem() {
        let p = pb::Package {
            name: "".into(),
            version: "1.0".into(),
            ecu: "B@D".into(),
            artifacts: vec![pb::Artifact {
                url: "".into(),
                sha256: "xyz".into(),
                size: 1,
            }],
            ..Default::default()
        };
        let problems = check_package(&p);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("name is required"));
        assert!(problems[1].contains("\"B@D\""));
        assert!(problems[3].contains("\"xyz\""));
    }
}
