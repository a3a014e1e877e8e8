//! `http-adapter`: the HTTP vehicle API, hawkBit DDI and hosted artifacts.

use std::sync::Arc;

use ota_proto::v1 as pb;
use pb::campaign_manager_client::CampaignManagerClient;
use pb::vehicle_store_client::VehicleStoreClient;

use crate::config::Service;
use crate::node::{Node, Parts, Role};

pub const ROLE: Role = Role {
    service: Service::HttpAdapter,
    peers: &[
        Service::VehicleStore,
        Service::CampaignManager,
        Service::Staging,
    ],
    // Vehicle credentials live in the database.
    needs_db: true,
    create: |node, parts| Box::pin(create(node, parts)),
};

async fn create(node: &mut Node, parts: &mut Parts) -> anyhow::Result<()> {
    // One batch of last-seen times for every vehicle API of the process.
    let seen = node.last_seen(parts)?;
    let cfg = &node.cfg;
    let credentials = node.vehicle_credentials();
    let staging = node.staging_peer()?;
    let campaigns = node.peer(Service::CampaignManager)?;
    let vehicles = node.peer(Service::VehicleStore)?;
    let limits = node.vehicle_limits();
    let public_url = cfg.public_url();
    let superuser = match (&cfg.mqtt_username, &cfg.mqtt_password) {
        (Some(u), Some(p)) => Some(ota_http_adapter::MqttSuperuser {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => None,
    };
    let config = ota_http_adapter::AdapterConfig {
        mqtt_superuser: superuser,
        ..Default::default()
    };
    let vehicle_api = ota_http_adapter::AdapterState::new(
        credentials.clone(),
        staging.clone(),
        campaigns.clone(),
        vehicles.clone(),
        config,
    )
    .with_limits(limits.clone())
    .with_last_seen(seen.clone());
    let store: Arc<dyn ota_artifacts::ArtifactStore> =
        Arc::new(ota_artifacts::DiskStore::new(&cfg.data_dir));
    let ddi = ota_ddi::DdiState::new(
        credentials.clone(),
        staging,
        CampaignManagerClient::new(campaigns),
        VehicleStoreClient::new(vehicles),
        store.clone(),
        cfg.adapters.ddi_gateway_token.clone(),
        public_url.clone(),
    )
    .with_limits(limits)
    .with_last_seen(seen);
    let artifacts = crate::artifacts::router(
        store,
        credentials,
        ota_auth::TokenStore::new(node.db().clone()),
        public_url,
        cfg.adapters.ddi_gateway_token.clone(),
    );
    parts.http = std::mem::take(&mut parts.http)
        .merge(ota_http_adapter::router(vehicle_api))
        .merge(ota_ddi::router(ddi))
        .merge(artifacts);
    Ok(())
}
