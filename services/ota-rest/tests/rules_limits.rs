//! The bounds on CEL evaluation through the REST router: a costly expression
//! is refused at validation (for rules and campaign files alike), and an
//! evaluation past its deadline answers 504 while other requests go on.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use ota_auth::{Role, TokenStore};
use ota_common::peer;
use ota_rule_engine::{EvalPool, RuleEngineService, RuleSetCache, StoreVehicles};
use serde_json::{json, Value};
use tower::ServiceExt;

const VIN: &str = "WVWZZZE1ZMP000001";

struct Api {
    router: Router,
    admin: String,
    viewer: String,
    _db: ota_tests::db::TestDb,
}

/// The router over the real services; `engine` replaces the rule engine's
/// cost budget and evaluation pool.
async fn api(engine: Option<(u64, Arc<EvalPool>)>) -> Api {
    let t = ota_tests::db::sqlite().await;
    let mut peers = common::peers(&t.db);
    if let Some((max_cost, pool)) = engine {
        let cache = Arc::new(RuleSetCache::with_max_cost(16, max_cost));
        let service =
            RuleEngineService::with_cache(StoreVehicles::new(peers.vehicles.clone()), cache)
                .with_pool(pool);
        peers.rules = peer::in_process(service.into_server());
    }
    let tokens = TokenStore::new(t.db.clone());
    let admin = tokens.create("admin", Role::Admin).await.unwrap().token;
    let viewer = tokens.create("viewer", Role::Viewer).await.unwrap().token;
    let router = ota_rest::router(peers.state(tokens, ota_rest::Limits::default()));
    let a = Api {
        router,
        admin,
        viewer,
        _db: t,
    };
    let vehicle = json!({"model": "ID.4", "region": "EU"});
    let (s, b) = a
        .call("PUT", &format!("/api/v1/vehicles/{VIN}"), &a.admin, vehicle)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    a
}

impl Api {
    async fn call(&self, method: &str, uri: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
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

/// `[1,2,…,n]`.
fn list(n: usize) -> String {
    let items: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// Four nested `all()` over 1,000-element lists: 10^12 iterations, which
/// froze the server when two viewers explained it.
fn attack() -> String {
    let l = list(1000);
    format!("{l}.all(a, {l}.all(b, {l}.all(c, {l}.all(d, a + b + c + d > 0))))")
}

#[tokio::test]
async fn the_nested_all_attack_is_refused_before_any_evaluation() {
    let a = api(None).await;
    let src = attack();
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/rules/explain",
            &a.viewer,
            json!({"expression": src, "vin": VIN}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "invalid_argument");
    let e = &b["errors"][0];
    let message = e["message"].as_str().unwrap();
    assert!(
        message.starts_with("expression is too costly: estimated cost ")
            && message.ends_with(", the limit is 1000000 (this `all` runs its body 1000 times)"),
        "{message}"
    );
    // under the third `all`, the first loop from the inside over the limit
    let third = src.match_indices(".all(").nth(2).unwrap().0 as u64 + 2;
    assert_eq!(
        (e["path"].as_str(), e["line"].as_u64(), e["column"].as_u64()),
        (Some("target"), Some(1), Some(third))
    );
    assert!(e["excerpt"].as_str().unwrap().ends_with('^'));

    // a campaign file is checked by the same rule engine
    let campaign = json!({
        "name": "n", "target": src,
        "rules": [{"install": {"package": "bms-fw", "version": "2.3.1", "ecu": "BMS"}}]
    });
    let (s, v) = a
        .call("POST", "/api/v1/campaigns:validate", &a.viewer, campaign)
        .await;
    assert_eq!(
        (s, v["valid"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{v}"
    );
    let target = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "target")
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        target["message"]
            .as_str()
            .unwrap()
            .starts_with("expression is too costly"),
        "{target}"
    );
}

#[tokio::test]
async fn an_explain_past_its_deadline_is_a_504_and_others_are_answered() {
    let pool = Arc::new(EvalPool::new(2, Duration::from_secs(1)));
    // a budget that admits 10^9 iterations: only the deadline stops them
    let a = Arc::new(api(Some((u64::MAX / 64, Arc::clone(&pool)))).await);
    let l = list(1000);
    let slow = format!("{l}.all(a, {l}.all(b, {l}.all(c, a + b + c > 0)))");
    let explain = tokio::spawn({
        let a = Arc::clone(&a);
        async move {
            a.call(
                "POST",
                "/api/v1/rules/explain",
                &a.viewer,
                json!({"expression": slow, "vin": VIN}),
            )
            .await
        }
    });
    // the explain holds a slot (compiling, then evaluating)
    while pool.idle_slots() == 2 {
        tokio::task::yield_now().await;
    }
    let (s, b) = a
        .call(
            "POST",
            "/api/v1/rules/validate",
            &a.viewer,
            json!({"expression": "vehicle.region == 'EU'"}),
        )
        .await;
    assert_eq!((s, b["valid"].as_bool()), (StatusCode::OK, Some(true)));
    assert!(
        !explain.is_finished(),
        "validate was answered while the explain ran"
    );

    let (s, b) = explain.await.unwrap();
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{b}");
    assert_eq!(
        b["error"],
        json!({"code": "deadline_exceeded", "message": "evaluation took longer than 1s and was stopped"})
    );
}
