//! The staged document: the JSON a vehicle receives, served as-is over HTTP
//! and MQTT, so its shape is an external contract.
//!
//! ```json
//! {"vin":"WVWZZZE1ZMP000001","etag":"…","poll_after_s":300,
//!  "actions":[{"action_id":"…","campaign_id":"…","type":"install","ecu":"BMS",
//!    "package":{"name":"bms-fw","version":"2.3.1","artifacts":[{"url":"…","sha256":"…","size":123}]},
//!    "deadline":"2026-12-01T00:00:00Z"}]}
//! ```

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use ota_common::vehicle::{from_timestamp, to_timestamp};
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::StagingError;

/// Length of every etag: 16 hex characters (64 bits of sha256).
pub const ETAG_LEN: usize = 16;

/// The etag of a vehicle without open actions. Such a vehicle has no stored
/// document; its empty document is made up on every fetch.
pub const EMPTY_ETAG: &str = "0000000000000000";

/// How long a vehicle waits before it asks again, unless configured.
pub const DEFAULT_POLL_AFTER_S: u32 = 300;

/// A document as stored and served: its etag, so a reader can answer
/// "not modified" without parsing, and the JSON bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDoc {
    pub etag: String,
    pub json: Bytes,
}

/// The document in owned form, for reading it back (tests, the protobuf
/// view). Writing goes through borrowed mirrors of these types, so building
/// a document copies no strings out of the open actions. Unknown fields are
/// ignored: during a rolling upgrade a newer writer may add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub vin: String,
    pub etag: String,
    pub poll_after_s: u32,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub action_id: String,
    pub campaign_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ecu: String,
    pub package: Package,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Present from the second attempt on: a retry of the same action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Serialize)]
struct ActionRef<'a> {
    action_id: &'a str,
    campaign_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    ecu: &'a str,
    package: PackageRef<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
}

#[derive(Serialize)]
struct PackageRef<'a> {
    name: &'a str,
    version: &'a str,
    artifacts: Vec<ArtifactRef<'a>>,
}

#[derive(Serialize)]
struct ArtifactRef<'a> {
    url: std::borrow::Cow<'a, str>,
    sha256: &'a str,
    size: u64,
}

/// The vehicle's document for its open actions, or `None` when it has none
/// (nothing is stored for it then). Artifact URLs that are references to
/// this server (`/artifacts/...`) get `public_url` in front.
pub fn build(
    vin: &str,
    actions: &[pb::OpenAction],
    poll_after_s: u32,
    public_url: &str,
) -> Result<Option<StoredDoc>, StagingError> {
    if actions.is_empty() {
        return Ok(None);
    }
    let mut ordered: Vec<&pb::OpenAction> = actions.iter().collect();
    ordered.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.campaign_id.cmp(&b.campaign_id))
            .then_with(|| a.action_id.cmp(&b.action_id))
    });
    let refs = ordered
        .iter()
        .map(|a| action_ref(vin, a, public_url))
        .collect::<Result<Vec<_>, _>>()?;
    let actions_json = serde_json::to_vec(&refs).map_err(|e| StagingError::Build {
        vin: vin.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Some(assemble(vin, poll_after_s, &actions_json)))
}

/// The document of a vehicle without open actions.
pub fn empty(vin: &str, poll_after_s: u32) -> StoredDoc {
    let mut json = Vec::with_capacity(96);
    write_head(&mut json, vin, EMPTY_ETAG, poll_after_s);
    json.extend_from_slice(b"[]}");
    StoredDoc {
        etag: EMPTY_ETAG.to_owned(),
        json: Bytes::from(json),
    }
}

fn action_ref<'a>(
    vin: &str,
    a: &'a pb::OpenAction,
    public_url: &str,
) -> Result<ActionRef<'a>, StagingError> {
    let package = a.package.as_ref().ok_or_else(|| StagingError::Build {
        vin: vin.to_owned(),
        reason: format!("action {} has no package", a.action_id),
    })?;
    Ok(ActionRef {
        action_id: &a.action_id,
        campaign_id: &a.campaign_id,
        kind: "install",
        ecu: &a.ecu,
        package: PackageRef {
            name: &package.name,
            version: &package.version,
            artifacts: package
                .artifacts
                .iter()
                .map(|x| ArtifactRef {
                    url: ota_common::reference::absolute(public_url, &x.url),
                    sha256: &x.sha256,
                    size: x.size,
                })
                .collect(),
        },
        deadline: a.deadline.as_ref().map(|t| rfc3339(from_timestamp(t))),
        attempt: retry(a.attempt),
    })
}

