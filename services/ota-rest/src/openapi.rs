//! The API's OpenAPI document. It comes from where the router comes from
//! ([`crate::api`]): each route is registered from its handler's
//! `#[utoipa::path]`, whose types describe their JSON through `ToSchema`.
//! Built once, served at `GET /api/v1/openapi.json`.

use std::sync::LazyLock;

use axum::response::IntoResponse;
use http::Method;
use ota_common::ErrorBody;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required, Response, ResponseBuilder};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::Limits;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "OTA platform management API",
        version = "1",
        description = "What the `ota` CLI and the dashboard talk to. Every operation but this \
                       document's takes a bearer token; its role (viewer < engineer < approver \
                       < admin) must reach the one each summary names. Errors answer \
                       `{\"error\": {\"code\", \"message\"}}`."
    ),
    security(("bearer" = [])),
    modifiers(&Shared),
    tags(
        (name = "vehicles", description = "The vehicle inventory"),
        (name = "credentials", description = "The secrets vehicles authenticate with"),
        (name = "tokens", description = "Bearer tokens of people and services"),
        (name = "rules", description = "CEL targeting"),
        (name = "packages", description = "The software packages campaigns install"),
        (name = "campaigns", description = "Campaign files and their lifecycle"),
        (name = "reports", description = "Campaign reports and the audit log"),
        (name = "staging", description = "What vehicles are served, precomputed"),
        (name = "server", description = "This deployment, the caller, this document"),
    ),
)]
struct Base;

/// The bearer scheme and the error answers every operation shares.
struct Shared;

const UNAUTHENTICATED: &str = "Unauthenticated";
const UNAVAILABLE: &str = "Unavailable";
const TOO_LARGE: &str = "PayloadTooLarge";

impl Modify for Shared {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components
            .schemas
            .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
        let header = |description: &str, kind: Type| {
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(kind))
                .description(Some(description))
                .build()
        };
        let shared = [
            (
                UNAUTHENTICATED,
                error("No token, or one that is unknown, revoked or malformed")
                    .header("WWW-Authenticate", header("`Bearer`", Type::String)),
            ),
            (
                UNAVAILABLE,
                error("A service or database behind the API is down; retry later")
                    .header("Retry-After", header("Seconds", Type::Integer)),
            ),
            (TOO_LARGE, error("The body is over the size limit")),
        ];
        for (name, response) in shared {
            components
                .responses
                .insert(name.into(), response.build().into());
        }
    }
}

fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build(),
    )
}

pub(crate) fn base() -> OpenApi {
    <Base as utoipa::OpenApi>::openapi()
}

/// A string that is one of `names`, for parameters read as text.
pub(crate) fn one_of(names: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names.iter().copied()))
        .build()
}

/// The document as served.
pub fn openapi_document() -> OpenApi {
    let mut doc = crate::api(Limits::default()).into_openapi();
    crate::campaigns::document_actions(&mut doc);
    finish(&mut doc);
    doc
}

/// Every route the router serves and its methods, as registered (the
/// campaign actions are one `POST /api/v1/campaigns/{id}`): what tests hold
/// the document and the router against.
pub fn served_routes() -> Vec<(String, Vec<Method>)> {
    let doc = crate::api(Limits::default()).into_openapi();
    doc.paths
        .paths
        .into_iter()
        .map(|(path, mut item)| {
            let methods = operations(&mut item).map(|(m, _)| m).collect();
            (path, methods)
        })
        .collect()
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
}

/// What the annotations cannot say, for every operation alike.
fn finish(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for (_, op) in operations(item) {
            optional_body(op);
            shared_responses(op);
        }
    }
}

/// What follows from how every handler works rather than from what it
/// does, so no handler can leave it out: 401 and 503 wherever a token is
/// checked (against the token database), 413 wherever a body is read. An
/// operation with its own `security` is one that checks none.
fn shared_responses(op: &mut Operation) {
    let shared = |name: &str| -> RefOr<Response> { Ref::from_response_name(name).into() };
    let answers = &mut op.responses.responses;
    if op.security.is_none() {
        answers
            .entry("401".into())
            .or_insert_with(|| shared(UNAUTHENTICATED));
        answers
            .entry("503".into())
            .or_insert_with(|| shared(UNAVAILABLE));
    }
    if op.request_body.is_some() {
        answers
            .entry("413".into())
            .or_insert_with(|| shared(TOO_LARGE));
    }
}

/// A body a handler takes as optional (`Option<T>` in its annotation) may
/// be left out; it is never `null`, as the `Option` makes it say.
fn optional_body(op: &mut Operation) {
    let Some(body) = op.request_body.as_mut() else {
        return;
    };
    if body.required == Some(Required::True) {
        return;
    }
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let null = |s: &&RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
        if let [schema] = one_of.items.iter().filter(|s| !null(s)).collect::<Vec<_>>()[..] {
            content.schema = Some(schema.clone());
        }
    }
}

static JSON: LazyLock<String> = LazyLock::new(|| {
    openapi_document()
        .to_json()
        .expect("the API document is plain data")
});

/// This document (no token needed)
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "server",
    operation_id = "openapi_document",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", body = Object),
    ),
)]
pub(crate) async fn serve() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        JSON.as_str(),
    )
}
