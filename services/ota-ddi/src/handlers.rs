//! The DDI resources. Every one checks the tenant and the caller first.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use ota_artifacts::hosted_sha256;
use ota_auth::AuthError;
use ota_common::rate::Budget;
use ota_proto::v1 as pb;
use ota_staging::document::{Action, Artifact};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::ids::ActionRef;
use crate::model::{self, ConfigData, Execution, Feedback, Mode};
use crate::seen::Seen;
use crate::{DdiError, DdiState, Inner, MAX_BODY_BYTES, TENANT};

type Result<T> = std::result::Result<T, DdiError>;

/// Who is calling and how links back to this controller start.
struct Caller {
    vin: String,
    /// `{base}/{tenant}/controller/v1/{vin}`, with the tenant as the device
    /// spelled it so its own URL matching keeps working.
    url: String,
    base: String,
}

/// Checks the tenant and the caller, then takes one request from the
/// controller's `budget` (None: not counted). Counted after
/// authentication, so nobody can use up another controller's budget
/// without its secret.
async fn authorize(
    s: &Inner,
    tenant: &str,
    controller: &str,
    headers: &HeaderMap,
    budget: Option<Budget>,
) -> Result<Caller> {
    if !tenant.eq_ignore_ascii_case(TENANT) {
        return Err(DdiError::UnknownTenant(tenant.to_owned()));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(DdiError::MissingToken)?;
    let (scheme, token) = auth.trim().split_once(' ').ok_or(DdiError::MissingToken)?;
    let token = token.trim();
    if scheme.eq_ignore_ascii_case("TargetToken") {
        let identity = s
            .credentials
            .authenticate(token)
            .await
            .map_err(|e| match e {
                AuthError::BadToken | AuthError::MissingToken => DdiError::BadToken,
                e => DdiError::Auth(e),
            })?;
        if identity.vin != controller {
            return Err(DdiError::WrongVehicle {
                token_vin: identity.vin,
                // The path segment is anything a caller sent.
                controller: ota_common::vin::shown(controller),
            });
        }
    } else if scheme.eq_ignore_ascii_case("GatewayToken") {
        let ok = s
            .gateway_token
            .as_deref()
            .is_some_and(|g| ota_common::secret::constant_time_eq(g.as_bytes(), token.as_bytes()));
        if !ok {
            return Err(DdiError::BadToken);
        }
        ota_common::Vin::parse(controller).map_err(|e| {
            DdiError::NotFound(format!(
                "controller {:?} ({e})",
                ota_common::vin::shown(controller)
            ))
        })?;
    } else {
        return Err(DdiError::WrongScheme(ota_common::vin::shown(scheme)));
    }
    if let Some(seen) = &s.last_seen {
        seen.record(controller);
    }
    if let Some(budget) = budget {
        if let Err(wait) = s.limits.check(controller, budget) {
            return Err(DdiError::RateLimited {
                controller: controller.to_owned(),
                budget: budget.as_str(),
                retry_after_s: ota_common::rate::retry_after_s(wait),
            });
        }
    }
    let base = if s.base_url.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    } else {
        s.base_url.clone()
    };
    Ok(Caller {
        vin: controller.to_owned(),
        url: format!("{base}/{tenant}/controller/v1/{controller}"),
        base,
    })
}

fn parse<T: DeserializeOwned>(
    body: std::result::Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            DdiError::TooLarge(MAX_BODY_BYTES)
        } else {
            DdiError::Invalid(r.body_text())
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| DdiError::Invalid(format!("invalid {what}: {e}")))
}

/// Changes whenever the action or the document does, so a device that
/// compares deployment links notices a new deployment.
fn change_hash(etag: &str, action_id: &str) -> String {
    let d = Sha256::digest(format!("{etag}:{action_id}").as_bytes());
    hex::encode(&d[..8])
}

/// The base resource, counted in `ota_poll_requests_total{protocol="ddi",
/// outcome}` by its status, refusals included (as the HTTP vehicle API's
/// polls are).
pub(crate) async fn poll(
    state: State<DdiState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let res = answer_poll(state, path, headers).await.into_response();
    let outcome = match res.status().as_u16() {
        200 => metrics::SharedString::const_str("200"),
        429 => metrics::SharedString::const_str("429"),
        other => metrics::SharedString::from(other.to_string()),
    };
    metrics::counter!("ota_poll_requests_total", "protocol" => "ddi", "outcome" => outcome)
        .increment(1);
    res
}

