//! The `ota.v1.VehicleStore` gRPC service over a [`VehicleStore`].

use futures::StreamExt;
use ota_common::vehicle::{from_timestamp, Vehicle, VehiclePatch};
use ota_proto::v1 as pb;
use pb::vehicle_store_server::VehicleStore as VehicleStoreRpc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::store::{ImportItem, VehicleFilter, VehicleStore};
use crate::StoreError;

pub struct VehicleStoreService {
    store: VehicleStore,
}

impl VehicleStoreService {
    pub fn new(store: VehicleStore) -> Self {
        Self { store }
    }

    pub fn into_server(self) -> pb::vehicle_store_server::VehicleStoreServer<Self> {
        pb::vehicle_store_server::VehicleStoreServer::new(self)
            .max_decoding_message_size(16 * 1024 * 1024)
    }
}

impl From<Option<pb::VehicleFilter>> for VehicleFilter {
    fn from(f: Option<pb::VehicleFilter>) -> Self {
        let f = f.unwrap_or_default();
        VehicleFilter {
            model: f.model,
            model_year: f.model_year,
            platform: f.platform,
            gateway: f.gateway,
            protocol: f.protocol,
            region: f.region,
            country: f.country,
            tag: f.tag,
        }
    }
}

type ScanStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ScanVehiclesResponse, Status>> + Send>>;
type VinStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ScanVinsResponse, Status>> + Send>>;

/// Batch size of a scan request: 0 means 1000, at most 10,000.
fn scan_batch(n: u32) -> Result<u32, Status> {
    match n {
        0 => Ok(1000),
        n if n > 10_000 => Err(Status::invalid_argument(format!(
            "batch_size {n} is above the maximum 10000"
        ))),
        n => Ok(n),
    }
}

#[tonic::async_trait]
impl VehicleStoreRpc for VehicleStoreService {
    async fn get(
        &self,
        req: Request<pb::GetVehicleRequest>,
    ) -> Result<Response<pb::Vehicle>, Status> {
        let v = self.store.get(&req.into_inner().vin).await?;
        Ok(Response::new(v.into()))
    }

    async fn list(
        &self,
        req: Request<pb::ListVehiclesRequest>,
    ) -> Result<Response<pb::ListVehiclesResponse>, Status> {
        let r = req.into_inner();
        let (page, next) = self
            .store
            .list(&r.filter.into(), Some(&r.cursor), r.limit)
            .await?;
        Ok(Response::new(pb::ListVehiclesResponse {
            vehicles: page.into_iter().map(Into::into).collect(),
            next_cursor: next.unwrap_or_default(),
        }))
    }

