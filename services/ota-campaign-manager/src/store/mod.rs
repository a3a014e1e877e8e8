//! Persistence of packages, campaigns, actions and the audit log, on SQLite
//! or PostgreSQL. SQL is shared between the two where it can be (`$n`
//! parameters, TEXT JSON); bulk writes differ.

mod actions;
mod counts;
mod events;
mod failures;
mod health;
mod status;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ota_bus::topics;
use ota_db::{with_pool, Db};
use serde_json::json;
use tokio::sync::{Mutex, Notify};

use crate::model::{
    from_millis, millis, ActionState, Artifact, Campaign, CampaignState, Package, Plan,
    RolloutError, UnreadableCampaign,
};
use crate::CampaignError;

pub use actions::{ActionRow, NewAction, OpenActionRow, VehicleActionEntry};
pub use counts::{dim, CountKey, Counts, GroupCounts, MinuteCounts, WaveCounts};
pub use events::{EventRow, NewEvent, KEEP_EVENTS, PLATFORM};
pub use failures::{FailureGroupRow, NO_MESSAGE, RETRY_VERB};
pub use status::{ReportOutcome, StatusUpdate};

pub(crate) use health::truncate;

/// SQL list of the action states matching `f`, e.g. `('staged','delivered')`.
pub(crate) fn sql_list(f: impl Fn(ActionState) -> bool) -> String {
    let names: Vec<String> = ActionState::ALL
        .into_iter()
        .filter(|s| f(*s))
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("({})", names.join(","))
}

/// VINs per staging event: keeps outbox payloads small.
pub(crate) const VINS_PER_EVENT: usize = 1000;

pub(crate) use ota_db::{on_conn, Conn};

/// A write transaction of the store (`ota_db::write_tx!` under the
/// store's SQLite writer lock).
macro_rules! write_tx {
    ($store:expr, $tx:ident => $body:expr) => {
        ota_db::write_tx!(&$store.db, $store.sqlite_lock, $tx => $body)
    };
}
pub(crate) use write_tx;

/// Appends an audit entry in the caller's transaction (`&mut *tx`).
pub(crate) async fn write_audit<'a>(
    conn: impl Into<Conn<'a>>,
    at: i64,
    audit: &Audit,
    entity: &str,
    entity_id: &str,
    action: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    on_conn!(&mut conn.into(), c => {
        sqlx::query("INSERT INTO audit_log (at, actor, entity, entity_id, action, reason, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(at).bind(&audit.actor).bind(entity).bind(entity_id).bind(action).bind(&audit.reason).bind(detail)
            .execute(c).await.map(drop)
    })
}

/// Staging events for these VINs, in chunks.
pub(crate) fn staging_events(vins: &[String], now: DateTime<Utc>) -> Vec<String> {
    vins.chunks(VINS_PER_EVENT)
        .map(|chunk| {
            ota_bus::outbox::payload(&ota_bus::StagingEvent::Vins {
                vins: chunk.to_vec(),
                at_ms: millis(now),
            })
        })
        .collect()
}

#[derive(Clone)]
pub struct Store {
    pub(crate) db: Db,
    pub(crate) sqlite_lock: Arc<Mutex<()>>,
    /// Wakes the outbox relay after a commit that wrote events.
    relay: Arc<Notify>,
}

/// Who did something, and why, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub actor: String,
    pub reason: String,
}

impl Audit {
    pub fn new(actor: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            reason: reason.into(),
        }
    }

    /// Decisions the rollout takes on its own.
    pub fn system(reason: impl Into<String>) -> Self {
        Self::new("system", reason)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub entity: String,
    pub entity_id: String,
    pub action: String,
    pub reason: String,
    pub detail: String,
}

/// id, at, actor, entity, entity_id, action, reason, detail
type AuditRow = (i64, i64, String, String, String, String, String, String);

#[derive(sqlx::FromRow)]
struct PackageRow {
    id: String,
    name: String,
    version: String,
    ecu: String,
    compatible_hw: String,
    artifacts: String,
    release_notes: String,
    created_by: String,
    created_at: i64,
    in_use: bool,
}

