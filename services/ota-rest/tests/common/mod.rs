//! The services behind the REST router, in-process on a test database
//! (`ota_tests::platform::Services`).

use ota_common::peer::Peer;

pub struct Peers {
    pub vehicles: Peer,
    pub rules: Peer,
    pub campaigns: Peer,
}

impl Peers {
    /// The REST state over these services.
    pub fn state(
        self,
        tokens: ota_auth::TokenStore,
        limits: ota_rest::Limits,
    ) -> ota_rest::RestState {
        ota_rest::RestState::new(tokens, self.vehicles, self.rules, self.campaigns, limits)
    }
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
