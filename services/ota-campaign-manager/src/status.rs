//! Status reports from vehicles, written in batches: every report waits for
//! the transaction that records it, so an acknowledged report is durable, and
//! concurrent reports share one transaction, which is what makes tens of
//! thousands per second possible.

use std::collections::HashMap;

use chrono::Utc;
use ota_common::trace::SpanContext;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::model::ActionState;
use crate::store::{ActionRow, NewEvent, ReportOutcome, StatusUpdate, Store};
use crate::CampaignError;

#[derive(Debug, Clone)]
pub struct StatusReport {
    pub vin: String,
    pub action_id: String,
    pub state: ActionState,
    pub progress: u32,
    pub message: String,
    pub seq: u64,
    pub protocol: String,
}

/// What happened to a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResult {
    pub applied: bool,
    /// The action's state afterwards.
    pub state: ActionState,
}

type Reply = oneshot::Sender<Result<StatusResult, CampaignError>>;

/// A queued report with the trace of the request that brought it.
type Item = (StatusReport, Option<SpanContext>, Reply);

#[derive(Clone)]
pub struct StatusWriter {
    tx: mpsc::Sender<Item>,
}

/// Reports queued beyond this wait for room: back-pressure to the adapters.
const QUEUE: usize = 50_000;
/// Attempts for a report whose action changed between read and write.
const RACE_RETRIES: usize = 3;
/// Batches written at the same time: PostgreSQL spreads them over its
/// cores; on SQLite they queue for the one writer.
const WRITERS: usize = 4;
/// Longest failure message kept per action.
const MAX_MESSAGE: usize = 1024;

impl StatusWriter {
    pub fn start(store: Store, batch: usize) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(store.clone(), rx.clone(), batch.max(1)));
        }
        Self { tx }
    }

    pub async fn submit(&self, report: StatusReport) -> Result<StatusResult, CampaignError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((report, ota_common::trace::current_context(), reply))
            .await
            .map_err(|_| CampaignError::Conflict("the status writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| CampaignError::Conflict("the status writer has stopped".into()))?
    }
}

type Queue = std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Item>>>;