const PACKAGE_COLUMNS: &str =
    "id, name, version, ecu, compatible_hw, artifacts, release_notes, created_by, created_at, in_use";

impl PackageRow {
    fn into_package(self) -> Result<Package, CampaignError> {
        let corrupt = |e: serde_json::Error| CampaignError::Corrupt {
            what: format!("package {}", self.id),
            reason: e.to_string(),
        };
        Ok(Package {
            compatible_hw: serde_json::from_str(&self.compatible_hw).map_err(corrupt)?,
            artifacts: serde_json::from_str::<Vec<Artifact>>(&self.artifacts).map_err(corrupt)?,
            id: self.id,
            name: self.name,
            version: self.version,
            ecu: self.ecu,
            release_notes: self.release_notes,
            created_by: self.created_by,
            created_at: from_millis(self.created_at),
            in_use: self.in_use,
        })
    }
}

#[derive(sqlx::FromRow)]
struct CampaignRow {
    id: String,
    name: String,
    state: String,
    spec: String,
    plan: String,
    priority: i32,
    created_by: String,
    approved_by: Option<String>,
    state_reason: String,
    current_wave: i32,
    wave_opened_at: Option<i64>,
    launched_at: Option<i64>,
    targeted_at: Option<i64>,
    release_budget: f64,
    budget_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    failed_ticks: i32,
}

const CAMPAIGN_COLUMNS: &str = "id, name, state, spec, plan, priority, created_by, approved_by, state_reason, current_wave, wave_opened_at, launched_at, targeted_at, release_budget, budget_at, created_at, updated_at, last_error, last_error_at, failed_ticks";

/// A stored time, or why it is not one. The rollout computes with these, so
/// a value outside chrono's range is an error rather than 1970.
fn stored_time(column: &str, ms: i64) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| format!("{column} {ms} is not a representable time in milliseconds"))
}

fn stored_opt_time(column: &str, ms: Option<i64>) -> Result<Option<DateTime<Utc>>, String> {
    ms.map(|ms| stored_time(column, ms)).transpose()
}

impl CampaignRow {
    /// The campaign, or what can be shown of it when part of it cannot be
    /// read.
    fn into_entry(self) -> CampaignEntry {
        let parsed = (|| {
            let state: CampaignState = self.state.parse()?;
            let plan = serde_json::from_str::<Plan>(&self.plan)
                .map_err(|e| format!("plan does not parse: {e}"))?;
            let times = (
                stored_opt_time("wave_opened_at", self.wave_opened_at)?,
                stored_opt_time("launched_at", self.launched_at)?,
                stored_opt_time("targeted_at", self.targeted_at)?,
                stored_opt_time("budget_at", self.budget_at)?,
                stored_time("created_at", self.created_at)?,
                stored_time("updated_at", self.updated_at)?,
            );
            Ok::<_, String>((state, plan, times))
        })();
        let rollout_error = self.rollout_error();
        match parsed {
            Ok((
                state,
                plan,
                (wave_opened_at, launched_at, targeted_at, budget_at, created_at, updated_at),
            )) => CampaignEntry::Readable(Box::new(Campaign {
                state,
                plan,
                id: self.id,
                name: self.name,
                spec_text: self.spec,
                priority: self.priority,
                created_by: self.created_by,
                approved_by: self.approved_by,
                state_reason: self.state_reason,
                current_wave: self.current_wave,
                wave_opened_at,
                launched_at,
                targeted_at,
                release_budget: self.release_budget,
                budget_at,
                created_at,
                updated_at,
                rollout_error,
            })),
            Err(problem) => CampaignEntry::Unreadable(Box::new(UnreadableCampaign {
                wave_opened_at: stored_opt_time("", self.wave_opened_at).ok().flatten(),
                launched_at: stored_opt_time("", self.launched_at).ok().flatten(),
                created_at: stored_time("", self.created_at).unwrap_or_default(),
                updated_at: stored_time("", self.updated_at).unwrap_or_default(),
                id: self.id,
                name: self.name,
                state: self.state,
                spec_text: self.spec,
                priority: self.priority,
                created_by: self.created_by,
                approved_by: self.approved_by,
                state_reason: self.state_reason,
                current_wave: self.current_wave,
                rollout_error,
                problem,
            })),
        }
    }

