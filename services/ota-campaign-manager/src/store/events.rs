//! Each action's history (`action_events`): the status reports vehicles
//! sent that applied, and the platform's own transitions, appended in the
//! transaction of the change and cut to the last [`KEEP_EVENTS`] per
//! action in the same write.

use std::collections::HashMap;

use ota_db::with_pool;
use sqlx::QueryBuilder;

use super::{Conn, Store};
use crate::model::ActionState;
use crate::CampaignError;

/// The protocol of the platform's own transitions.
pub const PLATFORM: &str = "platform";
/// Events kept per action: a vehicle sending progress every second must
/// not grow its history without bound.
pub const KEEP_EVENTS: i64 = 100;

/// An event about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub action_id: String,
    pub state: ActionState,
    pub progress: i32,
    pub message: String,
    /// http, mqtt, ddi, grpc for a vehicle's report; [`PLATFORM`] for the
    /// platform's transitions.
    pub protocol: String,
    pub attempt: i32,
}

impl NewEvent {
    /// A transition the platform made.
    pub fn platform(
        action_id: impl Into<String>,
        state: ActionState,
        message: impl Into<String>,
        attempt: i32,
    ) -> Self {
        Self {
            action_id: action_id.into(),
            state,
            progress: 0,
            message: message.into(),
            protocol: PLATFORM.to_string(),
            attempt,
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    pub action_id: String,
    pub at: i64,
    pub state: String,
    pub progress: i32,
    pub message: String,
    pub protocol: String,
    pub attempt: i32,
}

/// SQLite's bound-parameter limit over the 7 an event binds.
const SQLITE_EVENTS_PER_INSERT: usize = 32_766 / 7;

/// Appends the events (all at `at_ms`) in the caller's transaction and cuts
/// the histories of their actions to the last [`KEEP_EVENTS`].
pub(super) async fn append(
    conn: &mut Conn<'_>,
    at_ms: i64,
    events: &[NewEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<&str> = events.iter().map(|e| e.action_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    match conn {
        Conn::Postgres(c) => {
            let text = |f: fn(&NewEvent) -> &str| events.iter().map(f).collect::<Vec<&str>>();
            let int = |f: fn(&NewEvent) -> i32| events.iter().map(f).collect::<Vec<i32>>();
            sqlx::query(
                "INSERT INTO action_events (action_id, at, state, progress, message, protocol, attempt) \
                 SELECT u.action_id, $1, u.state, u.progress, u.message, u.protocol, u.attempt \
                 FROM UNNEST($2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::int[]) \
                   WITH ORDINALITY AS u(action_id, state, progress, message, protocol, attempt, i) ORDER BY u.i",
            )
            .bind(at_ms)
            .bind(text(|e| &e.action_id))
            .bind(text(|e| e.state.as_str()))
            .bind(int(|e| e.progress))
            .bind(text(|e| &e.message))
            .bind(text(|e| &e.protocol))
            .bind(int(|e| e.attempt))
            .execute(&mut **c)
            .await?;
            // One look per action for the id its 101st newest event has.
            sqlx::query(
                "DELETE FROM action_events e USING ( \
                   SELECT a.id AS action_id, (SELECT x.id FROM action_events x WHERE x.action_id = a.id \
                     ORDER BY x.id DESC OFFSET $2 LIMIT 1) AS cutoff \
                   FROM UNNEST($1::text[]) AS a(id)) c \
                 WHERE e.action_id = c.action_id AND e.id <= c.cutoff",
            )
            .bind(&ids)
            .bind(KEEP_EVENTS)
            .execute(&mut **c)
            .await?;
        }
        Conn::Sqlite(c) => {
            for chunk in events.chunks(SQLITE_EVENTS_PER_INSERT) {
                let mut q = QueryBuilder::new(
                    "INSERT INTO action_events (action_id, at, state, progress, message, protocol, attempt) ",
                );
                q.push_values(chunk, |mut b, e| {
                    b.push_bind(&e.action_id)
                        .push_bind(at_ms)
                        .push_bind(e.state.as_str())
                        .push_bind(e.progress)
                        .push_bind(&e.message)
                        .push_bind(&e.protocol)
                        .push_bind(e.attempt);
                });
                q.build().execute(&mut **c).await?;
            }
            let ids = serde_json::to_string(&ids).expect("strings serialize");
            sqlx::query(
                "DELETE FROM action_events WHERE id IN ( \
                   SELECT e.id FROM action_events e JOIN ( \
                     SELECT a.value AS action_id, (SELECT x.id FROM action_events x WHERE x.action_id = a.value \
                       ORDER BY x.id DESC LIMIT 1 OFFSET $1) AS cutoff \
                     FROM json_each($2) a) c \
                   ON e.action_id = c.action_id AND e.id <= c.cutoff)",
            )
            .bind(KEEP_EVENTS)
            .bind(ids)
            .execute(&mut **c)
            .await?;
        }
    }
    Ok(())
}

impl Store {
    /// The kept history of these actions, oldest first per action.
    pub async fn events_of(
        &self,
        action_ids: &[String],
    ) -> Result<HashMap<String, Vec<EventRow>>, CampaignError> {
        let mut out: HashMap<String, Vec<EventRow>> = HashMap::new();
        for chunk in action_ids.chunks(1000) {
            let rows: Vec<EventRow> = with_pool!(&self.db, pool => {
                let mut q = QueryBuilder::new(
                    "SELECT action_id, at, state, progress, message, protocol, attempt FROM action_events WHERE action_id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(id);
                }
                q.push(") ORDER BY action_id, id");
                q.build_query_as().fetch_all(pool).await?
            });
            for r in rows {
                out.entry(r.action_id.clone()).or_default().push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wave of a large campaign is staged in one transaction: its events
    /// take several statements, each under SQLite's parameter limit (a
    /// release of 46,000 actions once failed with "too many SQL
    /// variables" and paused the campaign).
    #[tokio::test]
    async fn a_release_larger_than_one_statement_is_appended_whole() {
        for t in [
            ota_tests::db::sqlite().await,
            ota_tests::db::postgres().await,
        ] {
            let n = SQLITE_EVENTS_PER_INSERT * 2 + 7;
            let events: Vec<NewEvent> = (0..n)
                .map(|i| NewEvent::platform(format!("a{i}"), ActionState::Staged, "", 1))
                .collect();
            let stored: i64 = with_pool!(t.db(), pool => {
                let mut tx = pool.begin().await.unwrap();
                append(&mut Conn::from(&mut *tx), 1, &events).await.unwrap();
                tx.commit().await.unwrap();
                sqlx::query_scalar("SELECT COUNT(*) FROM action_events").fetch_one(pool).await.unwrap()
            });
            assert_eq!(stored, n as i64);
        }
    }
}
