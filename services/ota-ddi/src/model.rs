//! The DDI JSON shapes (hawkBit's `ddi` API), and how device feedback maps
//! to our action states.

use std::collections::BTreeMap;

use ota_proto::v1::ActionState;
use serde::{Deserialize, Serialize};

/// `status.execution` of a feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    Closed,
    Proceeding,
    Canceled,
    Scheduled,
    Rejected,
    Resumed,
    Downloaded,
    Download,
}

/// `status.result.finished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    Success,
    Failure,
    None,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Progress {
    pub cnt: u64,
    #[serde(default)]
    pub of: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FeedbackResult {
    pub finished: Finished,
    #[serde(default)]
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub execution: Execution,
    pub result: FeedbackResult,
    #[serde(default)]
    pub details: Vec<String>,
}

/// A feedback body. Unknown fields are ignored: devices still send the
/// legacy `id` and `time`, which hawkBit itself no longer reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Feedback {
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Merge,
    Replace,
    Remove,
}

/// `PUT configData`. Values are strings in DDI; numbers and booleans are
/// taken as their JSON text since some clients send them unquoted.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigData {
    #[serde(default)]
    pub mode: Option<Mode>,
    pub data: BTreeMap<String, serde_json::Value>,
}

/// The state a feedback reports, with the progress in percent, or `None`
/// when it reports nothing about the action's state.
///
/// | execution | finished | state |
/// |---|---|---|
/// | closed | success or none | succeeded (hawkBit also treats `none` as done) |
/// | closed | failure | failed |
/// | proceeding, resumed | any | installing |
/// | download | any | downloading |
/// | downloaded | any | downloading at 100 % (nothing installs yet) |
/// | scheduled | any | accepted |
/// | rejected | any | rejected |
/// | canceled | any | failed ("canceled by the device") |
pub fn state_of(status: &Status) -> (ActionState, u32) {
    let pct = status.result.progress.as_ref().and_then(|p| match p.of {
        Some(of) if of > 0 => Some((p.cnt.min(of) * 100 / of) as u32),
        _ => None,
    });
    match (status.execution, status.result.finished) {
        (Execution::Closed, Finished::Failure) => (ActionState::Failed, pct.unwrap_or(0)),
        (Execution::Closed, _) => (ActionState::Succeeded, 100),
        (Execution::Proceeding | Execution::Resumed, _) => {
            (ActionState::Installing, pct.unwrap_or(0))
        }
        (Execution::Download, _) => (ActionState::Downloading, pct.unwrap_or(0)),
        (Execution::Downloaded, _) => (ActionState::Downloading, 100),
        (Execution::Scheduled, _) => (ActionState::Accepted, 0),
        (Execution::Rejected, _) => (ActionState::Rejected, pct.unwrap_or(0)),
        (Execution::Canceled, _) => (ActionState::Failed, pct.unwrap_or(0)),
    }
}

/// The message recorded with the report: the device's details, and why a
/// cancel became a failure.
pub fn message_of(status: &Status) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if status.execution == Execution::Canceled {
        parts.push("canceled by the device");
    }
    parts.extend(status.details.iter().map(String::as_str));
    let mut msg = parts.join("; ");
    if msg.len() > 1024 {
        let mut cut = 1024;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
    }
    msg
}

#[derive(Debug, Serialize)]
pub struct Link {
    pub href: String,
}

#[derive(Debug, Serialize)]
pub struct Hashes {
    pub sha1: String,
    pub md5: String,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct ArtifactLinks {
    pub download: Link,
    #[serde(rename = "download-http")]
    pub download_http: Link,
}

#[derive(Debug, Serialize)]
pub struct Artifact {
    pub filename: String,
    pub hashes: Hashes,
    pub size: u64,
    #[serde(rename = "_links")]
    pub links: ArtifactLinks,
}

#[derive(Debug, Serialize)]
pub struct Chunk {
    pub part: String,
    pub version: String,
    pub name: String,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Serialize)]
pub struct Deployment {
    pub download: &'static str,
    pub update: &'static str,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Serialize)]
pub struct ActionHistory {
    pub status: String,
    pub messages: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DeploymentBase {
    pub id: String,
    pub deployment: Deployment,
    #[serde(rename = "actionHistory", skip_serializing_if = "Option::is_none")]
    pub action_history: Option<ActionHistory>,
}

/// `HH:MM:SS`, hours unbounded.
pub fn sleep(secs: u32) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> Status {
        serde_json::from_value::<Feedback>(serde_json::json!({"status": json}))
            .unwrap()
            .status
    }

    #[test]
    fn the_mapping_table() {
        let cases = [
            ("closed", "success", None, ("succeeded", 100)),
            ("closed", "none", None, ("succeeded", 100)),
            ("closed", "failure", None, ("failed", 0)),
            ("proceeding", "none", Some((1, 4)), ("installing", 25)),
            ("resumed", "none", None, ("installing", 0)),
            ("download", "none", Some((3, 3)), ("downloading", 100)),
            ("downloaded", "none", None, ("downloading", 100)),
            ("scheduled", "none", None, ("accepted", 0)),
            ("rejected", "none", None, ("rejected", 0)),
            ("canceled", "none", None, ("failed", 0)),
        ];
        for (execution, finished, progress, expected) in cases {
            let mut result = serde_json::json!({"finished": finished});
            if let Some((cnt, of)) = progress {
                result["progress"] = serde_json::json!({"cnt": cnt, "of": of});
            }
            let s = status(serde_json::json!({"execution": execution, "result": result}));
            let (state, pct) = state_of(&s);
            assert!(state.is_reportable(), "{execution}/{finished}");
            assert_eq!((state.as_str(), pct), expected, "{execution}/{finished}");
        }
    }

    #[test]
    fn progress_beyond_of_or_without_of_is_safe() {
        let s = status(serde_json::json!({"execution": "proceeding",
            "result": {"finished": "none", "progress": {"cnt": 9, "of": 3}}}));
        assert_eq!(state_of(&s), (ActionState::Installing, 100));
        let s = status(serde_json::json!({"execution": "proceeding",
            "result": {"finished": "none", "progress": {"cnt": 9}}}));
        assert_eq!(state_of(&s), (ActionState::Installing, 0));
    }

    #[test]
    fn messages() {
        let s = status(serde_json::json!({"execution": "canceled",
            "result": {"finished": "none"}, "details": ["user said no"]}));
        assert_eq!(message_of(&s), "canceled by the device; user said no");
        let long = "é".repeat(1000);
        let s = status(serde_json::json!({"execution": "closed",
            "result": {"finished": "failure"}, "details": [long]}));
        assert!(message_of(&s).len() <= 1024);
    }

    #[test]
    fn sleeps() {
        assert_eq!(sleep(300), "00:05:00");
        assert_eq!(sleep(3905), "01:05:05");
        assert_eq!(sleep(360_000), "100:00:00");
    }
}
