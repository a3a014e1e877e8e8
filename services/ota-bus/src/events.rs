//! The events services exchange, as JSON payloads.

use serde::{Deserialize, Serialize};

pub mod topics {
    /// Vehicle inventory changed ([`super::VehicleEvent`]); the campaign
    /// manager re-decides which campaigns the vehicles belong to.
    pub const VEHICLES: &str = "vehicles";
    /// Vehicles whose staged document must be recomputed
    /// ([`super::StagingEvent`]).
    pub const STAGING: &str = "staging";
    /// Staged documents that changed ([`super::StagedEvent`]); the MQTT
    /// adapter republishes them to the vehicles.
    pub const STAGED: &str = "staged";
    /// Installs vehicles reported as succeeded ([`super::InstalledEvent`]);
    /// the campaign manager records the new software in the inventory.
    pub const INSTALLED: &str = "installed";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VehicleEvent {
    /// Created or changed vehicles (import, upsert, inventory report).
    Changed {
        vins: Vec<String>,
        /// When the change committed, unix milliseconds.
        at_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StagingEvent {
    /// These vehicles' open actions changed.
    Vins { vins: Vec<String>, at_ms: i64 },
    /// Every vehicle with an action in this campaign (launch, pause, resume,
    /// abort, priority or package change).
    Campaign { campaign_id: String, at_ms: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InstalledEvent {
    /// These actions finished with `succeeded`: each vehicle's ECU now runs
    /// the action's package.
    Succeeded {
        installs: Vec<Install>,
        /// When the reports committed, unix milliseconds.
        at_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Install {
    pub vin: String,
    pub action_id: String,
    pub ecu: String,
    pub package_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StagedEvent {
    /// These vehicles' staged documents were written or removed.
    Changed { vins: Vec<String>, at_ms: i64 },
}
