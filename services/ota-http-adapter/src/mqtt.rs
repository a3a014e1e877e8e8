//! The MQTT broker's HTTP authentication and authorization hooks (the
//! EMQX shape): a vehicle connects with its VIN as client id and user name
//! and its vehicle token as password, and may touch only its own topics.
//! Refusals are `200 {"result":"deny"}`, as the broker expects; an error
//! status (503) makes the broker treat the hook as unavailable instead.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use ota_auth::AuthError;
use ota_common::Vin;
use serde::{Deserialize, Serialize};

use crate::vehicle::json_body;
use crate::{AdapterError, AdapterState};

/// The root of every vehicle topic.
pub const TOPIC_PREFIX: &str = "ota/v1/vehicles";

/// What a vehicle publishes under its own topic.
const PUBLISH: [&str; 3] = ["status", "inventory", "presence"];

/// The broker's credentials for a client of the platform itself (the MQTT
/// adapter), allowed every topic.
#[derive(Clone)]
pub struct MqttSuperuser {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for MqttSuperuser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSuperuser")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

// The broker sends more fields than these (peer host, protocol...), and
// which ones depends on its configuration: unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub struct AuthRequest {
    #[serde(default)]
    clientid: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Debug, Deserialize)]
pub struct AclRequest {
    #[serde(default)]
    clientid: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    action: String,
    /// Whether the message to publish is retained (EMQX: `${retain}`).
    /// A broker that does not send it cannot be kept from retaining
    /// reports here (see the README on external brokers).
    #[serde(default, deserialize_with = "flag")]
    retain: Option<bool>,
}

/// A broker's boolean as JSON `true`/`1` or as the text of a placeholder
/// (`"true"`, `"1"`). Anything else counts as set: a value this side cannot
/// read must not let a retained report through.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Bool(b)) => Some(b),
        Some(serde_json::Value::Number(n)) => Some(n.as_u64() != Some(0)),
        Some(serde_json::Value::String(s)) => {
            Some(!matches!(s.trim(), "" | "0" | "false" | "False" | "FALSE"))
        }
        Some(_) => Some(true),
    })
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Decision {
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_superuser: Option<bool>,
}

impl Decision {
    fn allow(superuser: bool) -> Self {
        Self {
            result: "allow",
            is_superuser: Some(superuser),
        }
    }

    fn deny() -> Self {
        Self {
            result: "deny",
            is_superuser: None,
        }
    }
}

fn is_superuser(s: &AdapterState, username: &str, password: Option<&str>) -> bool {
    let Some(su) = &s.inner.config.mqtt_superuser else {
        return false;
    };
    if su.username.is_empty() || username != su.username {
        return false;
    }
    password
        .is_none_or(|p| ota_common::secret::constant_time_eq(p.as_bytes(), su.password.as_bytes()))
}

/// `POST /v1/mqtt/auth`
pub async fn auth(
    State(s): State<AdapterState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Decision>, AdapterError> {
    let r: AuthRequest = json_body(&s, body, "mqtt authentication request")?;
    if is_superuser(&s, &r.username, Some(&r.password)) {
        return Ok(Json(Decision::allow(true)));
    }
    if r.clientid != r.username || Vin::parse(&r.username).is_err() {
        return Ok(Json(Decision::deny()));
    }
    match s.inner.credentials.authenticate(&r.password).await {
        Ok(identity) if identity.vin == r.username => Ok(Json(Decision::allow(false))),
        Ok(_) | Err(AuthError::BadToken | AuthError::MissingToken) => Ok(Json(Decision::deny())),
        Err(e) => Err(e.into()),
    }
}

/// `POST /v1/mqtt/acl`
pub async fn acl(
    State(s): State<AdapterState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Decision>, AdapterError> {
    let r: AclRequest = json_body(&s, body, "mqtt authorization request")?;
    if is_superuser(&s, &r.username, None) {
        return Ok(Json(Decision::allow(true)));
    }
    let allowed = r.clientid == r.username
        && Vin::parse(&r.username).is_ok()
        && vehicle_may(&r.username, &r.action, &r.topic, r.retain.unwrap_or(false));
    Ok(Json(if allowed {
        Decision::allow(false)
    } else {
        Decision::deny()
    }))
}

/// Exact topics only: a wildcard subscription could reach other vehicles'
/// topics, so it is never one of these. Only presence may be retained
/// (`online` on connect, `offline` as the will); a retained status or
/// inventory report would be replayed to every later subscriber.
fn vehicle_may(vin: &str, action: &str, topic: &str, retain: bool) -> bool {
    let Some(rest) = topic
        .strip_prefix(TOPIC_PREFIX)
        .and_then(|t| t.strip_prefix('/'))
        .and_then(|t| t.strip_prefix(vin))
        .and_then(|t| t.strip_prefix('/'))
    else {
        return false;
    };
    match action {
        "subscribe" => rest == "actions",
        "publish" => PUBLISH.contains(&rest) && (!retain || rest == "presence"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIN: &str = "WVWZZZE1ZMP000001";

    #[test]
    fn a_vehicle_reaches_only_its_own_topics() {
        let t = |rest: &str| format!("{TOPIC_PREFIX}/{VIN}/{rest}");
        let may = |action: &str, topic: &str| vehicle_may(VIN, action, topic, false);
        assert!(may("subscribe", &t("actions")));
        for p in PUBLISH {
            assert!(may("publish", &t(p)));
            assert!(!may("subscribe", &t(p)));
        }
        assert!(!may("publish", &t("actions")));
        assert!(!may("subscribe", &t("#")));
        assert!(!may("subscribe", &format!("{TOPIC_PREFIX}/+/actions")));
        assert!(!may(
            "subscribe",
            &format!("{TOPIC_PREFIX}/WVWZZZE1ZMP000002/actions")
        ));
        assert!(!may("all", &t("actions")));
        // Only presence may be retained.
        assert!(vehicle_may(VIN, "publish", &t("presence"), true));
        assert!(!vehicle_may(VIN, "publish", &t("status"), true));
        assert!(!vehicle_may(VIN, "publish", &t("inventory"), true));
    }

    #[test]
    fn the_retain_flag_is_read_in_every_shape_a_broker_sends() {
        let retain = |v: serde_json::Value| {
            serde_json::from_value::<AclRequest>(serde_json::json!({ "retain": v }))
                .unwrap()
                .retain
        };
        for set in [
            serde_json::json!(true),
            serde_json::json!(1),
            serde_json::json!("true"),
            serde_json::json!("1"),
            serde_json::json!("yes?"),
        ] {
            assert_eq!(retain(set.clone()), Some(true), "{set}");
        }
        for unset in [
            serde_json::json!(false),
            serde_json::json!(0),
            serde_json::json!("false"),
            serde_json::json!("0"),
        ] {
            assert_eq!(retain(unset.clone()), Some(false), "{unset}");
        }
        assert_eq!(retain(serde_json::Value::Null), None);
        let missing: AclRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(missing.retain, None);
    }
}
