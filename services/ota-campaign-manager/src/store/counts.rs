//! Each campaign's action counters: kept by triggers on `actions` in the
//! transaction of every change (migration 0007), so a report or a rollout
//! tick reads a few hundred counter rows instead of grouping a million
//! actions.
//!
//! On PostgreSQL a statement appends its changes to `action_count_deltas`,
//! which [`Store::fold_counts`] moves into `action_counts` now and then;
//! concurrent writers never wait on a shared counter row. A read sums both
//! tables in one statement (one snapshot), so it is exact whether a fold
//! has run or not. On SQLite the triggers add to `action_counts` directly.

use std::collections::{BTreeMap, HashMap};

use ota_db::{with_pool, Db};

use super::Store;
use crate::model::ActionState;
use crate::CampaignError;

/// The dimensions the triggers count in (the `dim` column).
pub mod dim {
    pub const STATE: &str = "state";
    pub const WAVE: &str = "wave";
    pub const MODEL: &str = "model";
    pub const PLATFORM: &str = "platform";
    pub const GATEWAY: &str = "gateway";
    pub const REGION: &str = "region";
    pub const HARDWARE: &str = "hardware";
    /// Finished actions by the minute they finished (unix minutes).
    pub const MINUTE: &str = "minute";
    /// Attempts beyond the first, summed (key and state empty).
    pub const RETRIES: &str = "retries";
}

/// (dim, key, state): a counter.
pub type CountKey = (String, String, String);

/// A campaign's counters, as a GROUP BY over its actions would give them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Only counters that are not zero.
    pub rows: BTreeMap<CountKey, i64>,
}

/// Actions of one group (a model, a region...) by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupCounts {
    pub key: String,
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub in_progress: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveCounts {
    pub wave: i32,
    pub state: ActionState,
    pub count: i64,
}

/// Actions that finished in one minute, by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCounts {
    /// Unix minutes.
    pub minute: i64,
    pub by_state: HashMap<ActionState, u64>,
}

impl Counts {
    fn in_dim<'a>(&'a self, d: &'a str) -> impl Iterator<Item = (&'a str, &'a str, i64)> + 'a {
        self.rows
            .range((d.to_string(), String::new(), String::new())..)
            .take_while(move |((dd, _, _), _)| dd == d)
            .map(|((_, k, s), n)| (k.as_str(), s.as_str(), *n))
    }

    /// Actions per state.
    pub fn by_state(&self, campaign: &str) -> Result<HashMap<ActionState, u64>, CampaignError> {
        let mut out = HashMap::new();
        for (_, state, n) in self.in_dim(dim::STATE) {
            *out.entry(parse_state(campaign, state)?).or_default() += n.max(0) as u64;
        }
        Ok(out)
    }

    /// Actions per wave and state, by wave then state.
    pub fn waves(&self, campaign: &str) -> Result<Vec<WaveCounts>, CampaignError> {
        let mut out = Vec::new();
        for (key, state, n) in self.in_dim(dim::WAVE) {
            out.push(WaveCounts {
                wave: key
                    .parse()
                    .map_err(|_| corrupt_key(campaign, dim::WAVE, key))?,
                state: parse_state(campaign, state)?,
                count: n,
            });
        }
        out.sort_by(|a, b| (a.wave, a.state.as_str()).cmp(&(b.wave, b.state.as_str())));
        Ok(out)
    }

