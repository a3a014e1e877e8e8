//! The events services exchange, as JSON payloads. Each payload also
//! carries the trace of the work that published it (a top-level
//! `traceparent`), whichever bus or outbox moves it, so the consumer
//! continues that trace ([`encode`], [`decode`]).

use ota_common::trace::{self, SpanContext};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An event beside the W3C trace context of its publisher.
#[derive(Serialize, Deserialize)]
struct Traced<T> {
    #[serde(flatten)]
    event: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
}

/// `event` as a payload, carrying the current span's trace when there is
/// one (tracing export on).
pub fn encode<T: Serialize>(event: &T) -> String {
    // The event types are plain structs and enums with string keys, which
    // always serialize.
    serde_json::to_string(&Traced {
        event,
        traceparent: trace::current(),
    })
    .expect("events serialize to JSON")
}

/// A payload's event and the trace it continues. A malformed trace
/// context is counted and dropped: the event itself still counts.
pub fn decode<T: DeserializeOwned>(payload: &str) -> serde_json::Result<(T, Option<SpanContext>)> {
    let t: Traced<T> = serde_json::from_str(payload)?;
    let cx = t
        .traceparent
        .as_deref()
        .and_then(|v| trace::received(v, "bus"));
    Ok((t.event, cx))
}

pub mod topics {
    /// Vehicle inventory changed ([`super::VehicleEvent`]); the campaign
    /// manager re-decides which campaigns the vehicles belong to.
    pub const VEHICLES: &str = "vehicles";
    /// Vehicles whose staged document must be recomputed
    /// ([`super::StagingEvent`]).
    pub const STAGING: &str = "staging";
    /// Staged documents that changed ([`super::StagedEvent`]); the MQTT
    /// adapter republishes them to the vehicles.
    pub const STAGED: &str = "staged";
    /// Installs vehicles reported as succeeded ([`super::InstalledEvent`]);
    /// the campaign manager records the new software in the inventory.
    pub const INSTALLED: &str = "installed";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VehicleEvent {
    /// Created or changed vehicles (import, upsert, inventory report).
    Changed {
        vins: Vec<String>,
        /// When the change committed, unix milliseconds.
        at_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StagingEvent {
    /// These vehicles' open actions changed.
    Vins { vins: Vec<String>, at_ms: i64 },
    /// Every vehicle with an action in this campaign (launch, pause, resume,
    /// abort, priority or package change).
    Campaign { campaign_id: String, at_ms: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InstalledEvent {
    /// These actions finished with `succeeded`: each vehicle's ECU now runs
    /// the action's package.
    Succeeded {
        installs: Vec<Install>,
        /// When the reports committed, unix milliseconds.
        at_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Install {
    pub vin: String,
    pub action_id: String,
    pub ecu: String,
    pub package_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StagedEvent {
    /// These vehicles' staged documents were written or removed.
    Changed { vins: Vec<String>, at_ms: i64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn an_event_round_trips_with_and_without_a_trace() {
        let e = StagingEvent::Vins {
            vins: vec!["WVWZZZE1ZMP000001".into()],
            at_ms: 7,
        };
        // Outside any traced span: the payload is the bare event, as before.
        let plain = encode(&e);
        assert_eq!(plain, serde_json::to_string(&e).unwrap());
        assert_eq!(decode::<StagingEvent>(&plain).unwrap(), (e.clone(), None));

        let traced = plain.replacen('{', &format!("{{\"traceparent\":\"{VALID}\","), 1);
        let (back, cx) = decode::<StagingEvent>(&traced).unwrap();
        assert_eq!(back, e);
        assert_eq!(cx.and_then(|c| trace::format(&c)).as_deref(), Some(VALID));
        // Consumers that predate the field read the event as ever.
        assert_eq!(serde_json::from_str::<StagingEvent>(&traced).unwrap(), e);
    }

    #[test]
    fn a_malformed_trace_leaves_the_event_usable() {
        let payload = r#"{"kind":"changed","vins":["V1"],"at_ms":1,"traceparent":"00-zz"}"#;
        let (e, cx) = decode::<StagedEvent>(payload).unwrap();
        assert_eq!(
            e,
            StagedEvent::Changed {
                vins: vec!["V1".into()],
                at_ms: 1
            }
        );
        assert!(cx.is_none());
        assert!(decode::<StagedEvent>(r#"{"kind":"nope"}"#).is_err());
    }
}
