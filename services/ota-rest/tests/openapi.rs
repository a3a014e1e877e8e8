//! The served OpenAPI document: valid OpenAPI 3, and in step with the
//! router both ways (every route it serves is described with its methods,
//! every described path and method reaches a handler).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use axum::body::Body;
use axum::Router;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use ota_auth::{Role, TokenStore};
use serde_json::Value;
use tower::ServiceExt;

struct Api {
    router: Router,
    admin: String,
    _db: ota_tests::db::TestDb,
}

async fn api() -> Api {
    let t = ota_tests::db::sqlite().await;
    let peers = common::peers(&t.db);
    let tokens = TokenStore::new(t.db.clone());
    let admin = tokens.create("admin", Role::Admin).await.unwrap().token;
    let router = ota_rest::router(peers.state(tokens, ota_rest::Limits::default()));
    Api {
        router,
        admin,
        _db: t,
    }
}

impl Api {
    /// Status, content type and JSON body (`null` when there is none).
    async fn call(&self, method: &Method, uri: &str) -> (StatusCode, String, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.admin))
            .body(Body::empty())
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let ct = res
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, ct, body)
    }

    async fn document(&self) -> Value {
        let (s, ct, doc) = self.call(&Method::GET, "/api/v1/openapi.json").await;
        assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/json"));
        doc
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The `{name}`s of a path template.
fn template_params(path: &str) -> BTreeSet<String> {
    path.split('{')
        .skip(1)
        .map(|rest| rest.split_once('}').expect("closed brace").0.to_owned())
        .collect()
}

fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                ops.push((path.as_str(), m, op));
            }
        }
    }
    ops
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_3() {
    let a = api().await;
    let doc = a.document().await;
    assert_eq!(
        doc,
        serde_json::to_value(ota_rest::openapi_document()).unwrap()
    );
    // Rustdoc links in doc comments would show as such in the document.
    assert!(
        !doc.to_string().contains("[`"),
        "a description links rustdoc"
    );

    let spec = oas3::from_json(doc.to_string()).expect("the document reads as OpenAPI 3.1");
    assert_eq!(spec.validate_version().expect("a version").major, 3);
    assert_eq!(spec.info.title, "OTA platform management API");

    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r} points outside the document"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }

    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        serde_json::json!({"type": "http", "scheme": "bearer"})
    );
    let tags: HashSet<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();

    let mut ids = HashSet::new();
    for (path, method, op) in operations(&doc) {
        let at = format!("{method} {path}");
        let responses = op["responses"].as_object().expect(&at);
        assert!(!responses.is_empty(), "{at} has no responses");
        for (status, r) in responses {
            assert!(
                r.get("$ref").is_some() || r["description"].is_string(),
                "{at} {status} has no description"
            );
        }
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{at} has no summary"
        );
        let id = op["operationId"].as_str().expect(&at);
        assert!(ids.insert(id), "operationId {id} twice");
        let op_tags = op["tags"].as_array().expect(&at);
        assert!(!op_tags.is_empty(), "{at} has no tag");
        for t in op_tags {
            assert!(
                tags.contains(t.as_str().unwrap()),
                "{at}: undeclared tag {t}"
            );
        }

        let item = &doc["paths"][path];
        let declared: Vec<&Value> = [&item["parameters"], &op["parameters"]]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .filter(|p| p["in"] == "path")
            .collect();
        for p in &declared {
            assert_eq!(p["required"], true, "{at}: path parameter {p} is optional");
        }
        let declared: BTreeSet<String> = declared
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(declared, template_params(path), "{at}: path parameters");

        // Every operation that checks a token says so with its 401.
        let public = op["security"] == serde_json::json!([{}]);
        assert_eq!(responses.contains_key("401"), !public, "{at}");
        assert_eq!(responses.contains_key("503"), !public, "{at}");
    }
}

/// The route a documented path reaches: the served template equal to it,
/// else the one whose `{param}` segments take the documented text.
fn route_of<'r>(served: &'r BTreeMap<String, Vec<Method>>, path: &str) -> Option<&'r str> {
    if served.contains_key(path) {
        return served.get_key_value(path).map(|(k, _)| k.as_str());
    }
    let segments: Vec<&str> = path.split('/').collect();
    served.keys().map(String::as_str).find(|template| {
        let t: Vec<&str> = template.split('/').collect();
        t.len() == segments.len()
            && t.iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
    })
}

/// A path to call for a template.
fn concrete(path: &str) -> String {
    let mut out = path.replace("{vin}", "WVWZZZE1ZMP000001");
    for p in template_params(path) {
        out = out.replace(&format!("{{{p}}}"), "01900000-0000-7000-8000-000000000000");
    }
    out
}

#[tokio::test]
async fn the_document_and_the_router_agree() {
    let a = api().await;
    let doc = a.document().await;
    let served: BTreeMap<String, Vec<Method>> = ota_rest::served_routes().into_iter().collect();
    assert!(served.len() > 20, "{served:?}");

    // What the document says each served route answers.
    let mut documented: BTreeMap<&str, BTreeSet<Method>> = BTreeMap::new();
    for (path, method, _) in operations(&doc) {
        let route = route_of(&served, path)
            .unwrap_or_else(|| panic!("{method} {path} is documented but not served"));
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        documented.entry(route).or_default().insert(method);
    }
    for (route, methods) in &served {
        assert!(route.starts_with("/api/v1/"), "{route}");
        let methods: BTreeSet<Method> = methods.iter().cloned().collect();
        assert_eq!(
            documented.get(route.as_str()),
            Some(&methods),
            "{route}: documented and served methods differ"
        );
    }

    // The router answers each of them and nothing else there.
    for (route, methods) in &served {
        let uri = concrete(route);
        for m in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            let (s, _, body) = a.call(&m, &uri).await;
            if methods.contains(&m) {
                assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{m} {route}");
            } else {
                assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m} {route}: {body}");
            }
        }
    }
    for (path, method, _) in operations(&doc) {
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (s, _, body) = a.call(&m, &concrete(path)).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.starts_with("no such endpoint"),
            "{method} {path} is not routed: {body}"
        );
    }
}
