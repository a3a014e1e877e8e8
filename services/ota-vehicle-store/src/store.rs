use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SubsecRound, Utc};
use futures::{Stream, StreamExt};
use ota_common::vehicle::{Vehicle, VehiclePatch};
use ota_common::Vin;
use ota_db::Db;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::precedence::{merge, validate_source, Precedence};
use crate::sql::{self, VehicleTx};
use crate::StoreError;

/// Rows merged and written per transaction during an import.
const IMPORT_BATCH: usize = 2000;
/// At most this many rejected lines are listed in an import summary (all are
/// counted); beyond that the file is better fixed than read line by line.
pub const MAX_LISTED_ERRORS: usize = 10_000;
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;
/// Vehicles per [`VehicleStore::mark_seen`] call.
pub const MAX_SEEN_BATCH: usize = 100_000;

/// Equality filters on simple fields; all given ones must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VehicleFilter {
    pub model: Option<String>,
    pub model_year: Option<i32>,
    pub platform: Option<String>,
    pub gateway: Option<String>,
    pub protocol: Option<String>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub tag: Option<String>,
}

impl VehicleFilter {
    /// (column, value) of the set text filters; column names are constants.
    pub(crate) fn text_columns(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("model", &self.model),
            ("platform", &self.platform),
            ("gateway", &self.gateway),
            ("protocol", &self.protocol),
            ("region", &self.region),
            ("country", &self.country),
        ]
        .into_iter()
        .filter_map(|(c, v)| v.as_deref().map(|v| (c, v)))
    }
}

/// One line of an import: a parsed record, or why it could not be parsed.
#[derive(Debug, Clone)]
pub enum ImportItem {
    Record {
        line: u64,
        patch: VehiclePatch,
    },
    Rejected {
        line: u64,
        vin: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportError {
    pub line: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vin: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    pub imported: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// The first [`MAX_LISTED_ERRORS`] rejected lines, in file order.
    pub errors: Vec<ImportError>,
    /// Strict mode found a rejected line, so nothing was imported.
    pub aborted: bool,
}

impl ImportSummary {
    fn reject(&mut self, line: u64, vin: String, reason: String) {
        self.rejected += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            // A bad VIN can be any size; the summary echoes a bounded prefix.
            self.errors.push(ImportError {
                line,
                vin: ota_common::vin::shown(&vin),
                reason,
            });
        }
    }
}

/// One record of a merged batch: its line, and whether it created / changed
/// its vehicle, or why it was refused.
type MergeFlag = (u64, Result<(bool, bool), StoreError>);

/// The vehicle inventory, on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct VehicleStore {
    db: Db,
    /// The writers' lock of `ota_db::WriteTx` on SQLite, shared by clones.
    sqlite_lock: Arc<Mutex<()>>,
    precedence: Arc<Precedence>,
}

impl VehicleStore {
    pub fn new(db: &Db, precedence: Precedence) -> Self {
        Self {
            db: db.clone(),
            sqlite_lock: Arc::new(Mutex::new(())),
            precedence: Arc::new(precedence),
        }
    }

    async fn begin(&self) -> Result<VehicleTx, StoreError> {
        VehicleTx::begin(&self.db, &self.sqlite_lock).await
    }

    pub async fn get(&self, vin: &str) -> Result<Vehicle, StoreError> {
        let vin = Vin::parse(vin).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let started = Instant::now();
        let v = sql::get(&self.db, vin.as_str()).await;
        self.observe("get", started);
        v?.ok_or_else(|| StoreError::NotFound(vin.into_string()))
    }

