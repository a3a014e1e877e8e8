//! The broker's authentication and authorization hooks over a real socket.

mod common;

use common::{serve, vin, Platform};
use ota_http_adapter::{AdapterConfig, MqttSuperuser};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

struct Env {
    base: String,
    http: Client,
    token: String,
    _p: Platform,
}

async fn env() -> Env {
    let p = Platform::new(ota_tests::db::sqlite().await).await;
    let token = p.credentials.issue(&vin(0), false).await.unwrap().token;
    let base = serve(p.state(AdapterConfig {
        mqtt_superuser: Some(MqttSuperuser {
            username: "ota-mqtt-adapter".into(),
            password: "s3cret".into(),
        }),
        ..AdapterConfig::default()
    }))
    .await;
    Env {
        base,
        http: Client::builder().no_proxy().build().unwrap(),
        token,
        _p: p,
    }
}

impl Env {
    async fn post(&self, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path} {body}");
        res.json().await.unwrap()
    }

    async fn auth(&self, clientid: &str, username: &str, password: &str) -> Value {
        self.post(
            "/v1/mqtt/auth",
            json!({"clientid": clientid, "username": username, "password": password,
                   "peerhost": "10.0.0.1"}),
        )
        .await
    }

    async fn acl(&self, username: &str, action: &str, topic: &str) -> String {
        let b = self
            .post(
                "/v1/mqtt/acl",
                json!({"clientid": username, "username": username, "topic": topic, "action": action}),
            )
            .await;
        b["result"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn auth_allows_a_vehicle_with_its_own_token_and_the_superuser() {
    let e = env().await;
    let v = vin(0);
    assert_eq!(
        e.auth(&v, &v, &e.token).await,
        json!({"result": "allow", "is_superuser": false})
    );
    assert_eq!(
        e.auth("ota-mqtt-adapter", "ota-mqtt-adapter", "s3cret")
            .await,
        json!({"result": "allow", "is_superuser": true})
    );
    let deny = json!({"result": "deny"});
    assert_eq!(
        e.auth("ota-mqtt-adapter", "ota-mqtt-adapter", "s3cre")
            .await,
        deny
    );
    assert_eq!(e.auth(&v, &v, "otav_wrong").await, deny);
    assert_eq!(
        e.auth(&vin(1), &vin(1), &e.token).await,
        deny,
        "another vin"
    );
    assert_eq!(
        e.auth("someone", &v, &e.token).await,
        deny,
        "client id differs"
    );
    assert_eq!(e.auth("NOTAVIN", "NOTAVIN", &e.token).await, deny);

    let res = e
        .http
        .post(format!("{}/v1/mqtt/auth", e.base))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn acl_limits_a_vehicle_to_its_own_topics() {
    let e = env().await;
    let v = vin(0);
    let own = |rest: &str| format!("ota/v1/vehicles/{v}/{rest}");
    assert_eq!(e.acl(&v, "subscribe", &own("actions")).await, "allow");
    for t in ["status", "inventory", "presence"] {
        assert_eq!(e.acl(&v, "publish", &own(t)).await, "allow", "{t}");
        assert_eq!(e.acl(&v, "subscribe", &own(t)).await, "deny", "{t}");
    }
    assert_eq!(e.acl(&v, "publish", &own("actions")).await, "deny");
    assert_eq!(
        e.acl(&v, "subscribe", "ota/v1/vehicles/+/actions").await,
        "deny"
    );
    assert_eq!(e.acl(&v, "subscribe", "#").await, "deny");
    assert_eq!(
        e.acl(
            &v,
            "subscribe",
            &format!("ota/v1/vehicles/{}/actions", vin(1))
        )
        .await,
        "deny"
    );
    assert_eq!(e.acl("ota-mqtt-adapter", "subscribe", "#").await, "allow");
    assert_eq!(
        e.acl(
            "ota-mqtt-adapter",
            "publish",
            &format!("ota/v1/vehicles/{}/actions", vin(1))
        )
        .await,
        "allow"
    );
}

/// The EMQX template `{"clientid": "${clientid}", "username": "${username}",
/// "topic": "${topic}", "action": "${action}", "retain": "${retain}"}`: a
/// vehicle may retain only its presence, never a report (a retained report
/// is replayed to every later subscriber and kept by the broker for good).
#[tokio::test]
async fn acl_refuses_retained_reports() {
    let e = env().await;
    let v = vin(0);
    let own = |rest: &str| format!("ota/v1/vehicles/{v}/{rest}");
    let acl = |topic: String, retain: Value| {
        let e = &e;
        let v = v.clone();
        async move {
            e.post(
                "/v1/mqtt/acl",
                json!({"clientid": v, "username": v, "topic": topic, "action": "publish",
                       "qos": "1", "retain": retain}),
            )
            .await["result"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    for t in ["status", "inventory"] {
        for retained in [json!("true"), json!(true), json!(1)] {
            assert_eq!(
                acl(own(t), retained.clone()).await,
                "deny",
                "{t} {retained}"
            );
        }
        assert_eq!(acl(own(t), json!("false")).await, "allow", "{t}");
    }
    assert_eq!(acl(own("presence"), json!("true")).await, "allow");
    assert_eq!(acl(own("presence"), json!("false")).await, "allow");
    // The service still answers, and the vehicle's other rights are intact.
    assert_eq!(e.acl(&v, "subscribe", &own("actions")).await, "allow");
}
