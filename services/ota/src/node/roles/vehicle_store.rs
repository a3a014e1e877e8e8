//! `vehicle-store`: the inventory, over gRPC.

use ota_common::peer;
use ota_vehicle_store::grpc::VehicleStoreService;
use ota_vehicle_store::VehicleStore;

use crate::config::Service;
use crate::node::{Node, Parts, Role};

pub const ROLE: Role = Role {
    service: Service::VehicleStore,
    peers: &[],
    needs_db: true,
    create: |node, parts| Box::pin(create(node, parts)),
};

async fn create(node: &mut Node, parts: &mut Parts) -> anyhow::Result<()> {
    let store = VehicleStore::new(node.db(), node.cfg.vehicle_store.precedence.clone());
    let server = VehicleStoreService::new(store).into_server();
    node.register(Service::VehicleStore, peer::in_process(server.clone()));
    parts.serve_grpc(server);
    Ok(())
}