    async fn scan(
        &self,
        req: Request<pb::ScanVehiclesRequest>,
    ) -> Result<Response<ScanStream>, Status> {
        let r = req.into_inner();
        let batch = scan_batch(r.batch_size)?;
        let filter: VehicleFilter = r.filter.into();
        let store = self.store.clone();
        // A small buffer: the scan advances only as fast as the caller reads.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut cursor: Option<String> = None;
            loop {
                let page = store.page(&filter, cursor.as_deref(), batch, false).await;
                let (vehicles, next) = match page {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let msg = pb::ScanVehiclesResponse {
                    vehicles: vehicles.into_iter().map(Into::into).collect(),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                match next {
                    Some(n) => cursor = Some(n),
                    None => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn scan_vins(
        &self,
        req: Request<pb::ScanVehiclesRequest>,
    ) -> Result<Response<VinStream>, Status> {
        let r = req.into_inner();
        let batch = scan_batch(r.batch_size)?;
        let filter: VehicleFilter = r.filter.into();
        let store = self.store.clone();
        let stream =
            futures::stream::try_unfold((store, Some(None::<String>)), move |(store, cursor)| {
                let filter = filter.clone();
                async move {
                    let Some(after) = cursor else {
                        return Ok(None);
                    };
                    let (vins, next) = store.vins_page(&filter, after.as_deref(), batch).await?;
                    if vins.is_empty() {
                        return Ok(None);
                    }
                    Ok::<_, Status>(Some((
                        pb::ScanVinsResponse { vins },
                        (store, next.map(Some)),
                    )))
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn count(
        &self,
        req: Request<pb::CountVehiclesRequest>,
    ) -> Result<Response<pb::CountVehiclesResponse>, Status> {
        let count = self.store.count(&req.into_inner().filter.into()).await?;
        Ok(Response::new(pb::CountVehiclesResponse { count }))
    }

    async fn upsert(
        &self,
        req: Request<pb::UpsertVehicleRequest>,
    ) -> Result<Response<pb::UpsertVehicleResponse>, Status> {
        let r = req.into_inner();
        let vehicle = r
            .vehicle
            .ok_or_else(|| Status::invalid_argument("missing vehicle"))?;
        let source = if r.source.is_empty() {
            "api"
        } else {
            &r.source
        };
        let (v, created) = self
            .store
            .upsert(source, VehiclePatch::from(vehicle))
            .await?;
        Ok(Response::new(pb::UpsertVehicleResponse {
            vehicle: Some(v.into()),
            created,
        }))
    }

    async fn import(
        &self,
        req: Request<Streaming<pb::ImportVehiclesRequest>>,
    ) -> Result<Response<pb::ImportVehiclesResponse>, Status> {
        let mut stream = req.into_inner();
        let Some(first) = stream.message().await? else {
            return Ok(Response::new(pb::ImportVehiclesResponse::default()));
        };
        let source = if first.source.is_empty() {
            "api".to_owned()
        } else {
            first.source.clone()
        };
        let strict = first.strict;
        let items = futures::stream::once(async move { Ok(first) })
            .chain(stream)
            .map(|m| {
                m.map(to_item)
                    .map_err(|s| StoreError::Stream(s.message().to_owned()))
            });
        let s = self.store.import(&source, strict, items).await?;
        Ok(Response::new(pb::ImportVehiclesResponse {
            imported: s.imported,
            updated: s.updated,
            unchanged: s.unchanged,
            rejected: s.rejected,
            aborted: s.aborted,
            errors: s
                .errors
                .into_iter()
                .map(|e| pb::ImportError {
                    line: e.line,
                    reason: e.reason,
                    vin: e.vin,
                })
                .collect(),
        }))
    }

    async fn report_inventory(
        &self,
        req: Request<pb::ReportInventoryRequest>,
    ) -> Result<Response<pb::Vehicle>, Status> {
        let r = req.into_inner();
        let patch = VehiclePatch::from(pb::Vehicle {
            vin: r.vin,
            ecus: r.ecus,
            attributes: r.attributes,
            ..Default::default()
        });
        let v: Vehicle = self.store.report_inventory(patch).await?;
        Ok(Response::new(v.into()))
    }

    async fn mark_seen(
        &self,
        req: Request<pb::MarkSeenRequest>,
    ) -> Result<Response<pb::MarkSeenResponse>, Status> {
        let seen = req
            .into_inner()
            .seen
            .into_iter()
            .map(|s| match &s.at {
                Some(at) => Ok((s.vin, from_timestamp(at))),
                None => Err(Status::invalid_argument(format!(
                    "seen vehicle {} has no time",
                    ota_common::vin::shown(&s.vin)
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let updated = self.store.mark_seen(seen).await?;
        Ok(Response::new(pb::MarkSeenResponse { updated }))
    }
}

fn to_item(m: pb::ImportVehiclesRequest) -> ImportItem {
    match m.item {
        Some(pb::import_vehicles_request::Item::Vehicle(v)) => ImportItem::Record {
            line: m.line,
            patch: v.into(),
        },
        Some(pb::import_vehicles_request::Item::ParseError(reason)) => ImportItem::Rejected {
            line: m.line,
            vin: String::new(),
            reason,
        },
        None => ImportItem::Rejected {
            line: m.line,
            vin: String::new(),
            reason: "empty import message".into(),
        },
    }
}
