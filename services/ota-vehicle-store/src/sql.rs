//! The `vehicles` table on both databases. The merge logic lives in
//! [`crate::VehicleStore`]; this module only loads and saves rows, so SQLite
//! and PostgreSQL share every rule about what a write means. Where the
//! dialects differ, one `match` says how:
//!
//! - PostgreSQL keeps the documents in JSONB and SELECTs cast them to text,
//!   so one [`Row`] decodes both; SQLite stores the JSON text itself.
//! - The tag filter is `tags @> ...` on PostgreSQL and `json_each` on SQLite.
//! - A write transaction is `BEGIN IMMEDIATE` under the store's writer lock
//!   on SQLite (one writer at a time, no failed lock upgrades). PostgreSQL
//!   locks the rows it loads in VIN order, so concurrent imports of
//!   overlapping files cannot deadlock.
//! - PostgreSQL writes a batch with one `INSERT ... SELECT FROM UNNEST(...)`
//!   (a handful of array parameters instead of thousands of scalars); SQLite
//!   with multi-row `VALUES` under its limit of bound parameters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use ota_common::vehicle::Vehicle;
use ota_db::{with_pool, Conn, Db, Dialect};
use sqlx::{Database, Encode, QueryBuilder, Type};
use tokio::sync::Mutex;

use crate::{StoreError, VehicleFilter};

/// SQLite allows 32766 bound parameters per statement; 16 per row.
const SQLITE_ROWS_PER_STATEMENT: usize = 2000;
/// VINs per change event in the outbox.
const VINS_PER_EVENT: usize = 1000;

/// The columns of `vehicles`, in the order of every SELECT and INSERT.
const COLUMNS: [&str; 16] = [
    "vin",
    "model",
    "model_year",
    "platform",
    "gateway",
    "protocol",
    "region",
    "country",
    "tags",
    "attributes",
    "ecus",
    "provenance",
    "provenance_at",
    "last_seen",
    "created_at",
    "updated_at",
];

#[derive(sqlx::FromRow)]
struct Row {
    pub vin: String,
    pub model: Option<String>,
    pub model_year: Option<i32>,
    pub platform: Option<String>,
    pub gateway: Option<String>,
    pub protocol: Option<String>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub tags: String,
    pub attributes: String,
    pub ecus: String,
    pub provenance: String,
    pub provenance_at: String,
    pub last_seen: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Row {
    pub fn into_vehicle(self) -> Result<Vehicle, StoreError> {
        let vin = self.vin;
        let corrupt = |what: &str, e: serde_json::Error| StoreError::Corrupt {
            vin: vin.clone(),
            reason: format!("{what}: {e}"),
        };
        Ok(Vehicle {
            tags: serde_json::from_str(&self.tags).map_err(|e| corrupt("tags", e))?,
            attributes: serde_json::from_str(&self.attributes)
                .map_err(|e| corrupt("attributes", e))?,
            ecus: serde_json::from_str(&self.ecus).map_err(|e| corrupt("ecus", e))?,
            provenance: serde_json::from_str(&self.provenance)
                .map_err(|e| corrupt("provenance", e))?,
            provenance_at: serde_json::from_str::<BTreeMap<String, i64>>(&self.provenance_at)
                .map_err(|e| corrupt("provenance_at", e))?
                .into_iter()
                .map(|(k, ms)| (k, from_millis(ms)))
                .collect(),
            model: self.model,
            model_year: self.model_year,
            platform: self.platform,
            gateway: self.gateway,
            protocol: self.protocol,
            region: self.region,
            country: self.country,
            last_seen: self.last_seen.map(from_millis),
            created_at: from_millis(self.created_at),
            updated_at: from_millis(self.updated_at),
            vin,
        })
    }
}

/// The JSON texts of a vehicle's document columns, in [`COLUMNS`] order.
struct JsonColumns {
    pub tags: String,
    pub attributes: String,
    pub ecus: String,
    pub provenance: String,
    /// Field path to milliseconds since the epoch.
    pub provenance_at: String,
}

impl JsonColumns {
    pub fn of(v: &Vehicle) -> Self {
        // Serializing plain maps and vectors of strings cannot fail.
        let json = |r: Result<String, serde_json::Error>| r.expect("serializable");
        Self {
            tags: json(serde_json::to_string(&v.tags)),
            attributes: json(serde_json::to_string(&v.attributes)),
            ecus: json(serde_json::to_string(&v.ecus)),
            provenance: json(serde_json::to_string(&v.provenance)),
            provenance_at: json(serde_json::to_string(
                &v.provenance_at
                    .iter()
                    .map(|(k, t)| (k, millis(*t)))
                    .collect::<BTreeMap<_, _>>(),
            )),
        }
    }
}

/// `SELECT` of [`COLUMNS`] from the vehicles. Without `provenance` the
/// (large) provenance maps are left empty: full scans for targeting never
/// read them.
fn select(d: Dialect, provenance: bool) -> String {
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|c| match (*c, d) {
            ("provenance" | "provenance_at", _) if !provenance => format!("'{{}}' AS {c}"),
            (
                "tags" | "attributes" | "ecus" | "provenance" | "provenance_at",
                Dialect::Postgres,
            ) => {
                format!("{c}::text AS {c}")
            }
            _ => (*c).to_owned(),
        })
        .collect();
    format!("SELECT {} FROM vehicles", cols.join(", "))
}

