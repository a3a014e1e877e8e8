//! The action ids DDI clients see. Ours are 64-bit (`next_action_id` in the
//! campaign manager), and SWUpdate and Zephyr's hawkBit client read the id
//! into a signed 32-bit integer: SWUpdate caps it at 2147483647 and then
//! reports to an action that does not exist. So every (action, attempt)
//! gets a number of its own in the `ddi_actions` table, at most 2^31 - 1,
//! shared by every process, and each handler translates back.
//!
//! Both directions are cached: a polling fleet asks for the same few
//! numbers over and over, and a mapping never changes once written.

use std::collections::HashMap;
use std::sync::Mutex;

use ota_db::{with_pool, Db};

use crate::DdiError;

/// The largest id a DDI client can hold (`i32::MAX`).
pub const MAX_DDI_ID: i64 = i32::MAX as i64;

/// Mappings kept per direction before the cache starts over.
const MAX_CACHED: usize = 1_000_000;

/// One attempt of one platform action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActionRef {
    pub action_id: String,
    pub attempt: u32,
}

pub struct ActionIds {
    db: Db,
    to_ddi: Mutex<HashMap<ActionRef, i32>>,
    from_ddi: Mutex<HashMap<i32, ActionRef>>,
}

impl ActionIds {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            to_ddi: Mutex::default(),
            from_ddi: Mutex::default(),
        }
    }

    /// The DDI id of this attempt, given out now if it has none yet.
    pub async fn ddi_id(&self, action: &ActionRef) -> Result<i32, DdiError> {
        if let Some(id) = self.to_ddi.lock().expect("ids").get(action) {
            return Ok(*id);
        }
        let attempt = i32::try_from(action.attempt).unwrap_or(i32::MAX);
        let select = "SELECT id FROM ddi_actions WHERE action_id = $1 AND attempt = $2";
        // Read first: every replica and every poll after the first finds
        // the number there, and an insert that conflicts would still use
        // up a number of PostgreSQL's sequence.
        let id: i32 = with_pool!(&self.db, pool => {
            let found: Option<i32> = sqlx::query_scalar(select)
                .bind(&action.action_id).bind(attempt)
                .fetch_optional(pool).await.map_err(db_error)?;
            match found {
                Some(id) => id,
                None => {
                    sqlx::query("INSERT INTO ddi_actions (action_id, attempt) VALUES ($1, $2) ON CONFLICT (action_id, attempt) DO NOTHING")
                        .bind(&action.action_id).bind(attempt)
                        .execute(pool).await.map_err(db_error)?;
                    sqlx::query_scalar(select)
                        .bind(&action.action_id).bind(attempt)
                        .fetch_one(pool).await.map_err(db_error)?
                }
            }
        });
        self.remember(id, action.clone());
        Ok(id)
    }

    /// The attempt a DDI id stands for; `None` for a number never given
    /// out (or one that is not a number: it came from a URL).
    pub async fn action(&self, ddi_id: &str) -> Result<Option<ActionRef>, DdiError> {
        let Ok(id) = ddi_id.parse::<i32>() else {
            return Ok(None);
        };
        if let Some(a) = self.from_ddi.lock().expect("ids").get(&id) {
            return Ok(Some(a.clone()));
        }
        let row: Option<(String, i32)> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT action_id, attempt FROM ddi_actions WHERE id = $1")
                .bind(id).fetch_optional(pool).await.map_err(db_error)?
        });
        Ok(row.map(|(action_id, attempt)| {
            let a = ActionRef {
                action_id,
                attempt: u32::try_from(attempt).unwrap_or(1),
            };
            self.remember(id, a.clone());
            a
        }))
    }

    fn remember(&self, id: i32, action: ActionRef) {
        {
            let mut from = self.from_ddi.lock().expect("ids");
            if from.len() >= MAX_CACHED {
                from.clear();
            }
            from.insert(id, action.clone());
        }
        let mut to = self.to_ddi.lock().expect("ids");
        if to.len() >= MAX_CACHED {
            to.clear();
        }
        to.insert(action, id);
    }
}

fn db_error(e: sqlx::Error) -> DdiError {
    DdiError::Database {
        code: ota_db::classify(&e),
        message: e.to_string(),
    }
}
