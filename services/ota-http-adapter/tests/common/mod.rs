//! The platform in-process (`ota_tests::platform`) with the HTTP vehicle
//! API in front of it on a real TCP socket.

#![allow(dead_code)]

use std::ops::Deref;

use ota_http_adapter::{AdapterConfig, AdapterState};
use ota_proto::v1 as pb;
use ota_tests::db::TestDb;
pub use ota_tests::platform::vin;

pub struct Platform(ota_tests::platform::Platform);

impl Deref for Platform {
    type Target = ota_tests::platform::Platform;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Platform {
    pub async fn new(db: TestDb) -> Self {
        Self(ota_tests::platform::Platform::new(db).await)
    }

    /// A running campaign installing bms-fw 2.3.1 (an external artifact)
    /// on the fleet, its documents staged.
    pub async fn campaign(&self) -> String {
        self.package(
            "bms-fw",
            "2.3.1",
            vec![pb::Artifact {
                url: "https://cdn.example/bms-fw-2.3.1.bin".into(),
                sha256: "a".repeat(64),
                size: 1024,
            }],
        )
        .await;
        self.launch(
            r#"name: bms
target: 'vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0'
rules:
  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}
rollout: {max_per_minute: 600000}
"#,
        )
        .await
    }

    pub fn state(&self, config: AdapterConfig) -> AdapterState {
        AdapterState::new(
            self.credentials.clone(),
            self.staging_peer(false),
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
