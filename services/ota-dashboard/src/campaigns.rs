//! `/ui/campaigns`: every campaign with its progress, and one campaign's
//! waves, counts, failure rate, fleet breakdowns, failure triage (with the
//! retry of one group) and audit trail, with the lifecycle buttons the
//! user's role allows.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use maud::{html, Markup};
use ota_auth::Role;
use ota_campaign_manager::spec::{self, CampaignSpec};
use ota_proto::v1::{self as pb, CampaignState};
use serde::Deserialize;

use crate::layout::{self, badge, count, progress_bar, time, ts, Nav, Progress};
use crate::session::User;
use crate::{chart, DashError, DashState};

/// Reports fetched at once for the list.
const LIST_CONCURRENCY: usize = 8;
/// Most failure groups and audit entries a page shows.
const GROUPS_SHOWN: u32 = 50;
const AUDIT_SHOWN: u32 = 50;
/// VINs per call while writing a group's CSV.
const CSV_PAGE: u32 = 5000;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
}

pub async fn list(
    user: User,
    State(s): State<DashState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, DashError> {
    let filter = match q.state.as_deref().filter(|v| !v.is_empty() && *v != "all") {
        Some(v) => Some(v.parse::<CampaignState>().map_err(|_| {
            DashError::Invalid(format!(
                "unknown campaign state {:?}: expected one of {}",
                ota_common::vin::shown(v),
                CampaignState::ALL.map(|c| c.as_str()).join(", ")
            ))
        })?),
        None => None,
    };
    let campaigns = s
        .api
        .campaigns
        .clone()
        .list_campaigns(pb::ListCampaignsRequest {
            state: filter.map_or(0, |f| f as i32),
        })
        .await?
        .into_inner()
        .campaigns;
    let ids: Vec<String> = campaigns.iter().map(|c| c.id.clone()).collect();
    let reports: Vec<Option<pb::CampaignReport>> = futures::stream::iter(ids)
        .map(|id| {
            let mut client = s.api.campaigns.clone();
            async move {
                // A campaign whose report fails still shows in the list.
                client
                    .report(pb::ReportRequest {
                        id,
                        top_failures: 1,
                    })
                    .await
                    .ok()
                    .map(|r| r.into_inner())
            }
        })
        .buffered(LIST_CONCURRENCY)
        .collect()
        .await;
    let live = campaigns
        .iter()
        .any(|c| c.state() == CampaignState::Running);
    let chip = |value: &str, label: &str| {
        let active = q.state.as_deref().unwrap_or("all") == value;
        html! { a class=[active.then_some("active")] href=(format!("/ui/campaigns?state={value}")) { (label) } }
    };
    let body = html! {
        h1 { "Campaigns" span #updated {} }
        div.filters {
            (chip("all", "All"))
            @for st in CampaignState::ALL { (chip(st.as_str(), st.as_str())) }
        }
        div.panel #campaigns data-live {
            @if campaigns.is_empty() {
                p.muted { "No campaigns" @if let Some(f) = filter { " in state " (f.as_str()) } "." }
            } @else {
                table {
                    thead { tr {
                        th { "Campaign" } th { "State" } th.num { "Matched" } th { "Progress" }
                        th.num { "Failure rate" } th { "Wave" } th { "Updated" }
                    } }
                    tbody {
                        @for (c, r) in campaigns.iter().zip(&reports) {
                            tr {
                                td { a href=(format!("/ui/campaigns/{}", c.id)) { (c.name) } br; span.muted.mono { (c.id) } }
                                td { (badge(c.state().as_str())) }
                                @match r {
                                    Some(r) => {
                                        td.num { (count(r.total)) }
                                        td { (progress_bar(&Progress::from_counts(&r.by_state))) }
                                        td.num { (format!("{:.1}%", r.failure_rate)) }
                                    }
                                    None => { td.num { "?" } td.muted { "report unavailable" } td {} }
                                }
                                td { (wave_text(c)) }
                                td { (time(ts(&c.updated_at))) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&user, "Campaigns", Nav::Campaigns, live, body).into_response())
}

fn wave_text(c: &pb::Campaign) -> String {
    match c.current_wave {
        w if w < 0 => format!("not launched ({} waves)", c.waves.len()),
        w => format!("{} of {}", w + 1, c.waves.len()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    retried: Option<u64>,
    skipped: Option<u64>,
}

pub async fn page(
    user: User,
    State(s): State<DashState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, DashError> {
    let mut client = s.api.campaigns.clone();
    let c = client
        .get_campaign(pb::GetCampaignRequest { id: id.clone() })
        .await?
        .into_inner();
    let (mut c1, mut c2, mut c3) = (
        s.api.campaigns.clone(),
        s.api.campaigns.clone(),
        s.api.campaigns.clone(),
    );
    let (report, groups, audit) = tokio::try_join!(
        c1.report(pb::ReportRequest {
            id: id.clone(),
            top_failures: 10,
        }),
        c2.failure_groups(pb::FailureGroupsRequest {
            campaign_id: id.clone(),
            limit: GROUPS_SHOWN,
        }),
        c3.list_audit(pb::ListAuditRequest {
            entity_id: id.clone(),
            limit: AUDIT_SHOWN,
            before: 0,
        }),
    )?;
    let (report, groups, audit) = (
        report.into_inner(),
        groups.into_inner().groups,
        audit.into_inner().entries,
    );
    let spec = spec::parse(&c.spec).ok();
    let state = c.state();
    let live = state == CampaignState::Running;
    let body = html! {
        h1 { (c.name) " " (badge(state.as_str())) span #updated {} }
        p.muted {
            span.mono { (c.id) } " · created by " (c.created_by) " " (time(ts(&c.created_at)))
            @if !c.approved_by.is_empty() { " · approved by " (c.approved_by) }
            " · priority " (c.priority)
        }
        @if let (Some(n), Some(k)) = (q.retried, q.skipped) {
            div.note role="status" { "Retry: " (n) " vehicles offered the update again, " (k) " skipped (no retries left or no longer failed)." }
        }
        (actions(&user, &c))
        div #overview data-live { (overview(&c, &report, spec.as_ref())) }
        div #triage data-live { (triage(&user, &c, &groups, spec.as_ref())) }
        div #breakdown data-live { (breakdowns(&report)) }
        div #audit data-live { (audit_trail(&audit)) }
    };
    Ok(layout::page(&user, &c.name, Nav::Campaigns, live, body).into_response())
}

/// What each lifecycle button does and who may press it.
struct Transition {
    action: &'static str,
    label: &'static str,
    role: Role,
    from: &'static [CampaignState],
    confirm: Option<&'static str>,
    danger: bool,
}

const TRANSITIONS: [Transition; 7] = [
    Transition {
        action: "approve",
        label: "Approve",
        role: Role::Approver,
        from: &[CampaignState::Draft],
        confirm: None,
        danger: false,
    },
    Transition {
        action: "launch",
        label: "Launch",
        role: Role::Engineer,
        from: &[CampaignState::Approved],
        confirm: Some("Launch this campaign? Vehicles start receiving the update."),
        danger: false,
    },
    Transition {
        action: "pause",
        label: "Pause",
        role: Role::Engineer,
        from: &[CampaignState::Running],
        confirm: None,
        danger: false,
    },
    Transition {
        action: "resume",
        label: "Resume",
        role: Role::Engineer,
        from: &[CampaignState::Paused],
        confirm: None,
        danger: false,
    },
    Transition {
        action: "advance",
        label: "Open next wave",
        role: Role::Engineer,
        from: &[CampaignState::Running],
        confirm: Some("Open the next wave now?"),
        danger: false,
    },
    Transition {
        action: "abort",
        label: "Abort",
        role: Role::Engineer,
        from: &[CampaignState::Running, CampaignState::Paused],
        confirm: Some("Abort this campaign? Actions not yet delivered are cancelled."),
        danger: true,
    },
    Transition {
        action: "cancel",
        label: "Cancel",
        role: Role::Engineer,
        from: &[CampaignState::Draft, CampaignState::Approved],
        confirm: Some("Cancel this campaign?"),
        danger: true,
    },
];

fn actions(user: &User, c: &pb::Campaign) -> Markup {
    let state = c.state();
    let more_waves = c.current_wave + 1 < c.waves.len() as i32;
    let shown: Vec<&Transition> = TRANSITIONS
        .iter()
        .filter(|t| user.may(t.role) && t.from.contains(&state))
        .filter(|t| t.action != "advance" || more_waves)
        .collect();
    html! {
        @if !c.state_reason.is_empty() { div.note { "Why " (state.as_str()) ": " (c.state_reason) } }
        @if !c.last_error.is_empty() {
            div.alert role="alert" { "The rollout is failing on this campaign (" (c.failed_ticks) " ticks in a row, last " (time(ts(&c.last_error_at))) "): " (c.last_error) }
        }
        @if !shown.is_empty() {
            div.panel.actions {
                @for t in shown {
                    form method="post" action=(format!("/ui/campaigns/{}/action", c.id)) data-confirm=[t.confirm] {
                        (layout::csrf(user))
                        input type="hidden" name="action" value=(t.action);
                        @if matches!(t.action, "pause" | "abort" | "cancel") {
                            input type="text" name="reason" placeholder="reason (audited)" maxlength="500";
                        }
                        button type="submit" class=[if t.danger { Some("danger") } else if t.action == "launch" || t.action == "approve" { Some("primary") } else { None }] { (t.label) }
                    }
                }
            }
        }
    }
}

fn overview(c: &pb::Campaign, r: &pb::CampaignReport, spec: Option<&CampaignSpec>) -> Markup {
    let p = Progress::from_counts(&r.by_state);
    let threshold = spec.and_then(|s| s.rollout.failure_threshold.as_ref());
    let series = failure_rate_series(&r.failure_series);
    html! {
        div.grid {
            div.panel {
                h2 { "Progress" }
                p { (progress_bar(&p)) }
                div.counts {
                    @for sc in &r.by_state {
                        @if sc.count > 0 {
                            div.c { b { (count(sc.count)) } span { (sc.state().as_str()) } }
                        }
                    }
                    @if r.total == 0 { p.muted { "No vehicle matched yet." } }
                }
                p.muted { (count(r.total)) " vehicles matched · " (count(r.retries)) " retries · wave " (wave_text(c)) }
            }
            div.panel {
                h2 { "Failure rate over time" }
                (chart::rate_over_time(&series, threshold.map(|t| t.percent)))
                p.muted {
                    "Now " (format!("{:.2}%", r.failure_rate)) " of finished vehicles"
                    @if let Some(t) = threshold {
                        " · threshold " (t.percent) "% after " (t.min_finished) " finished, then " (format!("{:?}", t.action).to_lowercase())
                    } @else { " · no failure threshold set" }
                }
            }
        }
        div.panel {
            h2 { "Waves" }
            table {
                thead { tr { th { "Wave" } th.num { "Up to" } th { "Opened" } th.num { "Vehicles" } th { "Progress" } } }
                tbody {
                    @for w in &r.waves {
                        tr {
                            td { (w.index + 1) " " @if w.open { (badge("open")) } }
                            td.num { (format!("{}%", w.percent)) }
                            td { @if w.open { (time(ts(&w.opened_at))) } @else { span.muted { "not yet" } } }
                            td.num { (count(w.total)) }
                            td { (progress_bar(&Progress::from_counts(&w.by_state))) }
                        }
                    }
                }
            }
        }
    }
}

/// The cumulative failure rate at the end of each minute with finishes.
fn failure_rate_series(points: &[pb::FailurePoint]) -> Vec<(DateTime<Utc>, f64)> {
    let (mut finished, mut failed) = (0u64, 0u64);
    points
        .iter()
        .filter_map(|p| {
            finished += p.finished;
            failed += p.failed;
            let at = ts(&p.at)?;
            (finished > 0).then(|| (at, failed as f64 * 100.0 / finished as f64))
        })
        .collect()
}

fn triage(
    user: &User,
    c: &pb::Campaign,
    groups: &[pb::FailureGroup],
    spec: Option<&CampaignSpec>,
) -> Markup {
    let may_retry = user.may(Role::Engineer) && c.state().is_active();
    let retries = spec.map(|s| s.rollout.max_retries);
    html! {
        div.panel {
            h2 { "Failure triage" }
            @if groups.is_empty() {
                p.muted { "No failed, rejected or timed-out vehicles." }
            } @else {
                p.muted {
                    "Failed, rejected and timed-out vehicles grouped by the reason they reported. "
                    @match retries {
                        Some(0) => { "This campaign allows no retries (rollout.max_retries is 0)." }
                        Some(n) => { "Each vehicle may be retried " (if n == 1 { "once".to_owned() } else { format!("{n} times") }) " (a failure is retried at once until then); retried vehicles are staged again under the campaign's rate limit." }
                        None => {}
                    }
                }
                table {
                    thead { tr { th { "Reason" } th.num { "Vehicles" } th { "States" } th.num { "Retryable" } th {} } }
                    tbody {
                        @for g in groups {
                            tr {
                                td { code { (g.reason) } }
                                td.num { (count(g.count)) }
                                td { @for sc in &g.by_state { @if sc.count > 0 { (badge(sc.state().as_str())) " " (sc.count) " " } } }
                                td.num { (count(g.retryable)) }
                                td.actions {
                                    a.button href=(format!("/ui/campaigns/{}/failures.csv?reason={}", c.id, query_value(&g.reason))) download { "VINs (CSV)" }
                                    @if may_retry && g.retryable > 0 {
                                        form method="post" action=(format!("/ui/campaigns/{}/retry", c.id))
                                            data-confirm=(format!("Offer the update again to {} vehicles?", g.retryable)) {
                                            (layout::csrf(user))
                                            input type="hidden" name="reason" value=(g.reason);
                                            button type="submit" { "Retry this group" }
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
}

fn breakdowns(r: &pb::CampaignReport) -> Markup {
    let table = |title: &str, rows: &[pb::GroupReport]| {
        html! {
            div.panel {
                h2 { "By " (title) }
                @if rows.is_empty() { p.muted { "No vehicles." } } @else {
                    table {
                        thead { tr { th { (title) } th.num { "Vehicles" } th.num { "Succeeded" } th.num { "Failed" } th.num { "In progress" } th.num { "Failure rate" } } }
                        tbody {
                            @for g in rows.iter().take(25) {
                                @let finished = g.succeeded + g.failed;
                                tr {
                                    td { @if g.key.is_empty() { span.muted { "(unknown)" } } @else { (g.key) } }
                                    td.num { (count(g.total)) }
                                    td.num { (count(g.succeeded)) }
                                    td.num { (count(g.failed)) }
                                    td.num { (count(g.in_progress)) }
                                    td.num { @if finished > 0 { (format!("{:.1}%", g.failed as f64 * 100.0 / finished as f64)) } @else { "–" } }
                                }
                            }
                        }
                    }
                    @if rows.len() > 25 { p.muted { (rows.len() - 25) " more not shown." } }
                }
            }
        }
    };
    html! {
        div.grid {
            (table("model", &r.by_model))
            (table("platform", &r.by_platform))
            (table("gateway", &r.by_gateway))
            (table("region", &r.by_region))
            (table("ECU hardware", &r.by_hardware))
        }
    }
}

fn audit_trail(entries: &[pb::AuditEntry]) -> Markup {
    html! {
        div.panel {
            h2 { "Audit trail" }
            @if entries.is_empty() { p.muted { "Nothing recorded." } } @else {
                table {
                    thead { tr { th { "When" } th { "Who" } th { "What" } th { "Reason" } th { "Details" } } }
                    tbody {
                        @for e in entries {
                            tr {
                                td { (time(ts(&e.at))) }
                                td { (e.actor) }
                                td { (badge(&e.action)) }
                                td { (e.reason) }
                                td { @if e.detail != "{}" { code { (e.detail) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: Option<String>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
}

/// A lifecycle button: the same checks as the REST API's
/// `POST /api/v1/campaigns/{id}:ACTION`, then back to the page.
pub async fn action(
    user: User,
    State(s): State<DashState>,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Response, DashError> {
    user.check_csrf(f.csrf.as_deref())?;
    let Some(t) = TRANSITIONS.iter().find(|t| t.action == f.action) else {
        return Err(DashError::Invalid(format!(
            "unknown campaign action {:?}: expected one of {}",
            ota_common::vin::shown(&f.action),
            TRANSITIONS.map(|t| t.action).join(", ")
        )));
    };
    user.require(t.role)?;
    let who = &user.0.token;
    if t.action == "approve" {
        who.require_person("approving")?;
    }
    let req = pb::CampaignTransitionRequest {
        id: id.clone(),
        actor: who.principal.clone(),
        reason: f.reason.trim().to_owned(),
        actor_role: who.role.to_string(),
    };
    let mut client = s.api.campaigns.clone();
    let c = match t.action {
        "approve" => client.approve(req).await,
        "launch" => client.launch(req).await,
        "pause" => client.pause(req).await,
        "resume" => client.resume(req).await,
        "abort" => client.abort(req).await,
        "cancel" => client.cancel(req).await,
        _ => client.advance(req).await,
    }?
    .into_inner();
    tracing::info!(by = %who.principal, campaign = %c.id, action = t.action, state = %c.state(), "campaign action from the dashboard");
    Ok(Redirect::to(&format!("/ui/campaigns/{}", query_value(&id))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct RetryForm {
    csrf: Option<String>,
    #[serde(default)]
    reason: String,
}

/// "Retry this group": the campaign manager re-offers the action to the
/// group's vehicles that have retries left, and audits it.
pub async fn retry(
    user: User,
    State(s): State<DashState>,
    Path(id): Path<String>,
    Form(f): Form<RetryForm>,
) -> Result<Response, DashError> {
    user.check_csrf(f.csrf.as_deref())?;
    user.require(Role::Engineer)?;
    let who = &user.0.token;
    let r = s
        .api
        .campaigns
        .clone()
        .retry_group(pb::RetryGroupRequest {
            campaign_id: id.clone(),
            reason: f.reason.clone(),
            actor: who.principal.clone(),
            actor_role: who.role.to_string(),
        })
        .await?
        .into_inner();
    tracing::info!(by = %who.principal, campaign = %id, reason = %f.reason, retried = r.retried, skipped = r.skipped, "failure group retried");
    Ok(Redirect::to(&format!(
        "/ui/campaigns/{}?retried={}&skipped={}",
        query_value(&id),
        r.retried,
        r.skipped
    ))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsvQuery {
    #[serde(default)]
    reason: String,
}

/// The VINs of one failure group, as CSV.
pub async fn failures_csv(
    _user: User,
    State(s): State<DashState>,
    Path(id): Path<String>,
    Query(q): Query<CsvQuery>,
) -> Result<Response, DashError> {
    let client = s.api.campaigns.clone();
    let pages = futures::stream::try_unfold(Some(String::new()), |after| {
        let (mut client, id, reason) = (client.clone(), id.clone(), q.reason.clone());
        async move {
            let Some(after_vin) = after else {
                return Ok::<_, tonic::Status>(None);
            };
            let vins = client
                .failure_group_vins(pb::FailureGroupVinsRequest {
                    campaign_id: id,
                    reason,
                    after_vin,
                    limit: CSV_PAGE,
                })
                .await?
                .into_inner()
                .vins;
            let next = (vins.len() as u32 == CSV_PAGE)
                .then(|| vins.last().cloned())
                .flatten();
            Ok(Some((vins, next)))
        }
    });
    let vins: Vec<Vec<String>> = pages.try_collect().await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let write = |w: &mut csv::Writer<Vec<u8>>, rec: &[&str]| {
        w.write_record(rec)
            .map_err(|e| DashError::Invalid(format!("cannot write csv: {e}")))
    };
    write(&mut w, &["vin", "reason"])?;
    for vin in vins.iter().flatten() {
        write(&mut w, &[vin, &q.reason])?;
    }
    let body = w
        .into_inner()
        .map_err(|e| DashError::Invalid(format!("cannot write csv: {e}")))?;
    let file: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Ok((
        [
            (
                http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_owned(),
            ),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"failures-{file}.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}
