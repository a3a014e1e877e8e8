//! Where open actions come from: the campaign manager owns them, staging
//! only materializes them.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use ota_common::peer::Peer;
use ota_common::ErrorCode;
use ota_proto::v1 as pb;
use pb::campaign_manager_client::CampaignManagerClient;
use tonic::Streaming;

use crate::StagingError;

/// Batches of vehicles with open actions, in VIN order.
pub type ActionBatches = BoxStream<'static, Result<Vec<pb::VehicleActions>, StagingError>>;

#[async_trait]
pub trait ActionSource: Send + Sync + 'static {
    /// The open actions of these vehicles; a vehicle without any is absent.
    async fn open_actions(&self, vins: &[String]) -> Result<Vec<pb::VehicleActions>, StagingError>;

    /// Every vehicle with open actions (full rebuild and reconcile).
    async fn scan_all(&self, batch_size: u32) -> Result<ActionBatches, StagingError>;

    /// Every vehicle with an action in the campaign, whatever its state, so
    /// that vehicles whose actions the campaign closed lose them too.
    async fn campaign_vins(&self, campaign_id: &str) -> Result<Vec<String>, StagingError>;
}

/// A campaign manager client ready to be an [`ActionSource`]: answers for a
/// thousand vehicles are larger than tonic's 4 MiB default.
pub fn campaign_manager_source(peer: Peer) -> CampaignManagerClient<Peer> {
    CampaignManagerClient::new(peer).max_decoding_message_size(64 * 1024 * 1024)
}

/// How often a broken scan stream is resumed after its last VIN before the
/// scan fails.
const SCAN_RESUMES: u32 = 3;

/// Bound on one call or one streamed message: a hung campaign manager must
/// fail the batch (to be retried) rather than stall the worker for good.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

async fn bounded<T>(
    fut: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(CALL_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::unavailable(format!(
                "no answer within {} s",
                CALL_TIMEOUT.as_secs()
            )))
        })
}

#[async_trait]
impl ActionSource for CampaignManagerClient<Peer> {
    async fn open_actions(&self, vins: &[String]) -> Result<Vec<pb::VehicleActions>, StagingError> {
        let mut client = self.clone();
        // The inherent gRPC method, not this trait's method of the same name.
        let res = bounded(CampaignManagerClient::open_actions(
            &mut client,
            pb::OpenActionsRequest {
                vins: vins.to_vec(),
            },
        ))
        .await
        .map_err(|s| StagingError::source_status(&s))?;
        Ok(res.into_inner().vehicles)
    }

    async fn scan_all(&self, batch_size: u32) -> Result<ActionBatches, StagingError> {
        let state = Scan {
            client: self.clone(),
            batch_size,
            after_vin: String::new(),
            stream: None,
            failures: 0,
            done: false,
        };
        Ok(futures::stream::unfold(state, Scan::next).boxed())
    }

    async fn campaign_vins(&self, campaign_id: &str) -> Result<Vec<String>, StagingError> {
        let mut client = self.clone();
        let mut rows = bounded(client.report_vehicles(pb::ReportRequest {
            id: campaign_id.to_owned(),
            top_failures: 0,
        }))
        .await
        .map_err(|s| StagingError::source_status(&s))?
        .into_inner();
        let mut vins: Vec<String> = Vec::new();
        while let Some(msg) = bounded(rows.message())
            .await
            .map_err(|s| StagingError::source_status(&s))?
        {
            for row in msg.rows {
                // Rows come in VIN order, one per action.
                if vins.last() != Some(&row.vin) {
                    vins.push(row.vin);
                }
            }
        }
        Ok(vins)
    }
}

/// A scan that survives a dropped stream (a restarted campaign manager, a
/// network blip) by resuming after the last VIN it delivered.
struct Scan {
    client: CampaignManagerClient<Peer>,
    batch_size: u32,
    after_vin: String,
    stream: Option<Streaming<pb::OpenActionsResponse>>,
    failures: u32,
    done: bool,
}

type ScanItem = Result<Vec<pb::VehicleActions>, StagingError>;

impl Scan {
    async fn next(mut self) -> Option<(ScanItem, Self)> {
        loop {
            if self.done {
                return None;
            }
            if self.stream.is_none() {
                let req = pb::ScanOpenActionsRequest {
                    after_vin: self.after_vin.clone(),
                    batch_size: self.batch_size,
                };
                match bounded(self.client.scan_open_actions(req)).await {
                    Ok(r) => self.stream = Some(r.into_inner()),
                    Err(status) => match self.retry(status).await {
                        Some(err) => return Some((Err(err), self)),
                        None => continue,
                    },
                }
            }
            let stream = self.stream.as_mut().expect("opened above");
            match bounded(stream.message()).await {
                Ok(Some(msg)) => {
                    self.failures = 0;
                    if let Some(last) = msg.vehicles.last() {
                        self.after_vin.clone_from(&last.vin);
                    }
                    return Some((Ok(msg.vehicles), self));
                }
                Ok(None) => return None,
                Err(status) => {
                    self.stream = None;
                    match self.retry(status).await {
                        Some(err) => return Some((Err(err), self)),
                        None => continue,
                    }
                }
            }
        }
    }

    /// `None` to try again, or the error that ends the scan.
    async fn retry(&mut self, status: tonic::Status) -> Option<StagingError> {
        let err = StagingError::source_status(&status);
        if ErrorCode::from_grpc(status.code()) == ErrorCode::Unavailable
            && self.failures < SCAN_RESUMES
        {
            self.failures += 1;
            tracing::warn!(error = %err, after_vin = %self.after_vin, "open action scan broke off, resuming");
            tokio::time::sleep(Duration::from_millis(200 * u64::from(self.failures))).await;
            return None;
        }
        self.done = true;
        Some(err)
    }
}