/// First attempts leave the field out, so their documents read as before.
fn retry(attempt: u32) -> Option<u32> {
    (attempt > 1).then_some(attempt)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The etag hashes exactly what the vehicle sees besides the etag itself, so
/// it changes exactly when the content does. The actions are serialized
/// once and spliced in; the field order is fixed, which keeps the bytes (and
/// so the etag) deterministic.
fn assemble(vin: &str, poll_after_s: u32, actions_json: &[u8]) -> StoredDoc {
    let mut h = Sha256::new();
    h.update(vin.as_bytes());
    h.update(b"\n");
    h.update(poll_after_s.to_string().as_bytes());
    h.update(b"\n");
    h.update(actions_json);
    let digest = h.finalize();
    let etag = hex::encode(&digest[..ETAG_LEN / 2]);

    let mut json = Vec::with_capacity(actions_json.len() + 96);
    write_head(&mut json, vin, &etag, poll_after_s);
    json.extend_from_slice(actions_json);
    json.push(b'}');
    // `Bytes::from(Vec)` keeps spare capacity alive behind an extra header
    // allocation; an exact-size buffer is what the memory budget assumes.
    StoredDoc {
        etag,
        json: Bytes::from(json.into_boxed_slice()),
    }
}

/// `{"vin":…,"etag":…,"poll_after_s":…,"actions":` — the stored-value check
/// in the Redis store relies on this prefix.
fn write_head(out: &mut Vec<u8>, vin: &str, etag: &str, poll_after_s: u32) {
    out.extend_from_slice(b"{\"vin\":");
    // A VIN from the campaign manager is validated, but escaping keeps the
    // document valid JSON whatever arrives.
    serde_json::to_writer(&mut *out, vin).expect("writing to a vec cannot fail");
    out.extend_from_slice(b",\"etag\":\"");
    out.extend_from_slice(etag.as_bytes());
    out.extend_from_slice(b"\",\"poll_after_s\":");
    out.extend_from_slice(poll_after_s.to_string().as_bytes());
    out.extend_from_slice(b",\"actions\":");
}

/// The bytes a valid document of `vin` with `etag` starts with.
pub(crate) fn head_prefix(vin: &str, etag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(b"{\"vin\":");
    serde_json::to_writer(&mut out, vin).expect("writing to a vec cannot fail");
    out.extend_from_slice(b",\"etag\":\"");
    out.extend_from_slice(etag.as_bytes());
    out.push(b'"');
    out
}

pub(crate) fn is_etag(s: &[u8]) -> bool {
    s.len() == ETAG_LEN && s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

impl StoredDoc {
    /// Parses the JSON back into its owned form.
    pub fn document(&self) -> Result<Document, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    /// The protobuf view for `GetActions`; `vin` names the vehicle in errors.
    pub fn to_proto(&self, vin: &str) -> Result<pb::StagedDocument, StagingError> {
        let doc = self.document().map_err(|e| StagingError::Corrupt {
            vin: vin.to_owned(),
            reason: e.to_string(),
        })?;
        doc.to_proto()
    }

    /// A GetActions answer in the stored form, the same bytes a local
    /// lookup would give.
    pub fn from_proto(d: pb::StagedDocument) -> Result<Self, serde_json::Error> {
        let doc = Document::from_proto(d);
        let json = serde_json::to_vec(&doc)?;
        Ok(StoredDoc {
            etag: doc.etag,
            json: Bytes::from(json),
        })
    }
}

impl Document {
    /// A GetActions answer back in the stored shape: the adapters that reach
    /// staging over gRPC serve the same JSON as those that read the store
    /// (same field order, same deadline text).
    pub fn from_proto(d: pb::StagedDocument) -> Self {
        Document {
            vin: d.vin,
            etag: d.etag,
            poll_after_s: d.poll_after_s,
            actions: d
                .actions
                .into_iter()
                .map(|a| {
                    let p = a.package.unwrap_or_default();
                    Action {
                        action_id: a.action_id,
                        campaign_id: a.campaign_id,
                        kind: a.r#type,
                        ecu: a.ecu,
                        package: Package {
                            name: p.name,
                            version: p.version,
                            artifacts: p
                                .artifacts
                                .into_iter()
                                .map(|x| Artifact {
                                    url: x.url,
                                    sha256: x.sha256,
                                    size: x.size,
                                })
                                .collect(),
                        },
                        deadline: a.deadline.as_ref().map(|t| rfc3339(from_timestamp(t))),
                        attempt: retry(a.attempt),
                    }
                })
                .collect(),
        }
    }

    pub fn to_proto(self) -> Result<pb::StagedDocument, StagingError> {
        let vin = self.vin;
        let actions = self
            .actions
            .into_iter()
            .map(|a| {
                let deadline = match a.deadline {
                    None => None,
                    Some(d) => Some(
                        DateTime::parse_from_rfc3339(&d)
                            .map(|t| to_timestamp(t.with_timezone(&Utc)))
                            .map_err(|e| StagingError::Corrupt {
                                vin: vin.clone(),
                                reason: format!("deadline {d:?} of action {}: {e}", a.action_id),
                            })?,
                    ),
                };
                Ok(pb::StagedAction {
                    action_id: a.action_id,
                    campaign_id: a.campaign_id,
                    r#type: a.kind,
                    ecu: a.ecu,
                    package: Some(pb::StagedPackage {
                        name: a.package.name,
                        version: a.package.version,
                        artifacts: a
                            .package
                            .artifacts
                            .into_iter()
                            .map(|x| pb::Artifact {
                                url: x.url,
                                sha256: x.sha256,
                                size: x.size,
                            })
                            .collect(),
                    }),
                    deadline,
                    attempt: a.attempt.unwrap_or(1),
                })
            })
            .collect::<Result<Vec<_>, StagingError>>()?;
        Ok(pb::StagedDocument {
            vin,
            etag: self.etag,
            poll_after_s: self.poll_after_s,
            actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIN: &str = "WVWZZZE1ZMP000001";

    fn action(id: &str, campaign: &str, priority: i32) -> pb::OpenAction {
        pb::OpenAction {
            action_id: id.into(),
            campaign_id: campaign.into(),
            ecu: "BMS".into(),
            priority,
            package: Some(pb::StagedPackage {
                name: "bms-fw".into(),
                version: "2.3.1".into(),
                artifacts: vec![pb::Artifact {
                    url: "https://cdn.example/bms-2.3.1.bin".into(),
                    sha256: "ab".repeat(32),
                    size: 123,
                }],
            }),
            deadline: None,
            state: pb::ActionState::Pending.into(),
            attempt: 1,
        }
    }

    #[test]
    fn hosted_artifacts_get_the_public_url_and_external_ones_stay() {
        let mut a = action("a1", "c1", 1);
        let hosted = format!("/artifacts/{}/fw.bin", "ab".repeat(32));
        a.package.as_mut().unwrap().artifacts.push(pb::Artifact {
            url: hosted.clone(),
            sha256: "ab".repeat(32),
            size: 9,
        });
        let doc = build(VIN, &[a], 300, "https://ota.example/")
            .unwrap()
            .unwrap()
            .document()
            .unwrap();
        let urls: Vec<&str> = doc.actions[0]
            .package
            .artifacts
            .iter()
            .map(|x| x.url.as_str())
            .collect();
        assert_eq!(
            urls,
            [
                "https://cdn.example/bms-2.3.1.bin".to_owned(),
                format!("https://ota.example{hosted}")
            ]
        );
    }

    #[test]
    fn no_actions_means_no_document() {
        assert_eq!(build(VIN, &[], 300, "").unwrap(), None);
    }

    #[test]
    fn matches_the_contract_shape() {
        let mut a = action("a1", "c1", 5);
        a.deadline = Some(prost_types::Timestamp {
            seconds: 1_796_083_200,
            nanos: 0,
        });
        let doc = build(VIN, &[a], 300, "").unwrap().unwrap();
        let expected = format!(
            r#"{{"vin":"{VIN}","etag":"{}","poll_after_s":300,"actions":[{{"action_id":"a1","campaign_id":"c1","type":"install","ecu":"BMS","package":{{"name":"bms-fw","version":"2.3.1","artifacts":[{{"url":"https://cdn.example/bms-2.3.1.bin","sha256":"{}","size":123}}]}},"deadline":"2026-12-01T00:00:00Z"}}]}}"#,
            doc.etag,
            "ab".repeat(32)
        );
        assert_eq!(std::str::from_utf8(&doc.json).unwrap(), expected);
        assert!(is_etag(doc.etag.as_bytes()));
        assert_eq!(doc.document().unwrap().etag, doc.etag);
    }

    #[test]
    fn deadline_is_omitted_when_unset() {
        let doc = build(VIN, &[action("a1", "c1", 0)], 300, "")
            .unwrap()
            .unwrap();
        assert!(!std::str::from_utf8(&doc.json).unwrap().contains("deadline"));
    }

    #[test]
    fn orders_by_priority_then_campaign_then_action() {
        let doc = build(
            VIN,
            &[
                action("a3", "c2", 1),
                action("a2", "c1", 1),
                action("a1", "c1", 1),
                action("a9", "c9", 7),
            ],
            300,
            "",
        )
        .unwrap()
        .unwrap();
        let ids: Vec<_> = doc
            .document()
            .unwrap()
            .actions
            .into_iter()
            .map(|a| a.action_id)
            .collect();
        assert_eq!(ids, ["a9", "a1", "a2", "a3"]);
    }

    #[test]
    fn etag_changes_exactly_when_the_content_does() {
        let a = build(
            VIN,
            &[action("a1", "c1", 1), action("a2", "c2", 1)],
            300,
            "",
        )
        .unwrap()
        .unwrap();
        let same_reordered = build(
            VIN,
            &[action("a2", "c2", 1), action("a1", "c1", 1)],
            300,
            "",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a, same_reordered);
        let other_vin = build(
            "WVWZZZE1ZMP000002",
            &[action("a1", "c1", 1), action("a2", "c2", 1)],
            300,
            "",
        )
        .unwrap()
        .unwrap();
        let other_poll = build(VIN, &[action("a1", "c1", 1), action("a2", "c2", 1)], 60, "")
            .unwrap()
            .unwrap();
        let mut changed = action("a2", "c2", 1);
        changed.package.as_mut().unwrap().version = "2.3.2".into();
        let other_pkg = build(VIN, &[action("a1", "c1", 1), changed], 300, "")
            .unwrap()
            .unwrap();
        for other in [other_vin, other_poll, other_pkg] {
            assert_ne!(a.etag, other.etag);
        }
    }

    #[test]
    fn empty_document_has_the_fixed_etag() {
        let doc = empty(VIN, 300);
        assert_eq!(doc.etag, EMPTY_ETAG);
        let parsed = doc.document().unwrap();
        assert_eq!(parsed.actions, vec![]);
        assert_eq!(parsed.vin, VIN);
    }

    #[test]
    fn converts_to_the_protobuf_view() {
        let mut a = action("a1", "c1", 5);
        a.deadline = Some(prost_types::Timestamp {
            seconds: 1_796_083_200,
            nanos: 500_000_000,
        });
        let doc = build(VIN, &[a], 120, "").unwrap().unwrap();
        let pb = doc.to_proto(VIN).unwrap();
        assert_eq!(pb.vin, VIN);
        assert_eq!(pb.etag, doc.etag);
        assert_eq!(pb.poll_after_s, 120);
        assert_eq!(pb.actions[0].r#type, "install");
        assert_eq!(
            pb.actions[0].deadline,
            Some(prost_types::Timestamp {
                seconds: 1_796_083_200,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            pb.actions[0].package.as_ref().unwrap().artifacts[0].size,
            123
        );
    }

    #[test]
    fn an_action_without_package_is_an_error_naming_it() {
        let mut a = action("a1", "c1", 5);
        a.package = None;
        let err = build(VIN, &[a], 300, "").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("building the staged document of vehicle {VIN}: action a1 has no package")
        );
    }

    #[test]
    fn remote_documents_keep_the_stored_bytes() {
        let action = pb::OpenAction {
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
            deadline: Some(prost_types::Timestamp {
                seconds: 1_796_083_200,
                nanos: 0,
            }),
            state: pb::ActionState::Pending.into(),
            attempt: 1,
        };
        let vin = "WVWZZZE1ZMP000001";
        let stored = build(vin, &[action], 300, "").unwrap().unwrap();
        let back = StoredDoc::from_proto(stored.to_proto(vin).unwrap()).unwrap();
        assert_eq!(back, stored);
        let none = empty(vin, 300);
        assert_eq!(
            StoredDoc::from_proto(none.to_proto(vin).unwrap()).unwrap(),
            none
        );
    }
}
