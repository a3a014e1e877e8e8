//! A staged document made ready for one vehicle: the stored JSON served
//! as is (a remote GetActions answer turned back into the same JSON), with
//! this vehicle's jittered poll interval spliced in.

use bytes::Bytes;
use ota_proto::v1 as pb;
use ota_staging::document::{Document, EMPTY_ETAG};
use ota_staging::{Found, StoredDoc};
use serde::Deserialize;

use crate::AdapterError;

/// A document ready to send: the body with this vehicle's poll interval,
/// and the actions it hands over.
pub(crate) struct Served {
    pub body: Bytes,
    pub action_ids: Vec<String>,
}

pub(crate) fn serve(found: Found, vin: &str, spread: f64) -> Result<Served, AdapterError> {
    match found {
        Found::Stored(doc) => serve_stored(vin, doc, spread),
        Found::Proto(doc) => serve_proto(vin, doc, spread),
    }
}

#[derive(Deserialize)]
struct Head {
    poll_after_s: u32,
    actions: Vec<ActionId>,
}

#[derive(Deserialize)]
struct ActionId {
    action_id: String,
}

fn serve_stored(vin: &str, doc: StoredDoc, spread: f64) -> Result<Served, AdapterError> {
    let head: Head = serde_json::from_slice(&doc.json).map_err(|e| {
        AdapterError::Staging(ota_staging::StagingError::Corrupt {
            vin: vin.to_owned(),
            reason: e.to_string(),
        })
    })?;
    let served = jittered(head.poll_after_s, vin, &doc.etag, spread);
    let action_ids = if doc.etag == EMPTY_ETAG {
        Vec::new()
    } else {
        head.actions.into_iter().map(|a| a.action_id).collect()
    };
    Ok(Served {
        body: splice_poll(&doc.json, head.poll_after_s, served),
        action_ids,
    })
}

/// The stored bytes with another poll interval, without re-serializing the
/// actions. The head's layout is fixed (vin, etag, poll_after_s, actions),
/// so the first match is the head's field; should the layout ever change,
/// the document goes out unjittered rather than broken.
fn splice_poll(json: &Bytes, base: u32, served: u32) -> Bytes {
    if base == served {
        return json.clone();
    }
    let needle = format!(",\"poll_after_s\":{base},\"actions\":");
    let Some(at) = json
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
    else {
        return json.clone();
    };
    let replacement = format!(",\"poll_after_s\":{served},\"actions\":");
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(&json[..at]);
    out.extend_from_slice(replacement.as_bytes());
    out.extend_from_slice(&json[at + needle.len()..]);
    Bytes::from(out)
}

fn serve_proto(vin: &str, doc: pb::StagedDocument, spread: f64) -> Result<Served, AdapterError> {
    let poll_after_s = jittered(doc.poll_after_s, vin, &doc.etag, spread);
    let action_ids = doc.actions.iter().map(|a| a.action_id.clone()).collect();
    let doc = Document {
        poll_after_s,
        ..Document::from_proto(doc)
    };
    let body = serde_json::to_vec(&doc).map_err(|e| {
        AdapterError::Staging(ota_staging::StagingError::Build {
            vin: vin.to_owned(),
            reason: e.to_string(),
        })
    })?;
    Ok(Served {
        body: Bytes::from(body),
        action_ids,
    })
}

/// This vehicle's poll interval: `base` scaled into [1 - spread, 1 + spread]
/// by a hash of the VIN and the etag. A fleet told "300" all at once (a
/// campaign launch changes many documents together) would otherwise come
/// back in one wave; hashing instead of drawing at random keeps the value
/// stable while the document is unchanged, so the body matches its etag.
pub(crate) fn jittered(base: u32, vin: &str, etag: &str, spread: f64) -> u32 {
    let spread = spread.clamp(0.0, 0.5);
    if base == 0 || spread == 0.0 {
        return base;
    }
    let h = fnv1a(&[vin.as_bytes(), b"\n", etag.as_bytes()]);
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    let factor = 1.0 - spread + 2.0 * spread * unit;
    ((f64::from(base) * factor).round() as u32).max(1)
}

/// FNV-1a: stable across processes and releases, unlike std's hasher, so
/// every adapter replica serves a vehicle the same value.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIN: &str = "WVWZZZE1ZMP000001";

    #[test]
    fn jitter_stays_in_range_is_stable_and_spreads() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let vin = format!("WVWZZZE1ZMP{i:06}");
            let v = jittered(300, &vin, "abcdef0123456789", 0.2);
            assert!((240..=360).contains(&v), "{v}");
            assert_eq!(v, jittered(300, &vin, "abcdef0123456789", 0.2));
            seen.insert(v);
        }
        assert!(seen.len() > 50, "only {} distinct values", seen.len());
        assert_eq!(jittered(300, VIN, "x", 0.0), 300);
        assert_eq!(jittered(0, VIN, "x", 0.2), 0);
    }

    #[test]
    fn splicing_changes_only_the_head() {
        let json = Bytes::from(format!(
            r#"{{"vin":"{VIN}","etag":"e","poll_after_s":300,"actions":[{{"action_id":"a","poll_after_s":300}}]}}"#
        ));
        let out = splice_poll(&json, 300, 287);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            format!(
                r#"{{"vin":"{VIN}","etag":"e","poll_after_s":287,"actions":[{{"action_id":"a","poll_after_s":300}}]}}"#
            )
        );
        assert_eq!(
            splice_poll(&json, 120, 100),
            json,
            "unknown layout is left alone"
        );
    }

    #[test]
    fn both_paths_serve_the_same_document() {
        let open = pb::OpenAction {
            action_id: "a1".into(),
            campaign_id: "c1".into(),
            ecu: "BMS".into(),
            priority: 1,
            package: Some(pb::StagedPackage {
                name: "bms-fw".into(),
                version: "2.3.1".into(),
                artifacts: vec![pb::Artifact {
                    url: "https://cdn.example/x.bin".into(),
                    sha256: "ab".repeat(32),
                    size: 7,
                }],
            }),
            deadline: Some(ota_common::vehicle::to_timestamp(
                chrono::DateTime::from_timestamp(1_796_083_200, 0).unwrap(),
            )),
            state: pb::ActionState::Staged.into(),
            attempt: 1,
        };
        let stored = ota_staging::document::build(VIN, &[open], 300, "")
            .unwrap()
            .unwrap();
        let proto = stored.to_proto(VIN).unwrap();
        let a = serve(Found::Stored(stored), VIN, 0.2).unwrap();
        let b = serve(Found::Proto(proto), VIN, 0.2).unwrap();
        assert_eq!(a.body, b.body);
        assert_eq!(a.action_ids, ["a1"]);
        assert_eq!(b.action_ids, ["a1"]);
    }
}
