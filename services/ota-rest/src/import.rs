//! `POST /api/v1/vehicles:import`: the body (NDJSON or CSV, any size) is
//! split into lines and parsed as it arrives and streamed into the vehicle
//! store's Import RPC, so memory stays flat for a million-vehicle file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};
use ota_auth::Role;
use ota_common::ErrorBody;
use ota_proto::v1 as pb;
use ota_vehicle_store::parse::{Format, LineParser};
use ota_vehicle_store::ImportItem;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::model::ImportSummary;
use crate::{Caller, RestError, RestState};

/// Longer lines are rejected (and skipped) rather than buffered.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Where the data comes from (default `api`); `vehicle` is reserved for
    /// the vehicles' own reports.
    source: Option<String>,
    /// The body's format when its content type does not tell (default
    /// NDJSON).
    #[param(schema_with = formats)]
    format: Option<String>,
    /// Reject the whole file, importing nothing, when any line is rejected.
    #[serde(default)]
    strict: bool,
}

fn formats() -> utoipa::openapi::schema::Object {
    crate::openapi::one_of(&["ndjson", "csv"])
}

/// Import vehicles from NDJSON or CSV (engineer)
///
/// One vehicle record per line (a `VehiclePatch`; CSV columns name its
/// fields). Lines that do not parse or validate are rejected and listed;
/// the others are imported.
#[utoipa::path(
    post,
    path = "/api/v1/vehicles:import",
    tag = "vehicles",
    operation_id = "import_vehicles",
    params(ImportQuery),
    request_body(
        description = "Any size; read and imported as it arrives",
        content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        ),
    ),
    responses(
        (status = 200, description = "What was imported and what was rejected", body = ImportSummary),
        (status = 400, description = "Bad parameters, or a body that cannot be read", body = ErrorBody),
        (status = 403, description = "The caller's role is below engineer", body = ErrorBody),
        (status = 413, description = "The body is over the import limit", body = ErrorBody),
        (status = 422, description = "A strict import found a rejected line; nothing was imported", body = ImportSummary),
    ),
)]
pub async fn import_vehicles(
    caller: Caller,
    State(s): State<RestState>,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RestError> {
    caller.require(Role::Engineer)?;
    let Query(q) = query.map_err(|e| RestError::Invalid(e.body_text().to_lowercase()))?;
    let format = match (&q.format, headers.get(http::header::CONTENT_TYPE)) {
        (Some(f), _) => f.parse().map_err(RestError::Invalid)?,
        (None, Some(ct)) => {
            Format::detect(ct.to_str().unwrap_or_default()).unwrap_or(Format::Ndjson)
        }
        (None, None) => Format::Ndjson,
    };
    let source = crate::vehicles::write_source(q.source)?;
    tracing::info!(by = %caller.0.principal, %source, ?format, strict = q.strict, "import started");

    let (tx, rx) = mpsc::channel::<pb::ImportVehiclesRequest>(1024);
    let (fail_tx, fail_rx) = oneshot::channel::<RestError>();
    let failed = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_body(
        body,
        format,
        pb::ImportVehiclesRequest {
            source,
            strict: q.strict,
            ..Default::default()
        },
        tx,
        fail_tx,
        failed.clone(),
        s.limits.max_import_bytes,
    ));
    // When reading the body fails, the request stream must not simply end
    // (that would commit a truncated import): it stays open until the call is
    // dropped below, which rolls back whatever is not yet committed.
    let requests = ReceiverStream::new(rx).chain(
        futures::stream::once(async move {
            if failed.load(Ordering::SeqCst) {
                futures::future::pending::<()>().await;
            }
        })
        .filter_map(|_| async { None }),
    );
    let mut client = s.vehicles.clone();
    let summary = tokio::select! {
        r = client.import(requests) => r?.into_inner(),
        Ok(e) = fail_rx => {
            reader.abort();
            return Err(e);
        }
    };
    let summary = ImportSummary::from(summary);
    let status = if summary.aborted {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(summary)).into_response())
}

#[allow(clippy::too_many_arguments)]
async fn read_body(
    body: Body,
    format: Format,
    first: pb::ImportVehiclesRequest,
    tx: mpsc::Sender<pb::ImportVehiclesRequest>,
    fail: oneshot::Sender<RestError>,
    failed: Arc<AtomicBool>,
    limit: usize,
) {
    let mut header = Some(first);
    let mut parser = LineParser::new(format);
    let result = for_each_line(
        body.into_data_stream(),
        |line| {
            let item = match line {
                Ok(bytes) => match parser.next_line(bytes) {
                    Ok(Some(item)) => item,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(RestError::Invalid(e.to_string())),
                },
                Err(too_long) => parser.reject_line(too_long),
            };
            let mut msg = header.take().unwrap_or_default();
            match item {
                ImportItem::Record { line, patch } => {
                    msg.line = line;
                    msg.item = Some(pb::import_vehicles_request::Item::Vehicle(patch.into()));
                }
                ImportItem::Rejected { line, reason, vin } => {
                    msg.line = line;
                    let reason = if vin.is_empty() {
                        reason
                    } else {
                        format!("{reason} (vin {})", ota_common::vin::shown(&vin))
                    };
                    msg.item = Some(pb::import_vehicles_request::Item::ParseError(reason));
                }
            }
            Ok(Some(msg))
        },
        &tx,
        limit,
    )
    .await;
    if let Err(e) = result {
        failed.store(true, Ordering::SeqCst);
        let _ = fail.send(e);
    } else if let Some(first) = header {
        // An empty file still opens the import so that it answers zeros.
        let _ = tx.send(first).await;
    }
}

/// Whether the body failed because it passed the import size limit (the
/// limit layer's error is somewhere in the chain).
fn over_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Splits the byte stream into lines (without `\n`) and sends what `each`
/// makes of them. Lines over [`MAX_LINE_BYTES`] are passed as `Err(reason)`.
async fn for_each_line<S, F>(
    mut stream: S,
    mut emit: F,
    tx: &mpsc::Sender<pb::ImportVehiclesRequest>,
    limit: usize,
) -> Result<(), RestError>
where
    S: Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
    F: FnMut(Result<&[u8], String>) -> Result<Option<pb::ImportVehiclesRequest>, RestError>,
{
    let mut buf = BytesMut::new();
    let mut skipping = false;
    loop {
        let chunk = match stream.next().await {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) if over_limit(&e) => return Err(RestError::TooLarge(limit)),
            Some(Err(e)) => {
                return Err(RestError::Invalid(format!(
                    "reading the request body failed: {e}"
                )))
            }
            None => None,
        };
        let at_end = chunk.is_none();
        if let Some(c) = chunk {
            buf.extend_from_slice(&c);
        }
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(nl + 1);
            let msg = if skipping {
                skipping = false;
                None
            } else {
                emit(Ok(&line[..nl]))?
            };
            if let Some(m) = msg {
                if tx.send(m).await.is_err() {
                    return Ok(());
                }
            }
        }
        if !skipping && buf.len() > MAX_LINE_BYTES {
            skipping = true;
            if let Some(m) = emit(Err(format!("line is longer than {MAX_LINE_BYTES} bytes")))? {
                if tx.send(m).await.is_err() {
                    return Ok(());
                }
            }
        }
        if skipping {
            buf.advance(buf.len());
        }
        if at_end {
            if !buf.is_empty() && !skipping {
                if let Some(m) = emit(Ok(&buf[..]))? {
                    let _ = tx.send(m).await;
                }
            }
            return Ok(());
        }
    }
}
