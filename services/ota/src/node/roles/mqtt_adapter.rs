//! `mqtt-adapter`: vehicles over MQTT, on the embedded broker or an
//! external one reached with shared subscriptions.

use ota_proto::v1 as pb;
use pb::campaign_manager_client::CampaignManagerClient;
use pb::vehicle_store_client::VehicleStoreClient;
use tokio::sync::watch;

use crate::config::Service;
use crate::node::{Node, Parts, Role};

pub const ROLE: Role = Role {
    service: Service::MqttAdapter,
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
    let seen = node.last_seen(parts)?;
    let cfg = &node.cfg;
    let a = &cfg.adapters;
    let config = ota_mqtt_adapter::MqttAdapterConfig {
        listen: cfg.mqtt_listen_addr(),
        external_url: cfg.mqtt_url.clone(),
        username: cfg.mqtt_username.clone(),
        password: cfg.mqtt_password.clone(),
        max_sessions: a.mqtt_max_sessions.unwrap_or_else(|| {
            crate::files::broker_sessions(node.open_files, cfg.http.max_connections)
        }),
        max_packet_bytes: a.mqtt_max_packet_bytes,
        max_retained: a.mqtt_max_retained,
        limits: node.vehicle_limits(),
        last_seen: Some(seen),
        ..Default::default()
    };
    let backends = ota_mqtt_adapter::Backends {
        campaigns: CampaignManagerClient::new(node.peer(Service::CampaignManager)?),
        vehicles: VehicleStoreClient::new(node.peer(Service::VehicleStore)?),
        documents: node.staging_peer()?,
        credentials: Some(node.vehicle_credentials()),
    };
    // Stopped explicitly (and bounded in time) after the servers drained,
    // not by the shutdown signal: the sender lives in the stop below.
    let (signal, never) = watch::channel(false);
    let handle = ota_mqtt_adapter::start(config, backends, node.events.bus.clone(), never)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    parts.stops.push((
        "the MQTT adapter",
        Box::pin(async move {
            handle.stop().await;
            drop(signal);
        }),
    ));
    Ok(())
}