    fn rollout_error(&self) -> Option<RolloutError> {
        let message = self.last_error.clone()?;
        Some(RolloutError {
            message,
            at: self
                .last_error_at
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_default(),
            failed_ticks: self.failed_ticks.max(0) as u32,
        })
    }
}

/// A campaign as stored: readable, or only good for showing.
#[derive(Debug, Clone, PartialEq)]
pub enum CampaignEntry {
    Readable(Box<Campaign>),
    Unreadable(Box<UnreadableCampaign>),
}

impl CampaignEntry {
    /// The campaign, or the error saying why it cannot be read.
    pub fn into_campaign(self) -> Result<Campaign, CampaignError> {
        match self {
            Self::Readable(c) => Ok(*c),
            Self::Unreadable(u) => Err(u.error()),
        }
    }
}

/// Longest rollout error kept on a campaign, in bytes: a panic message or a
/// database error can be long, and the campaign record is read often.
pub const MAX_ROLLOUT_ERROR_BYTES: usize = 1000;

/// What a campaign state change writes besides the state.
#[derive(Debug, Default)]
pub struct StateChange {
    pub approved_by: Option<String>,
    pub launched: bool,
    /// Open wave 0 now (launch, or a scheduled start reached).
    pub open_first_wave: bool,
}

impl Store {
    pub fn new(db: Db, relay: Arc<Notify>) -> Self {
        Self {
            db,
            sqlite_lock: Arc::new(Mutex::new(())),
            relay,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn wake_relay(&self) {
        self.relay.notify_one();
    }

    // ---- packages ----

    pub async fn insert_package(&self, p: &Package) -> Result<(), CampaignError> {
        let hw = serde_json::to_string(&p.compatible_hw).expect("strings serialize");
        let artifacts = serde_json::to_string(&p.artifacts).expect("artifacts serialize");
        let detail = json!({"name": p.name, "version": p.version, "ecu": p.ecu}).to_string();
        let result: Result<(), sqlx::Error> = async {
            write_tx!(self, tx => {
                sqlx::query(&format!("INSERT INTO packages ({PACKAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
                    .bind(&p.id).bind(&p.name).bind(&p.version).bind(&p.ecu).bind(&hw).bind(&artifacts)
                    .bind(&p.release_notes).bind(&p.created_by).bind(millis(p.created_at)).bind(false)
                    .execute(&mut *tx).await?;
                write_audit(&mut *tx, millis(p.created_at), &Audit::new(&p.created_by, ""), "package", &p.id, "create", &detail).await?;
                tx.commit().await
            })
        }
        .await;
        result.map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => CampaignError::AlreadyExists(
                format!("package {}@{} already exists", p.name, p.version),
            ),
            _ => e.into(),
        })
    }

    /// By id, or by `name@version`.
    pub async fn get_package(&self, id: &str) -> Result<Package, CampaignError> {
        let row: Option<PackageRow> = match id.split_once('@') {
            Some((name, version)) => with_pool!(&self.db, pool => {
                sqlx::query_as(&format!("SELECT {PACKAGE_COLUMNS} FROM packages WHERE name = $1 AND version = $2"))
                    .bind(name).bind(version).fetch_optional(pool).await?
            }),
            None => with_pool!(&self.db, pool => {
                sqlx::query_as(&format!("SELECT {PACKAGE_COLUMNS} FROM packages WHERE id = $1"))
                    .bind(id).fetch_optional(pool).await?
            }),
        };
        row.ok_or_else(|| CampaignError::not_found("package", id))?
            .into_package()
    }

    pub async fn list_packages(&self, name: Option<&str>) -> Result<Vec<Package>, CampaignError> {
        let rows: Vec<PackageRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(&format!("SELECT {PACKAGE_COLUMNS} FROM packages WHERE ($1 IS NULL OR name = $1) ORDER BY name, created_at"))
                .bind(name).fetch_all(pool).await?
        });
        rows.into_iter().map(PackageRow::into_package).collect()
    }

