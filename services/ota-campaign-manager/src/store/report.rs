//! The aggregate queries behind a campaign report.

use ota_db::with_pool;

use super::Store;
use crate::model::ActionState;
use crate::CampaignError;

/// Actions of one group (a model, a region...) by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupCounts {
    pub key: String,
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub in_progress: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ReportData {
    pub by_model: Vec<GroupCounts>,
    pub by_platform: Vec<GroupCounts>,
    pub by_gateway: Vec<GroupCounts>,
    pub by_region: Vec<GroupCounts>,
    pub top_failures: Vec<(String, u64)>,
    /// (finished_at millis, succeeded?) per finished action, oldest first,
    /// thinned to at most a few thousand points by the caller's bucketing.
    pub finished: Vec<(i64, i64, i64)>,
    pub retries: u64,
}

impl Store {
    pub async fn report_data(
        &self,
        campaign_id: &str,
        top: u32,
    ) -> Result<ReportData, CampaignError> {
        let failures = super::sql_list(ActionState::is_failure);
        let open = super::sql_list(ActionState::is_open);
        let mut data = ReportData::default();
        for (column, target) in [
            ("model", &mut data.by_model),
            ("platform", &mut data.by_platform),
            ("gateway", &mut data.by_gateway),
            ("region", &mut data.by_region),
        ] {
            let rows: Vec<(String, i64, i64, i64, i64)> = with_pool!(&self.db, pool => {
                sqlx::query_as(&format!(
                    "SELECT {column}, COUNT(*), \
                       SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END), \
                       SUM(CASE WHEN state IN {failures} THEN 1 ELSE 0 END), \
                       SUM(CASE WHEN state IN {open} THEN 1 ELSE 0 END) \
                     FROM actions WHERE campaign_id = $1 GROUP BY {column} ORDER BY COUNT(*) DESC, {column}"))
                    .bind(campaign_id).fetch_all(pool).await?
            });
            *target = rows
                .into_iter()
                .map(|(key, total, succeeded, failed, in_progress)| GroupCounts {
                    key,
                    total: total as u64,
                    succeeded: succeeded as u64,
                    failed: failed as u64,
                    in_progress: in_progress as u64,
                })
                .collect();
        }
        let rows: Vec<(String, i64)> = with_pool!(&self.db, pool => {
            sqlx::query_as(&format!(
                "SELECT message, COUNT(*) FROM actions WHERE campaign_id = $1 AND state IN {failures} \
                 GROUP BY message ORDER BY COUNT(*) DESC, message LIMIT $2"))
                .bind(campaign_id).bind(top as i64).fetch_all(pool).await?
        });
        data.top_failures = rows
            .into_iter()
            .map(|(m, n)| {
                (
                    if m.is_empty() {
                        "(no message)".into()
                    } else {
                        m
                    },
                    n as u64,
                )
            })
            .collect();
        // Completion over time, in 60 buckets between first and last finish.
        let span: (Option<i64>, Option<i64>) = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT MIN(finished_at), MAX(finished_at) FROM actions WHERE campaign_id = $1 AND finished_at IS NOT NULL")
                .bind(campaign_id).fetch_one(pool).await?
        });
        if let (Some(first), Some(last)) = span {
            // Stored times are milliseconds this code wrote; one that is not
            // fails this report instead of wrapping around.
            let corrupt = || CampaignError::Corrupt {
                what: format!("finish times of campaign {campaign_id}"),
                reason: format!("{first}..{last} ms do not fit the report's arithmetic"),
            };
            let width = (last.checked_sub(first).ok_or_else(corrupt)? / 60).max(1);
            let rows: Vec<(i64, i64, i64)> = with_pool!(&self.db, pool => {
                sqlx::query_as(
                    "SELECT (finished_at - $1) / $2, COUNT(*), SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) \
                     FROM actions WHERE campaign_id = $3 AND finished_at IS NOT NULL GROUP BY 1 ORDER BY 1")
                    .bind(first).bind(width).bind(campaign_id).fetch_all(pool).await?
            });
            data.finished = rows
                .into_iter()
                .map(|(bucket, n, ok)| {
                    let end = bucket
                        .checked_add(1)
                        .and_then(|b| b.checked_mul(width))
                        .and_then(|d| first.checked_add(d))
                        .ok_or_else(corrupt)?;
                    Ok((end, n, ok))
                })
                .collect::<Result<_, CampaignError>>()?;
        }
        let retries: (Option<i64>,) = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT CAST(SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END) AS BIGINT) FROM actions WHERE campaign_id = $1")
                .bind(campaign_id).fetch_one(pool).await?
        });
        data.retries = retries.0.unwrap_or(0) as u64;
        Ok(data)
    }
}