async fn answer_poll(
    State(s): State<DdiState>,
    Path((tenant, controller)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let s = &s.inner;
    let c = authorize(s, &tenant, &controller, &headers, Some(Budget::Poll)).await?;
    let doc = s.staging.document(&c.vin).await?;
    let mut links = Map::new();
    // Until staging has caught up with the device's final report, the
    // document still holds the action it has just finished.
    let seen = s.memory.get(&c.vin);
    let just_finished = seen
        .as_ref()
        .filter(|seen| seen.finished.is_some())
        .map(|seen| (seen.action_id.as_str(), seen.attempt));
    let withdrawn = seen
        .as_ref()
        .filter(|seen| seen.finished.is_none())
        .filter(|seen| !doc.actions.iter().any(|a| a.action_id == seen.action_id));
    if let Some(seen) = withdrawn {
        // The device must settle the cancel before it gets the next
        // deployment, as with hawkBit.
        links.insert(
            "cancelAction".into(),
            json!({"href": format!("{}/cancelAction/{}", c.url, seen.ddi_id)}),
        );
    } else if let Some(a) = doc
        .actions
        .iter()
        .find(|a| just_finished != Some((a.action_id.as_str(), a.attempt.unwrap_or(1))))
    {
        let id = s.ids.ddi_id(&attempt_of(a)).await?;
        links.insert(
            "deploymentBase".into(),
            json!({"href": format!("{}/deploymentBase/{id}?c={}", c.url, change_hash(&doc.etag, &a.action_id))}),
        );
    }
    if !s.memory.configured(&c.vin) {
        links.insert(
            "configData".into(),
            json!({"href": format!("{}/configData", c.url)}),
        );
    }
    let mut body = json!({"config": {"polling": {"sleep": model::sleep(doc.poll_after_s)}}});
    if !links.is_empty() {
        body["_links"] = Value::Object(links);
    }
    Ok(Json(body).into_response())
}

/// The artifacts of an action with their DDI file names: the last segment
/// of the URL, made safe, and made unique within the action by a prefix.
fn files<'a>(base: &str, action: &'a Action) -> Vec<(String, &'a Artifact, Option<&'a str>)> {
    let mut out: Vec<(String, &Artifact, Option<&str>)> = Vec::new();
    for (i, a) in action.package.artifacts.iter().enumerate() {
        let path = a.url.split(['?', '#']).next().unwrap_or_default();
        let last = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or_default();
        let mut name: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() || name.starts_with('.') {
            name = format!("artifact{name}");
        }
        if out.iter().any(|(n, _, _)| *n == name) {
            name = format!("{i}-{name}");
        }
        out.push((name, a, hosted_sha256(base, &a.url)));
    }
    out
}

/// `ddi_id`: the action's id as the device knows it, which names the
/// software module in download links.
async fn chunk(
    s: &Inner,
    c: &Caller,
    action: &Action,
    ddi_id: &str,
    with_artifacts: bool,
) -> Result<model::Chunk> {
    let mut artifacts = Vec::new();
    for (filename, a, hosted) in files(&c.base, action)
        .into_iter()
        .filter(|_| with_artifacts)
    {
        let (href, sha1, md5) = match hosted {
            Some(sha) => {
                let digests = s.hosted_digests(sha).await?;
                if digests.is_none() {
                    tracing::warn!(sha256 = sha, action = %action.action_id, "hosted artifact missing from the store");
                }
                let (sha1, md5) = digests.unwrap_or_default();
                let href = format!("{}/softwaremodules/{ddi_id}/artifacts/{filename}", c.url);
                (href, sha1, md5)
            }
            // An external artifact's SHA-1 and MD5 are unknown; empty
            // strings make a client that checks them fail rather than
            // trust a made-up value.
            None => (a.url.clone(), String::new(), String::new()),
        };
        artifacts.push(model::Artifact {
            filename,
            hashes: model::Hashes {
                sha1,
                md5,
                sha256: a.sha256.clone(),
            },
            size: a.size,
            links: model::ArtifactLinks {
                download: model::Link { href: href.clone() },
                download_http: model::Link { href },
            },
        });
    }
    Ok(model::Chunk {
        part: action.ecu.clone(),
        version: action.package.version.clone(),
        name: action.package.name.clone(),
        artifacts,
    })
}

fn attempt_of(a: &Action) -> ActionRef {
    ActionRef {
        action_id: a.action_id.clone(),
        attempt: a.attempt.unwrap_or(1),
    }
}

