//! `/api/v1/campaigns`: campaign files in, their lifecycle (approve, launch,
//! pause, resume, abort, cancel, advance) and priority.
//!
//! axum cannot route a parameter followed by a literal within one segment,
//! so `POST /api/v1/campaigns/{id}:approve` arrives at
//! `POST /api/v1/campaigns/{id}` and the action is split off here; the API
//! document shows each action as its own path ([`document_actions`]).

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use ota_auth::Role;
use ota_common::ErrorBody;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{HttpMethod, Paths};
use utoipa::openapi::OpenApi;

use crate::model::{Campaign, CampaignProblems, CampaignValidation, SpecProblem};
use crate::{Caller, RestError, RestState};

/// The actions of `POST /api/v1/campaigns/{id}:ACTION`, each with the
/// summary the API document gives it.
const ACTIONS: [(&str, &str); 7] = [
    ("approve", "Approve a draft (approver; not its creator)"),
    ("launch", "Launch an approved campaign (engineer)"),
    ("pause", "Pause a running campaign (engineer)"),
    ("resume", "Resume a paused campaign (engineer)"),
    ("abort", "Abort a running or paused campaign (engineer)"),
    (
        "cancel",
        "Cancel a campaign that has not launched (engineer)",
    ),
    ("advance", "Open the next wave now (engineer)"),
];

/// The action names, for messages.
pub(crate) fn action_names() -> String {
    ACTIONS.map(|(name, _)| name).join(", ")
}

/// Where `action` is routed: the path of `get`.
const CAMPAIGN_PATH: &str = "/api/v1/campaigns/{id}";

/// Replaces the one `POST /api/v1/campaigns/{id}` that `action` is routed
/// at with the paths people call, `POST /api/v1/campaigns/{id}:ACTION`,
/// right after it.
pub(crate) fn document_actions(doc: &mut OpenApi) {
    let mut paths = Paths::new();
    for (path, mut item) in std::mem::take(&mut doc.paths.paths) {
        let action = (path == CAMPAIGN_PATH).then(|| item.post.take()).flatten();
        paths.paths.insert(path, item);
        let Some(action) = action else { continue };
        for (name, summary) in ACTIONS {
            let mut op = action.clone();
            op.summary = Some(summary.to_owned());
            op.operation_id = Some(format!("{name}_campaign"));
            paths.add_path_operation(
                format!("{CAMPAIGN_PATH}:{name}"),
                vec![HttpMethod::Post],
                op,
            );
        }
    }
    doc.paths.paths = paths.paths;
}

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

/// Create a campaign in state draft from a campaign file, YAML or JSON (engineer)
#[utoipa::path(
    post,
    path = "/api/v1/campaigns",
    tag = "campaigns",
    operation_id = "create_campaign",
    request_body(
        description = "The campaign file itself, as YAML or JSON text",
        content(
            (String = "application/yaml"),
            (String = "text/yaml"),
            (Object = "application/json"),
            (String = "text/plain"),
        ),
    ),
    responses(
        (status = 201, description = "Created", body = Campaign),
        (status = 400, description = "The campaign file has problems; `errors` lists every one", body = CampaignProblems),
        (status = 403, description = "The caller's role is below engineer", body = ErrorBody),
    ),
)]
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

/// Check a campaign file without creating anything (viewer)
#[utoipa::path(
    post,
    path = "/api/v1/campaigns:validate",
    tag = "campaigns",
    operation_id = "validate_campaign",
    request_body(
        description = "The campaign file itself, as YAML or JSON text",
        content(
            (String = "application/yaml"),
            (String = "text/yaml"),
            (Object = "application/json"),
            (String = "text/plain"),
        ),
    ),
    responses(
        (status = 200, description = "Valid, or every problem", body = CampaignValidation),
        (status = 400, description = "A body that is not UTF-8 text, or a multipart form", body = ErrorBody),
    ),
)]
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

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only campaigns in this state; all when absent or empty.
    #[param(value_type = Option<pb::CampaignState>)]
    state: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CampaignList {
    campaigns: Vec<Campaign>,
}

/// List campaigns (viewer)
#[utoipa::path(
    get,
    path = "/api/v1/campaigns",
    tag = "campaigns",
    operation_id = "list_campaigns",
    params(ListQuery),
    responses(
        (status = 200, description = "Campaigns", body = CampaignList),
        (status = 400, description = "An unknown state or parameter", body = ErrorBody),
    ),
)]
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

/// Get a campaign (viewer)
#[utoipa::path(
    get,
    path = "/api/v1/campaigns/{id}",
    tag = "campaigns",
    operation_id = "get_campaign",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The campaign", body = Campaign),
        (status = 404, description = "No such campaign", body = ErrorBody),
    ),
)]
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
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Why; goes into the audit log and the campaign's state reason.
    #[serde(default)]
    reason: String,
}

/// Change a campaign's state
///
/// The body is optional.
#[utoipa::path(
    post,
    path = "/api/v1/campaigns/{id}",
    tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    request_body(content = Option<Reason>),
    responses(
        (status = 200, description = "The campaign in its new state", body = Campaign),
        (status = 400, description = "A body that is not the JSON above", body = ErrorBody),
        (status = 403, description = "The caller may not do this: approving takes an approver who is a person and not the campaign's creator, the others an engineer", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign's state does not allow this; the message names the state", body = ErrorBody),
    ),
)]
pub async fn action(
    caller: Caller,
    State(s): State<RestState>,
    Path(target): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    let Some((id, action)) = target.rsplit_once(':') else {
        return Err(RestError::NoRoute(format!(
            "POST /api/v1/campaigns/{target} (name an action: /api/v1/campaigns/{{id}}:ACTION with ACTION one of {})",
            action_names()
        )));
    };
    if !ACTIONS.iter().any(|(name, _)| *name == action) {
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
    let Reason { reason } = if body.iter().all(u8::is_ascii_whitespace) {
        Reason::default()
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    /// Higher wins a conflict over the same vehicle and ECU.
    #[schema(minimum = -1000, maximum = 1000)]
    priority: i32,
    #[serde(default)]
    reason: String,
}

/// Change a campaign's priority; conflicts are re-decided (engineer)
#[utoipa::path(
    put,
    path = "/api/v1/campaigns/{id}/priority",
    tag = "campaigns",
    operation_id = "set_campaign_priority",
    params(("id" = String, Path, description = "Campaign id")),
    request_body = PriorityBody,
    responses(
        (status = 200, description = "The campaign", body = Campaign),
        (status = 400, description = "A priority out of range, or a body that is not the JSON above", body = ErrorBody),
        (status = 403, description = "The caller's role is below engineer", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign's state does not allow this", body = ErrorBody),
    ),
)]
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
