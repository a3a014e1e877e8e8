use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use ota_auth::Role;
use ota_common::vehicle::{Vehicle, VehiclePatch};
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{Caller, RestError, RestState};

pub async fn get(
    caller: Caller,
    State(s): State<RestState>,
    Path(vin): Path<String>,
) -> Result<Json<Vehicle>, RestError> {
    caller.require(Role::Viewer)?;
    let v = s
        .vehicles
        .clone()
        .get(pb::GetVehicleRequest { vin })
        .await?
        .into_inner();
    Ok(Json(v.into()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
    model: Option<String>,
    model_year: Option<i32>,
    platform: Option<String>,
    gateway: Option<String>,
    protocol: Option<String>,
    region: Option<String>,
    country: Option<String>,
    tag: Option<String>,
}

#[derive(Serialize)]
pub struct Page {
    vehicles: Vec<Vehicle>,
    next_cursor: Option<String>,
}

pub async fn list(
    caller: Caller,
    State(s): State<RestState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, RestError> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| RestError::Invalid(e.body_text().to_lowercase()))?;
    let r = s
        .vehicles
        .clone()
        .list(pb::ListVehiclesRequest {
            cursor: q.cursor.unwrap_or_default(),
            limit: q.limit.unwrap_or(0),
            filter: Some(pb::VehicleFilter {
                model: q.model,
                model_year: q.model_year,
                platform: q.platform,
                gateway: q.gateway,
                protocol: q.protocol,
                region: q.region,
                country: q.country,
                tag: q.tag,
            }),
        })
        .await?
        .into_inner();
    Ok(Json(Page {
        vehicles: r.vehicles.into_iter().map(Into::into).collect(),
        next_cursor: (!r.next_cursor.is_empty()).then_some(r.next_cursor),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    source: Option<String>,
}

#[derive(Serialize)]
struct PutResult {
    vehicle: Vehicle,
    created: bool,
}

/// The source a vehicle's own reports use, and only they: precedence lets
/// `vehicle` win the ECU software fields, so an engineer writing under it
/// could overrule what vehicles say about themselves.
pub(crate) const VEHICLE_SOURCE: &str = "vehicle";

/// The source of an engineer's write: `api` unless named, never `vehicle`.
/// Refused as a bad argument (400), not as a lack of permission: no role
/// may write as the vehicle through this API.
pub(crate) fn write_source(source: Option<String>) -> Result<String, RestError> {
    let source = source.unwrap_or_else(|| "api".into());
    if source == VEHICLE_SOURCE {
        return Err(RestError::Invalid(format!(
            "source {VEHICLE_SOURCE:?} is reserved for what vehicles report about themselves; \
             name where the data comes from instead (e.g. manufacturing, dealer, api)"
        )));
    }
    Ok(source)
}

/// Writes what the caller says about one vehicle (source `api` unless
/// `?source=` names another). The body is a vehicle record; its `vin` may be
/// left out but must match the path when given.
pub async fn put(
    caller: Caller,
    State(s): State<RestState>,
    Path(vin): Path<String>,
    Query(q): Query<PutQuery>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, RestError> {
    caller.require(Role::Engineer)?;
    let source = write_source(q.source)?;
    let Json(mut body) = body?;
    let obj = body
        .as_object_mut()
        .ok_or_else(|| RestError::Invalid("body must be a JSON object".into()))?;
    match obj.get("vin") {
        None => {
            obj.insert("vin".into(), vin.clone().into());
        }
        Some(v) if v.as_str() == Some(vin.as_str()) => {}
        Some(v) => {
            let body_vin = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            return Err(RestError::Invalid(format!(
                "vin {:?} in the body does not match {:?} in the path",
                ota_common::vin::shown(&body_vin),
                ota_common::vin::shown(&vin)
            )));
        }
    }
    let patch: VehiclePatch = serde_json::from_value(body)
        .map_err(|e| RestError::Invalid(format!("invalid vehicle: {e}")))?;
    let r = s
        .vehicles
        .clone()
        .upsert(pb::UpsertVehicleRequest {
            source,
            vehicle: Some(patch.into()),
        })
        .await?
        .into_inner();
    let status = if r.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let vehicle = r
        .vehicle
        .map(Vehicle::from)
        .ok_or_else(|| RestError::Invalid("empty answer".into()))?;
    Ok((
        status,
        Json(PutResult {
            vehicle,
            created: r.created,
        }),
    )
        .into_response())
}
