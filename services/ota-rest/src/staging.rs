//! Staging's statistics and restaging, for operators.

use axum::extract::State;
use axum::Json;
use ota_auth::Role;
use ota_common::ErrorBody;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{Caller, RestError, RestState};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Either `campaign_id` or `vins`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestageBody {
    /// The vehicles of this campaign.
    pub campaign_id: Option<String>,
    #[serde(default)]
    pub vins: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Restaged {
    /// Vehicles recomputed.
    pub vehicles: u64,
    /// Staged documents that changed.
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

/// Staging statistics: staged vehicles, lag, queue depth, last reconcile (viewer)
#[utoipa::path(
    get,
    path = "/api/v1/staging/stats",
    tag = "staging",
    operation_id = "staging_stats",
    responses(
        (status = 200, description = "Statistics", body = StagingStats),
    ),
)]
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

/// Recompute staged documents of a campaign's vehicles or of listed VINs (engineer)
#[utoipa::path(
    post,
    path = "/api/v1/staging:restage",
    tag = "staging",
    operation_id = "restage",
    request_body = RestageBody,
    responses(
        (status = 200, description = "Vehicles recomputed and documents changed", body = Restaged),
        (status = 400, description = "Neither or both of `campaign_id` and `vins`, or a body that is not the JSON above", body = ErrorBody),
        (status = 403, description = "The caller's role is below engineer", body = ErrorBody),
    ),
)]
pub async fn restage(
    caller: Caller,
    State(s): State<RestState>,
    body: Result<Json<RestageBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Restaged>, RestError> {
    caller.require(Role::Engineer)?;
    let Json(body) = body?;
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
