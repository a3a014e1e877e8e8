//! How many vehicles a rule set would reach, and which: counted over a stream
//! of inventory batches so that the inventory is never held in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use ota_common::vehicle::Vehicle;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::pool::EvalPool;
use crate::ruleset::CompiledRuleSet;
use crate::RuleEngineError;

/// Key of the breakdowns for a vehicle that lacks the field.
pub const UNSET: &str = "(unset)";
/// Key of `by_rule` for vehicles the target matched but no rule did.
pub const NO_RULE: &str = "(no rule)";
/// Failures kept as examples.
pub const MAX_ERROR_SAMPLES: usize = 10;

/// Counts so far. `scanned` = `matched` + `errors` + vehicles the target did
/// not match; the breakdowns are over `matched`, vehicles the target matched
/// without error (whether or not a rule then did).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Preview {
    pub scanned: u64,
    pub matched: u64,
    pub errors: u64,
    pub by_model: BTreeMap<String, u64>,
    pub by_platform: BTreeMap<String, u64>,
    pub by_gateway: BTreeMap<String, u64>,
    pub by_region: BTreeMap<String, u64>,
    /// `rules[N]`, or `(no rule)` for vehicles the target matched but no
    /// rule did.
    pub by_rule: BTreeMap<String, u64>,
    /// The first matched VINs, in scan order.
    pub sample_vins: Vec<String>,
    /// The first failures. Not in the protobuf response, which has no field
    /// for them.
    pub error_samples: Vec<ErrorSample>,
    #[serde(skip)]
    sample_size: usize,
    #[serde(skip)]
    rule_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorSample {
    pub vin: String,
    pub error: String,
}

impl Preview {
    pub fn new(rules: &CompiledRuleSet, sample_size: usize) -> Self {
        Preview {
            sample_size,
            rule_keys: (0..rules.rule_count())
                .map(|i| format!("rules[{i}]"))
                .collect(),
            ..Default::default()
        }
    }

    /// Counts one vehicle.
    pub fn add(&mut self, rules: &CompiledRuleSet, v: &Vehicle) {
        self.scanned += 1;
        let d = rules.decide(v);
        if d.failed() {
            self.errors += 1;
            // worded only for the few kept
            if self.error_samples.len() < MAX_ERROR_SAMPLES {
                self.error_samples.push(ErrorSample {
                    vin: v.vin.clone(),
                    error: d.error().unwrap_or_default(),
                });
            }
            return;
        }
        if !d.target_matched() {
            return;
        }
        self.matched += 1;
        let rule = match d.rule_index() {
            Some(i) => self.rule_keys.get(i).map_or(NO_RULE, String::as_str),
            None => NO_RULE,
        };
        bump(&mut self.by_rule, rule);
        bump(&mut self.by_model, v.model.as_deref().unwrap_or(UNSET));
        bump(
            &mut self.by_platform,
            v.platform.as_deref().unwrap_or(UNSET),
        );
        bump(&mut self.by_gateway, v.gateway.as_deref().unwrap_or(UNSET));
        bump(&mut self.by_region, v.region.as_deref().unwrap_or(UNSET));
        if self.sample_vins.len() < self.sample_size {
            self.sample_vins.push(v.vin.clone());
        }
    }
}

/// Allocates a key only the first time it is seen.
fn bump(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
    }
}

/// Counts largest first, ties by key, for a stable display.
pub fn sorted_counts(counts: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = counts.iter().map(|(k, n)| (k.clone(), *n)).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

impl From<Preview> for pb::PreviewResponse {
    fn from(p: Preview) -> Self {
        let counts = |m: &BTreeMap<String, u64>| {
            sorted_counts(m)
                .into_iter()
                .map(|(key, count)| pb::Count { key, count })
                .collect()
        };
        pb::PreviewResponse {
            scanned: p.scanned,
            matched: p.matched,
            errors: p.errors,
            by_model: counts(&p.by_model),
            by_platform: counts(&p.by_platform),
            by_gateway: counts(&p.by_gateway),
            by_region: counts(&p.by_region),
            by_rule: counts(&p.by_rule),
            sample_vins: p.sample_vins,
        }
    }
}

impl From<pb::PreviewResponse> for Preview {
    fn from(r: pb::PreviewResponse) -> Self {
        let counts = |c: Vec<pb::Count>| c.into_iter().map(|c| (c.key, c.count)).collect();
        Preview {
            scanned: r.scanned,
            matched: r.matched,
            errors: r.errors,
            by_model: counts(r.by_model),
            by_platform: counts(r.by_platform),
            by_gateway: counts(r.by_gateway),
            by_region: counts(r.by_region),
            by_rule: counts(r.by_rule),
            sample_size: r.sample_vins.len(),
            sample_vins: r.sample_vins,
            ..Default::default()
        }
    }
}

/// Counts every vehicle of the stream, calling `progress` with the counts so
/// far after each batch. The counting runs on `pool`, a batch split into
/// jobs of [`EvalPool::chunk_len`] vehicles, and stops at the first job that
/// fails (over its deadline) or when this future is dropped. A failing
/// stream ends the preview with its error; what was counted until then has
/// been reported to `progress`.
pub async fn preview<S, E>(
    pool: &EvalPool,
    rules: Arc<CompiledRuleSet>,
    batches: S,
    sample_size: usize,
    mut progress: impl FnMut(&Preview),
) -> Result<Preview, E>
where
    S: Stream<Item = Result<Vec<Vehicle>, E>>,
    E: From<RuleEngineError>,
{
    let mut counts = Preview::new(&rules, sample_size);
    let chunk = EvalPool::chunk_len(rules.cost());
    let mut batches = std::pin::pin!(batches);
    while let Some(batch) = batches.next().await {
        let batch = Arc::new(batch?);
        for start in (0..batch.len()).step_by(chunk) {
            let (rules, batch) = (Arc::clone(&rules), Arc::clone(&batch));
            let end = (start + chunk).min(batch.len());
            counts = pool
                .run(move |cancel| {
                    for v in &batch[start..end] {
                        if cancel.is_cancelled() {
                            break;
                        }
                        counts.add(&rules, v);
                    }
                    counts
                })
                .await?;
        }
        progress(&counts);
    }
    Ok(counts)
}
