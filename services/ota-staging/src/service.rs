//! The `ota.v1.Staging` gRPC service over a [`Stager`].

use ota_bus::{topics, SharedBus};
use ota_common::vehicle::to_timestamp;
use ota_common::Vin;
use ota_proto::v1 as pb;
use pb::restage_request::Scope;
use pb::staging_server::{Staging, StagingServer};
use tonic::{Request, Response, Status};

use crate::document::StoredDoc;
use crate::stager::Stager;
use crate::worker::GROUP;
use crate::StagingError;

/// Most VINs one Restage call takes; a larger set is a campaign.
pub const MAX_RESTAGE_VINS: usize = 100_000;

#[derive(Clone)]
pub struct StagingService {
    stager: Stager,
    bus: SharedBus,
    /// Where Stats reads the queue depth: the workers' topic and group.
    queue: (String, String),
}

impl StagingService {
    pub fn new(stager: Stager, bus: SharedBus) -> Self {
        Self {
            stager,
            bus,
            queue: (topics::STAGING.to_owned(), GROUP.to_owned()),
        }
    }

    /// Reports the depth of another topic and group than the default
    /// `staging`/`staging` (the workers' [`crate::WorkerConfig`]).
    pub fn with_queue(mut self, topic: &str, group: &str) -> Self {
        self.queue = (topic.to_owned(), group.to_owned());
        self
    }

    pub fn stager(&self) -> &Stager {
        &self.stager
    }

    /// The fast path for the vehicle adapters: the etag and the JSON bytes
    /// exactly as served, without protobuf in between.
    pub async fn lookup(&self, vin: &str) -> Result<StoredDoc, StagingError> {
        self.stager.lookup(vin).await
    }

    pub fn into_server(self) -> StagingServer<Self> {
        StagingServer::new(self).max_decoding_message_size(16 * 1024 * 1024)
    }
}

#[tonic::async_trait]
impl Staging for StagingService {
    async fn get_actions(
        &self,
        req: Request<pb::GetActionsRequest>,
    ) -> Result<Response<pb::StagedDocument>, Status> {
        let vin = req.into_inner().vin;
        let doc = self.lookup(&vin).await?;
        Ok(Response::new(doc.to_proto(&vin)?))
    }

    async fn restage(
        &self,
        req: Request<pb::RestageRequest>,
    ) -> Result<Response<pb::RestageResponse>, Status> {
        let outcome = match req.into_inner().scope {
            Some(Scope::CampaignId(id)) if !id.is_empty() => {
                self.stager.stage_campaign(&id).await?
            }
            Some(Scope::Vins(list)) if !list.vins.is_empty() => {
                if list.vins.len() > MAX_RESTAGE_VINS {
                    return Err(StagingError::Invalid(format!(
                        "at most {MAX_RESTAGE_VINS} vins per restage, got {}",
                        list.vins.len()
                    ))
                    .into());
                }
                for vin in &list.vins {
                    Vin::parse(vin).map_err(StagingError::from)?;
                }
                self.stager.stage_vins(&list.vins).await?
            }
            _ => {
                return Err(StagingError::Invalid(
                    "restage needs a campaign_id or a non-empty list of vins".to_owned(),
                )
                .into())
            }
        };
        Ok(Response::new(pb::RestageResponse {
            vehicles: outcome.recomputed,
            changed: outcome.changed,
        }))
    }

    async fn stats(
        &self,
        _req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let store = self.stager.store();
        let staged_vehicles = store.len().await?;
        let last = store.last_reconcile().await?;
        let queue_depth = self
            .bus
            .depth(&self.queue.0, &self.queue.1)
            .await
            .map_err(StagingError::from)?;
        let (p50, p99) = self.stager.stats().lag_quantiles();
        Ok(Response::new(pb::StatsResponse {
            staged_vehicles,
            lag_p50_seconds: p50,
            lag_p99_seconds: p99,
            queue_depth,
            last_reconcile: last
                .as_ref()
                .and_then(|r| chrono::DateTime::from_timestamp_millis(r.at_ms))
                .map(to_timestamp),
            last_reconcile_repaired: last.map(|r| r.repaired).unwrap_or(0),
            store: store.name().to_owned(),
            events_processed: self.stager.stats().events(),
        }))
    }
}
