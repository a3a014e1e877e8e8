//! The real platform in-process on a fresh database: vehicle store, rule
//! engine, campaign manager and staging behind their in-process peers, the
//! DDI router on a real TCP socket, a disk artifact store.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use ota_artifacts::{ArtifactStore, DiskStore, StoredArtifact};
use ota_auth::vehicles::VehicleCredentials;
use ota_bus::memory::MemoryBus;
use ota_bus::outbox::Relay;
use ota_bus::SharedBus;
use ota_campaign_manager::grpc::CampaignManagerService;
use ota_campaign_manager::model::{ActionState, Transition};
use ota_campaign_manager::store::Store;
use ota_campaign_manager::{Actor, CampaignManager, Config};
use ota_common::peer;
use ota_common::rate::{VehicleLimits, VehicleRates};
use ota_common::vehicle::VehiclePatch;
use ota_ddi::{router, DdiState};
use ota_proto::v1 as pb;
use ota_rule_engine::{RuleEngineService, StoreVehicles};
use ota_staging::StagingPeer;
use ota_staging::{campaign_manager_source, MemoryStore, Stager, StagingService};
use ota_tests::db::TestDb;
use ota_vehicle_store::grpc::VehicleStoreService;
use ota_vehicle_store::{Precedence, VehicleStore};

pub const GATEWAY: &str = "gw-secret-0123456789";
pub const POLL_S: u32 = 42;

pub fn vin(i: u32) -> String {
    format!("WVWZZZE1ZMP{i:06}")
}

pub struct Platform {
    pub base: String,
    pub manager: CampaignManager,
    pub vehicles: VehicleStore,
    pub stager: Stager,
    pub credentials: VehicleCredentials,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub firmware: Vec<u8>,
    pub stored: StoredArtifact,
    _dir: tempfile::TempDir,
    pub db: TestDb,
}

impl Platform {
    pub async fn new(db: TestDb) -> Self {
        Self::build(db, false, VehicleRates::default()).await
    }

    /// Staging reached over its gRPC client instead of the in-process
    /// lookup, as in a split deployment.
    pub async fn with_remote_staging(db: TestDb) -> Self {
        Self::build(db, true, VehicleRates::default()).await
    }

    /// Budgets per controller other than the defaults.
    pub async fn with_rates(db: TestDb, rates: VehicleRates) -> Self {
        Self::build(db, false, rates).await
    }

