//! The platform's [`VehicleSource`]: the vehicle store, reached through its
//! gRPC client (in-process or remote alike). Preview scans the inventory as a
//! server stream of batches, so memory holds one batch at a time.

use async_trait::async_trait;
use futures::StreamExt;
use ota_common::peer::Peer;
use ota_common::vehicle::Vehicle;
use ota_proto::v1 as pb;
use pb::vehicle_store_client::VehicleStoreClient;
use tonic::Status;

use crate::grpc::{VehicleBatches, VehicleSource};

/// Vehicles per scanned batch.
const SCAN_BATCH: u32 = 2000;

#[derive(Clone)]
pub struct StoreVehicles {
    client: VehicleStoreClient<Peer>,
}

impl StoreVehicles {
    pub fn new(peer: Peer) -> Self {
        Self {
            client: VehicleStoreClient::new(peer).max_decoding_message_size(64 * 1024 * 1024),
        }
    }
}

#[async_trait]
impl VehicleSource for StoreVehicles {
    async fn get(&self, vin: &str) -> Result<Vehicle, Status> {
        let v = self
            .client
            .clone()
            .get(pb::GetVehicleRequest {
                vin: vin.to_owned(),
            })
            .await?
            .into_inner();
        Ok(v.into())
    }

    async fn count(&self) -> Result<Option<u64>, Status> {
        let r = self
            .client
            .clone()
            .count(pb::CountVehiclesRequest { filter: None })
            .await?
            .into_inner();
        Ok(Some(r.count))
    }

    async fn scan(&self) -> Result<VehicleBatches, Status> {
        let stream = self
            .client
            .clone()
            .scan(pb::ScanVehiclesRequest {
                filter: None,
                batch_size: SCAN_BATCH,
            })
            .await?
            .into_inner();
        Ok(stream
            .map(|batch| batch.map(|b| b.vehicles.into_iter().map(Vehicle::from).collect()))
            .boxed())
    }

    async fn scan_vins(&self) -> Result<crate::grpc::VinBatches, Status> {
        let stream = self
            .client
            .clone()
            .scan_vins(pb::ScanVehiclesRequest {
                filter: None,
                batch_size: 10_000,
            })
            .await?
            .into_inner();
        Ok(stream.map(|batch| batch.map(|b| b.vins)).boxed())
    }
}
