//! Four-eyes over principals, the token contract, and input the API must
//! not trust (reserved sources, VINs of any length, CSV cells a
//! spreadsheet would run), through the REST router over the real services.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use ota_auth::{Role, TokenStore};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    router: Router,
    /// The person "admin".
    admin: String,
    /// The engineer "erin".
    engineer: String,
    _db: ota_tests::db::TestDb,
}

async fn api(t: ota_tests::db::TestDb) -> Api {
    let peers = common::peers(&t.db);
    let tokens = TokenStore::new(t.db.clone());
    let admin = tokens.create("admin", Role::Admin).await.unwrap().token;
    let engineer = tokens.create("erin", Role::Engineer).await.unwrap().token;
    let router = ota_rest::router(peers.state(tokens, ota_rest::Limits::default()));
    Api {
        router,
        admin,
        engineer,
        _db: t,
    }
}

impl Api {
    async fn raw(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Option<(&str, String)>,
    ) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"));
        let req = match body {
            Some((ct, b)) => req.header("content-type", ct).body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| ("application/json", b.to_string()));
        let (s, text) = self.raw(method, uri, token, body).await;
        (s, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A new token through the API; its secret.
    async fn token(&self, by: &str, body: Value) -> String {
        let (s, t) = self.call("POST", "/api/v1/tokens", by, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        t["token"].as_str().unwrap().to_owned()
    }

    /// A vehicle, the bms-fw package and a draft campaign over every
    /// vehicle, created by `creator`; the campaign's id.
    async fn draft(&self, creator: &str, vehicle: Value) -> String {
        let (s, b) = self
            .call(
                "PUT",
                &format!("/api/v1/vehicles/{VIN}"),
                creator,
                Some(vehicle),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let package = json!({
            "name": "bms-fw", "version": "2.3.1", "ecu": "BMS",
            "artifacts": [{"url": "https://cdn.example.com/bms.bin", "sha256": SHA, "size": 1024}]
        });
        let (s, b) = self
            .call("POST", "/api/v1/packages", creator, Some(package))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, c) = self
            .raw(
                "POST",
                "/api/v1/campaigns",
                creator,
                Some(("application/yaml", CAMPAIGN.into())),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        let c: Value = serde_json::from_str(&c).unwrap();
        c["id"].as_str().unwrap().to_owned()
    }
}

fn message(b: &Value) -> &str {
    b["error"]["message"].as_str().unwrap_or_default()
}

const VIN: &str = "WVWZZZE1ZMP000001";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const CAMPAIGN: &str = r#"
name: bms-2.3.1
target: 'true'
rules:
  - install: {package: bms-fw, version: '2.3.1', ecu: BMS}
"#;

/// The hole this closes: an admin minted a second approver token under
/// another name and approved their own campaign with it.
async fn four_eyes_compares_people_not_token_names(a: Api) {
    let id = a
        .draft(
            &a.admin,
            json!({"model": "ID.4", "ecus": {"BMS": {"hw": "H1", "sw": "2.2.0"}}}),
        )
        .await;
    let approve = format!("/api/v1/campaigns/{id}:approve");

    // Another token of the admin's, whatever its name, is still the admin.
    let mallory = a
        .token(&a.admin, json!({"name": "mallory", "role": "approver"}))
        .await;
    let (s, b) = a.call("POST", &approve, &mallory, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(
        message(&b),
        format!("admin created campaign {id} and cannot approve it too, with any of their tokens: approval needs a second person")
    );

    // A service is not a second pair of eyes.
    let ci = a
        .token(
            &a.admin,
            json!({"principal": "ci", "kind": "service", "role": "approver"}),
        )
        .await;
    let (s, b) = a.call("POST", &approve, &ci, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(
        message(&b),
        "approving needs a person; token \"ci\" belongs to the service \"ci\""
    );

    // A second person does it.
    let ann = a
        .token(&a.admin, json!({"principal": "ann", "role": "approver"}))
        .await;
    let (s, c) = a
        .call("POST", &approve, &ann, Some(json!({"reason": "reviewed"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(
        (
            c["state"].as_str(),
            c["created_by"].as_str(),
            c["approved_by"].as_str()
        ),
        (Some("approved"), Some("admin"), Some("ann"))
    );

    // The audit log names principals, and who provisioned ann.
    let (s, b) = a
        .call(
            "GET",
            &format!("/api/v1/audit?entity_id={id}"),
            &a.engineer,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let done: Vec<(&str, &str)> = b["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(done, vec![("approve", "ann"), ("create", "admin")]);
    let (_, b) = a
        .call("GET", "/api/v1/audit?entity_id=ann", &a.engineer, None)
        .await;
    let e = &b["entries"][0];
    assert_eq!(
        (
            e["entity"].as_str(),
            e["action"].as_str(),
            e["actor"].as_str()
        ),
        (Some("principal"), Some("create"), Some("admin"))
    );
    assert_eq!(e["detail"], json!({"kind": "person", "by_token": "admin"}));
}

#[tokio::test]
async fn four_eyes_compares_people_not_token_names_on_sqlite() {
    four_eyes_compares_people_not_token_names(api(ota_tests::db::sqlite().await).await).await;
}

#[tokio::test]
async fn four_eyes_compares_people_not_token_names_on_postgres() {
    four_eyes_compares_people_not_token_names(api(ota_tests::db::postgres().await).await).await;
}

#[tokio::test]
async fn tokens_name_their_principal() {
    let a = api(ota_tests::db::sqlite().await).await;
    let (s, t) = a
        .call(
            "POST",
            "/api/v1/tokens",
            &a.admin,
            Some(json!({"name": "laptop", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert_eq!(
        (
            t["name"].as_str(),
            t["principal"].as_str(),
            t["principal_kind"].as_str(),
            t["principal_created"].as_bool()
        ),
        (Some("laptop"), Some("admin"), Some("person"), Some(false))
    );
    let (s, t) = a
        .call(
            "POST",
            "/api/v1/tokens",
            &a.admin,
            Some(json!({"principal": "ann", "role": "approver"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert_eq!(
        (
            t["name"].as_str(),
            t["principal"].as_str(),
            t["principal_created"].as_bool()
        ),
        (Some("ann"), Some("ann"), Some(true))
    );
    let ann = t["token"].as_str().unwrap().to_owned();
    let (_, me) = a.call("GET", "/api/v1/whoami", &ann, None).await;
    assert_eq!(
        (me["principal"].as_str(), me["principal_kind"].as_str()),
        (Some("ann"), Some("person"))
    );
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/tokens",
            &a.admin,
            Some(json!({"principal": "ann", "kind": "service", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(message(&b), "principal \"ann\" is a person, not a service");
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/tokens",
            &a.admin,
            Some(json!({"principal": "ann", "role": "viewer", "owner": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(message(&b).contains("owner"), "{b}");
    let (s, list) = a.call("GET", "/api/v1/tokens", &a.admin, None).await;
    assert_eq!(s, StatusCode::OK);
    let owners: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["principal"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        vec![
            ("admin", "admin"),
            ("erin", "erin"),
            ("laptop", "admin"),
            ("ann", "ann")
        ]
    );
}

/// `vehicle` is what vehicles say about themselves (it wins the ECU
/// software fields): nobody writes it through the management API.
#[tokio::test]
async fn engineers_cannot_write_as_the_vehicle() {
    let a = api(ota_tests::db::sqlite().await).await;
    let reserved = "source \"vehicle\" is reserved for what vehicles report about themselves; \
                    name where the data comes from instead (e.g. manufacturing, dealer, api)";
    for token in [&a.engineer, &a.admin] {
        let (s, b) = a
            .call(
                "PUT",
                &format!("/api/v1/vehicles/{VIN}?source=vehicle"),
                token,
                Some(json!({"ecus": {"BMS": {"sw": "9.9.9"}}})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(message(&b), reserved);
        let (s, b) = a
            .raw(
                "POST",
                "/api/v1/vehicles:import?source=vehicle",
                token,
                Some((
                    "application/x-ndjson",
                    format!(
                        "{{\"vin\": \"{VIN}\", \"ecus\": {{\"BMS\": {{\"sw\": \"9.9.9\"}}}}}}\n"
                    ),
                )),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        let b: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(message(&b), reserved);
    }
    let (s, _) = a
        .call("GET", &format!("/api/v1/vehicles/{VIN}"), &a.engineer, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was written");
    let (s, b) = a
        .call(
            "PUT",
            &format!("/api/v1/vehicles/{VIN}?source=dealer"),
            &a.engineer,
            Some(json!({"model": "ID.4"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

/// However long a bad VIN is, the error echoes a short prefix of it.
#[tokio::test]
async fn bad_vins_are_echoed_bounded() {
    let a = api(ota_tests::db::sqlite().await).await;
    let long = format!("WVWZZZE1ZMP000001{}", "Z".repeat(20_000));
    let (s, b) = a
        .call(
            "GET",
            &format!("/api/v1/vehicles/{long}"),
            &a.engineer,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(
        message(&b),
        "invalid vin \"WVWZZZE1ZMP000001ZZZZZZZ...\": must be 17 characters, got 20017"
    );
    let (s, b) = a
        .call(
            "PUT",
            &format!("/api/v1/vehicles/{VIN}"),
            &a.engineer,
            Some(json!({"vin": long})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(message(&b).len() < 200, "{}", message(&b));
    assert!(message(&b).contains("does not match"), "{b}");
    let (s, b) = a
        .raw(
            "POST",
            "/api/v1/vehicles:import",
            &a.engineer,
            Some((
                "application/x-ndjson",
                format!(
                    "{{\"vin\": \"{long}\"}}\n{{\"vin\": \"{long}\", \"model_year\": \"x\"}}\n"
                ),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let b: Value = serde_json::from_str(&b).unwrap();
    let errors = b["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{b}");
    for e in errors {
        let shown = e.to_string();
        assert!(shown.len() < 600, "{shown}");
        assert!(!shown.contains(&"Z".repeat(100)), "{shown}");
    }
}

/// A cell starting with `=`, `+`, `-` or `@` is a formula to a spreadsheet:
/// the CSV report prefixes such text with `'`.
#[tokio::test]
async fn csv_report_cells_cannot_start_formulas() {
    let a = api(ota_tests::db::sqlite().await).await;
    let model = "=HYPERLINK(\"http://evil.example\",\"x\")";
    let region = "@SUM(1+1)";
    let id = a
        .draft(
            &a.admin,
            json!({"model": model, "region": region, "ecus": {"BMS": {"hw": "H1", "sw": "2.2.0"}}}),
        )
        .await;
    let ann = a
        .token(&a.admin, json!({"principal": "ann", "role": "approver"}))
        .await;
    let (s, b) = a
        .call(
            "POST",
            &format!("/api/v1/campaigns/{id}:approve"),
            &ann,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = a
        .call(
            "POST",
            &format!("/api/v1/campaigns/{id}:launch"),
            &a.engineer,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let csv = loop {
        let (s, text) = a
            .raw(
                "GET",
                &format!("/api/v1/campaigns/{id}/report?format=csv"),
                &a.engineer,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{text}");
        if text.lines().count() > 1 || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let row = rows.records().next().expect("one vehicle").unwrap();
    assert_eq!(&row[0], VIN);
    assert_eq!(&row[11], format!("'{model}"));
    assert_eq!(&row[12], format!("'{region}"));
}
