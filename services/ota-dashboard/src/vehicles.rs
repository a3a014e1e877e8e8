//! `/ui/vehicles/{vin}`: what support needs when an owner calls. The
//! inventory with each field's source, online or not, the staged document
//! exactly as the vehicle receives it, its actions with every status
//! report, and for each campaign why the rules did or did not pick it.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use ota_common::vehicle::Vehicle;
use ota_common::vin::Vin;
use ota_proto::v1::{self as pb, CampaignState};
use ota_rule_engine::{ExplainNode, Explanation};
use serde::Deserialize;

use crate::layout::{self, ago, badge, time, ts, Nav};
use crate::session::User;
use crate::{DashError, DashState};

/// Campaigns explained on one page at most (its own, then the active ones).
const EXPLAINED: usize = 20;

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    vin: Option<String>,
}

/// The VIN search box: to the vehicle's page, or a form to type one.
pub async fn search(user: User, Query(q): Query<SearchQuery>) -> Result<Response, DashError> {
    let vin = q.vin.as_deref().map(str::trim).unwrap_or_default();
    if vin.is_empty() {
        let body = html! {
            h1 { "Vehicles" }
            div.panel {
                form method="get" action="/ui/vehicles" {
                    label for="vin" { "VIN " }
                    input #vin type="text" name="vin" maxlength="64" placeholder="17 characters" autofocus;
                    " " button.primary type="submit" { "Look up" }
                }
            }
        };
        return Ok(layout::page(&user, "Vehicles", Nav::Vehicles, false, body).into_response());
    }
    let vin =
        Vin::parse(&vin.to_ascii_uppercase()).map_err(|e| DashError::Invalid(e.to_string()))?;
    Ok(Redirect::to(&format!("/ui/vehicles/{vin}")).into_response())
}

pub async fn page(
    user: User,
    State(s): State<DashState>,
    Path(vin): Path<String>,
) -> Result<Response, DashError> {
    let vin = Vin::parse(&vin)
        .map_err(|e| DashError::Invalid(e.to_string()))?
        .into_string();
    let vehicle: Vehicle = s
        .api
        .vehicles
        .clone()
        .get(pb::GetVehicleRequest { vin: vin.clone() })
        .await
        .map_err(|e| match e.code() {
            tonic::Code::NotFound => DashError::NotFound(format!("no vehicle {vin}")),
            _ => e.into(),
        })?
        .into_inner()
        .into();
    let staged = match s.api.staging.clone() {
        Some(mut staging) => Some(
            staging
                .get_actions(pb::GetActionsRequest { vin: vin.clone() })
                .await
                .map(|d| d.into_inner()),
        ),
        None => None,
    };
    let actions = s
        .api
        .campaigns
        .clone()
        .vehicle_actions(pb::VehicleActionsRequest { vin: vin.clone() })
        .await?
        .into_inner()
        .actions;
    let explained = explanations(&s, &vin, &actions).await?;
    let now = Utc::now();
    let poll_after = staged
        .as_ref()
        .and_then(|d| d.as_ref().ok())
        .map_or(300, |d| d.poll_after_s.max(1));
    let live = actions
        .iter()
        .any(|a| a.row.as_ref().is_some_and(|r| r.state().is_open()));
    let body = html! {
        h1 { span.mono { (vin) } " " (presence(vehicle.last_seen, poll_after, now)) span #updated {} }
        div.grid {
            div.panel { h2 { "Inventory" } (inventory(&vehicle)) }
            div.panel #staged data-live {
                h2 { "Staged document" }
                p.muted { "What the vehicle receives on its next poll (HTTP, MQTT), byte for byte." }
                @match &staged {
                    None => p.muted { "Staging is not reachable from this process." },
                    Some(Err(e)) => div.alert { "Staging did not answer: " (e.message()) },
                    Some(Ok(d)) => (staged_document(d.clone())),
                }
            }
        }
        div.panel #actions data-live { h2 { "Actions" } (action_list(&actions)) }
        div.panel { h2 { "Why this vehicle is, or is not, in each campaign" } (explain_list(&explained)) }
    };
    Ok(layout::page(&user, &vin, Nav::Vehicles, live, body).into_response())
}

