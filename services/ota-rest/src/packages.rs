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
    let mut package = pb::Package::from(body);
    // An artifact this server hosts, linked under today's public URL, is
    // kept as a reference, so the package survives a new public URL.
    let base = s.info.public_url.trim_end_matches('/');
    for a in &mut package.artifacts {
        if let Some(path) = a
            .url
            .strip_prefix(base)
            .filter(|p| p.starts_with("/artifacts/"))
        {
            if !base.is_empty() {
                a.url = path.to_owned();
            }
        }
    }
    let p = s
        .campaigns
        .clone()
        .create_package(pb::CreatePackageRequest {
            package: Some(package),
            actor: who.principal.clone(),
        })
        .await?
        .into_inner();
    tracing::info!(by = %who.principal, package = %p.id, name = %p.name, version = %p.version, "package created");
    Ok((StatusCode::CREATED, Json(shown(&s, p))).into_response())
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
        packages: r.packages.into_iter().map(|p| shown(&s, p)).collect(),
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
    Ok(Json(shown(&s, p)))
}

/// A package as people and scripts read it: hosted artifacts with the
/// URL they are fetched from today.
fn shown(s: &RestState, mut p: pb::Package) -> Package {
    for a in &mut p.artifacts {
        a.url = ota_common::reference::absolute(&s.info.public_url, &a.url).into_owned();
    }
    p.into()
}
