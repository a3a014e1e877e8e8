use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use ota_auth::Role;
use ota_common::vehicle::{Vehicle, VehiclePatch};
use ota_common::ErrorBody;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{Caller, RestError, RestState};

/// Get a vehicle (viewer)
#[utoipa::path(
    get,
    path = "/api/v1/vehicles/{vin}",
    tag = "vehicles",
    operation_id = "get_vehicle",
    params(("vin" = String, Path)),
    responses(
        (status = 200, description = "The vehicle", body = Vehicle),
        (status = 404, description = "No such vehicle", body = ErrorBody),
    ),
)]
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

/// Filters match exactly; all given must match.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Vehicles per page (default and most 1000).
    #[param(maximum = 1000)]
    limit: Option<u32>,
    model: Option<String>,
    model_year: Option<i32>,
    platform: Option<String>,
    gateway: Option<String>,
    protocol: Option<String>,
    region: Option<String>,
    country: Option<String>,
    /// Vehicles carrying this tag.
    tag: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VehiclePage {
    vehicles: Vec<Vehicle>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// List vehicles (viewer)
#[utoipa::path(
    get,
    path = "/api/v1/vehicles",
    tag = "vehicles",
    operation_id = "list_vehicles",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of vehicles", body = VehiclePage),
        (status = 400, description = "An unknown or malformed parameter", body = ErrorBody),
    ),
)]
pub async fn list(
    caller: Caller,
    State(s): State<RestState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<VehiclePage>, RestError> {
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
    Ok(Json(VehiclePage {
        vehicles: r.vehicles.into_iter().map(Into::into).collect(),
        next_cursor: (!r.next_cursor.is_empty()).then_some(r.next_cursor),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    /// Where the data comes from (default `api`); `vehicle` is reserved for
    /// the vehicles' own reports.
    source: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct VehicleWritten {
    /// The vehicle after the write, every source merged.
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

/// Upsert what a source says about a vehicle (engineer)
///
/// Writes what the caller says about one vehicle (source `api` unless
/// `?source=` names another). The body's `vin` may be left out but must
/// match the path when given.
#[utoipa::path(
    put,
    path = "/api/v1/vehicles/{vin}",
    tag = "vehicles",
    operation_id = "put_vehicle",
    params(("vin" = String, Path), PutQuery),
    request_body = VehiclePatch,
    responses(
        (status = 200, description = "Updated", body = VehicleWritten),
        (status = 201, description = "Created", body = VehicleWritten),
        (status = 400, description = "An invalid vehicle, a VIN that does not match the path, or the reserved source `vehicle`", body = ErrorBody),
        (status = 403, description = "The caller's role is below engineer", body = ErrorBody),
    ),
)]
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
        Json(VehicleWritten {
            vehicle,
            created: r.created,
        }),
    )
        .into_response())
}
