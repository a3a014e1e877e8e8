//! `/api/v1/campaigns`: campaign files in, their lifecycle (approve, launch,
//! pause, resume, abort, cancel, advance) and priority.
//!
//! axum cannot route a parameter followed by a literal within one segment,
//! so `POST /api/v1/campaigns/{id}:approve` arrives at
//! `/api/v1/campaigns/{target}` and the action is split off here.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use ota_auth::Role;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::model::{Campaign, CampaignValidation, SpecProblem};
use crate::{Caller, RestError, RestState};

/// The actions of `POST /api/v1/campaigns/{id}:ACTION`.
pub const ACTIONS: [&str; 7] = [
    "approve", "launch", "pause", "resume", "abort", "cancel", "advance",
];

/// The campaign file of a request body: any text (YAML or JSON), whatever
/// text content type it was sent as.
fn campaign_text(
    s: &RestState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, RestError> {
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if ct.starts_with("multipart/") {
            return Err(RestError::Invalid(format!(
                "content type {ct:?} is not supported: send the campaign file itself as the body (application/yaml, text/yaml or application/json)"
            )));
        }
    }
    let body = body.map_err(|e| bytes_rejection(s, e))?;
    String::from_utf8(body.to_vec())
        .map_err(|e| RestError::Invalid(format!("the campaign file is not UTF-8 text: {e}")))
}

fn bytes_rejection(s: &RestState, e: BytesRejection) -> RestError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        RestError::TooLarge(s.limits.max_body_bytes)
    } else {
        RestError::Invalid(e.body_text().to_lowercase())
    }
}

pub async fn create(
    caller: Caller,
    State(s): State<RestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    let who = caller.require(Role::Engineer)?;
    let spec = campaign_text(&s, &headers, body)?;
    let r = s
        .campaigns
        .clone()
        .create_campaign(pb::CreateCampaignRequest {
            spec,
            actor: who.principal.clone(),
        })
        .await?
        .into_inner();
    if !r.errors.is_empty() {
        return Err(RestError::InvalidCampaign(
            r.errors.into_iter().map(SpecProblem::from).collect(),
        ));
    }
    let c = r.campaign.ok_or_else(|| {
        tonic::Status::internal("the campaign manager answered neither a campaign nor errors")
    })?;
    tracing::info!(by = %who.principal, campaign = %c.id, name = %c.name, "campaign created");
    Ok((StatusCode::CREATED, Json(Campaign::from(c))).into_response())
}

pub async fn validate(
    caller: Caller,
    State(s): State<RestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CampaignValidation>, RestError> {
    caller.require(Role::Viewer)?;
    let spec = campaign_text(&s, &headers, body)?;
    let r = s
        .campaigns
        .clone()
        .validate_campaign(pb::ValidateCampaignRequest { spec })
        .await?
        .into_inner();
    Ok(Json(CampaignValidation {
        valid: r.errors.is_empty(),
        errors: r.errors.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
}

#[derive(Serialize)]
pub struct CampaignList {
    campaigns: Vec<Campaign>,
}

pub async fn list(
    caller: Caller,
    State(s): State<RestState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CampaignList>, RestError> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| RestError::Invalid(e.body_text().to_lowercase()))?;
    // No state, or an empty one, lists them all.
    let state = match q.state.as_deref() {
        None | Some("") => pb::CampaignState::Unspecified,
        Some(name) => name.parse().map_err(RestError::Invalid)?,
    };
    let r = s
        .campaigns
        .clone()
        .list_campaigns(pb::ListCampaignsRequest {
            state: state.into(),
        })
        .await?
        .into_inner();
    Ok(Json(CampaignList {
        campaigns: r.campaigns.into_iter().map(Into::into).collect(),
    }))
}

pub async fn get(
    caller: Caller,
    State(s): State<RestState>,
    Path(id): Path<String>,
) -> Result<Json<Campaign>, RestError> {
    caller.require(Role::Viewer)?;
    let c = s
        .campaigns
        .clone()
        .get_campaign(pb::GetCampaignRequest { id })
        .await?
        .into_inner();
    Ok(Json(c.into()))
}

/// The optional body of an action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/campaigns/{id}:ACTION`, body `{"reason": "..."}` or none.
pub async fn action(
    caller: Caller,
    State(s): State<RestState>,
    Path(target): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    let Some((id, action)) = target.rsplit_once(':') else {
        return Err(RestError::NoRoute(format!(
            "POST /api/v1/campaigns/{target} (name an action: /api/v1/campaigns/{{id}}:ACTION with ACTION one of {})",
            ACTIONS.join(", ")
        )));
    };
    if !ACTIONS.contains(&action) {
        return Err(RestError::UnknownAction(action.to_owned()));
    }
    // Approval needs an approver who is a person (a service has no eyes);
    // the campaign manager checks the role again and also that the
    // approver's principal is not the campaign creator's.
    let who = caller.require(if action == "approve" {
        Role::Approver
    } else {
        Role::Engineer
    })?;
    if action == "approve" {
        who.require_person("approving")?;
    }
    let body = body.map_err(|e| bytes_rejection(&s, e))?;
    let ReasonBody { reason } = if body.iter().all(u8::is_ascii_whitespace) {
        ReasonBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            RestError::Invalid(format!(
                "invalid body: {e} (expected nothing or {{\"reason\": \"...\"}})"
            ))
        })?
    };
    let req = pb::CampaignTransitionRequest {
        id: id.to_owned(),
        actor: who.principal.clone(),
        reason,
        actor_role: who.role.to_string(),
    };
    let mut client = s.campaigns.clone();
    let c = match action {
        "approve" => client.approve(req).await,
        "launch" => client.launch(req).await,
        "pause" => client.pause(req).await,
        "resume" => client.resume(req).await,
        "abort" => client.abort(req).await,
        "cancel" => client.cancel(req).await,
        _ => client.advance(req).await,
    }?
    .into_inner();
    tracing::info!(by = %who.principal, campaign = %c.id, action, state = %c.state, "campaign action");
    Ok(Json(Campaign::from(c)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    priority: i32,
    #[serde(default)]
    reason: String,
}

pub async fn set_priority(
    caller: Caller,
    State(s): State<RestState>,
    Path(id): Path<String>,
    body: Result<Json<PriorityBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Campaign>, RestError> {
    let who = caller.require(Role::Engineer)?;
    let Json(body) = body?;
    let c = s
        .campaigns
        .clone()
        .set_priority(pb::SetPriorityRequest {
            id,
            priority: body.priority,
            actor: who.principal.clone(),
            reason: body.reason,
        })
        .await?
        .into_inner();
    tracing::info!(by = %who.principal, campaign = %c.id, priority = c.priority, "campaign priority set");
    Ok(Json(c.into()))
}
