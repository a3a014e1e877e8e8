//! How the vehicle adapters reach staging: in this process (the stored
//! bytes, no protobuf in between) or over gRPC, behind one type so an
//! adapter does not care where staging runs.

use std::time::Duration;

use ota_common::peer::Peer;
use ota_common::ErrorCode;
use ota_proto::v1 as pb;
use pb::staging_client::StagingClient;

use crate::document::{Document, StoredDoc};
use crate::{StagingError, StagingService};

/// Bound on one remote call: a hung staging service must become an error
/// the vehicle retries, not a request held open until the vehicle gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub enum StagingPeer {
    Local(StagingService),
    Remote(StagingClient<Peer>),
}

/// A document as staging handed it over: the stored JSON when local, the
/// protobuf when remote.
pub enum Found {
    Stored(StoredDoc),
    Proto(pb::StagedDocument),
}

impl Found {
    pub fn etag(&self) -> &str {
        match self {
            Self::Stored(d) => &d.etag,
            Self::Proto(d) => &d.etag,
        }
    }

    pub fn into_document(self, vin: &str) -> Result<Document, StagingError> {
        match self {
            Self::Stored(d) => d.document().map_err(|e| StagingError::Corrupt {
                vin: vin.to_owned(),
                reason: e.to_string(),
            }),
            Self::Proto(d) => Ok(Document::from_proto(d)),
        }
    }

    /// The stored form: the JSON every protocol serves and its etag.
    pub fn into_stored(self, vin: &str) -> Result<StoredDoc, StagingError> {
        match self {
            Self::Stored(d) => Ok(d),
            Self::Proto(d) => StoredDoc::from_proto(d).map_err(|e| StagingError::Build {
                vin: vin.to_owned(),
                reason: e.to_string(),
            }),
        }
    }
}

impl StagingPeer {
    pub fn local(service: StagingService) -> Self {
        Self::Local(service)
    }

    pub fn remote(peer: Peer) -> Self {
        Self::Remote(StagingClient::new(peer).max_decoding_message_size(16 * 1024 * 1024))
    }

    pub async fn find(&self, vin: &str) -> Result<Found, StagingError> {
        match self {
            Self::Local(s) => Ok(Found::Stored(s.lookup(vin).await?)),
            Self::Remote(c) => {
                // Boxed: the call's future is about 2.7 KB, and held in
                // place it would make every caller's future (a poll's, in
                // each adapter) that large, which glibc allocates on its
                // slow path (over 1 KB it consolidates the free lists
                // first), a cost even lookups in the process would pay.
                let req = pb::GetActionsRequest { vin: vin.into() };
                let mut client = c.clone();
                let call = Box::pin(bounded(client.get_actions(req)));
                Ok(Found::Proto(call.await?))
            }
        }
    }

    pub async fn document(&self, vin: &str) -> Result<Document, StagingError> {
        self.find(vin).await?.into_document(vin)
    }

    /// Recomputes one vehicle's document now. Adapters call it after a
    /// vehicle finishes an action: the event-driven update follows within
    /// the staging lag, and a vehicle polling again before that would be
    /// handed the action it has just finished.
    pub async fn restage_vin(&self, vin: &str) -> Result<(), StagingError> {
        match self {
            Self::Local(s) => s.stager().stage_vins(&[vin.to_owned()]).await.map(drop),
            Self::Remote(c) => {
                let req = pb::RestageRequest {
                    scope: Some(pb::restage_request::Scope::Vins(pb::VinList {
                        vins: vec![vin.to_owned()],
                    })),
                };
                bounded(c.clone().restage(req)).await.map(drop)
            }
        }
    }

    /// [`restage_vin`](Self::restage_vin) after a vehicle's final report.
    /// A failure is only logged: the report is recorded, and the staging
    /// event it produced brings the document current within the lag.
    pub async fn restage_after_finish(&self, vin: &str) {
        if let Err(e) = self.restage_vin(vin).await {
            tracing::warn!(error = %e, vin, "restaging a vehicle after its final report failed");
        }
    }
}

async fn bounded<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, StagingError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(StagingError::Peer {
            code: ErrorCode::from_grpc(status.code()),
            message: status.message().to_owned(),
        }),
        Err(_) => Err(StagingError::Unavailable(format!(
            "the staging service gave no answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}
