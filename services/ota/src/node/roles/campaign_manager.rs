//! `campaign-manager`: packages, campaigns, the rollout and action state,
//! with its background loops (rollout ticks, status batches, installs).

use std::sync::Arc;
use std::time::Duration;

use ota_campaign_manager::{CampaignManager, CampaignManagerService};
use ota_common::peer;
use ota_rule_engine::StoreVehicles;

use crate::config::Service;
use crate::node::{Node, Parts, Role};

pub const ROLE: Role = Role {
    service: Service::CampaignManager,
    peers: &[Service::VehicleStore, Service::RuleEngine],
    needs_db: true,
    create: |node, parts| Box::pin(create(node, parts)),
};

async fn create(node: &mut Node, parts: &mut Parts) -> anyhow::Result<()> {
    let store =
        ota_campaign_manager::store::Store::new(node.db().clone(), node.events.relay_waker.clone());
    let vehicles = node.peer(Service::VehicleStore)?;
    let manager = CampaignManager::new(
        store,
        node.peer(Service::RuleEngine)?,
        Arc::new(StoreVehicles::new(vehicles.clone())),
        ota_campaign_manager::Config {
            tick: Duration::from_millis(node.cfg.campaigns.tick_ms),
            status_batch: node.cfg.campaigns.status_batch,
        },
    )
    .with_inventory(vehicles);
    parts
        .tasks
        .extend(manager.spawn_background(Some(node.events.bus.clone()), node.shutdown.clone()));
    let server = CampaignManagerService::new(manager).into_server();
    node.register(Service::CampaignManager, peer::in_process(server.clone()));
    parts.serve_grpc(server);
    Ok(())
}
