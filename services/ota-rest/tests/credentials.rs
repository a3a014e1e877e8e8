//! Vehicle credentials through the REST router (`oneshot`), over the real
//! vehicle store on SQLite: admin only, 404 for unknown vehicles, secrets
//! shown once, rotation and revocation reach authentication at once.

mod common;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use ota_auth::vehicles::VehicleCredentials;
use ota_auth::{Role, TokenStore};
use serde_json::{json, Value};
use tower::ServiceExt;

const VIN: &str = "WVWZZZE1ZMP000001";
const UNKNOWN: &str = "WVWZZZE1ZMP000099";

struct Api {
    router: Router,
    admin: String,
    engineer: String,
    credentials: VehicleCredentials,
    _db: ota_tests::db::TestDb,
}

async fn api() -> Api {
    let t = ota_tests::db::sqlite().await;
    let peers = common::peers(&t.db);
    let tokens = TokenStore::new(t.db.clone());
    let admin = tokens.create("admin", Role::Admin).await.unwrap().token;
    let engineer = tokens.create("eng", Role::Engineer).await.unwrap().token;
    let state = peers.state(tokens, ota_rest::Limits::default());
    let credentials = state.credentials.clone();
    let api = Api {
        router: ota_rest::router(state),
        admin,
        engineer,
        credentials,
        _db: t,
    };
    let (s, _) = api
        .call(
            "PUT",
            &format!("/api/v1/vehicles/{VIN}"),
            &api.admin.clone(),
            Some(json!({"model": "ID.4"}).to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    api
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"));
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b)),
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

fn message(b: &Value) -> &str {
    b["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn issue_shows_the_secret_once_and_list_never_does() {
    let a = api().await;
    let url = format!("/api/v1/vehicles/{VIN}/credentials");
    let (s, issued) = a.call("POST", &url, &a.admin, None).await;
    assert_eq!(s, StatusCode::CREATED, "{issued}");
    assert_eq!(issued["vin"], VIN);
    let token = issued["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("otav_"), "{issued}");
    assert!(issued["id"].is_string() && issued["created_at"].is_string());
    assert_eq!(
        a.credentials.authenticate(&token).await.unwrap().vin,
        VIN,
        "the issued secret authenticates as the vehicle"
    );

    let (s, list) = a.call("GET", &url, &a.admin, None).await;
    assert_eq!(s, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], issued["id"]);
    assert!(list[0]["revoked_at"].is_null());
    assert!(
        !list[0].to_string().contains(&token) && list[0].get("token").is_none(),
        "no secret in the list: {}",
        list[0]
    );
}

#[tokio::test]
async fn rotate_revokes_the_earlier_credentials() {
    let a = api().await;
    let url = format!("/api/v1/vehicles/{VIN}/credentials");
    let (_, first) = a.call("POST", &url, &a.admin, None).await;
    let (s, second) = a
        .call(
            "POST",
            &url,
            &a.admin,
            Some(json!({"rotate": true}).to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    assert!(a
        .credentials
        .authenticate(first["token"].as_str().unwrap())
        .await
        .is_err());
    assert!(a
        .credentials
        .authenticate(second["token"].as_str().unwrap())
        .await
        .is_ok());
    let (_, list) = a.call("GET", &url, &a.admin, None).await;
    let revoked: Vec<bool> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| !c["revoked_at"].is_null())
        .collect();
    assert_eq!(revoked, [true, false]);
}

#[tokio::test]
async fn revoke_one_or_all() {
    let a = api().await;
    let url = format!("/api/v1/vehicles/{VIN}/credentials");
    let (_, one) = a.call("POST", &url, &a.admin, None).await;
    let (_, two) = a.call("POST", &url, &a.admin, None).await;
    let (_, three) = a.call("POST", &url, &a.admin, None).await;
    let id = one["id"].as_str().unwrap();
    let (s, b) = a
        .call("DELETE", &format!("{url}/{id}"), &a.admin, None)
        .await;
    assert_eq!((s, b["revoked"].as_u64()), (StatusCode::OK, Some(1)));
    assert!(a
        .credentials
        .authenticate(one["token"].as_str().unwrap())
        .await
        .is_err());
    assert!(a
        .credentials
        .authenticate(two["token"].as_str().unwrap())
        .await
        .is_ok());
    let (s, b) = a
        .call("DELETE", &format!("{url}/{id}"), &a.admin, None)
        .await;
    assert_eq!(
        (s, b["revoked"].as_u64()),
        (StatusCode::OK, Some(0)),
        "revoking twice is fine: {b}"
    );
    let (s, b) = a
        .call("DELETE", &format!("{url}/nope"), &a.admin, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        message(&b),
        format!("credential nope of vehicle {VIN} not found")
    );
    let (s, b) = a.call("DELETE", &url, &a.admin, None).await;
    assert_eq!((s, b["revoked"].as_u64()), (StatusCode::OK, Some(2)));
    for t in [&two, &three] {
        assert!(a
            .credentials
            .authenticate(t["token"].as_str().unwrap())
            .await
            .is_err());
    }
}

#[tokio::test]
async fn unknown_vehicle_bad_vin_bad_body_and_roles() {
    let a = api().await;
    let url = format!("/api/v1/vehicles/{UNKNOWN}/credentials");
    for method in ["POST", "GET", "DELETE"] {
        let (s, b) = a.call(method, &url, &a.admin, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method}: {b}");
        assert!(message(&b).contains(UNKNOWN), "{method}: {b}");
    }
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/vehicles/NOTAVIN/credentials",
            &a.admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&b).contains("NOTAVIN"), "{b}");

    let url = format!("/api/v1/vehicles/{VIN}/credentials");
    let (s, b) = a
        .call(
            "POST",
            &url,
            &a.admin,
            Some(json!({"rotat": true}).to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&b).contains("rotat"), "{b}");
    let (s, _) = a
        .call("POST", &url, &a.admin, Some("{not json".into()))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    for method in ["POST", "GET", "DELETE"] {
        let (s, b) = a.call(method, &url, &a.engineer, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method}: {b}");
    }
    let (s, _) = a
        .call("GET", &url, "otav_not_a_management_token", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(a.credentials.list(VIN).await.unwrap().is_empty());
}
