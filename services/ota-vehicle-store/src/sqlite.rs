//! The embedded SQLite backend. SQLite has one writer at a time, so writes
//! take `BEGIN IMMEDIATE` and a process-wide lock up front instead of failing
//! with SQLITE_BUSY when a read transaction tries to upgrade.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use ota_common::vehicle::Vehicle;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::backend::{millis, Backend, JsonColumns, Row, WriteTx, COLUMNS};
use crate::{StoreError, VehicleFilter};

/// SQLite allows 32766 bound parameters per statement; 15 per row.
const ROWS_PER_STATEMENT: usize = 2000;

pub struct SqliteBackend {
    pool: SqlitePool,
    write_lock: Arc<Mutex<()>>,
}

impl SqliteBackend {
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            write_lock: Arc::new(Mutex::new(())),
        }
    }
}

fn select() -> QueryBuilder<'static, Sqlite> {
    QueryBuilder::new(format!("SELECT {} FROM vehicles", COLUMNS.join(", ")))
}

fn select_without_provenance() -> QueryBuilder<'static, Sqlite> {
    let cols: Vec<&str> = COLUMNS
        .iter()
        .map(|c| {
            if *c == "provenance" {
                "'{}' AS provenance"
            } else {
                c
            }
        })
        .collect();
    QueryBuilder::new(format!("SELECT {} FROM vehicles", cols.join(", ")))
}

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn get(&self, vin: &str) -> Result<Option<Vehicle>, StoreError> {
        let mut q = select();
        q.push(" WHERE vin = ").push_bind(vin.to_owned());
        let row: Option<Row> = q.build_query_as().fetch_optional(&self.pool).await?;
        row.map(Row::into_vehicle).transpose()
    }

    async fn list(
        &self,
        f: &VehicleFilter,
        after: Option<&str>,
        limit: u32,
        provenance: bool,
    ) -> Result<Vec<Vehicle>, StoreError> {
        let mut q = if provenance {
            select()
        } else {
            select_without_provenance()
        };
        q.push(" WHERE 1=1");
        push_filter(&mut q, f);
        if let Some(a) = after {
            q.push(" AND vin > ").push_bind(a.to_owned());
        }
        q.push(" ORDER BY vin LIMIT ").push_bind(limit as i64);
        let rows: Vec<Row> = q.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter().map(Row::into_vehicle).collect()
    }

    async fn list_vins(
        &self,
        f: &VehicleFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT vin FROM vehicles WHERE 1=1");
        push_filter(&mut q, f);
        if let Some(a) = after {
            q.push(" AND vin > ").push_bind(a.to_owned());
        }
        q.push(" ORDER BY vin LIMIT ").push_bind(limit as i64);
        Ok(q.build_query_scalar().fetch_all(&self.pool).await?)
    }

    async fn count(&self, f: &VehicleFilter) -> Result<u64, StoreError> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT COUNT(*) FROM vehicles WHERE 1=1");
        push_filter(&mut q, f);
        let n: i64 = q.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    async fn begin(&self) -> Result<Box<dyn WriteTx>, StoreError> {
        let guard = self.write_lock.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Box::new(SqliteTx {
            tx,
            _guard: guard,
            changed: Vec::new(),
        }))
    }
}

/// `AND ...` for every set filter.
fn push_filter(q: &mut QueryBuilder<'static, Sqlite>, f: &VehicleFilter) {
    for (col, val) in f.text_columns() {
        q.push(format_args!(" AND {col} = "))
            .push_bind(val.to_owned());
    }
    if let Some(y) = f.model_year {
        q.push(" AND model_year = ").push_bind(y);
    }
    if let Some(tag) = &f.tag {
        q.push(" AND EXISTS (SELECT 1 FROM json_each(vehicles.tags) WHERE json_each.value = ")
            .push_bind(tag.clone())
            .push(")");
    }
}

struct SqliteTx {
    tx: sqlx::Transaction<'static, Sqlite>,
    _guard: OwnedMutexGuard<()>,
    /// Saved VINs, announced on commit.
    changed: Vec<String>,
}

#[async_trait]
impl WriteTx for SqliteTx {
    async fn load(&mut self, vins: &[String]) -> Result<HashMap<String, Vehicle>, StoreError> {
        let mut out = HashMap::with_capacity(vins.len());
        for chunk in vins.chunks(ROWS_PER_STATEMENT * 10) {
            let mut q = select();
            q.push(" WHERE vin IN (");
            let mut sep = q.separated(", ");
            for vin in chunk {
                sep.push_bind(vin.clone());
            }
            q.push(")");
            let rows: Vec<Row> = q.build_query_as().fetch_all(&mut *self.tx).await?;
            for r in rows {
                let v = r.into_vehicle()?;
                out.insert(v.vin.clone(), v);
            }
        }
        Ok(out)
    }

    async fn save(&mut self, rows: &[Vehicle]) -> Result<(), StoreError> {
        self.changed.extend(rows.iter().map(|v| v.vin.clone()));
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("INSERT INTO vehicles ({}) ", COLUMNS.join(", ")));
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
                    .push_bind(v.last_seen.map(millis))
                    .push_bind(millis(v.created_at))
                    .push_bind(millis(v.updated_at));
            });
            q.push(" ON CONFLICT (vin) DO UPDATE SET ");
            let mut sep = q.separated(", ");
            for col in &COLUMNS[1..] {
                sep.push(format_args!("{col} = excluded.{col}"));
            }
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let mut this = *self;
        let events = crate::backend::change_events(&this.changed);
        ota_bus::outbox::enqueue(&mut *this.tx, ota_bus::topics::VEHICLES, &events).await?;
        this.tx.commit().await?;
        Ok(())
    }
}
