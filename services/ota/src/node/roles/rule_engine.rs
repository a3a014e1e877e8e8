//! `rule-engine`: CEL targeting, reading vehicles from the vehicle store.

use ota_common::peer;
use ota_rule_engine::{RuleEngineService, StoreVehicles};

use crate::config::Service;
use crate::node::{Node, Parts, Role};

pub const ROLE: Role = Role {
    service: Service::RuleEngine,
    peers: &[Service::VehicleStore],
    needs_db: false,
    create: |node, parts| Box::pin(create(node, parts)),
};

async fn create(node: &mut Node, parts: &mut Parts) -> anyhow::Result<()> {
    let vehicles = StoreVehicles::new(node.peer(Service::VehicleStore)?);
    let server = RuleEngineService::new(vehicles).into_server();
    node.register(Service::RuleEngine, peer::in_process(server.clone()));
    parts.serve_grpc(server);
    Ok(())
}
