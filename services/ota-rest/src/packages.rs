//! `/api/v1/packages`: the software packages campaigns install.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use ota_auth::Role;
use ota_common::ErrorBody;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::model::{NewPackage, Package};
use crate::{Caller, RestError, RestState};

/// Register a package (engineer)
///
/// An artifact URL under this server's public URL is kept as a reference
/// to the hosted artifact, so the package survives a new public URL.
#[utoipa::path(
    post,
    path = "/api/v1/packages",
    tag = "packages",
    operation_id = "create_package",
    request_body = NewPackage,
    responses(
        (status = 201, description = "Created", body = Package),
        (status = 400, description = "An invalid package", body = ErrorBody),
        (status = 403, description = "The caller's role is below engineer", body = ErrorBody),
        (status = 409, description = "name@version exists already", body = ErrorBody),
    ),
)]
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

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only the versions of this package.
    name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PackageList {
    packages: Vec<Package>,
}

/// List packages (viewer)
#[utoipa::path(
    get,
    path = "/api/v1/packages",
    tag = "packages",
    operation_id = "list_packages",
    params(ListQuery),
    responses(
        (status = 200, description = "Packages", body = PackageList),
        (status = 400, description = "An unknown or malformed parameter", body = ErrorBody),
    ),
)]
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

/// Get a package (viewer)
#[utoipa::path(
    get,
    path = "/api/v1/packages/{id}",
    tag = "packages",
    operation_id = "get_package",
    params(("id" = String, Path, description = "Package id or `name@version`")),
    responses(
        (status = 200, description = "The package", body = Package),
        (status = 404, description = "No such package", body = ErrorBody),
    ),
)]
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