/// `AND ...` for every set filter and for `after`; with a `limit`, the page
/// in VIN order.
fn push_page<'a, DB>(
    q: &mut QueryBuilder<'a, DB>,
    d: Dialect,
    f: &VehicleFilter,
    after: Option<&str>,
    limit: Option<u32>,
) where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i32: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    for (col, val) in f.text_columns() {
        q.push(format_args!(" AND {col} = "))
            .push_bind(val.to_owned());
    }
    if let Some(y) = f.model_year {
        q.push(" AND model_year = ").push_bind(y);
    }
    if let Some(tag) = &f.tag {
        match d {
            Dialect::Sqlite => q
                .push(
                    " AND EXISTS (SELECT 1 FROM json_each(vehicles.tags) WHERE json_each.value = ",
                )
                .push_bind(tag.clone())
                .push(")"),
            Dialect::Postgres => q
                .push(" AND tags @> jsonb_build_array(")
                .push_bind(tag.clone())
                .push("::text)"),
        };
    }
    if let Some(a) = after {
        q.push(" AND vin > ").push_bind(a.to_owned());
    }
    if let Some(limit) = limit {
        q.push(" ORDER BY vin LIMIT ").push_bind(limit as i64);
    }
}

pub(crate) async fn get(db: &Db, vin: &str) -> Result<Option<Vehicle>, StoreError> {
    let sql = select(db.dialect(), true);
    let row: Option<Row> = with_pool!(db, pool => {
        let mut q = QueryBuilder::new(sql);
        q.push(" WHERE vin = ").push_bind(vin.to_owned());
        q.build_query_as().fetch_optional(pool).await?
    });
    row.map(Row::into_vehicle).transpose()
}

/// Vehicles matching `filter` with a VIN greater than `after`, by VIN.
pub(crate) async fn list(
    db: &Db,
    filter: &VehicleFilter,
    after: Option<&str>,
    limit: u32,
    provenance: bool,
) -> Result<Vec<Vehicle>, StoreError> {
    let d = db.dialect();
    let rows: Vec<Row> = with_pool!(db, pool => {
        let mut q = QueryBuilder::new(select(d, provenance));
        q.push(" WHERE TRUE");
        push_page(&mut q, d, filter, after, Some(limit));
        q.build_query_as().fetch_all(pool).await?
    });
    rows.into_iter().map(Row::into_vehicle).collect()
}

/// VINs only, in order, after `after`.
pub(crate) async fn list_vins(
    db: &Db,
    filter: &VehicleFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let d = db.dialect();
    Ok(with_pool!(db, pool => {
        let mut q = QueryBuilder::new("SELECT vin FROM vehicles WHERE TRUE");
        push_page(&mut q, d, filter, after, Some(limit));
        q.build_query_scalar().fetch_all(pool).await?
    }))
}

pub(crate) async fn count(db: &Db, filter: &VehicleFilter) -> Result<u64, StoreError> {
    let d = db.dialect();
    let n: i64 = with_pool!(db, pool => {
        let mut q = QueryBuilder::new("SELECT COUNT(*) FROM vehicles WHERE TRUE");
        push_page(&mut q, d, filter, None, None);
        q.build_query_scalar().fetch_one(pool).await?
    });
    Ok(n as u64)
}

/// A write transaction on the vehicles; dropping it without commit rolls
/// back. Commit announces the saved vehicles in the outbox.
pub(crate) struct VehicleTx {
    tx: ota_db::WriteTx,
    changed: Vec<String>,
}

