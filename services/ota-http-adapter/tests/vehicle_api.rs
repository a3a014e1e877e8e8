//! The vehicle HTTP API over a real socket, against the real vehicle store,
//! rule engine, campaign manager and staging on a fresh database.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{serve, vin, Platform};
use ota_common::last_seen::LastSeen;
use ota_common::peer;
use ota_http_adapter::{AdapterConfig, AdapterState, RateLimit};
use ota_proto::v1 as pb;
use ota_staging::StagingPeer;
use ota_staging::{campaign_manager_source, MemoryStore, Stager, StagingService};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

struct Env {
    p: Platform,
    base: String,
    http: Client,
    campaign: String,
}

async fn env_with(db: ota_tests::db::TestDb, config: AdapterConfig) -> Env {
    let p = Platform::new(db).await;
    p.fleet(3).await;
    let campaign = p.campaign().await;
    let base = serve(p.state(config)).await;
    Env {
        p,
        base,
        http: Client::builder().no_proxy().build().unwrap(),
        campaign,
    }
}

/// Tests that send many requests for one vehicle get a budget to match;
/// the rate limit has its own test.
fn roomy() -> AdapterConfig {
    AdapterConfig {
        rate_limit: RateLimit {
            per_second: 100.0,
            burst: 100,
        },
        report_rate_limit: RateLimit {
            per_second: 100.0,
            burst: 100,
        },
        ..AdapterConfig::default()
    }
}

async fn env() -> Env {
    env_with(ota_tests::db::sqlite().await, roomy()).await
}