    /// One page of vehicles in VIN order, and the cursor of the next page.
    pub async fn list(
        &self,
        filter: &VehicleFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Vehicle>, Option<String>), StoreError> {
        let limit = match limit {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(StoreError::Invalid(format!(
                    "limit {n} is above the maximum page size {MAX_PAGE}"
                )))
            }
            n => n,
        };
        let after = cursor.filter(|c| !c.is_empty());
        if let Some(c) = after {
            if c.len() > 17 || !c.chars().all(|ch| ch.is_ascii_alphanumeric()) {
                return Err(StoreError::Invalid(format!("invalid cursor {c:?}")));
            }
        }
        self.page(filter, after, limit, true).await
    }

    /// A page without the size cap of [`Self::list`]; streaming scans leave
    /// out provenance.
    pub(crate) async fn page(
        &self,
        filter: &VehicleFilter,
        after: Option<&str>,
        limit: u32,
        provenance: bool,
    ) -> Result<(Vec<Vehicle>, Option<String>), StoreError> {
        let started = Instant::now();
        let page = sql::list(&self.db, filter, after, limit, provenance).await;
        self.observe("list", started);
        let page = page?;
        let next = (page.len() == limit as usize).then(|| page[page.len() - 1].vin.clone());
        Ok((page, next))
    }

    /// A page of VINs only, and the cursor of the next one.
    pub(crate) async fn vins_page(
        &self,
        filter: &VehicleFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let started = Instant::now();
        let page = sql::list_vins(&self.db, filter, after, limit).await;
        self.observe("list_vins", started);
        let page = page?;
        let next = (page.len() == limit as usize).then(|| page[page.len() - 1].clone());
        Ok((page, next))
    }

    pub async fn count(&self, filter: &VehicleFilter) -> Result<u64, StoreError> {
        let started = Instant::now();
        let n = sql::count(&self.db, filter).await;
        self.observe("count", started);
        n
    }

    /// Writes what `source` says about one vehicle.
    pub async fn upsert(
        &self,
        source: &str,
        patch: VehiclePatch,
    ) -> Result<(Vehicle, bool), StoreError> {
        validate_source(source).map_err(StoreError::Invalid)?;
        patch.validate().map_err(StoreError::Invalid)?;
        let mut tx = self.begin().await?;
        let vin = patch.vin.clone();
        let (mut flags, mut touched) = self
            .merge_batch(&mut tx, source, vec![(0, patch)], false)
            .await?;
        let (_, written) = flags.pop().expect("one flag per record");
        let (created, _) = written?;
        tx.commit().await?;
        let vehicle = touched.remove(&vin).expect("merged vehicle is returned");
        Ok((vehicle, created))
    }

    /// A vehicle's own report of its ECUs and attributes; the vehicle must
    /// already be known, and its `last_seen` moves to now.
    pub async fn report_inventory(&self, patch: VehiclePatch) -> Result<Vehicle, StoreError> {
        patch.validate().map_err(StoreError::Invalid)?;
        let mut tx = self.begin().await?;
        let vin = patch.vin.clone();
        let (mut flags, mut touched) = self
            .merge_batch(&mut tx, "vehicle", vec![(0, patch)], true)
            .await?;
        flags.pop().expect("one flag per record").1?;
        tx.commit().await?;
        Ok(touched.remove(&vin).expect("merged vehicle is returned"))
    }

    /// Records when vehicles were last heard from, in one write for a whole
    /// batch (the adapters collect polls for a few seconds and send them
    /// here). `last_seen` only moves forward, and never past now; unknown
    /// VINs are skipped. Returns how many vehicles moved.
    pub async fn mark_seen(
        &self,
        seen: impl IntoIterator<Item = (String, DateTime<Utc>)>,
    ) -> Result<u64, StoreError> {
        let now = Utc::now();
        let mut latest: HashMap<String, i64> = HashMap::new();
        for (vin, at) in seen {
            if latest.len() >= MAX_SEEN_BATCH {
                return Err(StoreError::Invalid(format!(
                    "more than {MAX_SEEN_BATCH} vehicles in one last-seen batch"
                )));
            }
            let vin = Vin::parse(&vin).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let at = at.min(now).timestamp_millis();
            let slot = latest.entry(vin.into_string()).or_insert(at);
            *slot = (*slot).max(at);
        }
        if latest.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let seen: Vec<(String, i64)> = latest.into_iter().collect();
        let moved = sql::mark_seen(&self.db, &self.sqlite_lock, &seen).await;
        self.observe("mark_seen", started);
        moved
    }

    /// Imports a stream of records from `source`. Valid records are written in
    /// batches; invalid ones are listed with their line. With `strict`, one
    /// invalid record rejects the whole import and nothing is written.
    pub async fn import<S>(
        &self,
        source: &str,
        strict: bool,
        items: S,
    ) -> Result<ImportSummary, StoreError>
    where
        S: Stream<Item = Result<ImportItem, StoreError>> + Send,
    {
        validate_source(source).map_err(StoreError::Invalid)?;
        let started = Instant::now();
        let mut items = std::pin::pin!(items);
        let mut summary = ImportSummary::default();
        // In strict mode one transaction spans the whole import.
        let mut open: Option<VehicleTx> = None;
        let mut batch = Vec::with_capacity(IMPORT_BATCH);
        while let Some(item) = items.next().await {
            match item? {
                ImportItem::Rejected { line, vin, reason } => summary.reject(line, vin, reason),
                ImportItem::Record { line, patch } => match patch.validate() {
                    Ok(_) => batch.push((line, patch)),
                    Err(reason) => summary.reject(line, patch.vin, reason),
                },
            }
            // Keep reading after a strict failure so every bad line is listed.
            if strict && summary.rejected > 0 {
                batch.clear();
                open = None;
            } else if batch.len() >= IMPORT_BATCH {
                self.write_import_batch(&mut open, source, strict, &mut batch, &mut summary)
                    .await?;
            }
        }
        if !(strict && summary.rejected > 0) {
            self.write_import_batch(&mut open, source, strict, &mut batch, &mut summary)
                .await?;
        }
        // The last batch may have refused a line too (a record over a bound
        // shows only once merged).
        if strict && summary.rejected > 0 {
            summary.aborted = true;
            summary.imported = 0;
            summary.updated = 0;
            summary.unchanged = 0;
        } else if let Some(tx) = open {
            tx.commit().await?;
        }
        // Lines refused while their batch was merged were listed after the
        // parse errors of later lines.
        summary.errors.sort_by_key(|e| e.line);
        for (outcome, n) in [
            ("imported", summary.imported),
            ("updated", summary.updated),
            ("unchanged", summary.unchanged),
            ("rejected", summary.rejected),
        ] {
            metrics::counter!("ota_vehicles_imported_total", "source" => source.to_owned(), "outcome" => outcome)
                .increment(n);
        }
        tracing::info!(
            source,
            strict,
            imported = summary.imported,
            updated = summary.updated,
            unchanged = summary.unchanged,
            rejected = summary.rejected,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "import finished"
        );
        Ok(summary)
    }

    async fn write_import_batch(
        &self,
        open: &mut Option<VehicleTx>,
        source: &str,
        strict: bool,
        batch: &mut Vec<(u64, VehiclePatch)>,
        summary: &mut ImportSummary,
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = match open.take() {
            Some(tx) => tx,
            None => self.begin().await?,
        };
        let started = Instant::now();
        let (flags, _) = self
            .merge_batch(&mut tx, source, std::mem::take(batch), false)
            .await?;
        for (line, written) in flags {
            match written {
                Ok((true, _)) => summary.imported += 1,
                Ok((false, true)) => summary.updated += 1,
                Ok((false, false)) => summary.unchanged += 1,
                Err(e) => {
                    let vin = match &e {
                        StoreError::Bound { vin, .. } => vin.clone(),
                        _ => String::new(),
                    };
                    summary.reject(line, vin, e.to_string());
                }
            }
        }
        if strict {
            *open = Some(tx);
        } else {
            tx.commit().await?;
        }
        self.observe("import_batch", started);
        Ok(())
    }

    /// Loads, merges and saves one batch inside `tx`. Returns, for each
    /// record in input order with its line, whether it created / changed
    /// its vehicle or why it was refused (a record that would grow its
    /// vehicle past a bound of `ota_common::vehicle` leaves it as it was,
    /// and the batch goes on), and the final state of every vehicle the
    /// batch touched.
    async fn merge_batch(
        &self,
        tx: &mut VehicleTx,
        source: &str,
        batch: Vec<(u64, VehiclePatch)>,
        touch: bool,
    ) -> Result<(Vec<MergeFlag>, HashMap<String, Vehicle>), StoreError> {
        // Stored timestamps have millisecond precision; what a write returns
        // must equal what a later read gives.
        let now = Utc::now().trunc_subsecs(3);
        let mut vins: Vec<String> = batch.iter().map(|(_, p)| p.vin.clone()).collect();
        vins.sort_unstable();
        vins.dedup();
        let mut current = tx.load(&vins).await?;
        if touch {
            if let Some((_, p)) = batch.iter().find(|(_, p)| !current.contains_key(&p.vin)) {
                return Err(StoreError::NotFound(p.vin.clone()));
            }
        }
        // A VIN may occur several times in one batch: later records merge
        // onto the earlier ones' result.
        let mut dirty: BTreeMap<String, Vehicle> = BTreeMap::new();
        let mut flags = Vec::with_capacity(batch.len());
        for (line, patch) in &batch {
            let (prior, was_dirty) = match dirty.remove(&patch.vin) {
                Some(v) => (Some(v), true),
                None => (current.remove(&patch.vin), false),
            };
            let mut m = merge(prior, patch, source, &self.precedence, now);
            if let Err(b) = m.vehicle.check_bounds(m.before.as_ref()) {
                flags.push((
                    *line,
                    Err(StoreError::Bound {
                        vin: patch.vin.clone(),
                        field: b.field,
                        count: b.count,
                        limit: b.limit,
                    }),
                ));
                if let Some(v) = m.before {
                    match was_dirty {
                        true => dirty.insert(patch.vin.clone(), v),
                        false => current.insert(patch.vin.clone(), v),
                    };
                }
                continue;
            }
            if touch {
                m.vehicle.last_seen = Some(now);
                m.changed = true;
            }
            flags.push((*line, Ok((m.created, m.changed))));
            if m.changed || m.created || was_dirty {
                dirty.insert(patch.vin.clone(), m.vehicle);
            } else {
                current.insert(patch.vin.clone(), m.vehicle);
            }
        }
        let rows: Vec<Vehicle> = dirty.into_values().collect();
        tx.save(&rows).await?;
        current.extend(rows.into_iter().map(|v| (v.vin.clone(), v)));
        Ok((flags, current))
    }

    fn observe(&self, op: &'static str, started: Instant) {
        metrics::histogram!("ota_vehicle_store_op_duration_seconds", "op" => op, "backend" => self.db.backend())
            .record(started.elapsed().as_secs_f64());
    }
}
