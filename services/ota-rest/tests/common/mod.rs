//! The services behind the REST router, in-process on a test database
//! (`ota_tests::platform::Services`).

use ota_common::peer::Peer;

pub struct Peers {
    pub vehicles: Peer,
    pub rules: Peer,
    pub campaigns: Peer,
}

/// The vehicle store, rule engine and campaign manager over `db`.
pub fn peers(db: &ota_db::Db) -> Peers {
    let s = ota_tests::platform::Services::new(db);
    Peers {
        vehicles: s.vehicle_peer,
        rules: s.rule_peer,
        campaigns: s.campaign_peer,
    }
}
