//! What a database must offer the vehicle store. The merge logic lives in
//! [`crate::VehicleStore`]; a backend only loads and saves rows, so SQLite and
//! PostgreSQL share every rule about what a write means.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use ota_common::vehicle::Vehicle;

use crate::{StoreError, VehicleFilter};

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn get(&self, vin: &str) -> Result<Option<Vehicle>, StoreError>;
    /// Vehicles matching `filter` with a VIN greater than `after`, by VIN.
    /// Without `provenance` the (large) provenance map is left empty: full
    /// scans for targeting never read it.
    async fn list(
        &self,
        filter: &VehicleFilter,
        after: Option<&str>,
        limit: u32,
        provenance: bool,
    ) -> Result<Vec<Vehicle>, StoreError>;
    async fn count(&self, filter: &VehicleFilter) -> Result<u64, StoreError>;
    /// VINs only, in order, after `after`.
    async fn list_vins(
        &self,
        filter: &VehicleFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// A write transaction; dropping it without commit rolls back.
    async fn begin(&self) -> Result<Box<dyn WriteTx>, StoreError>;
}

#[async_trait]
pub trait WriteTx: Send {
    /// The stored vehicles among `vins`, locked until commit where the
    /// database supports row locks.
    async fn load(&mut self, vins: &[String]) -> Result<HashMap<String, Vehicle>, StoreError>;
    /// Inserts or replaces whole rows.
    async fn save(&mut self, rows: &[Vehicle]) -> Result<(), StoreError>;
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Column list shared by both backends' SELECTs (PostgreSQL casts its JSONB
/// columns to text so one row type decodes both).
pub(crate) const COLUMNS: [&str; 15] = [
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
    "last_seen",
    "created_at",
    "updated_at",
];

#[derive(sqlx::FromRow)]
pub(crate) struct Row {
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
pub(crate) struct JsonColumns {
    pub tags: String,
    pub attributes: String,
    pub ecus: String,
    pub provenance: String,
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
        }
    }
}

pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// VINs per change event in the outbox.
const VINS_PER_EVENT: usize = 1000;

/// The outbox events announcing that these vehicles changed, so that
/// running campaigns can re-decide them.
pub(crate) fn change_events(vins: &[String]) -> Vec<String> {
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