impl VehicleTx {
    pub async fn begin(db: &Db, sqlite_lock: &Arc<Mutex<()>>) -> Result<Self, StoreError> {
        Ok(Self {
            tx: ota_db::WriteTx::begin(db, sqlite_lock).await?,
            changed: Vec::new(),
        })
    }

    /// The stored vehicles among `vins` (sorted and distinct), on PostgreSQL
    /// locked until commit; on SQLite the writer lock already keeps every
    /// other writer out.
    pub async fn load(&mut self, vins: &[String]) -> Result<HashMap<String, Vehicle>, StoreError> {
        let mut out = HashMap::with_capacity(vins.len());
        match self.tx.conn() {
            Conn::Sqlite(c) => {
                for chunk in vins.chunks(SQLITE_ROWS_PER_STATEMENT * 10) {
                    let mut q = QueryBuilder::new(select(Dialect::Sqlite, true));
                    q.push(" WHERE vin IN (");
                    let mut sep = q.separated(", ");
                    for vin in chunk {
                        sep.push_bind(vin.clone());
                    }
                    q.push(")");
                    decode_into(&mut out, q.build_query_as().fetch_all(&mut *c).await?)?;
                }
            }
            Conn::Postgres(c) => {
                let mut sorted = vins.to_vec();
                sorted.sort_unstable();
                let mut q = QueryBuilder::new(select(Dialect::Postgres, true));
                q.push(" WHERE vin = ANY(")
                    .push_bind(sorted)
                    .push(") ORDER BY vin FOR UPDATE");
                decode_into(&mut out, q.build_query_as().fetch_all(&mut *c).await?)?;
            }
        }
        Ok(out)
    }

    /// Inserts or replaces whole rows.
    pub async fn save(&mut self, rows: &[Vehicle]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.changed.extend(rows.iter().map(|v| v.vin.clone()));
        match self.tx.conn() {
            Conn::Sqlite(c) => save_sqlite(c, rows).await?,
            Conn::Postgres(c) => save_postgres(c, rows).await?,
        }
        Ok(())
    }