    /// The groups of a dimension by outcome, largest first.
    pub fn groups(&self, campaign: &str, d: &str) -> Result<Vec<GroupCounts>, CampaignError> {
        let mut groups: BTreeMap<&str, GroupCounts> = BTreeMap::new();
        for (key, state, n) in self.in_dim(d) {
            let state = parse_state(campaign, state)?;
            let n = n.max(0) as u64;
            let g = groups.entry(key).or_insert_with(|| GroupCounts {
                key: key.to_string(),
                ..Default::default()
            });
            g.total += n;
            if state == ActionState::Succeeded {
                g.succeeded += n;
            }
            if state.is_failure() {
                g.failed += n;
            }
            if state.is_open() {
                g.in_progress += n;
            }
        }
        let mut out: Vec<GroupCounts> = groups.into_values().collect();
        out.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Finished actions per minute, oldest first.
    pub fn minutes(&self, campaign: &str) -> Result<Vec<MinuteCounts>, CampaignError> {
        let mut minutes: BTreeMap<i64, HashMap<ActionState, u64>> = BTreeMap::new();
        for (key, state, n) in self.in_dim(dim::MINUTE) {
            let minute = key
                .parse()
                .map_err(|_| corrupt_key(campaign, dim::MINUTE, key))?;
            *minutes
                .entry(minute)
                .or_default()
                .entry(parse_state(campaign, state)?)
                .or_default() += n.max(0) as u64;
        }
        Ok(minutes
            .into_iter()
            .map(|(minute, by_state)| MinuteCounts { minute, by_state })
            .collect())
    }

    /// Attempts beyond the first, over every action.
    pub fn retries(&self) -> u64 {
        self.in_dim(dim::RETRIES)
            .map(|(_, _, n)| n.max(0) as u64)
            .sum()
    }
}

fn parse_state(campaign: &str, s: &str) -> Result<ActionState, CampaignError> {
    s.parse().map_err(|reason| CampaignError::Corrupt {
        what: format!("action state in campaign {campaign}"),
        reason,
    })
}

fn corrupt_key(campaign: &str, d: &str, key: &str) -> CampaignError {
    CampaignError::Corrupt {
        what: format!("{d} counter of campaign {campaign}"),
        reason: format!("key {key:?} is not a number"),
    }
}

/// Advisory lock key of the fold ("otac"): one fold at a time.
const FOLD_LOCK: i64 = 0x6f74_6163;
/// Deltas moved per fold statement: bounds the transaction.
const FOLD_BATCH: i64 = 50_000;

impl Store {
    /// The campaign's counters, of one dimension or (None) all.
    pub async fn counts(
        &self,
        campaign_id: &str,
        only: Option<&str>,
    ) -> Result<Counts, CampaignError> {
        let rows: Vec<(String, String, String, i64)> = with_pool!(&self.db, pool => {
            sqlx::query_as(
                "SELECT dim, key, state, CAST(SUM(n) AS BIGINT) FROM ( \
                   SELECT dim, key, state, n FROM action_counts WHERE campaign_id = $1 AND ($2 IS NULL OR dim = $2) \
                   UNION ALL \
                   SELECT dim, key, state, n FROM action_count_deltas WHERE campaign_id = $1 AND ($2 IS NULL OR dim = $2) \
                 ) c GROUP BY dim, key, state")
                .bind(campaign_id).bind(only).fetch_all(pool).await?
        });
        Ok(Counts {
            rows: rows
                .into_iter()
                .filter(|r| r.3 != 0)
                .map(|(d, k, s, n)| ((d, k, s), n))
                .collect(),
        })
    }

    /// How many of the campaign's actions are in each state.
    pub async fn state_counts(
        &self,
        campaign_id: &str,
    ) -> Result<HashMap<ActionState, u64>, CampaignError> {
        self.counts(campaign_id, Some(dim::STATE))
            .await?
            .by_state(campaign_id)
    }

    /// Counts per wave and state.
    pub async fn wave_counts(&self, campaign_id: &str) -> Result<Vec<WaveCounts>, CampaignError> {
        self.counts(campaign_id, Some(dim::WAVE))
            .await?
            .waves(campaign_id)
    }

    /// Moves the counter changes PostgreSQL statements appended into the
    /// counters, so reads stay short; returns how many were moved. Exact
    /// counts never depend on it. Another process folding at the same time
    /// makes this one skip.
    pub async fn fold_counts(&self) -> Result<u64, CampaignError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(0);
        };
        let mut moved = 0;
        loop {
            let mut tx = pool.begin().await?;
            let (mine,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
                .bind(FOLD_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !mine {
                return Ok(moved);
            }
            let (n,): (i64,) = sqlx::query_as(
                "WITH moved AS ( \
                   DELETE FROM action_count_deltas WHERE id IN (SELECT id FROM action_count_deltas ORDER BY id LIMIT $1) \
                   RETURNING campaign_id, dim, key, state, n), \
                 folded AS ( \
                   INSERT INTO action_counts (campaign_id, dim, key, state, n) \
                   SELECT campaign_id, dim, key, state, SUM(n) FROM moved GROUP BY campaign_id, dim, key, state \
                   ON CONFLICT (campaign_id, dim, key, state) DO UPDATE SET n = action_counts.n + excluded.n) \
                 SELECT COUNT(*) FROM moved",
            )
            .bind(FOLD_BATCH)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            moved += n as u64;
            if n < FOLD_BATCH {
                return Ok(moved);
            }
        }
    }
}
