//! `GET /api/v1/campaigns/{id}/report` (JSON, or the per-vehicle CSV
//! streamed as the campaign manager pages through it) and `GET /api/v1/audit`.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::SecondsFormat;
use futures::StreamExt;
use ota_auth::Role;
use ota_common::vehicle::from_timestamp;
use ota_common::ErrorBody;
use ota_proto::v1 as pb;
use serde::Deserialize;

use crate::model::{AuditPage, CampaignReport, CSV_HEADER};
use crate::{Caller, RestError, RestState};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `json` (the default) or `csv`.
    #[param(schema_with = formats)]
    format: Option<String>,
    /// How many failure reasons to list (default 10).
    top_failures: Option<u32>,
}

fn formats() -> utoipa::openapi::schema::Object {
    crate::openapi::one_of(&["json", "csv"])
}

/// Campaign report (viewer); format=csv streams one row per vehicle
///
/// In the CSV, a text cell that starts with =, +, -, @, a tab or a
/// carriage return gets a leading ' so that spreadsheets show it rather
/// than run it.
#[utoipa::path(
    get,
    path = "/api/v1/campaigns/{id}/report",
    tag = "reports",
    operation_id = "campaign_report",
    params(("id" = String, Path, description = "Campaign id"), ReportQuery),
    responses(
        (status = 200, description = "The report, or the per-vehicle CSV (vin,action_id,state,wave,ecu,package,version,attempts,progress,message,updated_at,model,region)",
            content(
                (CampaignReport = "application/json"),
                (String = "text/csv"),
            ),
        ),
        (status = 400, description = "An unknown format or parameter", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
    ),
)]
pub async fn report(
    caller: Caller,
    State(s): State<RestState>,
    Path(id): Path<String>,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, RestError> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| RestError::Invalid(e.body_text().to_lowercase()))?;
    let req = pb::ReportRequest {
        id: id.clone(),
        top_failures: q.top_failures.unwrap_or(0),
    };
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            let r = s.campaigns.clone().report(req).await?.into_inner();
            Ok(Json(CampaignReport::from(r)).into_response())
        }
        "csv" => csv_report(&s, req).await,
        other => Err(RestError::Invalid(format!(
            "unknown report format {other:?}: expected json or csv"
        ))),
    }
}

/// The header line, then the rows as each page of the stream arrives. A
/// failure mid-stream ends the body with an error (the download is cut
/// short rather than looking complete).
async fn csv_report(s: &RestState, req: pb::ReportRequest) -> Result<Response, RestError> {
    let id = req.id.clone();
    // Unknown campaigns fail the call itself, before any byte is sent.
    let pages = s.campaigns.clone().report_vehicles(req).await?.into_inner();
    let header = futures::stream::once(async { Ok(csv_lines(std::iter::once(CSV_HEADER))) });
    let campaign = id.clone();
    let rows = pages.map(move |page| match page {
        Ok(page) => Ok(csv_lines(page.rows.iter().map(row_fields))),
        Err(status) => {
            tracing::warn!(%campaign, error = %status.message(), "csv report stream failed");
            Err(status)
        }
    });
    let body = axum::body::Body::from_stream(header.chain(rows));
    Ok((
        [
            (
                http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_owned(),
            ),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"campaign-{id}.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// One CSV row. Text that came from vehicles, packages or engineers goes
/// through [`text_cell`]; numbers, state names and our own timestamps cannot
/// start a formula and stay as they are.
fn row_fields(r: &pb::VehicleActionRow) -> [String; 13] {
    [
        text_cell(&r.vin),
        text_cell(&r.action_id),
        r.state().as_str().to_owned(),
        // Rows carry the wave's index; people count from 1.
        (r.wave + 1).to_string(),
        text_cell(&r.ecu),
        text_cell(&r.package),
        text_cell(&r.version),
        r.attempts.to_string(),
        r.progress.to_string(),
        text_cell(&r.message),
        r.updated_at
            .as_ref()
            .map(|t| from_timestamp(t).to_rfc3339_opts(SecondsFormat::AutoSi, true))
            .unwrap_or_default(),
        text_cell(&r.model),
        text_cell(&r.region),
    ]
}

/// A text cell a spreadsheet will not run: one starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return (a failure message a vehicle sent, say)
/// gets a leading `'`, as OWASP advises against CSV injection.
fn text_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

fn csv_lines<I, R>(records: I) -> Bytes
where
    I: IntoIterator<Item = R>,
    R: IntoIterator,
    R::Item: AsRef<[u8]>,
{
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in records {
        // Writing to memory cannot fail.
        w.write_record(r).expect("csv into memory");
    }
    Bytes::from(w.into_inner().expect("csv into memory"))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries about this campaign, package, principal or token.
    entity_id: Option<String>,
    /// Entries per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only entries with ids below this (`next_before` of the previous page).
    before: Option<u64>,
}

/// The most entries one page may hold (the campaign manager's own cap).
const MAX_AUDIT_LIMIT: u32 = 1000;

/// Audit log, newest first (viewer)
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "reports",
    operation_id = "list_audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of entries", body = AuditPage),
        (status = 400, description = "A limit out of range, or an unknown parameter", body = ErrorBody),
    ),
)]
pub async fn audit(
    caller: Caller,
    State(s): State<RestState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, RestError> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| RestError::Invalid(e.body_text().to_lowercase()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(RestError::Invalid(format!(
            "limit {limit} is out of range 1..={MAX_AUDIT_LIMIT}"
        )));
    }
    // One more than asked tells whether an older page exists.
    let fetch = (limit + 1).min(MAX_AUDIT_LIMIT);
    let r = s
        .campaigns
        .clone()
        .list_audit(pb::ListAuditRequest {
            entity_id: q.entity_id.unwrap_or_default(),
            limit: fetch,
            before: q.before.unwrap_or(0),
        })
        .await?
        .into_inner();
    let mut entries = r.entries;
    let more =
        entries.len() > limit as usize || (fetch == limit && entries.len() == fetch as usize);
    entries.truncate(limit as usize);
    let next_before = if more {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries: entries.into_iter().map(Into::into).collect(),
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::text_cell;

    #[test]
    fn cells_that_a_spreadsheet_would_run_are_quoted() {
        for risky in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(text_cell(risky), format!("'{risky}"), "{risky:?}");
        }
        for plain in ["", "ID.4", "2.3.1", "install failed: =1", "'quoted"] {
            assert_eq!(text_cell(plain), plain);
        }
    }
}
