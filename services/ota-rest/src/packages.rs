//! `/api/v1/packages`: the software packages campaigns install.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use ota_auth::Role;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::model::{NewPackage, Package};
use crate::{Caller, RestError, RestState};

pub async fn create(
    caller: Caller,
    State(s): State<RestState>,
    body: Result<Json<NewPackage>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, RestError> {
    let who = caller.require(Role::Engineer)?;
    let Json(body) = body?;
    let p = s
        .campaigns
        .clone()
        .create_package(pb::CreatePackageRequest {
            package: Some(body.into()),
            actor: who.principal.clone(),
        })
        .await?
        .into_inner();
    tracing::info!(by = %who.principal, package = %p.id, name = %p.name, version = %p.version, "package created");
    Ok((StatusCode::CREATED, Json(Package::from(p))).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    name: Option<String>,
}

#[derive(Serialize)]
pub struct PackageList {
    packages: Vec<Package>,
}

pub async fn list(
    caller: Caller,
    State(s): State<RestState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PackageList>, RestError> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| RestError::Invalid(e.body_text().to_lowercase()))?;
    let r = s
        .campaigns
        .clone()
        .list_packages(pb::ListPackagesRequest {
            name: q.name.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Json(PackageList {
        packages: r.packages.into_iter().map(Into::into).collect(),
    }))
}

/// `id` is a package id or `name@version`.
pub async fn get(
    caller: Caller,
    State(s): State<RestState>,
    Path(id): Path<String>,
) -> Result<Json<Package>, RestError> {
    caller.require(Role::Viewer)?;
    let p = s
        .campaigns
        .clone()
        .get_package(pb::GetPackageRequest { id })
        .await?
        .into_inner();
    Ok(Json(p.into()))
}
