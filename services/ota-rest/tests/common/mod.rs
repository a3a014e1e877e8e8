//! The services behind the REST router, in-process on a test database.

use std::sync::Arc;

use ota_common::peer::{self, Peer};
use ota_rule_engine::{RuleEngineService, StoreVehicles};
use ota_vehicle_store::grpc::VehicleStoreService;
use ota_vehicle_store::{Precedence, VehicleStore};

pub struct Peers {
    pub vehicles: Peer,
    pub rules: Peer,
    pub campaigns: Peer,
}

/// The vehicle store, rule engine and campaign manager over `db`.
pub fn peers(db: &ota_db::Db) -> Peers {
    let store =
        VehicleStoreService::new(VehicleStore::new(db, Precedence::default())).into_server();
    let vehicles = peer::in_process(store);
    let rules = peer::in_process(
        RuleEngineService::new(StoreVehicles::new(vehicles.clone())).into_server(),
    );
    let store =
        ota_campaign_manager::store::Store::new(db.clone(), Arc::new(tokio::sync::Notify::new()));
    let manager = ota_campaign_manager::CampaignManager::new(
        store,
        rules.clone(),
        Arc::new(StoreVehicles::new(vehicles.clone())),
        ota_campaign_manager::Config::default(),
    );
    let campaigns =
        peer::in_process(ota_campaign_manager::CampaignManagerService::new(manager).into_server());
    Peers {
        vehicles,
        rules,
        campaigns,
    }
}
