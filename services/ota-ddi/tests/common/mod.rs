//! The platform in-process (`ota_tests::platform`) with the DDI router in
//! front of it on a real TCP socket, and a disk artifact store holding the
//! firmware it hosts.

#![allow(dead_code)]

use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use ota_artifacts::{ArtifactStore, DiskStore, StoredArtifact};
use ota_campaign_manager::model::ActionState;
use ota_common::last_seen::LastSeen;
use ota_common::rate::{VehicleLimits, VehicleRates};
use ota_ddi::{router, DdiState};
use ota_proto::v1 as pb;
use ota_tests::db::TestDb;
pub use ota_tests::platform::vin;
use ota_tests::platform::Options;

pub const GATEWAY: &str = "gw-secret-0123456789";
pub const POLL_S: u32 = 42;

pub struct Platform {
    core: ota_tests::platform::Platform,
    pub base: String,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub firmware: Vec<u8>,
    pub stored: StoredArtifact,
    /// What the router noted as seen, written only when a test flushes it.
    pub seen: LastSeen,
    _dir: tempfile::TempDir,
}

impl Deref for Platform {
    type Target = ota_tests::platform::Platform;
    fn deref(&self) -> &Self::Target {
        &self.core
    }
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let options = Options {
            poll_after_s: POLL_S,
            public_url: base.clone(),
        };
        let core = ota_tests::platform::Platform::with(db, options).await;

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

        let seen = LastSeen::new();
        let state = DdiState::new(
            core.credentials.clone(),
            core.staging_peer(remote_staging),
            pb::campaign_manager_client::CampaignManagerClient::new(core.campaign_peer.clone()),
            pb::vehicle_store_client::VehicleStoreClient::new(core.vehicle_peer.clone()),
            artifacts.clone(),
            Some(GATEWAY.to_owned()),
            base.clone(),
        )
        .with_limits(Arc::new(VehicleLimits::new(rates)))
        .with_last_seen(seen.clone());
        let app = router(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            core,
            base,
            artifacts,
            firmware,
            stored,
            seen,
            _dir: dir,
        }
    }

    /// A package whose artifact this platform hosts, a launched campaign
    /// for every vehicle, its wave opened and staged. Returns the campaign.
    pub async fn launch(&self) -> String {
        self.package(
            "bms-fw",
            "2.3.1",
            vec![pb::Artifact {
                url: ota_artifacts::hosted_url(
                    &self.base,
                    &self.stored.sha256,
                    Some("bms-fw-2.3.1.bin"),
                ),
                sha256: self.stored.sha256.clone(),
                size: self.stored.size,
            }],
        )
        .await;
        self.core
            .launch(
                r#"name: bms
target: 'vehicle.region == "EU"'
rules:
  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}
rollout:
  waves: [100]
  wave_soak: 0s
  max_per_minute: 600000
"#,
            )
            .await
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