    // ---- campaigns ----

    pub async fn insert_campaign(&self, c: &Campaign) -> Result<(), CampaignError> {
        let plan = serde_json::to_string(&c.plan).expect("plan serializes");
        let detail = json!({"name": c.name, "packages": c.plan.packages}).to_string();
        let now = millis(c.created_at);
        write_tx!(self, tx => {
            sqlx::query(&format!("INSERT INTO campaigns ({CAMPAIGN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, '', -1, NULL, NULL, NULL, 0, NULL, $8, $8, NULL, NULL, 0)"))
                .bind(&c.id).bind(&c.name).bind(c.state.as_str()).bind(&c.spec_text).bind(&plan)
                .bind(c.priority).bind(&c.created_by).bind(now)
                .execute(&mut *tx).await?;
            // A package a campaign refers to is frozen from now on.
            for id in &c.plan.packages {
                sqlx::query("UPDATE packages SET in_use = $1 WHERE id = $2").bind(true).bind(id).execute(&mut *tx).await?;
            }
            write_audit(&mut *tx, now, &Audit::new(&c.created_by, ""), "campaign", &c.id, "create", &detail).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn get_campaign(&self, id: &str) -> Result<Campaign, CampaignError> {
        self.get_campaign_entry(id).await?.into_campaign()
    }

    /// The campaign, or what can be shown of it when it cannot be read.
    pub async fn get_campaign_entry(&self, id: &str) -> Result<CampaignEntry, CampaignError> {
        let row: Option<CampaignRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1"))
                .bind(id).fetch_optional(pool).await?
        });
        Ok(row
            .ok_or_else(|| CampaignError::not_found("campaign", id))?
            .into_entry())
    }

    /// Campaigns in these states (all when empty), highest priority first.
    /// One that cannot be read is left out, with a warning: it must not stop
    /// the work on the others ([`list_campaign_entries`](Self::list_campaign_entries)
    /// shows it).
    pub async fn list_campaigns(
        &self,
        states: &[CampaignState],
    ) -> Result<Vec<Campaign>, CampaignError> {
        let entries = self.list_campaign_entries(states).await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| match e {
                CampaignEntry::Readable(c) => Some(*c),
                CampaignEntry::Unreadable(u) => {
                    tracing::warn!(campaign = %u.id, problem = %u.problem, "skipping a campaign that cannot be read");
                    None
                }
            })
            .collect())
    }

    /// Campaigns in these states (all when empty), highest priority first,
    /// each readable or not.
    pub async fn list_campaign_entries(
        &self,
        states: &[CampaignState],
    ) -> Result<Vec<CampaignEntry>, CampaignError> {
        // Filtered in SQL, so a row whose state does not parse never reaches
        // a listing of particular states.
        let names: Vec<String> = states.iter().map(|s| s.as_str().to_string()).collect();
        let rows: Vec<CampaignRow> = with_pool!(&self.db, pool => {
            let mut q = sqlx::QueryBuilder::new(format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns"));
            if !names.is_empty() {
                q.push(" WHERE state IN (");
                let mut sep = q.separated(", ");
                for n in &names {
                    sep.push_bind(n);
                }
                q.push(")");
            }
            q.push(" ORDER BY priority DESC, created_at");
            q.build_query_as().fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(CampaignRow::into_entry).collect())
    }

    /// Moves a campaign from `from` to `to` if it is still in `from`, with
    /// the audit entry and, for states that change which actions are live,
    /// the cancellations and staging events, all in one transaction. Returns
    /// false when the campaign was no longer in `from` (a concurrent change).
    pub async fn set_state(
        &self,
        c: &Campaign,
        to: CampaignState,
        change: StateChange,
        audit: &Audit,
        action: &str,
    ) -> Result<bool, CampaignError> {
        self.set_state_of(&c.id, c.state, to, change, audit, action)
            .await
    }

    /// [`set_state`](Self::set_state) by id, for a campaign that may not be
    /// readable. Entering `running` (a resume) starts the count of failed
    /// rollout ticks anew.
    pub async fn set_state_of(
        &self,
        id: &str,
        from: CampaignState,
        to: CampaignState,
        change: StateChange,
        audit: &Audit,
        action: &str,
    ) -> Result<bool, CampaignError> {
        let now = Utc::now();
        let now_ms = millis(now);
        let detail = json!({"from": from.as_str(), "to": to.as_str()}).to_string();
        let reason = audit.reason.clone();
        let (changed, vins) = write_tx!(self, tx => {
            let updated = sqlx::query(
                "UPDATE campaigns SET state = $1, state_reason = $2, updated_at = $3, \
                 approved_by = COALESCE($4, approved_by), \
                 launched_at = CASE WHEN $5 THEN $3 ELSE launched_at END, \
                 current_wave = CASE WHEN $6 THEN 0 ELSE current_wave END, \
                 wave_opened_at = CASE WHEN $6 THEN $3 ELSE wave_opened_at END, \
                 budget_at = CASE WHEN $6 THEN $3 ELSE budget_at END, \
                 failed_ticks = CASE WHEN $1 = 'running' THEN 0 ELSE failed_ticks END \
                 WHERE id = $7 AND state = $8")
                .bind(to.as_str()).bind(&reason).bind(now_ms).bind(&change.approved_by)
                .bind(change.launched).bind(change.open_first_wave).bind(id).bind(from.as_str())
                .execute(&mut *tx).await?.rows_affected();
            if updated == 0 {
                (false, Vec::new())
            } else {
                let vins = actions::on_campaign_state(Conn::from(&mut *tx), id, to, now_ms).await?;
                write_audit(&mut *tx, now_ms, audit, "campaign", id, action, &detail).await?;
                if !vins.is_empty() {
                    ota_bus::outbox::enqueue(&mut *tx, topics::STAGING, &staging_events(&vins, now)).await?;
                }
                tx.commit().await?;
                (true, vins)
            }
        });
        if !vins.is_empty() {
            self.wake_relay();
        }
        Ok(changed)
    }

    /// Sets the priority; the campaign's staged documents change order.
    pub async fn set_priority(
        &self,
        c: &Campaign,
        priority: i32,
        audit: &Audit,
    ) -> Result<(), CampaignError> {
        let now = Utc::now();
        let now_ms = millis(now);
        let detail = json!({"from": c.priority, "to": priority}).to_string();
        let mut plan = c.plan.clone();
        plan.spec.priority = priority;
        let plan = serde_json::to_string(&plan).expect("plan serializes");
        write_tx!(self, tx => {
            sqlx::query("UPDATE campaigns SET priority = $1, plan = $2, updated_at = $3 WHERE id = $4")
                .bind(priority).bind(&plan).bind(now_ms).bind(&c.id).execute(&mut *tx).await?;
            let vins = actions::open_vins(Conn::from(&mut *tx), &c.id).await?;
            write_audit(&mut *tx, now_ms, audit, "campaign", &c.id, "priority", &detail).await?;
            ota_bus::outbox::enqueue(&mut *tx, topics::STAGING, &staging_events(&vins, now)).await?;
            tx.commit().await?;
        });
        self.wake_relay();
        Ok(())
    }

    /// Opens wave `wave` of a running campaign (if it is still at `wave - 1`).
    pub async fn open_wave(
        &self,
        c: &Campaign,
        wave: i32,
        audit: &Audit,
    ) -> Result<bool, CampaignError> {
        let now_ms = millis(Utc::now());
        // People count waves from 1, in the audit as in every table.
        let detail = json!({"wave": wave + 1, "percent": c.waves().get(wave as usize)}).to_string();
        let changed = write_tx!(self, tx => {
            let n = sqlx::query("UPDATE campaigns SET current_wave = $1, wave_opened_at = $2, updated_at = $2 WHERE id = $3 AND current_wave = $4")
                .bind(wave).bind(now_ms).bind(&c.id).bind(wave - 1).execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                write_audit(&mut *tx, now_ms, audit, "campaign", &c.id, "wave-open", &detail).await?;
            }
            tx.commit().await?;
            n > 0
        });
        Ok(changed)
    }

    pub async fn set_targeted(&self, id: &str, at: DateTime<Utc>) -> Result<(), CampaignError> {
        with_pool!(&self.db, pool => {
            sqlx::query("UPDATE campaigns SET targeted_at = $1 WHERE id = $2")
                .bind(millis(at)).bind(id).execute(pool).await.map(drop)?
        });
        Ok(())
    }

    /// Fresh planner statistics for `actions` after a bulk insert, on
    /// PostgreSQL (SQLite plans without them). Before autovacuum got to a
    /// table that had just grown by a million pending actions, PostgreSQL
    /// planned staging's lookup of 1,000 vehicles' open actions through
    /// the partial index of all open actions and compared each of them
    /// with the 1,000 VINs: 25 s a lookup instead of 76 ms, and staging of
    /// a 1M-vehicle launch crawled (bench/dashboard_pages.sh). ANALYZE
    /// samples a bounded number of rows and replaces cached plans.
    pub async fn analyze_actions(&self) -> Result<(), CampaignError> {
        if let Db::Postgres(pool) = &self.db {
            sqlx::query("ANALYZE actions").execute(pool).await?;
        }
        Ok(())
    }

    // ---- audit ----

    pub async fn list_audit(
        &self,
        entity_id: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, CampaignError> {
        let rows: Vec<AuditRow> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT id, at, actor, entity, entity_id, action, reason, detail FROM audit_log \
                WHERE ($1 IS NULL OR entity_id = $1) AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3")
                .bind(entity_id).bind(before).bind(limit as i64).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(id, at, actor, entity, entity_id, action, reason, detail)| AuditEntry {
                    id,
                    at: from_millis(at),
                    actor,
                    entity,
                    entity_id,
                    action,
                    reason,
                    detail,
                },
            )
            .collect())
    }

    /// When each wave of the campaign opened, by wave index, from the
    /// audit's `wave-open` entries. The wave is found by its percent
    /// (waves are strictly increasing), which reads entries written when
    /// the audit still counted waves from 0 as well as today's.
    pub async fn wave_openings(
        &self,
        c: &Campaign,
    ) -> Result<Vec<Option<DateTime<Utc>>>, CampaignError> {
        let rows: Vec<(i64, String)> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT at, detail FROM audit_log \
                WHERE entity_id = $1 AND entity = 'campaign' AND action = 'wave-open' ORDER BY id")
                .bind(&c.id).fetch_all(pool).await?
        });
        let waves = c.waves();
        let mut opened = vec![None; waves.len()];
        for (at, detail) in rows {
            let percent = serde_json::from_str::<serde_json::Value>(&detail)
                .ok()
                .and_then(|d| d["percent"].as_f64());
            if let Some(i) = percent.and_then(|p| waves.iter().position(|w| *w == p)) {
                opened[i] = Some(from_millis(at));
            }
        }
        // The launch opens the first wave, unless a schedule delays it
        // (then a `wave-open` entry records it).
        if let (Some(first @ None), true) = (opened.first_mut(), c.current_wave >= 0) {
            *first = c.launched_at;
        }
        Ok(opened)
    }

    /// An audit entry on its own (decisions that change nothing else).
    pub async fn audit(
        &self,
        audit: &Audit,
        entity: &str,
        entity_id: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), CampaignError> {
        let now = millis(Utc::now());
        with_pool!(&self.db, pool => {
            let mut conn = pool.acquire().await?;
            write_audit(&mut *conn, now, audit, entity, entity_id, action, detail).await?
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_lists_hold_the_stored_names() {
        assert_eq!(
            sql_list(ActionState::is_failure),
            "('failed','rejected','timed_out')"
        );
        assert_eq!(
            sql_list(|s| !s.is_delivered() && !s.is_final()),
            "('pending','waiting','staged')"
        );
    }
}
