//! Packages, campaigns, reports and the audit log through the REST router,
//! driven in-process with `oneshot` over the real campaign manager, rule
//! engine and vehicle store on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use ota_auth::{Role, TokenStore};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    router: Router,
    admin: String,
    viewer: String,
    /// The engineer "erin".
    engineer: String,
    /// The approvers "carol" and "dave".
    carol: String,
    dave: String,
    _db: ota_tests::db::TestDb,
}

async fn api(t: ota_tests::db::TestDb) -> Api {
    let peers = common::peers(&t.db);
    let tokens = TokenStore::new(t.db.clone());
    let token = |name: &'static str, role| {
        let tokens = tokens.clone();
        async move { tokens.create(name, role).await.unwrap().token }
    };
    let admin = token("admin", Role::Admin).await;
    let viewer = token("vera", Role::Viewer).await;
    let engineer = token("erin", Role::Engineer).await;
    let carol = token("carol", Role::Approver).await;
    let dave = token("dave", Role::Approver).await;
    let router = ota_rest::router(peers.state(tokens, ota_rest::Limits::default()));
    Api {
        router,
        admin,
        viewer,
        engineer,
        carol,
        dave,
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
    ) -> (StatusCode, HeaderMap, Bytes) {
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
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes)
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Option<(&str, String)>,
    ) -> (StatusCode, Value) {
        let (status, _, bytes) = self.raw(method, uri, token, body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn json(&self, method: &str, uri: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            method,
            uri,
            token,
            Some(("application/json", body.to_string())),
        )
        .await
    }

    async fn yaml(&self, uri: &str, token: &str, text: &str) -> (StatusCode, Value) {
        self.call("POST", uri, token, Some(("application/yaml", text.into())))
            .await
    }
}

fn message(b: &Value) -> &str {
    b["error"]["message"].as_str().unwrap_or_default()
}

const VIN: &str = "WVWZZZE1ZMP000001";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn package(name: &str, version: &str) -> Value {
    json!({
        "name": name,
        "version": version,
        "ecu": "BMS",
        "compatible_hw": ["H1"],
        "artifacts": [{"url": "https://cdn.example.com/bms.bin", "sha256": SHA, "size": 1024}],
        "release_notes": "fixes cell balancing"
    })
}

const CAMPAIGN: &str = r#"
name: bms-2.3.1-eu
target: 'vehicle.region == "EU"'
rules:
  - install: {package: bms-fw, version: '2.3.1', ecu: BMS}
rollout:
  waves: [50, 100]
  advance: manual
"#;

/// Five problems at once (the campaign manager's own example).
const BAD_CAMPAIGN: &str = "\
name: ok
target: ''
rules:
  - install: {package: p, version: '1'}
rollout:
  waves: [10, 50, 40, 100]
  wave_sok: 1h
priority: 5000
";