impl Env {
    async fn token(&self, vin: &str) -> String {
        self.p.credentials.issue(vin, false).await.unwrap().token
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get_actions(&self, vin: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/v1/vehicles/{vin}/actions")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn status(
        &self,
        vin: &str,
        action: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let res = self
            .http
            .post(self.url(&format!("/v1/vehicles/{vin}/actions/{action}/status")))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn action_of(&self, v: &str) -> String {
        self.p
            .actions(&self.campaign)
            .await
            .into_iter()
            .find(|(vin, _, _)| vin == v)
            .map(|(_, id, _)| id)
            .unwrap_or_else(|| panic!("no action for {v}"))
    }
}

fn message(b: &Value) -> &str {
    b["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn poll_gets_the_document_with_its_etag_then_304_and_marks_delivered() {
    let e = env().await;
    let v = vin(0);
    let token = e.token(&v).await;
    let res = e.get_actions(&v, &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let doc: Value = res.json().await.unwrap();
    assert_eq!(etag, format!("\"{}\"", doc["etag"].as_str().unwrap()));
    assert_eq!(doc["vin"], v);
    let actions = doc["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{doc}");
    assert_eq!(actions[0]["package"]["name"], "bms-fw");
    assert_eq!(actions[0]["action_id"], e.action_of(&v).await);
    let poll = doc["poll_after_s"].as_u64().unwrap();
    assert!((240..=360).contains(&poll), "jittered around 300: {poll}");

    let again = e.get_actions(&v, &token).await;
    let body: Value = again.json().await.unwrap();
    assert_eq!(body, doc, "stable between document changes");

    let res = e
        .http
        .get(e.url(&format!("/v1/vehicles/{v}/actions")))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    assert!(res.bytes().await.unwrap().is_empty());

    // Marked delivered off the request path: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let states: Vec<String> =
            e.p.actions(&e.campaign)
                .await
                .into_iter()
                .filter(|(vin, _, _)| *vin == v)
                .map(|(_, _, s)| s)
                .collect();
        if states == ["delivered"] {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let others: Vec<String> =
        e.p.actions(&e.campaign)
            .await
            .into_iter()
            .filter(|(vin, _, _)| *vin != v)
            .map(|(_, _, s)| s)
            .collect();
    assert_eq!(others, ["staged", "staged"], "only the poller's action");
}

/// Staging follows a final report through the bus, which takes a moment; a
/// vehicle polling straight after its report must not get the action back.
/// No staging worker runs here, so only the adapter's restage can pass this.
#[tokio::test]
async fn a_finished_action_is_gone_from_the_very_next_poll() {
    let e = env().await;
    let v = vin(0);
    let token = e.token(&v).await;
    let action = e.action_of(&v).await;
    let res = e.get_actions(&v, &token).await;
    let before = res.headers()["etag"].clone();
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["actions"][0]["action_id"], action, "{doc}");

    let (s, b) = e
        .status(
            &v,
            &action,
            &token,
            json!({"state": "succeeded", "progress": 100, "seq": 1}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let res = e.get_actions(&v, &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_ne!(res.headers()["etag"], before, "a new etag");
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["actions"], json!([]), "{doc}");
}

#[tokio::test]
async fn a_vehicle_without_actions_gets_the_empty_document() {
    let e = env().await;
    let v = "WVWZZZE1ZMP999999";
    let token = e.token(v).await;
    let res = e.get_actions(v, &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["actions"], json!([]));
    assert_eq!(doc["etag"], ota_staging::document::EMPTY_ETAG);
}

#[tokio::test]
async fn remote_staging_serves_the_same_bytes_as_in_process() {
    let e = env().await;
    let v = vin(1);
    let token = e.token(&v).await;
    let local = e.get_actions(&v, &token).await;
    let local_etag = local.headers()["etag"].clone();
    let local = local.bytes().await.unwrap();
    let remote = AdapterState::new(
        e.p.credentials.clone(),
        StagingPeer::remote(peer::in_process(e.p.staging.clone().into_server())),
        e.p.campaign_peer.clone(),
        e.p.vehicle_peer.clone(),
        AdapterConfig::default(),
    );
    let base = serve(remote).await;
    let res = e
        .http
        .get(format!("{base}/v1/vehicles/{v}/actions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], local_etag);
    assert_eq!(res.bytes().await.unwrap(), local);
}

#[tokio::test]
async fn staging_not_ready_is_503_with_retry_after() {
    let e = env().await;
    let not_rebuilt = Stager::new(
        Arc::new(MemoryStore::new()),
        Arc::new(campaign_manager_source(e.p.campaign_peer.clone())),
        300,
    );
    let bus: ota_bus::SharedBus = Arc::new(ota_bus::memory::MemoryBus::new());
    let state = AdapterState::new(
        e.p.credentials.clone(),
        StagingPeer::local(StagingService::new(not_rebuilt, bus)),
        e.p.campaign_peer.clone(),
        e.p.vehicle_peer.clone(),
        AdapterConfig::default(),
    );
    let base = serve(state).await;
    let v = vin(0);
    let res = e
        .http
        .get(format!("{base}/v1/vehicles/{v}/actions"))
        .bearer_auth(e.token(&v).await)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "5");
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["error"]["code"], "unavailable");
}

#[tokio::test]
async fn tokens_are_checked_against_the_vehicle_in_the_path() {
    let e = env().await;
    let v = vin(0);
    let token = e.token(&v).await;
    let call = |path: String, token: Option<String>| {
        let mut req = e.http.get(e.url(&path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let www = res.headers().get("www-authenticate").cloned();
            (
                status,
                res.json::<Value>().await.unwrap_or(Value::Null),
                www,
            )
        }
    };
    let actions = format!("/v1/vehicles/{v}/actions");

    let (s, b, www) = call(actions.clone(), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["error"]["code"], "unauthenticated");
    assert_eq!(message(&b), "missing bearer token");
    assert_eq!(www.unwrap(), "Bearer");

    let (s, b, _) = call(actions.clone(), Some("otav_wrong".into())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(message(&b), "invalid or revoked vehicle token");

    let (s, _, _) = call(actions.clone(), Some("ota_a_management_token".into())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let other = vin(1);
    let (s, b, _) = call(format!("/v1/vehicles/{other}/actions"), Some(token.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(b["error"]["code"], "permission_denied");
    assert_eq!(
        message(&b),
        format!("this token belongs to vehicle {v}, not {other}")
    );

    let (s, b, _) = call("/v1/vehicles/WVWZZZ/actions".into(), Some(token.clone())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&b).contains("\"WVWZZZ\""), "{b}");

    let (s, _, _) = call(actions.clone(), Some(token.clone())).await;
    assert_eq!(s, StatusCode::OK);
    e.p.credentials.revoke(&v, None).await.unwrap();
    let (s, b, _) = call(actions.clone(), Some(token.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revocation is immediate: {b}");
}

#[tokio::test]
async fn status_reports_are_applied_once_and_checked() {
    let e = env().await;
    let v = vin(0);
    let token = e.token(&v).await;
    let action = e.action_of(&v).await;
    let report = json!({"state": "accepted", "progress": 0, "message": "ok", "seq": 1}).to_string();

    let (s, b) = e.status(&v, &action, &token, report.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b, json!({"applied": true, "state": "accepted"}));
    let (s, b) = e.status(&v, &action, &token, report).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(
        b,
        json!({"applied": false, "state": "accepted"}),
        "same seq"
    );
    let (s, b) = e
        .status(
            &v,
            &action,
            &token,
            json!({"state": "downloading", "progress": 40, "seq": 2}).to_string(),
        )
        .await;
    assert_eq!(
        (s, b["applied"].as_bool()),
        (StatusCode::ACCEPTED, Some(true))
    );

    let (s, b) = e
        .status(
            &v,
            "nope",
            &token,
            json!({"state": "failed", "seq": 3}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(message(&b).contains("nope"), "{b}");

    let others = e.action_of(&vin(1)).await;
    let (s, b) = e
        .status(
            &v,
            &others,
            &token,
            json!({"state": "failed", "seq": 3}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(message(&b).contains(&others), "{b}");

    for (body, needle) in [
        ("{garbage".to_owned(), "invalid status report"),
        (
            json!({"state": "done", "seq": 3}).to_string(),
            "unknown state \"done\"",
        ),
        (
            json!({"state": "timed_out", "seq": 3}).to_string(),
            "unknown state \"timed_out\": expected one of accepted, downloading, installing, \
             succeeded, failed, rejected",
        ),
        (
            json!({"state": "installing", "progress": 150, "seq": 3}).to_string(),
            "progress 150 is above 100",
        ),
        (json!({"state": "installing"}).to_string(), "seq"),
        (
            json!({"state": "installing", "seq": 3, "colour": 1}).to_string(),
            "colour",
        ),
    ] {
        let (s, b) = e.status(&v, &action, &token, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert_eq!(b["error"]["code"], "invalid_argument");
        assert!(message(&b).contains(needle), "{body}: {b}");
    }

    let big = json!({"state": "failed", "seq": 9, "message": "x".repeat(20 * 1024)}).to_string();
    let (s, b) = e.status(&v, &action, &token, big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(
        message(&b),
        "request body is larger than the limit of 16384 bytes"
    );
    let states: Vec<_> =
        e.p.actions(&e.campaign)
            .await
            .into_iter()
            .map(|(vin, _, s)| (vin, s))
            .collect();
    assert!(
        states.contains(&(v.clone(), "downloading".into())),
        "{states:?}"
    );
}

/// Polls are noted in memory and written as one batch of last-seen times
/// when the process flushes; a refused request is not a sign of the
/// vehicle.
#[tokio::test]
async fn polls_mark_the_vehicle_seen_in_one_batch() {
    let p = Platform::new(ota_tests::db::postgres().await).await;
    p.fleet(3).await;
    let seen = LastSeen::new();
    let base = serve(p.state(roomy()).with_last_seen(seen.clone())).await;
    let http = Client::builder().no_proxy().build().unwrap();
    let token = p.credentials.issue(&vin(1), false).await.unwrap().token;
    let other = p.credentials.issue(&vin(2), false).await.unwrap().token;
    let poll = |v: String, t: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/v1/vehicles/{v}/actions"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for _ in 0..10 {
        assert_eq!(poll(vin(1), token.clone()).await, StatusCode::OK);
    }
    assert_eq!(poll(vin(2), other.clone()).await, StatusCode::OK);
    // vin(1)'s token on vin(0)'s path: refused, and vin(0) was not seen.
    assert_eq!(poll(vin(0), token.clone()).await, StatusCode::FORBIDDEN);
    assert_eq!(seen.pending(), 2);
    let before = p.vehicles.get(&vin(1)).await.unwrap();
    assert_eq!(before.last_seen, None, "no write per poll");

    let store = pb::vehicle_store_client::VehicleStoreClient::new(p.vehicle_peer.clone());
    let started = chrono::Utc::now();
    let flushed = seen.flush(&store).await.unwrap();
    assert_eq!(
        (flushed.vehicles, flushed.calls, flushed.updated),
        (2, 1, 2)
    );
    let v = p.vehicles.get(&vin(1)).await.unwrap();
    let at = v.last_seen.expect("seen after the flush");
    assert!(
        at <= started && started - at < chrono::Duration::seconds(30),
        "{at}"
    );
    assert_eq!(
        v.updated_at, before.updated_at,
        "being seen is not a change"
    );
    assert_eq!(p.vehicles.get(&vin(0)).await.unwrap().last_seen, None);
    // Nothing new: the next flush sends nothing.
    assert_eq!(seen.flush(&store).await.unwrap().calls, 0);
}

#[tokio::test]
async fn over_the_rate_a_vehicle_gets_429_and_others_do_not() {
    let config = AdapterConfig {
        rate_limit: RateLimit {
            per_second: 0.5,
            burst: 3,
        },
        ..AdapterConfig::default()
    };
    let e = env_with(ota_tests::db::sqlite().await, config).await;
    let (a, b) = (vin(0), vin(1));
    let (ta, tb) = (e.token(&a).await, e.token(&b).await);
    for _ in 0..3 {
        assert_eq!(e.get_actions(&a, &ta).await.status(), StatusCode::OK);
    }
    let res = e.get_actions(&a, &ta).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_exhausted");
    assert!(message(&body).contains(&a), "{body}");
    assert_eq!(e.get_actions(&b, &tb).await.status(), StatusCode::OK);
}

/// Reports have a budget of their own, larger than the polls' in
/// production (here: polls roomy, reports 5): a burst of 40 inventory
/// reports writes 5, the rest get 429 with Retry-After and write nothing,
/// and neither the vehicle's polls nor other vehicles' reports suffer.
#[tokio::test]
async fn over_its_report_budget_a_vehicle_gets_429_and_nothing_is_written() {
    let config = AdapterConfig {
        report_rate_limit: RateLimit {
            per_second: 0.01,
            burst: 5,
        },
        ..roomy()
    };
    let e = env_with(ota_tests::db::sqlite().await, config).await;
    let (a, b) = (vin(0), vin(1));
    let (ta, tb) = (e.token(&a).await, e.token(&b).await);
    let put = |v: &str, token: &str, i: usize| {
        e.http
            .put(e.url(&format!("/v1/vehicles/{v}/inventory")))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(json!({"attributes": {format!("burst{i}"): "x"}}).to_string())
            .send()
    };
    let mut written = 0;
    let mut limited = None;
    for i in 0..40 {
        let res = put(&a, &ta, i).await.unwrap();
        match res.status() {
            StatusCode::OK => written += 1,
            StatusCode::TOO_MANY_REQUESTS => limited = Some(res),
            other => panic!("report {i}: {other}"),
        }
    }
    assert_eq!(written, 5, "the burst, and not one more");
    let res = limited.expect("the rest were refused");
    assert!(
        res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_exhausted");
    assert!(
        message(&body).contains(&a) && message(&body).contains("report"),
        "{body}"
    );
    let stored = e.p.vehicles.get(&a).await.unwrap();
    let burst: Vec<_> = stored
        .attributes
        .keys()
        .filter(|k| k.starts_with("burst"))
        .collect();
    assert_eq!(burst.len(), 5, "refused reports wrote nothing: {burst:?}");
    assert_eq!(
        stored.ecus["BMS"].sw, "2.2.0",
        "the rest of the record is intact"
    );

    // Status reports share the report budget.
    let action = e.action_of(&a).await;
    let (s, _) = e
        .status(
            &a,
            &action,
            &ta,
            json!({"state": "accepted", "seq": 1}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        e.p.actions(&e.campaign)
            .await
            .iter()
            .all(|(_, _, s)| s != "accepted"),
        "the refused status report was not recorded"
    );
    // Polls are a separate budget; other vehicles have their own.
    assert_eq!(e.get_actions(&a, &ta).await.status(), StatusCode::OK);
    assert_eq!(put(&b, &tb, 0).await.unwrap().status(), StatusCode::OK);
    assert!(e
        .p
        .vehicles
        .get(&b)
        .await
        .unwrap()
        .attributes
        .contains_key("burst0"));
}

#[tokio::test]
async fn inventory_reports_update_the_vehicle() {
    let e = env_with(ota_tests::db::postgres().await, roomy()).await;
    let v = vin(2);
    let token = e.token(&v).await;
    let put = |body: String| {
        e.http
            .put(e.url(&format!("/v1/vehicles/{v}/inventory")))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let res = put(
        json!({"ecus": {"BMS": {"hw": "H2", "sw": "2.3.1"}, "TCU": {"sw": "7.0"}},
               "attributes": {"odometer_km": "12000"}})
        .to_string(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["ecus"]["BMS"]["sw"], "2.3.1", "{b}");
    let stored = e.p.vehicles.get(&v).await.unwrap();
    assert_eq!(stored.ecus["BMS"].sw, "2.3.1");
    assert_eq!(stored.ecus["TCU"].sw, "7.0");
    assert_eq!(stored.attributes["odometer_km"], "12000");
    assert_eq!(stored.provenance["ecus.BMS.sw"], "vehicle");

    let res = put(json!({"ecu": {}}).to_string()).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let b: Value = res.json().await.unwrap();
    assert!(message(&b).contains("ecu"), "{b}");
}

/// Polls are counted by outcome in `ota_poll_requests_total` (what the
/// dashboards and the health page show), and reports by protocol, the
/// reported state and what became of them; no label carries the VIN.
#[tokio::test]
async fn polls_and_reports_are_counted_with_bounded_labels() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let config = AdapterConfig {
        rate_limit: RateLimit {
            per_second: 0.01,
            burst: 2,
        },
        ..roomy()
    };
    let e = env_with(ota_tests::db::sqlite().await, config).await;
    let v = vin(0);
    let token = e.token(&v).await;
    let res = e.get_actions(&v, &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let res = e
        .http
        .get(e.url(&format!("/v1/vehicles/{v}/actions")))
        .bearer_auth(&token)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = e.get_actions(&v, &token).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let action = e.action_of(&v).await;
    let report = json!({"state": "downloading", "progress": 10, "seq": 1}).to_string();
    let (s, b) = e.status(&v, &action, &token, report).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");

    let text = metrics.render();
    for line in [
        r#"ota_poll_requests_total{protocol="http",outcome="200"} 1"#,
        r#"ota_poll_requests_total{protocol="http",outcome="304"} 1"#,
        r#"ota_poll_requests_total{protocol="http",outcome="429"} 1"#,
        r#"ota_status_reports_total{protocol="http",state="downloading",outcome="applied"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    assert!(!text.contains(&v), "a VIN in a label:\n{text}");
}