    pub async fn commit(mut self) -> Result<(), StoreError> {
        let events = change_events(&self.changed);
        ota_bus::outbox::enqueue(self.tx.conn(), ota_bus::topics::VEHICLES, &events).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

fn decode_into(out: &mut HashMap<String, Vehicle>, rows: Vec<Row>) -> Result<(), StoreError> {
    for r in rows {
        let v = r.into_vehicle()?;
        out.insert(v.vin.clone(), v);
    }
    Ok(())
}

/// ` ON CONFLICT (vin) DO UPDATE SET` every column but the VIN.
fn replace_on_conflict() -> String {
    let updates: Vec<String> = COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(" ON CONFLICT (vin) DO UPDATE SET {}", updates.join(", "))
}

async fn save_sqlite(c: &mut sqlx::SqliteConnection, rows: &[Vehicle]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::new(format!("INSERT INTO vehicles ({}) ", COLUMNS.join(", ")));
        q.push_values(chunk, |mut b, v| {
            let j = JsonColumns::of(v);
            b.push_bind(v.vin.clone())
                .push_bind(v.model.clone())
                .push_bind(v.model_year)
                .push_bind(v.platform.clone())
                .push_bind(v.gateway.clone())
                .push_bind(v.protocol.clone())
                .push_bind(v.region.clone())
                .push_bind(v.country.clone())
                .push_bind(j.tags)
                .push_bind(j.attributes)
                .push_bind(j.ecus)
                .push_bind(j.provenance)
                .push_bind(j.provenance_at)
                .push_bind(v.last_seen.map(millis))
                .push_bind(millis(v.created_at))
                .push_bind(millis(v.updated_at));
        });
        q.push(replace_on_conflict());
        q.build().execute(&mut *c).await?;
    }
    Ok(())
}

/// One statement for the batch, in VIN order (the order of its row locks).
async fn save_postgres(c: &mut sqlx::PgConnection, rows: &[Vehicle]) -> Result<(), sqlx::Error> {
    let n = rows.len();
    let mut vin = Vec::with_capacity(n);
    let mut model = Vec::with_capacity(n);
    let mut model_year = Vec::with_capacity(n);
    let mut platform = Vec::with_capacity(n);
    let mut gateway = Vec::with_capacity(n);
    let mut protocol = Vec::with_capacity(n);
    let mut region = Vec::with_capacity(n);
    let mut country = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut attributes = Vec::with_capacity(n);
    let mut ecus = Vec::with_capacity(n);
    let mut provenance = Vec::with_capacity(n);
    let mut provenance_at = Vec::with_capacity(n);
    let mut last_seen = Vec::with_capacity(n);
    let mut created_at = Vec::with_capacity(n);
    let mut updated_at = Vec::with_capacity(n);
    let mut sorted: Vec<&Vehicle> = rows.iter().collect();
    sorted.sort_unstable_by(|a, b| a.vin.cmp(&b.vin));
    for v in sorted {
        let j = JsonColumns::of(v);
        vin.push(v.vin.clone());
        model.push(v.model.clone());
        model_year.push(v.model_year);
        platform.push(v.platform.clone());
        gateway.push(v.gateway.clone());
        protocol.push(v.protocol.clone());
        region.push(v.region.clone());
        country.push(v.country.clone());
        tags.push(j.tags);
        attributes.push(j.attributes);
        ecus.push(j.ecus);
        provenance.push(j.provenance);
        provenance_at.push(j.provenance_at);
        last_seen.push(v.last_seen.map(millis));
        created_at.push(millis(v.created_at));
        updated_at.push(millis(v.updated_at));
    }
    let sql = format!(
        "INSERT INTO vehicles ({cols}) \
         SELECT u.vin, u.model, u.model_year, u.platform, u.gateway, u.protocol, u.region, \
                u.country, u.tags::jsonb, u.attributes::jsonb, u.ecus::jsonb, \
                u.provenance::jsonb, u.provenance_at::jsonb, u.last_seen, u.created_at, \
                u.updated_at \
         FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                     $12::text[], $13::text[], $14::int8[], $15::int8[], $16::int8[]) \
              AS u({cols}){conflict}",
        cols = COLUMNS.join(", "),
        conflict = replace_on_conflict()
    );
    sqlx::query(&sql)
        .bind(vin)
        .bind(model)
        .bind(model_year)
        .bind(platform)
        .bind(gateway)
        .bind(protocol)
        .bind(region)
        .bind(country)
        .bind(tags)
        .bind(attributes)
        .bind(ecus)
        .bind(provenance)
        .bind(provenance_at)
        .bind(last_seen)
        .bind(created_at)
        .bind(updated_at)
        .execute(c)
        .await?;
    Ok(())
}

/// Moves each vehicle's `last_seen` forward to the given time (milliseconds
/// since the epoch), never back; unknown VINs are skipped. Returns how many
/// rows moved. Not a change of the vehicle: `updated_at` stays and no
/// change event is sent, so a fleet that polls does not re-decide itself
/// every few seconds.
pub(crate) async fn mark_seen(
    db: &Db,
    sqlite_lock: &Arc<Mutex<()>>,
    seen: &[(String, i64)],
) -> Result<u64, StoreError> {
    let mut tx = ota_db::WriteTx::begin(db, sqlite_lock).await?;
    let moved = match tx.conn() {
        Conn::Sqlite(c) => {
            let mut n = 0;
            for (vin, at) in seen {
                n += sqlx::query(
                    "UPDATE vehicles SET last_seen = ?1 \
                     WHERE vin = ?2 AND (last_seen IS NULL OR last_seen < ?1)",
                )
                .bind(at)
                .bind(vin)
                .execute(&mut *c)
                .await?
                .rows_affected();
            }
            n
        }
        Conn::Postgres(c) => {
            // In VIN order, the order imports lock rows in.
            let mut sorted: Vec<&(String, i64)> = seen.iter().collect();
            sorted.sort_unstable();
            let (vins, ats): (Vec<&str>, Vec<i64>) =
                sorted.iter().map(|(v, at)| (v.as_str(), *at)).unzip();
            sqlx::query(
                "UPDATE vehicles AS v SET last_seen = u.at \
                 FROM (SELECT * FROM UNNEST($1::text[], $2::int8[]) AS u(vin, at) ORDER BY vin) u \
                 WHERE v.vin = u.vin AND (v.last_seen IS NULL OR v.last_seen < u.at)",
            )
            .bind(vins)
            .bind(ats)
            .execute(&mut *c)
            .await?
            .rows_affected()
        }
    };
    tx.commit().await?;
    Ok(moved)
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The outbox events announcing that these vehicles changed, so that
/// running campaigns can re-decide them.
fn change_events(vins: &[String]) -> Vec<String> {
    let at_ms = chrono::Utc::now().timestamp_millis();
    vins.chunks(VINS_PER_EVENT)
        .map(|chunk| {
            ota_bus::outbox::payload(&ota_bus::VehicleEvent::Changed {
                vins: chunk.to_vec(),
                at_ms,
            })
        })
        .collect()
}
