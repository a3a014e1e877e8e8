//! The platform in-process on a fresh database (either backend): the
//! vehicle store, rule engine, campaign manager and staging (in-memory
//! store) behind their in-process peers, an in-memory bus with the outbox
//! relay, and vehicle credentials, with the scenario steps every crate's
//! tests take (a fleet with tokens, a package, a campaign approved and
//! launched with its first wave staged). The adapters' tests put their own
//! router or broker in front of it.

use std::sync::Arc;

use ota_auth::vehicles::VehicleCredentials;
use ota_bus::memory::MemoryBus;
use ota_bus::outbox::Relay;
use ota_bus::SharedBus;
use ota_campaign_manager::model::Transition;
use ota_campaign_manager::store::Store;
use ota_campaign_manager::{Actor, CampaignManager, CampaignManagerService, Config};
use ota_common::peer::{self, Peer};
use ota_common::vehicle::VehiclePatch;
use ota_proto::v1 as pb;
use ota_rule_engine::{RuleEngineService, StoreVehicles};
use ota_staging::{campaign_manager_source, MemoryStore, Stager, StagingPeer, StagingService};
use ota_vehicle_store::grpc::VehicleStoreService;
use ota_vehicle_store::{Precedence, VehicleStore};

use crate::db::TestDb;

/// The test fleet's VINs: vehicle `i` of a platform.
pub fn vin(i: u32) -> String {
    format!("WVWZZZE1ZMP{i:06}")
}

/// The engineer who writes and launches campaigns in tests.
pub fn engineer() -> Actor {
    Actor {
        name: "erin".into(),
        role: "engineer".into(),
    }
}

/// The second person, who approves.
pub fn approver() -> Actor {
    Actor {
        name: "alex".into(),
        role: "approver".into(),
    }
}

/// How the platform is built; `Default` is what most tests want.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `poll_after_s` of the staged documents.
    pub poll_after_s: u32,
    /// The public URL staging puts in front of hosted artifact references.
    pub public_url: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            poll_after_s: 300,
            public_url: String::new(),
        }
    }
}

/// The gRPC services without staging: the vehicle store, the rule engine
/// and the campaign manager over `db`, with the bus and relay the
/// campaign manager writes events through.
pub struct Services {
    pub vehicles: VehicleStore,
    pub vehicle_peer: Peer,
    pub rule_peer: Peer,
    pub bus: SharedBus,
    pub relay: Relay,
    pub manager: CampaignManager,
    pub campaign_peer: Peer,
}

impl Services {
    /// The services on an in-memory bus.
    pub fn new(db: &ota_db::Db) -> Self {
        Self::with_bus(db, Arc::new(MemoryBus::new()))
    }

    /// The services writing their events through `bus` (the Redis bus, for
    /// tests of a deployment of several processes).
    pub fn with_bus(db: &ota_db::Db, bus: SharedBus) -> Self {
        let vehicles = VehicleStore::new(db, Precedence::default());
        let vehicle_peer =
            peer::in_process(VehicleStoreService::new(vehicles.clone()).into_server());
        let rule_peer = peer::in_process(
            RuleEngineService::new(StoreVehicles::new(vehicle_peer.clone())).into_server(),
        );
        let relay = Relay::new(db.clone(), bus.clone());
        let store = Store::new(db.clone(), relay.waker());
        let manager = CampaignManager::new(
            store,
            rule_peer.clone(),
            Arc::new(StoreVehicles::new(vehicle_peer.clone())),
            Config::default(),
        );
        let campaign_peer =
            peer::in_process(CampaignManagerService::new(manager.clone()).into_server());
        Self {
            vehicles,
            vehicle_peer,
            rule_peer,
            bus,
            relay,
            manager,
            campaign_peer,
        }
    }

    /// Vehicles `0..n` as [`Platform::fleet`] makes them (without
    /// credentials), in one import: for fleets of thousands.
    pub async fn import_fleet(&self, n: u32) {
        let items = (0..n).map(|i| {
            let patch: VehiclePatch = serde_json::from_value(serde_json::json!({
                "vin": vin(i), "model": "ID.4", "platform": "MEB", "region": "EU",
                "gateway": "hcp1", "ecus": {"BMS": {"hw": "H2", "sw": "2.2.0"}}
            }))
            .expect("a valid vehicle");
            Ok(ota_vehicle_store::ImportItem::Record {
                line: u64::from(i) + 1,
                patch,
            })
        });
        let summary = self
            .vehicles
            .import("manufacturing", true, futures::stream::iter(items))
            .await
            .expect("fleet imported");
        assert_eq!(summary.imported, u64::from(n), "{summary:?}");
    }
}

/// Events written to the outbox of `db` and not relayed to the bus yet.
pub async fn outbox_backlog(db: &ota_db::Db) -> i64 {
    ota_db::with_pool!(db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(pool)
            .await
            .expect("outbox counted")
    })
}

