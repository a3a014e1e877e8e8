//! The real services in-process on a fresh database (vehicle store, rule
//! engine, campaign manager, staging on the in-memory store), and the
//! adapter's router on a real TCP socket.

#![allow(dead_code)]

use std::sync::Arc;

use ota_auth::vehicles::VehicleCredentials;
use ota_bus::memory::MemoryBus;
use ota_bus::SharedBus;
use ota_campaign_manager::model::Transition;
use ota_campaign_manager::store::Store;
use ota_campaign_manager::{Actor, CampaignManager, CampaignManagerService, Config};
use ota_common::peer::{self, Peer};
use ota_common::vehicle::VehiclePatch;
use ota_http_adapter::{AdapterConfig, AdapterState};
use ota_proto::v1 as pb;
use ota_rule_engine::{RuleEngineService, StoreVehicles};
use ota_staging::StagingPeer;
use ota_staging::{campaign_manager_source, MemoryStore, Stager, StagingService};
use ota_tests::db::TestDb;
use ota_vehicle_store::grpc::VehicleStoreService;
use ota_vehicle_store::{Precedence, VehicleStore};

pub fn vin(i: u32) -> String {
    format!("WVWZZZE1ZMP{i:06}")
}

pub struct Platform {
    pub manager: CampaignManager,
    pub vehicles: VehicleStore,
    pub stager: Stager,
    pub staging: StagingService,
    pub credentials: VehicleCredentials,
    pub campaign_peer: Peer,
    pub vehicle_peer: Peer,
    pub db: TestDb,
}

impl Platform {
    pub async fn new(db: TestDb) -> Self {
        let vehicles = VehicleStore::new(db.db(), Precedence::default());
        let vehicle_peer =
            peer::in_process(VehicleStoreService::new(vehicles.clone()).into_server());
        let rule_peer = peer::in_process(
            RuleEngineService::new(StoreVehicles::new(vehicle_peer.clone())).into_server(),
        );
        let store = Store::new(db.db().clone(), Arc::new(tokio::sync::Notify::new()));
        let manager = CampaignManager::new(
            store,
            rule_peer,
            Arc::new(StoreVehicles::new(vehicle_peer.clone())),
            Config::default(),
        );
        let campaign_peer =
            peer::in_process(CampaignManagerService::new(manager.clone()).into_server());
        let stager = Stager::new(
            Arc::new(MemoryStore::new()),
            Arc::new(campaign_manager_source(campaign_peer.clone())),
            300,
        );
        let bus: SharedBus = Arc::new(MemoryBus::new());
        let staging = StagingService::new(stager.clone(), bus);
        stager.full_rebuild().await.unwrap();
        Self {
            manager,
            vehicles,
            stager,
            staging,
            credentials: VehicleCredentials::new(db.db().clone()),
            campaign_peer,
            vehicle_peer,
            db,
        }
    }

    /// Vehicles 0..n in the EU with BMS 2.2.0.
    pub async fn fleet(&self, n: u32) {
        for i in 0..n {
            let patch: VehiclePatch = serde_json::from_value(serde_json::json!({
                "vin": vin(i), "model": "ID.4", "region": "EU",
                "ecus": {"BMS": {"hw": "H2", "sw": "2.2.0"}}
            }))
            .unwrap();
            self.vehicles.upsert("manufacturing", patch).await.unwrap();
        }
    }

    /// A running campaign installing bms-fw 2.3.1 on the fleet, its
    /// actions handed to staging and the documents staged.
    pub async fn campaign(&self) -> String {
        self.manager
            .create_package(
                pb::Package {
                    name: "bms-fw".into(),
                    version: "2.3.1".into(),
                    ecu: "BMS".into(),
                    artifacts: vec![pb::Artifact {
                        url: "https://cdn.example/bms-fw-2.3.1.bin".into(),
                        sha256: "a".repeat(64),
                        size: 1024,
                    }],
                    ..Default::default()
                },
                "erin",
            )
            .await
            .unwrap();
        let spec = r#"name: bms
target: 'vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0'
rules:
  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}
rollout: {max_per_minute: 600000}
"#;
        let c = self
            .manager
            .create_campaign(spec, "erin")
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("campaign rejected: {e:?}"));
        let actor = |name: &str, role: &str| Actor {
            name: name.into(),
            role: role.into(),
        };
        self.manager
            .transition(&c.id, Transition::Approve, &actor("alex", "approver"), "ok")
            .await
            .unwrap();
        self.manager
            .transition(&c.id, Transition::Launch, &actor("erin", "engineer"), "go")
            .await
            .unwrap();
        self.manager.target_campaign(&c.id).await.unwrap();
        self.manager.tick().await.unwrap();
        self.stager.full_rebuild().await.unwrap();
        c.id
    }

    /// The campaign's actions: (vin, action id, state).
    pub async fn actions(&self, campaign: &str) -> Vec<(String, String, String)> {
        self.manager
            .store()
            .campaign_rows(campaign, "", 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.vin, r.id, r.state))
            .collect()
    }

    pub fn state(&self, config: AdapterConfig) -> AdapterState {
        AdapterState::new(
            self.credentials.clone(),
            StagingPeer::local(self.staging.clone()),
            self.campaign_peer.clone(),
            self.vehicle_peer.clone(),
            config,
        )
    }
}

/// The router served on 127.0.0.1 on a free port; the server stops with
/// the runtime at the end of the test.
pub async fn serve(state: AdapterState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, ota_http_adapter::router(state))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}
