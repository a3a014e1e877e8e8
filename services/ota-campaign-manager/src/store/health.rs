//! The rollout's failures per campaign: recorded on the campaign so they
//! show where an engineer looks, audited once per run of failures.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{write_audit, write_tx, Audit, Store, MAX_ROLLOUT_ERROR_BYTES};
use crate::model::millis;
use crate::CampaignError;

impl Store {
    /// Records a failed tick of the campaign; returns how many of its ticks
    /// have failed in a row now (0 when the campaign is gone). `counts`
    /// false (the database was unavailable: every campaign's trouble, not
    /// this one's) records the error without counting it. The first
    /// failure of a run is audited.
    pub async fn record_rollout_failure(
        &self,
        id: &str,
        message: &str,
        counts: bool,
        at: DateTime<Utc>,
    ) -> Result<u32, CampaignError> {
        let message = truncate(message, MAX_ROLLOUT_ERROR_BYTES);
        let at_ms = millis(at);
        let failed = write_tx!(self, tx => {
            let row: Option<(i32, Option<String>)> = sqlx::query_as(
                "SELECT failed_ticks, last_error FROM campaigns WHERE id = $1")
                .bind(id).fetch_optional(&mut *tx).await?;
            match row {
                None => 0,
                Some((failed, last_error)) => {
                    let failed = failed.max(0).saturating_add(i32::from(counts));
                    sqlx::query("UPDATE campaigns SET last_error = $1, last_error_at = $2, failed_ticks = $3 WHERE id = $4")
                        .bind(message).bind(at_ms).bind(failed).bind(id)
                        .execute(&mut *tx).await?;
                    if last_error.is_none() {
                        write_audit(&mut *tx, at_ms, &Audit::system(message), "campaign", id, "rollout-failing", "{}")
                            .await?;
                    }
                    tx.commit().await?;
                    failed as u32
                }
            }
        });
        Ok(failed)
    }

    /// Clears the campaign's rollout error after a successful tick, with an
    /// audit entry saying how many ticks had failed.
    pub async fn clear_rollout_error(
        &self,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), CampaignError> {
        let at_ms = millis(at);
        write_tx!(self, tx => {
            let row: Option<(i32,)> = sqlx::query_as(
                "SELECT failed_ticks FROM campaigns WHERE id = $1 AND last_error IS NOT NULL")
                .bind(id).fetch_optional(&mut *tx).await?;
            if let Some((failed,)) = row {
                sqlx::query("UPDATE campaigns SET last_error = NULL, last_error_at = NULL, failed_ticks = 0 WHERE id = $1")
                    .bind(id).execute(&mut *tx).await?;
                let detail = json!({"failed_ticks": failed}).to_string();
                write_audit(&mut *tx, at_ms, &Audit::system("a rollout tick succeeded again"), "campaign", id, "rollout-recovered", &detail)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // 'é' is two bytes: cutting inside it drops it whole.
        assert_eq!(truncate("aé", 2), "a");
    }
}