/// [`Services`] (reached through `Deref`: `p.manager`, `p.vehicle_peer`)
/// with staging, vehicle credentials and the database they live in.
pub struct Platform {
    pub services: Services,
    pub stager: Stager,
    pub staging: StagingService,
    pub credentials: VehicleCredentials,
    pub db: TestDb,
}

impl std::ops::Deref for Platform {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

impl Platform {
    pub async fn new(db: TestDb) -> Self {
        Self::with(db, Options::default()).await
    }

    pub async fn with(db: TestDb, options: Options) -> Self {
        let services = Services::new(db.db());
        let stager = Stager::new(
            Arc::new(MemoryStore::new()),
            Arc::new(campaign_manager_source(services.campaign_peer.clone())),
            options.poll_after_s,
        )
        .with_public_url(&options.public_url);
        stager
            .full_rebuild()
            .await
            .expect("staging rebuilds from an empty campaign manager");
        let staging = StagingService::new(stager.clone(), services.bus.clone());
        Self {
            credentials: VehicleCredentials::new(db.db().clone()),
            services,
            stager,
            staging,
            db,
        }
    }

    /// Staging as an adapter reads it: in this process, or (`remote`) over
    /// its gRPC client, as in a split deployment.
    pub fn staging_peer(&self, remote: bool) -> StagingPeer {
        if remote {
            StagingPeer::remote(peer::in_process(self.staging.clone().into_server()))
        } else {
            StagingPeer::local(self.staging.clone())
        }
    }

    /// Vehicles `first..first + n` in the EU with BMS 2.2.0 (model ID.4,
    /// platform MEB), each with a credential; returns their tokens.
    pub async fn fleet_from(&self, first: u32, n: u32) -> Vec<String> {
        let mut tokens = Vec::new();
        for i in first..first + n {
            let patch: VehiclePatch = serde_json::from_value(serde_json::json!({
                "vin": vin(i), "model": "ID.4", "platform": "MEB", "region": "EU",
                "gateway": "hcp1", "ecus": {"BMS": {"hw": "H2", "sw": "2.2.0"}}
            }))
            .expect("a valid vehicle");
            self.vehicles
                .upsert("manufacturing", patch)
                .await
                .expect("vehicle stored");
            let issued = self
                .credentials
                .issue(&vin(i), false)
                .await
                .expect("credential issued");
            tokens.push(issued.token);
        }
        tokens
    }

    /// Vehicles 0..n, as [`Platform::fleet_from`].
    pub async fn fleet(&self, n: u32) -> Vec<String> {
        self.fleet_from(0, n).await
    }

    /// Registers `name@version` for the BMS with these artifacts.
    pub async fn package(&self, name: &str, version: &str, artifacts: Vec<pb::Artifact>) {
        self.manager
            .create_package(
                pb::Package {
                    name: name.into(),
                    version: version.into(),
                    ecu: "BMS".into(),
                    artifacts,
                    ..Default::default()
                },
                "erin",
            )
            .await
            .expect("package registered");
    }

    /// Creates the campaign from its file, has it approved by a second
    /// person and launched, targets it, opens its first wave and stages
    /// the documents. Returns its id.
    pub async fn launch(&self, spec: &str) -> String {
        let c = self
            .manager
            .create_campaign(spec, "erin")
            .await
            .expect("campaign stored")
            .unwrap_or_else(|problems| panic!("campaign file rejected: {problems:?}"));
        self.manager
            .transition(&c.id, Transition::Approve, &approver(), "ok")
            .await
            .expect("approved");
        self.manager
            .transition(&c.id, Transition::Launch, &engineer(), "go")
            .await
            .expect("launched");
        self.manager.target_campaign(&c.id).await.expect("targeted");
        // The rate limit's bucket fills from the wave's opening: give it
        // time to hold the test fleet, or a fast machine's first tick
        // releases only part of it.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        self.manager.tick().await.expect("rollout tick");
        self.restage(&c.id).await;
        c.id
    }

    /// Stages the campaign's vehicles again (no staging worker runs here).
    pub async fn restage(&self, campaign: &str) {
        self.stager
            .stage_campaign(campaign)
            .await
            .expect("campaign staged");
    }

    /// (vin, action id, state) of every action of the campaign.
    pub async fn actions(&self, campaign: &str) -> Vec<(String, String, String)> {
        self.manager
            .store()
            .campaign_rows(campaign, "", 100_000)
            .await
            .expect("campaign rows")
            .into_iter()
            .map(|r| (r.vin, r.id, r.state.to_string()))
            .collect()
    }

    /// The action of one vehicle in the campaign: (action id, state).
    pub async fn action_of(&self, campaign: &str, v: &str) -> (String, String) {
        let (_, id, state) = self
            .actions(campaign)
            .await
            .into_iter()
            .find(|(x, _, _)| x == v)
            .unwrap_or_else(|| panic!("no action for {v} in campaign {campaign}"));
        (id, state)
    }
}