#[tokio::test]
async fn packages_are_created_listed_and_fetched_and_duplicates_conflict() {
    let a = api(ota_tests::db::sqlite().await).await;
    let (s, p) = a
        .json(
            "POST",
            "/api/v1/packages",
            &a.engineer,
            package("bms-fw", "2.3.1"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["created_by"], "erin");
    assert_eq!(p["artifacts"][0]["size"], 1024);
    assert_eq!(p["in_use"], false);
    let id = p["id"].as_str().unwrap().to_owned();
    let (s, _) = a
        .json(
            "POST",
            "/api/v1/packages",
            &a.engineer,
            package("bms-fw", "2.4.0"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, b) = a
        .json(
            "POST",
            "/api/v1/packages",
            &a.engineer,
            package("bms-fw", "2.3.1"),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "already_exists");
    let (s, _) = a
        .json(
            "POST",
            "/api/v1/packages",
            &a.viewer,
            package("bms-fw", "9.9.9"),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = a
        .json(
            "POST",
            "/api/v1/packages",
            &a.engineer,
            json!({"name": "x", "version": "1", "ecu": "E", "colour": "red"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&b).contains("colour"), "{b}");

    let (s, b) = a.call("GET", "/api/v1/packages", &a.viewer, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["packages"].as_array().unwrap().len(), 2);
    let (s, b) = a
        .call("GET", "/api/v1/packages?name=nothing", &a.viewer, None)
        .await;
    assert_eq!(
        (s, b["packages"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    for key in [id.as_str(), "bms-fw@2.3.1"] {
        let (s, b) = a
            .call("GET", &format!("/api/v1/packages/{key}"), &a.viewer, None)
            .await;
        assert_eq!((s, b["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
        assert_eq!(b["version"], "2.3.1");
    }
    let (s, b) = a
        .call("GET", "/api/v1/packages/bms-fw@0.0.1", &a.viewer, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}

#[tokio::test]
async fn a_campaign_file_with_problems_lists_every_one() {
    let a = api(ota_tests::db::sqlite().await).await;
    let (s, b) = a.yaml("/api/v1/campaigns", &a.engineer, BAD_CAMPAIGN).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "invalid_argument");
    assert_eq!(message(&b), "campaign file has 5 problems");
    let paths: Vec<&str> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "target",
            "rules[0].install.ecu",
            "rollout.waves[2]",
            "rollout.wave_sok",
            "priority"
        ]
    );
    let waves = &b["errors"][2];
    assert_eq!(waves["message"], "40 is not above the previous wave 50");
    assert_eq!(
        (waves["line"].as_u64(), waves["column"].as_u64()),
        (Some(6), Some(19))
    );

    // Validation gives the same list with 200, for a viewer too.
    let (s, v) = a
        .yaml("/api/v1/campaigns:validate", &a.viewer, BAD_CAMPAIGN)
        .await;
    assert_eq!((s, v["valid"].as_bool()), (StatusCode::OK, Some(false)));
    assert_eq!(v["errors"], b["errors"]);

    // A well-formed file naming a package that does not exist.
    let (s, v) = a
        .call(
            "POST",
            "/api/v1/campaigns:validate",
            &a.viewer,
            Some(("text/plain", CAMPAIGN.into())),
        )
        .await;
    assert_eq!((s, v["valid"].as_bool()), (StatusCode::OK, Some(false)));
    assert_eq!(v["errors"][0]["path"], "rules[0].install.package");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("bms-fw"));

    a.json(
        "POST",
        "/api/v1/packages",
        &a.engineer,
        package("bms-fw", "2.3.1"),
    )
    .await;
    // JSON is accepted as the YAML subset it is.
    let as_json = json!({
        "name": "n", "target": "true",
        "rules": [{"install": {"package": "bms-fw", "version": "2.3.1", "ecu": "BMS"}}]
    });
    let (s, v) = a
        .json("POST", "/api/v1/campaigns:validate", &a.viewer, as_json)
        .await;
    assert_eq!(
        (s, v["valid"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    assert_eq!(v["errors"], json!([]));

    let (s, _) = a.yaml("/api/v1/campaigns", &a.viewer, CAMPAIGN).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/campaigns",
            &a.engineer,
            Some(("multipart/form-data; boundary=x", CAMPAIGN.into())),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&b).contains("multipart/form-data"), "{b}");
    let (s, b) = a
        .call("GET", "/api/v1/campaigns?state=sleeping", &a.viewer, None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&b).contains("\"sleeping\""), "{b}");
}

#[tokio::test]
async fn hostile_campaign_files_are_refused_with_their_limit() {
    let a = api(ota_tests::db::sqlite().await).await;
    // An alias bomb sent by a viewer to the validation endpoint: a list of
    // 2,000 scalars, 500 aliases of it, 50 of those and 4 of those; 9 KB
    // that stand for 200 million nodes.
    let mut bomb = format!("{CAMPAIGN}x0: &a0 [{}]\n", vec!["a"; 2000].join(", "));
    for (i, n) in [(1, 500), (2, 50), (3, 4)] {
        let items = vec![format!("*a{}", i - 1); n].join(", ");
        bomb.push_str(&format!("x{i}: &a{i} [{items}]\n"));
    }
    let (s, v) = a.yaml("/api/v1/campaigns:validate", &a.viewer, &bomb).await;
    assert_eq!(
        (s, v["valid"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{v}"
    );
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{v}");
    assert_eq!(
        errors[0]["message"],
        "the file has more than 100000 nodes once its aliases are expanded, \
         the most a campaign file may have; it crossed the limit here"
    );
    assert_eq!(
        (&errors[0]["line"], &errors[0]["column"]),
        (&json!(10), &json!(250)),
        "{v}"
    );

    // Thousands of broken rules: the first 100 problems, then a count of the
    // rest, which the error message adds up.
    let mut many = String::from("name: many\ntarget: 'true'\nrules:\n");
    for _ in 0..8000 {
        many.push_str("  - {when: 7, install: {package: p, version: '1', ecu: E}}\n");
    }
    let (s, b) = a.yaml("/api/v1/campaigns", &a.engineer, &many).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // "too many rules", and per rule a `when` that is not a string and a
    // package that does not exist.
    assert_eq!(message(&b), "campaign file has 16001 problems");
    let errors = b["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 101);
    assert_eq!(
        errors[100]["message"],
        "... and 15901 more problems; only the first 100 are listed"
    );
}

#[tokio::test]
async fn campaign_lifecycle_on_sqlite() {
    lifecycle(api(ota_tests::db::sqlite().await).await).await;
}

#[tokio::test]
async fn campaign_lifecycle_on_postgres() {
    lifecycle(api(ota_tests::db::postgres().await).await).await;
}

async fn lifecycle(a: Api) {
    let (s, _) = a
        .json(
            "POST",
            "/api/v1/packages",
            &a.engineer,
            package("bms-fw", "2.3.1"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = a
        .json(
            "PUT",
            &format!("/api/v1/vehicles/{VIN}"),
            &a.admin,
            json!({"model": "ID.4", "region": "EU", "ecus": {"BMS": {"hw": "H1", "sw": "2.2.0"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // carol (an approver) writes the campaign.
    let (s, c) = a.yaml("/api/v1/campaigns", &a.carol, CAMPAIGN).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(
        (c["state"].as_str(), c["created_by"].as_str()),
        (Some("draft"), Some("carol"))
    );
    assert_eq!(c["approved_by"], Value::Null);
    assert_eq!(c["waves"], json!([50.0, 100.0]));
    let id = c["id"].as_str().unwrap().to_owned();
    let at = |action: &str| format!("/api/v1/campaigns/{id}:{action}");

    // Four eyes: not carol herself, not an engineer, not a viewer.
    let (s, b) = a.call("POST", &at("approve"), &a.carol, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(message(&b).contains("carol"), "{b}");
    for token in [&a.engineer, &a.viewer] {
        let (s, b) = a.call("POST", &at("approve"), token, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        assert!(message(&b).contains("approver"), "{b}");
    }
    // Launching a draft is out of order.
    let (s, b) = a.call("POST", &at("launch"), &a.engineer, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(message(&b).contains("draft"), "{b}");

    let (s, c) = a
        .json(
            "POST",
            &at("approve"),
            &a.dave,
            json!({"reason": "reviewed"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(
        (c["state"].as_str(), c["approved_by"].as_str()),
        (Some("approved"), Some("dave"))
    );
    let (s, c) = a.call("POST", &at("launch"), &a.engineer, None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "running");
    assert!(c["launched_at"].is_string(), "{c}");

    // Illegal transition: 409 naming the state the campaign is in.
    let (s, b) = a.call("POST", &at("resume"), &a.engineer, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "conflict");
    assert!(message(&b).contains("running"), "{b}");
    let (s, b) = a.call("POST", &at("explode"), &a.engineer, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(message(&b).contains("\"explode\""), "{b}");
    let (s, b) = a
        .call(
            "POST",
            &at("pause"),
            &a.engineer,
            Some(("application/json", "{\"why\": 1}".into())),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(message(&b).contains("why"), "{b}");
    let (s, b) = a
        .call(
            "POST",
            &format!("/api/v1/campaigns/{id}"),
            &a.engineer,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");

    // Unknown campaigns.
    let nobody = "01900000-0000-7000-8000-000000000000";
    for (method, uri) in [
        ("GET", format!("/api/v1/campaigns/{nobody}")),
        ("POST", format!("/api/v1/campaigns/{nobody}:launch")),
        ("GET", format!("/api/v1/campaigns/{nobody}/report")),
        (
            "GET",
            format!("/api/v1/campaigns/{nobody}/report?format=csv"),
        ),
    ] {
        let (s, b) = a.call(method, &uri, &a.engineer, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {uri}: {b}");
        assert!(message(&b).contains(nobody), "{b}");
    }

    let (s, c) = a
        .json(
            "PUT",
            &format!("/api/v1/campaigns/{id}/priority"),
            &a.engineer,
            json!({"priority": 50, "reason": "recall"}),
        )
        .await;
    assert_eq!(
        (s, c["priority"].as_i64()),
        (StatusCode::OK, Some(50)),
        "{c}"
    );
    let (s, b) = a
        .json(
            "PUT",
            &format!("/api/v1/campaigns/{id}/priority"),
            &a.engineer,
            json!({"priority": 5000}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(message(&b).contains("5000"), "{b}");

    let (s, b) = a
        .call("GET", "/api/v1/campaigns?state=running", &a.viewer, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["campaigns"][0]["id"].as_str(), Some(id.as_str()));
    let (_, b) = a
        .call("GET", "/api/v1/campaigns?state=draft", &a.viewer, None)
        .await;
    assert_eq!(b["campaigns"], json!([]));
    let (s, b) = a
        .call("GET", &format!("/api/v1/campaigns/{id}"), &a.viewer, None)
        .await;
    assert_eq!((s, b["priority"].as_i64()), (StatusCode::OK, Some(50)));
    assert!(b["spec"].as_str().unwrap().contains("bms-2.3.1-eu"));

    // The audit log, newest first, with who did what.
    let (s, b) = a
        .call(
            "GET",
            &format!("/api/v1/audit?entity_id={id}"),
            &a.viewer,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let entries = b["entries"].as_array().unwrap();
    let done: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    for expected in [("create", "carol"), ("approve", "dave"), ("launch", "erin")] {
        assert!(done.contains(&expected), "{expected:?} not in {done:?}");
    }
    let approve = entries.iter().find(|e| e["action"] == "approve").unwrap();
    assert_eq!(approve["reason"], "reviewed");
    assert!(approve["at"].is_string());
    assert_eq!(b["next_before"], Value::Null);
    // Paging: one entry at a time, following next_before.
    let (_, first) = a
        .call(
            "GET",
            &format!("/api/v1/audit?entity_id={id}&limit=1"),
            &a.viewer,
            None,
        )
        .await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 1);
    let before = first["next_before"].as_u64().expect("a next page");
    let (_, second) = a
        .call(
            "GET",
            &format!("/api/v1/audit?entity_id={id}&limit=1&before={before}"),
            &a.viewer,
            None,
        )
        .await;
    assert_eq!(second["entries"][0], entries[1]);
    let (s, _) = a
        .call("GET", "/api/v1/audit?limit=0", &a.viewer, None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The report, once the targeting scan has found the vehicle.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let report = loop {
        let (s, r) = a
            .call(
                "GET",
                &format!("/api/v1/campaigns/{id}/report"),
                &a.viewer,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        if r["total"] == 1 || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["total"], 1, "{report}");
    assert_eq!(report["campaign_id"].as_str(), Some(id.as_str()));
    let by_state = report["by_state"].as_array().expect("by_state");
    assert!(by_state.iter().any(|s| s["state"] == "pending"), "{report}");
    let counted: u64 = by_state.iter().map(|s| s["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 1);
    assert_eq!(report["waves"].as_array().unwrap().len(), 2);

    let (s, headers, body) = a
        .raw(
            "GET",
            &format!("/api/v1/campaigns/{id}/report?format=csv"),
            &a.viewer,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("vin,action_id,state,wave,ecu,package,version,attempts,progress,message,updated_at,model,region")
    );
    let row: Vec<&str> = lines.next().expect("one vehicle row").split(',').collect();
    assert_eq!(
        (row[0], row[4], row[5], row[6]),
        (VIN, "BMS", "bms-fw", "2.3.1")
    );
    assert_eq!((row[11], row[12]), ("ID.4", "EU"));
    assert_eq!(lines.next(), None);
    let (s, b) = a
        .call(
            "GET",
            &format!("/api/v1/campaigns/{id}/report?format=xml"),
            &a.viewer,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&b).contains("\"xml\""), "{b}");

    // Abort ends it; nothing moves it afterwards.
    let (s, c) = a
        .json(
            "POST",
            &at("abort"),
            &a.engineer,
            json!({"reason": "test over"}),
        )
        .await;
    assert_eq!(
        (s, c["state"].as_str()),
        (StatusCode::OK, Some("aborted")),
        "{c}"
    );
    assert_eq!(c["state_reason"], "test over");
    let (s, b) = a.call("POST", &at("pause"), &a.engineer, None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(message(&b).contains("aborted"), "{b}");
}

/// Every path the OpenAPI document lists reaches a handler (no 404 "no such
/// endpoint", no 405), and the document lists the campaign endpoints.
#[tokio::test]
async fn openapi_paths_are_all_routed() {
    let a = api(ota_tests::db::sqlite().await).await;
    let (s, doc) = a.call("GET", "/api/v1/openapi.json", &a.viewer, None).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/packages",
        "/api/v1/packages/{id}",
        "/api/v1/campaigns",
        "/api/v1/campaigns:validate",
        "/api/v1/campaigns/{id}",
        "/api/v1/campaigns/{id}:approve",
        "/api/v1/campaigns/{id}:launch",
        "/api/v1/campaigns/{id}:pause",
        "/api/v1/campaigns/{id}:resume",
        "/api/v1/campaigns/{id}:abort",
        "/api/v1/campaigns/{id}:cancel",
        "/api/v1/campaigns/{id}:advance",
        "/api/v1/campaigns/{id}/priority",
        "/api/v1/campaigns/{id}/report",
        "/api/v1/audit",
    ] {
        assert!(paths.contains_key(path), "openapi lacks {path}");
    }
    for (path, item) in paths {
        let concrete = path
            .replace("{vin}", VIN)
            .replace("{id}", "01900000-0000-7000-8000-000000000000");
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let (s, b) = a
                .call(&method.to_uppercase(), &concrete, &a.admin, None)
                .await;
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !message(&b).starts_with("no such endpoint"),
                "{method} {path} is not routed: {b}"
            );
        }
    }
}

#[tokio::test]
async fn a_failing_rollout_shows_on_its_campaign_on_sqlite() {
    rollout_error_shows(api(ota_tests::db::sqlite().await).await).await;
}

#[tokio::test]
async fn a_failing_rollout_shows_on_its_campaign_on_postgres() {
    rollout_error_shows(api(ota_tests::db::postgres().await).await).await;
}

/// A campaign whose stored plan the rollout cannot compute with (an
/// action_timeout of 100,000,000 days, stored before files were bounded)
/// shows the rollout's error in GET /campaigns/{id}, in the listing and in
/// the report that `ota campaigns status` reads.
async fn rollout_error_shows(a: Api) {
    let (s, _) = a
        .json(
            "POST",
            "/api/v1/packages",
            &a.engineer,
            package("bms-fw", "2.3.1"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, c) = a.yaml("/api/v1/campaigns", &a.engineer, CAMPAIGN).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&c["last_error"], &c["failed_ticks"]),
        (&Value::Null, &json!(0))
    );
    for (action, token) in [("approve", &a.carol), ("launch", &a.engineer)] {
        let (s, b) = a
            .call(
                "POST",
                &format!("/api/v1/campaigns/{id}:{action}"),
                token,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let sql = "UPDATE campaigns SET plan = REPLACE(plan, '\"action_timeout\":\"72h\"', '\"action_timeout\":\"2400000000h\"') WHERE id = $1";
    let db = &a._db.db;
    let updated = match db {
        ota_db::Db::Sqlite(p) => sqlx::query(sql)
            .bind(&id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
        ota_db::Db::Postgres(p) => sqlx::query(sql)
            .bind(&id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
    };
    assert_eq!(updated.unwrap(), 1);

    // The rollout, as the process running it would.
    let vehicles = ota_common::peer::in_process(
        ota_vehicle_store::grpc::VehicleStoreService::new(ota_vehicle_store::VehicleStore::new(
            db,
            ota_vehicle_store::Precedence::default(),
        ))
        .into_server(),
    );
    let rules = ota_common::peer::in_process(
        ota_rule_engine::RuleEngineService::new(ota_rule_engine::StoreVehicles::new(
            vehicles.clone(),
        ))
        .into_server(),
    );
    let rollout = ota_campaign_manager::CampaignManager::new(
        ota_campaign_manager::store::Store::new(
            db.clone(),
            std::sync::Arc::new(tokio::sync::Notify::new()),
        ),
        rules,
        std::sync::Arc::new(ota_rule_engine::StoreVehicles::new(vehicles)),
        ota_campaign_manager::Config::default(),
    );
    rollout.tick().await.unwrap();

    let (s, c) = a
        .call("GET", &format!("/api/v1/campaigns/{id}"), &a.viewer, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let error = c["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("rollout.action_timeout 2400000000h is out of range"),
        "{c}"
    );
    assert_eq!(c["failed_ticks"], 1);
    assert!(c["last_error_at"].is_string(), "{c}");
    let (s, list) = a.call("GET", "/api/v1/campaigns", &a.viewer, None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["campaigns"][0]["last_error"], error.as_str());
    let (s, r) = a
        .call(
            "GET",
            &format!("/api/v1/campaigns/{id}/report"),
            &a.viewer,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["last_error"], error.as_str());
    assert!(r["last_error_at"].is_string(), "{r}");
}