    async fn build(db: TestDb, remote_staging: bool, rates: VehicleRates) -> Self {
        let vehicles = VehicleStore::new(db.db(), Precedence::default());
        let vehicle_peer =
            peer::in_process(VehicleStoreService::new(vehicles.clone()).into_server());
        let rule_peer = peer::in_process(
            RuleEngineService::new(StoreVehicles::new(vehicle_peer.clone())).into_server(),
        );
        let bus: SharedBus = Arc::new(MemoryBus::new());
        let relay = Relay::new(db.db().clone(), bus.clone());
        let store = Store::new(db.db().clone(), relay.waker());
        let manager = CampaignManager::new(
            store,
            rule_peer,
            Arc::new(StoreVehicles::new(vehicle_peer.clone())),
            Config::default(),
        );
        let cm_peer = peer::in_process(CampaignManagerService::new(manager.clone()).into_server());
        let stager = Stager::new(
            Arc::new(MemoryStore::new()),
            Arc::new(campaign_manager_source(cm_peer.clone())),
            POLL_S,
        );
        stager.full_rebuild().await.unwrap();
        let service = StagingService::new(stager.clone(), bus);
        let staging = if remote_staging {
            StagingPeer::remote(peer::in_process(service.into_server()))
        } else {
            StagingPeer::local(service)
        };

        let dir = tempfile::tempdir().unwrap();
        let artifacts: Arc<dyn ArtifactStore> = Arc::new(DiskStore::new(dir.path()));
        // 200 KiB in odd-sized chunks: several reads and hash updates.
        let firmware: Vec<u8> = (0..200 * 1024u32).map(|i| (i * 7 % 253) as u8).collect();
        let parts: Vec<Result<Bytes, std::io::Error>> = firmware
            .chunks(9999)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let stored = artifacts
            .put(futures::stream::iter(parts).boxed())
            .await
            .unwrap();

        let credentials = VehicleCredentials::new(db.db().clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = DdiState::new(
            credentials.clone(),
            staging,
            pb::campaign_manager_client::CampaignManagerClient::new(cm_peer),
            pb::vehicle_store_client::VehicleStoreClient::new(vehicle_peer),
            artifacts.clone(),
            Some(GATEWAY.to_owned()),
            base.clone(),
        )
        .with_limits(Arc::new(VehicleLimits::new(rates)));
        let app = router(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            manager,
            vehicles,
            stager,
            credentials,
            artifacts,
            firmware,
            stored,
            _dir: dir,
            db,
        }
    }

    /// Vehicles 0..n in the EU with BMS 2.2.0, and a token for each.
    pub async fn fleet(&self, n: u32) -> Vec<String> {
        let mut tokens = Vec::new();
        for i in 0..n {
            let patch: VehiclePatch = serde_json::from_value(serde_json::json!({
                "vin": vin(i), "model": "ID.4", "region": "EU",
                "ecus": {"BMS": {"hw": "H2", "sw": "2.2.0"}}
            }))
            .unwrap();
            self.vehicles.upsert("manufacturing", patch).await.unwrap();
            tokens.push(self.credentials.issue(&vin(i), false).await.unwrap().token);
        }
        tokens
    }

    /// A package whose artifact this platform hosts, a launched campaign
    /// for every vehicle, its wave opened and staged. Returns the campaign.
    pub async fn launch(&self) -> String {
        self.manager
            .create_package(
                pb::Package {
                    name: "bms-fw".into(),
                    version: "2.3.1".into(),
                    ecu: "BMS".into(),
                    artifacts: vec![pb::Artifact {
                        url: ota_artifacts::hosted_url(
                            &self.base,
                            &self.stored.sha256,
                            Some("bms-fw-2.3.1.bin"),
                        ),
                        sha256: self.stored.sha256.clone(),
                        size: self.stored.size,
                    }],
                    ..Default::default()
                },
                "erin",
            )
            .await
            .unwrap();
        let spec = r#"name: bms
target: 'vehicle.region == "EU"'
rules:
  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}
rollout:
  waves: [100]
  wave_soak: 0s
  max_per_minute: 600000
"#;
        let c = self
            .manager
            .create_campaign(spec, "erin")
            .await
            .unwrap()
            .unwrap_or_else(|errors| panic!("campaign file rejected: {errors:?}"));
        let approver = Actor {
            name: "alex".into(),
            role: "approver".into(),
        };
        let engineer = Actor {
            name: "erin".into(),
            role: "engineer".into(),
        };
        self.manager
            .transition(&c.id, Transition::Approve, &approver, "ok")
            .await
            .unwrap();
        self.manager
            .transition(&c.id, Transition::Launch, &engineer, "go")
            .await
            .unwrap();
        self.manager.target_campaign(&c.id).await.unwrap();
        self.manager.tick().await.unwrap();
        self.restage(&c.id).await;
        c.id
    }

    pub async fn restage(&self, campaign: &str) {
        self.stager.stage_campaign(campaign).await.unwrap();
    }

    /// (vin, action id, state) of every action of the campaign.
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

    pub async fn action_of(&self, campaign: &str, v: &str) -> (String, String) {
        let (_, id, state) = self
            .actions(campaign)
            .await
            .into_iter()
            .find(|(x, _, _)| x == v)
            .unwrap_or_else(|| panic!("no action for {v}"));
        (id, state)
    }

    pub async fn count(&self, campaign: &str, s: ActionState) -> u64 {
        self.manager
            .store()
            .state_counts(campaign)
            .await
            .unwrap()
            .get(&s)
            .copied()
            .unwrap_or(0)
    }

    /// The id DDI devices know the first attempt of `action_id` by, as
    /// the server gives it out.
    pub async fn ddi_id(&self, action_id: &str) -> String {
        ota_ddi::ids::ActionIds::new(self.db.db().clone())
            .ddi_id(&ota_ddi::ids::ActionRef {
                action_id: action_id.to_owned(),
                attempt: 1,
            })
            .await
            .unwrap()
            .to_string()
    }

    pub fn controller_url(&self, v: &str) -> String {
        format!("{}/default/controller/v1/{v}", self.base)
    }
}