/// Online when it was heard from within two of its poll intervals.
fn presence(last_seen: Option<DateTime<Utc>>, poll_after_s: u32, now: DateTime<Utc>) -> Markup {
    match last_seen {
        None => html! { (badge("never seen")) },
        Some(t) if (now - t).num_seconds() <= 2 * i64::from(poll_after_s) => {
            html! { (badge("online")) " " span.muted title=(t.to_rfc3339()) { "seen " (ago(t, now)) } }
        }
        Some(t) => {
            html! { (badge("offline")) " " span.muted title=(t.to_rfc3339()) { "last seen " (ago(t, now)) } }
        }
    }
}

fn inventory(v: &Vehicle) -> Markup {
    let mut rows: Vec<(String, String, &str, Option<DateTime<Utc>>)> = Vec::new();
    let mut field = |path: &str, value: Option<String>| {
        if let Some(value) = value {
            let source = v.provenance.get(path).map(String::as_str).unwrap_or("");
            rows.push((
                path.to_owned(),
                value,
                source,
                v.provenance_at.get(path).copied(),
            ));
        }
    };
    field("model", v.model.clone());
    field("model_year", v.model_year.map(|y| y.to_string()));
    field("platform", v.platform.clone());
    field("gateway", v.gateway.clone());
    field("protocol", v.protocol.clone());
    field("region", v.region.clone());
    field("country", v.country.clone());
    field("tags", (!v.tags.is_empty()).then(|| v.tags.join(", ")));
    for (k, val) in &v.attributes {
        field(&format!("attributes.{k}"), Some(val.clone()));
    }
    for (name, ecu) in &v.ecus {
        field(
            &format!("ecus.{name}.hw"),
            (!ecu.hw.is_empty()).then(|| ecu.hw.clone()),
        );
        field(
            &format!("ecus.{name}.sw"),
            (!ecu.sw.is_empty()).then(|| ecu.sw.clone()),
        );
    }
    html! {
        table.kv {
            thead { tr { th { "Field" } th { "Value" } th { "Source" } th { "Set" } } }
            tbody {
                @for (path, value, source, at) in &rows {
                    tr {
                        th.mono { (path) }
                        td { (value) }
                        td { @if source.is_empty() { span.muted { "–" } } @else { (source) } }
                        td.when {
                            @match at {
                                Some(t) => time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M")) },
                                None => span.muted { "–" },
                            }
                        }
                    }
                }
            }
        }
        p.muted { "Known since " (time(Some(v.created_at))) " · last changed " (time(Some(v.updated_at))) }
    }
}

fn staged_document(d: pb::StagedDocument) -> Markup {
    // The bytes as served, not re-formatted: support compares them with
    // what the vehicle logged.
    match ota_staging::StoredDoc::from_proto(d) {
        Ok(doc) => html! {
            pre.json.raw { (String::from_utf8_lossy(&doc.json)) }
            p.muted { (doc.json.len()) " bytes · etag " code { (doc.etag) } }
        },
        Err(e) => html! { div.alert { "The staged document cannot be shown: " (e.to_string()) } },
    }
}

