//! The PostgreSQL backend. Batches are written with one `INSERT ... SELECT
//! FROM UNNEST(...)` per batch (a handful of array parameters instead of
//! thousands of scalars), and rows are locked in VIN order so concurrent
//! imports of overlapping files cannot deadlock.

use std::collections::HashMap;

use async_trait::async_trait;
use ota_common::vehicle::Vehicle;
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::backend::{millis, Backend, JsonColumns, Row, WriteTx, COLUMNS};
use crate::{StoreError, VehicleFilter};

pub struct PostgresBackend {
    pool: PgPool,
}

impl PostgresBackend {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn select() -> QueryBuilder<'static, Postgres> {
    select_columns(true)
}

fn select_without_provenance() -> QueryBuilder<'static, Postgres> {
    select_columns(false)
}

fn select_columns(provenance: bool) -> QueryBuilder<'static, Postgres> {
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|c| match *c {
            "provenance" if !provenance => "'{}' AS provenance".to_owned(),
            "tags" | "attributes" | "ecus" | "provenance" => format!("{c}::text AS {c}"),
            _ => (*c).to_owned(),
        })
        .collect();
    QueryBuilder::new(format!("SELECT {} FROM vehicles", cols.join(", ")))
}

#[async_trait]
impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
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
        q.push(" WHERE TRUE");
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
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT vin FROM vehicles WHERE TRUE");
        push_filter(&mut q, f);
        if let Some(a) = after {
            q.push(" AND vin > ").push_bind(a.to_owned());
        }
        q.push(" ORDER BY vin LIMIT ").push_bind(limit as i64);
        Ok(q.build_query_scalar().fetch_all(&self.pool).await?)
    }

    async fn count(&self, f: &VehicleFilter) -> Result<u64, StoreError> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT COUNT(*) FROM vehicles WHERE TRUE");
        push_filter(&mut q, f);
        let n: i64 = q.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    async fn begin(&self) -> Result<Box<dyn WriteTx>, StoreError> {
        Ok(Box::new(PgTx {
            tx: self.pool.begin().await?,
            changed: Vec::new(),
        }))
    }
}

/// `AND ...` for every set filter.
fn push_filter(q: &mut QueryBuilder<'static, Postgres>, f: &VehicleFilter) {
    for (col, val) in f.text_columns() {
        q.push(format_args!(" AND {col} = "))
            .push_bind(val.to_owned());
    }
    if let Some(y) = f.model_year {
        q.push(" AND model_year = ").push_bind(y);
    }
    if let Some(tag) = &f.tag {
        q.push(" AND tags @> jsonb_build_array(")
            .push_bind(tag.clone())
            .push("::text)");
    }
}

struct PgTx {
    tx: sqlx::Transaction<'static, Postgres>,
    /// Saved VINs, announced on commit.
    changed: Vec<String>,
}

#[async_trait]
impl WriteTx for PgTx {
    async fn load(&mut self, vins: &[String]) -> Result<HashMap<String, Vehicle>, StoreError> {
        let mut sorted = vins.to_vec();
        sorted.sort_unstable();
        let mut q = select();
        q.push(" WHERE vin = ANY(")
            .push_bind(sorted)
            .push(") ORDER BY vin FOR UPDATE");
        let rows: Vec<Row> = q.build_query_as().fetch_all(&mut *self.tx).await?;
        rows.into_iter()
            .map(|r| r.into_vehicle().map(|v| (v.vin.clone(), v)))
            .collect()
    }

    async fn save(&mut self, rows: &[Vehicle]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.changed.extend(rows.iter().map(|v| v.vin.clone()));
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
            last_seen.push(v.last_seen.map(millis));
            created_at.push(millis(v.created_at));
            updated_at.push(millis(v.updated_at));
        }
        let updates: Vec<String> = COLUMNS[1..]
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let sql = format!(
            "INSERT INTO vehicles ({cols}) \
             SELECT u.vin, u.model, u.model_year, u.platform, u.gateway, u.protocol, u.region, \
                    u.country, u.tags::jsonb, u.attributes::jsonb, u.ecus::jsonb, \
                    u.provenance::jsonb, u.last_seen, u.created_at, u.updated_at \
             FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::text[], \
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                         $12::text[], $13::int8[], $14::int8[], $15::int8[]) \
                  AS u({cols}) \
             ON CONFLICT (vin) DO UPDATE SET {updates}",
            cols = COLUMNS.join(", "),
            updates = updates.join(", ")
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
            .bind(last_seen)
            .bind(created_at)
            .bind(updated_at)
            .execute(&mut *self.tx)
            .await?;
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
