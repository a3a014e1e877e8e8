//! Staging's statistics and restaging, for operators.

use axum::extract::State;
use axum::Json;
use ota_auth::Role;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{Caller, RestError, RestState};

#[derive(Debug, Serialize, Deserialize)]
pub struct StagingStats {
    pub store: String,
    pub staged_vehicles: u64,
    pub lag_p50_seconds: f64,
    pub lag_p99_seconds: f64,
    pub queue_depth: u64,
    pub events_processed: u64,
    pub last_reconcile: Option<chrono::DateTime<chrono::Utc>>,
    pub last_reconcile_repaired: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestageBody {
    pub campaign_id: Option<String>,
    #[serde(default)]
    pub vins: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Restaged {
    pub vehicles: u64,
    pub changed: u64,
}

fn client(
    s: &RestState,
) -> Result<pb::staging_client::StagingClient<ota_common::peer::Peer>, RestError> {
    s.staging.clone().ok_or_else(|| {
        RestError::Upstream(tonic::Status::unavailable(
            "staging is not reachable from this process (services / peers.staging)",
        ))
    })
}

pub async fn stats(
    caller: Caller,
    State(s): State<RestState>,
) -> Result<Json<StagingStats>, RestError> {
    caller.require(Role::Viewer)?;
    let r = client(&s)?
        .stats(pb::StatsRequest {})
        .await
        .map_err(RestError::Upstream)?
        .into_inner();
    Ok(Json(StagingStats {
        store: r.store,
        staged_vehicles: r.staged_vehicles,
        lag_p50_seconds: r.lag_p50_seconds,
        lag_p99_seconds: r.lag_p99_seconds,
        queue_depth: r.queue_depth,
        events_processed: r.events_processed,
        last_reconcile: r
            .last_reconcile
            .as_ref()
            .map(ota_common::vehicle::from_timestamp),
        last_reconcile_repaired: r.last_reconcile_repaired,
    }))
}

pub async fn restage(
    caller: Caller,
    State(s): State<RestState>,
    Json(body): Json<RestageBody>,
) -> Result<Json<Restaged>, RestError> {
    caller.require(Role::Engineer)?;
    let scope = match (body.campaign_id, body.vins.is_empty()) {
        (Some(id), true) => pb::restage_request::Scope::CampaignId(id),
        (None, false) => pb::restage_request::Scope::Vins(pb::VinList { vins: body.vins }),
        _ => {
            return Err(RestError::Invalid(
                "give either campaign_id or vins, not both and not neither".into(),
            ))
        }
    };
    let r = client(&s)?
        .restage(pb::RestageRequest { scope: Some(scope) })
        .await
        .map_err(RestError::Upstream)?
        .into_inner();
    Ok(Json(Restaged {
        vehicles: r.vehicles,
        changed: r.changed,
    }))
}