fn action_list(actions: &[pb::VehicleAction]) -> Markup {
    html! {
        @if actions.is_empty() {
            p.muted { "No campaign has given this vehicle an action." }
        }
        @for a in actions {
            @if let Some(r) = &a.row {
                div.action {
                    p {
                        a href=(format!("/ui/campaigns/{}", a.campaign_id)) { (a.campaign_name) }
                        " " (badge(a.campaign_state().as_str())) " · "
                        (r.ecu) " → " code { (r.package) " " (r.version) } " · "
                        (badge(r.state().as_str()))
                        " · wave " (r.wave + 1) " · attempt " (a.attempt.max(1))
                        @if !r.message.is_empty() { " · " em { (r.message) } }
                    }
                    @if a.reports.is_empty() { p.muted { "No status reports yet." } } @else {
                        table.reports {
                            thead { tr { th { "When" } th { "State" } th.num { "Progress" } th { "Message" } th { "Via" } } }
                            tbody {
                                @for rep in &a.reports {
                                    tr {
                                        td { (time(ts(&rep.at))) }
                                        td { (badge(rep.state().as_str())) }
                                        td.num { (rep.progress) "%" }
                                        td { (rep.message) }
                                        td { (rep.protocol) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One campaign's explanation for the vehicle, or why there is none.
struct Explained {
    campaign: pb::Campaign,
    has_action: bool,
    result: Result<Explanation, String>,
}

/// The campaigns to explain: the vehicle's own, then the active ones it
/// is not in (the usual question: "why did my car not update?").
async fn explanations(
    s: &DashState,
    vin: &str,
    actions: &[pb::VehicleAction],
) -> Result<Vec<Explained>, DashError> {
    let mut ids: BTreeMap<String, bool> = actions
        .iter()
        .map(|a| (a.campaign_id.clone(), true))
        .collect();
    let mut wanted: Vec<String> = actions.iter().map(|a| a.campaign_id.clone()).collect();
    for state in [
        CampaignState::Running,
        CampaignState::Paused,
        CampaignState::Approved,
    ] {
        let list = s
            .api
            .campaigns
            .clone()
            .list_campaigns(pb::ListCampaignsRequest {
                state: state as i32,
            })
            .await?
            .into_inner()
            .campaigns;
        for c in list {
            if ids.insert(c.id.clone(), false).is_none() {
                wanted.push(c.id);
            }
        }
    }
    wanted.dedup();
    let mut out = Vec::new();
    for id in wanted.into_iter().take(EXPLAINED) {
        let campaign = match s
            .api
            .campaigns
            .clone()
            .get_campaign(pb::GetCampaignRequest { id: id.clone() })
            .await
        {
            Ok(c) => c.into_inner(),
            Err(_) => continue,
        };
        let result = match ota_campaign_manager::spec::parse(&campaign.spec) {
            Err(errors) => Err(format!(
                "the campaign file cannot be read: {}",
                errors.first().map(|e| e.to_string()).unwrap_or_default()
            )),
            Ok(spec) => s
                .api
                .rules
                .clone()
                .explain(pb::ExplainRequest {
                    rules: Some(ota_campaign_manager::manager::rule_set(&spec).into()),
                    vin: vin.to_owned(),
                })
                .await
                .map(|r| Explanation::from(r.into_inner()))
                .map_err(|e| e.message().to_owned()),
        };
        out.push(Explained {
            has_action: ids.get(&id).copied().unwrap_or(false),
            campaign,
            result,
        });
    }
    Ok(out)
}

fn explain_list(list: &[Explained]) -> Markup {
    html! {
        @if list.is_empty() { p.muted { "No campaign is running, paused or approved, and this vehicle has no actions." } }
        @for e in list {
            div.explain {
                h3 {
                    a href=(format!("/ui/campaigns/{}", e.campaign.id)) { (e.campaign.name) }
                    " " (badge(e.campaign.state().as_str()))
                    @if e.has_action { " " (badge("has an action")) }
                }
                @match &e.result {
                    Err(msg) => div.alert { (msg) },
                    Ok(x) => {
                        p { strong { (x.result.reason()) } }
                        p.muted { "Target" }
                        (tree(&x.target))
                        @for (i, rule) in x.rules.iter().enumerate() {
                            p.muted {
                                "Rule " (i + 1)
                                @if x.result.rule_index == Some(i) { " " (badge("won")) }
                            }
                            (tree(rule))
                        }
                    }
                }
            }
        }
    }
}

fn tree(n: &ExplainNode) -> Markup {
    html! {
        ul.tree {
            li {
                code { (n.expression) }
                " → "
                @if let Some(err) = &n.error { span.err { "error: " (err) } }
                @else if let Some(v) = &n.value {
                    span class=(match v.as_str() { "true" => "v-true", "false" => "v-false", _ => "v" }) { (v) }
                }
                @for c in &n.children { (tree(c)) }
            }
        }
    }
}