/// The attempt behind a DDI id from the path.
async fn resolve(s: &Inner, vin: &str, ddi_id: &str) -> Result<ActionRef> {
    s.ids
        .action(ddi_id)
        .await?
        .ok_or_else(|| not_found(vin, ddi_id))
}

/// The open action of this attempt in the vehicle's staged document: an
/// earlier attempt of a retried action is no longer open.
async fn find_action(s: &Inner, vin: &str, action: &ActionRef) -> Result<Option<Action>> {
    let doc = s.staging.document(vin).await?;
    Ok(doc
        .actions
        .into_iter()
        .find(|a| a.action_id == action.action_id && a.attempt.unwrap_or(1) == action.attempt))
}

/// `ddi_id`: the id as the device sent it.
fn not_found(vin: &str, ddi_id: &str) -> DdiError {
    DdiError::NotFound(format!(
        "action {:?} of controller {vin}",
        ota_common::vin::shown(ddi_id)
    ))
}

pub(crate) async fn deployment_base(
    State(s): State<DdiState>,
    Path((tenant, controller, ddi_id)): Path<(String, String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response> {
    let s = &s.inner;
    let c = authorize(s, &tenant, &controller, &headers, Some(Budget::Poll)).await?;
    let r = resolve(s, &c.vin, &ddi_id).await?;
    let action = find_action(s, &c.vin, &r)
        .await?
        .ok_or_else(|| not_found(&c.vin, &ddi_id))?;
    let chunk = chunk(s, &c, &action, &ddi_id, true).await?;
    let action_id = r.action_id.clone();
    let seen = s.memory.get(&c.vin).filter(|x| x.ddi_id == ddi_id);
    if seen.is_none() {
        s.memory.saw(
            &c.vin,
            Seen {
                action_id: action_id.clone(),
                attempt: r.attempt,
                ddi_id: ddi_id.clone(),
                ecu: action.ecu.clone(),
                name: action.package.name.clone(),
                version: action.package.version.clone(),
                finished: None,
            },
        );
        // Off the response path: a slow campaign manager must not delay
        // the download, and a lost mark only leaves the action "staged".
        let mut cm = s.campaigns.clone();
        let req = pb::MarkDeliveredRequest {
            vin: c.vin.clone(),
            action_ids: vec![action_id.clone()],
        };
        tokio::spawn(async move {
            if let Err(e) = cm.mark_delivered(req).await {
                tracing::warn!(error = %e, "marking a DDI deployment delivered failed");
            }
        });
    }
    let history = q
        .contains_key("actionHistory")
        .then(|| model::ActionHistory {
            status: "running".into(),
            messages: Vec::new(),
        });
    Ok(Json(model::DeploymentBase {
        id: ddi_id,
        deployment: model::Deployment {
            download: "forced",
            update: "forced",
            chunks: vec![chunk],
        },
        action_history: history,
    })
    .into_response())
}

pub(crate) async fn deployment_feedback(
    State(s): State<DdiState>,
    Path((tenant, controller, ddi_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let s = &s.inner;
    let c = authorize(s, &tenant, &controller, &headers, Some(Budget::Report)).await?;
    let feedback: Feedback = parse(body, "feedback")?;
    let action_id = resolve(s, &c.vin, &ddi_id).await?.action_id;
    let (state, progress) = model::state_of(&feedback.status);
    let res = s
        .campaigns
        .clone()
        .report_status(pb::ReportStatusRequest {
            vin: c.vin.clone(),
            action_id: action_id.clone(),
            state: state.into(),
            progress,
            message: model::message_of(&feedback.status),
            seq: s.next_seq(),
            protocol: "ddi".into(),
        })
        .await?
        .into_inner();
    if res.state().is_final() {
        s.memory.finish(&c.vin, &action_id, res.state());
    }
    if state.is_finishing_report() {
        s.staging.restage_after_finish(&c.vin).await;
    }
    Ok(StatusCode::OK)
}

pub(crate) async fn cancel_action(
    State(s): State<DdiState>,
    Path((tenant, controller, ddi_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let s = &s.inner;
    let c = authorize(s, &tenant, &controller, &headers, Some(Budget::Poll)).await?;
    s.memory
        .get(&c.vin)
        .filter(|x| x.ddi_id == ddi_id && x.finished.is_none())
        .ok_or_else(|| not_found(&c.vin, &ddi_id))?;
    Ok(Json(json!({"id": ddi_id, "cancelAction": {"stopId": ddi_id}})).into_response())
}

pub(crate) async fn cancel_feedback(
    State(s): State<DdiState>,
    Path((tenant, controller, ddi_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let s = &s.inner;
    let c = authorize(s, &tenant, &controller, &headers, Some(Budget::Report)).await?;
    let feedback: Feedback = parse(body, "feedback")?;
    let Some(action_id) = s
        .memory
        .get(&c.vin)
        .filter(|x| x.ddi_id == ddi_id)
        .map(|x| x.action_id)
    else {
        return Err(not_found(&c.vin, &ddi_id));
    };
    // The platform already closed the action; the device only confirms.
    // Anything but a final answer keeps the cancel link up.
    if matches!(
        feedback.status.execution,
        Execution::Closed | Execution::Canceled | Execution::Rejected
    ) {
        s.memory.forget(&c.vin, &action_id);
    }
    Ok(StatusCode::OK)
}

pub(crate) async fn config_data(
    State(s): State<DdiState>,
    Path((tenant, controller)): Path<(String, String)>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let s = &s.inner;
    let c = authorize(s, &tenant, &controller, &headers, Some(Budget::Report)).await?;
    let config: ConfigData = parse(body, "configData")?;
    let remove = config.mode == Some(Mode::Remove);
    let mut attributes = std::collections::HashMap::new();
    for (key, value) in config.data {
        let value = match value {
            _ if remove => String::new(),
            Value::String(v) => v,
            Value::Null => String::new(),
            v @ (Value::Number(_) | Value::Bool(_)) => v.to_string(),
            _ => {
                return Err(DdiError::Invalid(format!(
                    "invalid configData: data.{key} must be a string"
                )))
            }
        };
        attributes.insert(key, value);
    }
    s.vehicles
        .clone()
        .report_inventory(pb::ReportInventoryRequest {
            vin: c.vin.clone(),
            ecus: Default::default(),
            attributes,
        })
        .await?;
    s.memory.set_configured(&c.vin);
    Ok(StatusCode::OK)
}

pub(crate) async fn installed_base(
    State(s): State<DdiState>,
    Path((tenant, controller, ddi_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let s = &s.inner;
    let c = authorize(s, &tenant, &controller, &headers, Some(Budget::Poll)).await?;
    let r = resolve(s, &c.vin, &ddi_id).await?;
    let seen = s.memory.get(&c.vin).filter(|x| x.ddi_id == ddi_id);
    let (chunk, status) = match find_action(s, &c.vin, &r).await? {
        Some(action) => (
            chunk(s, &c, &action, &ddi_id, true).await?,
            "running".to_owned(),
        ),
        None => {
            let seen = seen.clone().ok_or_else(|| not_found(&c.vin, &ddi_id))?;
            let chunk = model::Chunk {
                part: seen.ecu,
                version: seen.version,
                name: seen.name,
                artifacts: Vec::new(),
            };
            // Gone without the device closing it: withdrawn.
            (
                chunk,
                seen.finished
                    .unwrap_or(pb::ActionState::Cancelled)
                    .to_string(),
            )
        }
    };
    let status = seen
        .and_then(|x| x.finished)
        .map_or(status, |s| s.to_string());
    Ok(Json(model::DeploymentBase {
        id: ddi_id,
        deployment: model::Deployment {
            download: "forced",
            update: "forced",
            chunks: vec![chunk],
        },
        action_history: Some(model::ActionHistory {
            status,
            messages: Vec::new(),
        }),
    })
    .into_response())
}

/// A hosted artifact of one of the caller's open actions (the module id is
/// the action id), with Range support. Not counted against a budget: a
/// device on a poor link resumes a download with Range again and again,
/// and refusing a resume costs more than serving it. What a download costs
/// is bandwidth, which a request rate does not bound; it is served only
/// for an artifact of the caller's own open action.
pub(crate) async fn download(
    State(s): State<DdiState>,
    Path((tenant, controller, ddi_id, filename)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let s = &s.inner;
    let c = authorize(s, &tenant, &controller, &headers, None).await?;
    let r = resolve(s, &c.vin, &ddi_id).await?;
    let action = find_action(s, &c.vin, &r)
        .await?
        .ok_or_else(|| not_found(&c.vin, &ddi_id))?;
    let sha = files(&c.base, &action)
        .into_iter()
        .find(|(name, _, _)| *name == filename)
        .and_then(|(_, _, hosted)| hosted.map(str::to_owned))
        .ok_or_else(|| {
            DdiError::NotFound(format!(
                "hosted artifact {:?} of action {ddi_id}",
                ota_common::vin::shown(&filename)
            ))
        })?;
    Ok(ota_artifacts::serve(s.artifacts.as_ref(), &sha, &headers).await)
}
