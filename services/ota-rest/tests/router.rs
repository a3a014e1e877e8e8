//! The REST router driven in-process with `oneshot`, over the real vehicle
//! store and rule engine on SQLite: status codes and error bodies.

mod common;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use ota_auth::{Role, TokenStore};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    router: Router,
    admin: String,
    viewer: String,
    _db: ota_tests::db::TestDb,
}

async fn api() -> Api {
    let t = ota_tests::db::sqlite().await;
    let peers = common::peers(&t.db);
    let tokens = TokenStore::new(t.db.clone());
    let admin = tokens.create("admin", Role::Admin).await.unwrap().token;
    let viewer = tokens.create("viewer", Role::Viewer).await.unwrap().token;
    let limits = ota_rest::Limits {
        max_body_bytes: 2048,
        max_import_bytes: 64 * 1024,
    };
    let router = ota_rest::router(peers.state(tokens, limits));
    Api {
        router,
        admin,
        viewer,
        _db: t,
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some((ct, b)) => req.header("content-type", ct).body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

const VIN: &str = "WVWZZZE1ZMP000001";

#[tokio::test]
async fn auth_and_unknown_routes() {
    let a = api().await;
    let (s, b) = a.call("GET", "/api/v1/vehicles", None, None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (s, b) = a.call("GET", "/api/v1/whoami", Some(&a.viewer), None).await;
    assert_eq!((s, b["role"].as_str()), (StatusCode::OK, Some("viewer")));
    let (s, _) = a.call("GET", "/api/v1/tokens", Some(&a.viewer), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = a.call("GET", "/api/v1/nothing", Some(&a.admin), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["message"], "no such endpoint /api/v1/nothing");
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&a.admin),
            Some((
                "application/json",
                json!({"name": "x", "role": "root"}).to_string(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown role \"root\""));
}

#[tokio::test]
async fn openapi_document_is_served_and_names_every_route() {
    let a = api().await;
    let (s, doc) = a
        .call("GET", "/api/v1/openapi.json", Some(&a.viewer), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/api/v1/vehicles",
        "/api/v1/vehicles/{vin}",
        "/api/v1/vehicles:import",
        "/api/v1/tokens",
        "/api/v1/rules/preview",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
}

#[tokio::test]
async fn vehicles_put_get_and_list() {
    let a = api().await;
    let body =
        json!({"model": "ID.4", "region": "EU", "ecus": {"BMS": {"sw": "2.2.0"}}}).to_string();
    let (s, b) = a
        .call(
            "PUT",
            &format!("/api/v1/vehicles/{VIN}?source=dealer"),
            Some(&a.admin),
            Some(("application/json", body.clone())),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(b["vehicle"]["provenance"]["model"], "dealer");
    let (s, b) = a
        .call(
            "PUT",
            &format!("/api/v1/vehicles/{VIN}"),
            Some(&a.admin),
            Some(("application/json", body)),
        )
        .await;
    assert_eq!((s, b["created"].as_bool()), (StatusCode::OK, Some(false)));
    let (s, b) = a
        .call(
            "GET",
            &format!("/api/v1/vehicles/{VIN}"),
            Some(&a.viewer),
            None,
        )
        .await;
    assert_eq!(
        (s, b["ecus"]["BMS"]["sw"].as_str()),
        (StatusCode::OK, Some("2.2.0"))
    );
    let (s, b) = a
        .call(
            "GET",
            "/api/v1/vehicles?region=EU&limit=10",
            Some(&a.viewer),
            None,
        )
        .await;
    assert_eq!(
        (s, b["vehicles"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    let (s, b) = a
        .call("GET", "/api/v1/vehicles?colour=red", Some(&a.viewer), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["error"]["message"].as_str().unwrap().contains("colour"),
        "{b}"
    );
    let (s, _) = a
        .call("GET", "/api/v1/vehicles/NOTAVIN", Some(&a.viewer), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn imports_report_lines_and_strict_imports_nothing() {
    let a = api().await;
    let csv = format!(
        "vin,model,ecu.BMS.sw\n{VIN},ID.4,2.2.0\nWVWZZZE1ZMP000002,ID.3,soon\nbad-vin,ID.3,1.0\n"
    );
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/vehicles:import?format=csv&source=manufacturing",
            Some(&a.admin),
            Some(("text/csv", csv.clone())),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (b["imported"].as_u64(), b["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(b["errors"][0]["line"], 4);

    let (s, b) = a
        .call(
            "POST",
            "/api/v1/vehicles:import?strict=true",
            Some(&a.admin),
            Some(("text/csv", csv.replace(VIN, "WVWZZZE1ZMP000009"))),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b["aborted"], true);
    let (s, _) = a
        .call(
            "GET",
            "/api/v1/vehicles/WVWZZZE1ZMP000009",
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "strict import wrote nothing");

    let (s, b) = a
        .call(
            "POST",
            "/api/v1/vehicles:import?format=csv",
            Some(&a.admin),
            Some(("text/csv", "vin,colour\n".into())),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 1: unknown column \"colour\""),
        "{b}"
    );

    let (s, _) = a
        .call(
            "POST",
            "/api/v1/vehicles:import",
            Some(&a.viewer),
            Some(("application/x-ndjson", "{}".into())),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = a
        .call(
            "POST",
            "/api/v1/vehicles:import",
            Some(&a.admin),
            Some(("application/x-ndjson", "x".repeat(70_000))),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/vehicles:import?format=xml",
            Some(&a.admin),
            Some(("text/plain", String::new())),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"]["message"].as_str().unwrap().contains("\"xml\""));
}

#[tokio::test]
async fn rules_need_one_form_and_preview_needs_an_engineer() {
    let a = api().await;
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/rules/validate",
            Some(&a.viewer),
            Some((
                "application/json",
                json!({"expression": "true", "target": "true"}).to_string(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"]["message"].as_str().unwrap().contains("either"));
    let (s, _) = a
        .call(
            "POST",
            "/api/v1/rules/preview",
            Some(&a.viewer),
            Some((
                "application/json",
                json!({"expression": "true"}).to_string(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/rules/explain",
            Some(&a.viewer),
            Some((
                "application/json",
                json!({"expression": "true", "vin": VIN}).to_string(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}