async fn run(store: Store, rx: Queue, batch: usize) {
    let mut retries: HashMap<String, u32> = HashMap::new();
    let mut buf = Vec::with_capacity(batch);
    // Each writer takes what is queued, then releases the queue to the next
    // writer while it writes.
    while rx.lock().await.recv_many(&mut buf, batch).await > 0 {
        let items = std::mem::take(&mut buf);
        let mut reports = Vec::with_capacity(items.len());
        let mut replies = Vec::with_capacity(items.len());
        // The batch's span continues the reports' trace (links to each when
        // they come from several): the events it writes carry it on.
        let span = tracing::info_span!("status.batch", reports = items.len());
        ota_common::trace::follow(&span, items.iter().filter_map(|(_, cx, _)| cx.clone()));
        for (report, _, reply) in items {
            reports.push(report);
            replies.push(reply);
        }
        let started = std::time::Instant::now();
        let results = match apply(&store, &reports, &mut retries).instrument(span).await {
            Ok(results) => results,
            Err(e) => {
                tracing::warn!(error = %e, reports = reports.len(), "writing status reports failed");
                let code = ota_common::CodedError::code(&e);
                reports
                    .iter()
                    .map(|_| {
                        Err(CampaignError::Batch {
                            code,
                            message: format!("recording the status report failed: {e}"),
                        })
                    })
                    .collect()
            }
        };
        metrics::histogram!("ota_status_batch_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("ota_status_batch_size").record(reports.len() as f64);
        for ((report, reply), result) in reports.iter().zip(replies).zip(results) {
            let outcome = match &result {
                Ok(r) if r.applied => "applied",
                Ok(_) => "ignored",
                Err(CampaignError::NotFound { .. }) => "unknown_action",
                Err(CampaignError::Forbidden(_)) => "wrong_vehicle",
                Err(_) => "error",
            };
            count_report(&report.protocol, report.state.as_str(), outcome);
            let _ = reply.send(result);
        }
    }
}

/// `ota_status_reports_total{protocol,state,outcome}`. The protocol is
/// whatever the caller named, so only the adapters' own names become
/// labels: a gRPC caller must not be able to grow the label set.
pub(crate) fn count_report(protocol: &str, state: &'static str, outcome: &'static str) {
    let protocol = match protocol {
        "http" => "http",
        "mqtt" => "mqtt",
        "ddi" => "ddi",
        "grpc" => "grpc",
        _ => "other",
    };
    metrics::counter!("ota_status_reports_total", "protocol" => protocol, "state" => state, "outcome" => outcome)
        .increment(1);
}

/// The working copy of one action while a batch is decided.
struct Working {
    row: ActionRow,
    state: ActionState,
    attempts: i32,
    seq: i64,
    progress: i32,
    message: String,
    restaged: bool,
    changed: bool,
    /// The history the decided reports add.
    events: Vec<NewEvent>,
}

async fn apply(
    store: &Store,
    reports: &[StatusReport],
    retries: &mut HashMap<String, u32>,
) -> Result<Vec<Result<StatusResult, CampaignError>>, CampaignError> {
    let mut results: Vec<Option<Result<StatusResult, CampaignError>>> =
        (0..reports.len()).map(|_| None).collect();
    let mut todo: Vec<usize> = (0..reports.len()).collect();
    for _ in 0..RACE_RETRIES {
        if todo.is_empty() {
            break;
        }
        let mut ids: Vec<String> = todo.iter().map(|&i| reports[i].action_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let rows = store.actions_by_id(&ids).await?;
        for row in rows.values() {
            if !retries.contains_key(&row.campaign_id) {
                // A campaign that cannot be read must not fail the reports
                // of other campaigns' vehicles batched with its own: its
                // failures are final (no retries; not cached, so a repaired
                // record counts again).
                match store.get_campaign_entry(&row.campaign_id).await? {
                    crate::store::CampaignEntry::Readable(c) => {
                        retries.insert(c.id.clone(), c.plan.spec.rollout.max_retries);
                    }
                    crate::store::CampaignEntry::Unreadable(u) => {
                        tracing::warn!(campaign = %u.id, problem = %u.problem, "campaign cannot be read: its failed actions are not retried");
                    }
                }
            }
        }
        let mut working: HashMap<String, Working> = HashMap::new();
        let mut applied_at: Vec<(usize, String)> = Vec::new();
        for &i in &todo {
            let r = &reports[i];
            let Some(row) = rows.get(&r.action_id) else {
                results[i] = Some(Err(CampaignError::not_found("action", &r.action_id)));
                continue;
            };
            if row.vin != r.vin {
                results[i] = Some(Err(CampaignError::Forbidden(format!(
                    "action {} does not belong to vehicle {}",
                    r.action_id, r.vin
                ))));
                continue;
            }
            let w = working.entry(row.id.clone()).or_insert_with(|| Working {
                state: row.state.parse().unwrap_or(ActionState::Cancelled),
                attempts: row.attempts,
                seq: row.last_seq,
                progress: row.progress,
                message: row.message.clone(),
                restaged: false,
                changed: false,
                events: Vec::new(),
                row: row.clone(),
            });
            let max_retries = retries.get(&row.campaign_id).copied().unwrap_or(0);
            if decide(w, r, max_retries) {
                applied_at.push((i, row.id.clone()));
            } else {
                results[i] = Some(Ok(StatusResult {
                    applied: false,
                    state: w.state,
                }));
            }
        }
        let updates: Vec<StatusUpdate> = working
            .values()
            .filter(|w| w.changed)
            .map(|w| StatusUpdate {
                id: w.row.id.clone(),
                vin: w.row.vin.clone(),
                old_state: w.row.state.clone(),
                old_seq: w.row.last_seq,
                state: w.state,
                attempts: w.attempts,
                seq: w.seq,
                progress: w.progress,
                message: w.message.clone(),
                restaged: w.restaged,
                ecu: w.row.ecu.clone(),
                package_id: w.row.package_id.clone(),
                events: w.events.clone(),
            })
            .collect();
        let outcomes = store.write_status(&updates, Utc::now()).await?;
        let raced: std::collections::HashSet<&str> = updates
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == ReportOutcome::Raced)
            .map(|(u, _)| u.id.as_str())
            .collect();
        let mut next = Vec::new();
        for (i, id) in applied_at {
            if raced.contains(id.as_str()) {
                next.push(i);
            } else {
                results[i] = Some(Ok(StatusResult {
                    applied: true,
                    state: working[&id].state,
                }));
            }
        }
        todo = next;
    }
    for i in todo {
        results[i] = Some(Err(CampaignError::Conflict(format!(
            "action {} kept changing while the report was applied; send it again",
            reports[i].action_id
        ))));
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every report decided"))
        .collect())
}

/// Applies one report to the working copy; false when it changes nothing
/// (a duplicate, an older report, or the action is finished or not staged).
fn decide(w: &mut Working, r: &StatusReport, max_retries: u32) -> bool {
    let seq = r.seq.min(i64::MAX as u64) as i64;
    if w.state.is_final() || !w.state.is_open() || seq <= w.seq {
        return false;
    }
    let message: String = r.message.chars().take(MAX_MESSAGE).collect();
    w.seq = seq;
    w.progress = r.progress.min(100) as i32;
    w.changed = true;
    // The report as the vehicle sent it, then what the platform made of it.
    w.events.push(NewEvent {
        action_id: w.row.id.clone(),
        state: r.state,
        progress: w.progress,
        message: message.clone(),
        protocol: r.protocol.clone(),
        attempt: w.attempts,
    });
    if r.state == ActionState::Failed && w.attempts as u32 <= max_retries {
        w.state = ActionState::Staged;
        w.restaged = true;
        w.message = format!("attempt {} failed: {message}", w.attempts);
        w.attempts += 1;
        w.progress = 0;
        w.events.push(NewEvent::platform(
            &w.row.id,
            ActionState::Staged,
            format!("{}; retrying", w.message),
            w.attempts,
        ));
    } else {
        w.state = r.state;
        w.message = message;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn working(state: ActionState, attempts: i32, seq: i64) -> Working {
        Working {
            row: ActionRow {
                id: "1".into(),
                campaign_id: "c".into(),
                vin: "V".into(),
                ecu: "BMS".into(),
                package_id: "p".into(),
                wave: 0,
                state: state.to_string(),
                attempts,
                last_seq: seq,
                progress: 0,
                message: String::new(),
                model: String::new(),
                region: String::new(),
                hardware: String::new(),
                staged_at: None,
                state_at: 0,
            },
            state,
            attempts,
            seq,
            progress: 0,
            message: String::new(),
            restaged: false,
            changed: false,
            events: Vec::new(),
        }
    }

    fn report(state: ActionState, seq: u64) -> StatusReport {
        StatusReport {
            vin: "V".into(),
            action_id: "1".into(),
            state,
            progress: 50,
            message: "m".into(),
            seq,
            protocol: "test".into(),
        }
    }

    #[test]
    fn duplicates_and_older_reports_change_nothing() {
        let mut w = working(ActionState::Delivered, 1, -1);
        assert!(decide(&mut w, &report(ActionState::Downloading, 3), 0));
        assert!(!decide(&mut w, &report(ActionState::Downloading, 3), 0));
        assert!(!decide(&mut w, &report(ActionState::Accepted, 2), 0));
        assert_eq!(w.state, ActionState::Downloading);
    }

    #[test]
    fn a_finished_action_stays_finished() {
        let mut w = working(ActionState::Installing, 1, 4);
        assert!(decide(&mut w, &report(ActionState::Succeeded, 5), 0));
        assert!(!decide(&mut w, &report(ActionState::Installing, 6), 0));
        assert_eq!(w.state, ActionState::Succeeded);
    }

    #[test]
    fn failures_are_retried_until_the_limit() {
        let mut w = working(ActionState::Installing, 1, 0);
        assert!(decide(&mut w, &report(ActionState::Failed, 1), 1));
        assert_eq!(
            (w.state, w.attempts, w.restaged),
            (ActionState::Staged, 2, true)
        );
        assert!(w.message.contains("attempt 1 failed"));
        assert!(decide(&mut w, &report(ActionState::Failed, 2), 1));
        assert_eq!((w.state, w.attempts), (ActionState::Failed, 2));
    }

    #[test]
    fn each_applied_report_and_each_retry_leave_an_event() {
        let mut w = working(ActionState::Delivered, 1, 0);
        assert!(decide(&mut w, &report(ActionState::Downloading, 1), 1));
        assert!(!decide(&mut w, &report(ActionState::Downloading, 1), 1));
        assert!(decide(&mut w, &report(ActionState::Failed, 2), 1));
        let events: Vec<(ActionState, &str, i32)> = w
            .events
            .iter()
            .map(|e| (e.state, e.protocol.as_str(), e.attempt))
            .collect();
        assert_eq!(
            events,
            [
                (ActionState::Downloading, "test", 1),
                (ActionState::Failed, "test", 1),
                (ActionState::Staged, "platform", 2),
            ]
        );
        assert_eq!(w.events[2].message, "attempt 1 failed: m; retrying");
    }

    #[test]
    fn reports_for_actions_not_staged_are_ignored() {
        let mut w = working(ActionState::Pending, 0, -1);
        assert!(!decide(&mut w, &report(ActionState::Accepted, 1), 0));
    }
}
