//! The `ota.v1.RuleEngine` gRPC service, over any [`VehicleSource`].

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use ota_common::vehicle::Vehicle;
use ota_proto::v1 as pb;
use pb::rule_engine_server::{RuleEngine, RuleEngineServer};
use tonic::{Request, Response, Status};

use crate::pool::EvalPool;
use crate::preview::preview;
use crate::ruleset::{CompiledRuleSet, RuleSet, RuleSetCache};
use crate::RuleEngineError;

/// Batches of vehicles, as an inventory scan yields them.
pub type VehicleBatches = BoxStream<'static, Result<Vec<Vehicle>, Status>>;

/// Where Explain and Preview read vehicles from: the vehicle store in the
/// platform, an in-memory list in tests.
#[async_trait]
pub trait VehicleSource: Send + Sync + 'static {
    /// The vehicle, or a NOT_FOUND status.
    async fn get(&self, vin: &str) -> Result<Vehicle, Status>;
    /// Every vehicle, in batches.
    async fn scan(&self) -> Result<VehicleBatches, Status>;
    /// How many vehicles a scan will yield, when the source knows cheaply.
    async fn count(&self) -> Result<Option<u64>, Status> {
        Ok(None)
    }
    /// Every VIN, in batches: a cheap pass when only VINs matter. By default
    /// a full scan that drops the rest.
    async fn scan_vins(&self) -> Result<VinBatches, Status> {
        use futures::StreamExt;
        let batches = self.scan().await?;
        Ok(batches
            .map(|b| b.map(|vs| vs.into_iter().map(|v| v.vin).collect()))
            .boxed())
    }
}

pub type VinBatches = BoxStream<'static, Result<Vec<String>, Status>>;

/// A fixed set of vehicles.
#[derive(Debug, Clone)]
pub struct InMemoryVehicles {
    vehicles: Arc<Vec<Vehicle>>,
    by_vin: Arc<HashMap<String, usize>>,
    batch_size: usize,
}

impl InMemoryVehicles {
    /// A later vehicle with the same VIN replaces an earlier one for `get`.
    pub fn new(vehicles: impl IntoIterator<Item = Vehicle>) -> Self {
        let vehicles: Vec<Vehicle> = vehicles.into_iter().collect();
        let by_vin = vehicles
            .iter()
            .enumerate()
            .map(|(i, v)| (v.vin.clone(), i))
            .collect();
        InMemoryVehicles {
            vehicles: Arc::new(vehicles),
            by_vin: Arc::new(by_vin),
            batch_size: 1000,
        }
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }
}

#[async_trait]
impl VehicleSource for InMemoryVehicles {
    async fn get(&self, vin: &str) -> Result<Vehicle, Status> {
        self.by_vin
            .get(vin)
            .map(|&i| self.vehicles[i].clone())
            .ok_or_else(|| Status::not_found(format!("vehicle {vin} not found")))
    }

    async fn scan(&self) -> Result<VehicleBatches, Status> {
        let vehicles = Arc::clone(&self.vehicles);
        let size = self.batch_size;
        let batches = (0..vehicles.len()).step_by(size).map(move |start| {
            let end = (start + size).min(vehicles.len());
            Ok(vehicles[start..end].to_vec())
        });
        Ok(stream::iter(batches).boxed())
    }

    async fn count(&self) -> Result<Option<u64>, Status> {
        Ok(Some(self.vehicles.len() as u64))
    }
}

/// Sample size of a preview that asks for none.
pub const DEFAULT_SAMPLE_SIZE: usize = 10;
/// Largest sample a preview returns.
pub const MAX_SAMPLE_SIZE: usize = 1000;

pub struct RuleEngineService<S> {
    source: S,
    cache: Arc<RuleSetCache>,
    pool: Arc<EvalPool>,
}

impl<S: VehicleSource> RuleEngineService<S> {
    pub fn new(source: S) -> Self {
        Self::with_cache(source, Arc::new(RuleSetCache::default()))
    }

    /// Shares compiled rule sets with other users of the same cache, which
    /// also sets the bound on the cost of an expression.
    pub fn with_cache(source: S, cache: Arc<RuleSetCache>) -> Self {
        RuleEngineService {
            source,
            cache,
            pool: EvalPool::shared(),
        }
    }

    /// Evaluates on `pool` (its slots and timeout) instead of the process's
    /// shared pool.
    pub fn with_pool(mut self, pool: Arc<EvalPool>) -> Self {
        self.pool = pool;
        self
    }

    pub fn cache(&self) -> &RuleSetCache {
        &self.cache
    }

    pub fn into_server(self) -> RuleEngineServer<Self> {
        RuleEngineServer::new(self).max_decoding_message_size(16 * 1024 * 1024)
    }

    /// The compiled rule set: from the cache, or compiled on the pool, as
    /// parsing up to a thousand expressions of 16 KiB is no work for an
    /// async worker either.
    async fn compiled(
        &self,
        rules: Option<pb::RuleSet>,
    ) -> Result<Arc<CompiledRuleSet>, RuleEngineError> {
        let rules = RuleSet::from(rules.unwrap_or_default());
        let compiled = match self.cache.cached(&rules) {
            Some(compiled) => compiled,
            None => {
                let cache = Arc::clone(&self.cache);
                self.pool.run(move |_| cache.get(&rules)).await?
            }
        };
        compiled.map_err(RuleEngineError::InvalidRuleSet)
    }
}

#[async_trait]
impl<S: VehicleSource> RuleEngine for RuleEngineService<S> {
    async fn validate(
        &self,
        req: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let errors = match self.compiled(req.into_inner().rules).await {
            Ok(_) => Vec::new(),
            Err(RuleEngineError::InvalidRuleSet(errors)) => {
                errors.iter().cloned().map(Into::into).collect()
            }
            Err(other) => return Err(other.into()),
        };
        Ok(Response::new(pb::ValidateResponse {
            valid: errors.is_empty(),
            errors,
        }))
    }

    async fn evaluate(
        &self,
        req: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        let req = req.into_inner();
        let compiled = self.compiled(req.rules).await?;
        let vehicles = req.vehicles;
        let results = self
            .pool
            .run(move |cancel| {
                let mut results = Vec::with_capacity(vehicles.len());
                for v in vehicles {
                    if cancel.is_cancelled() {
                        break;
                    }
                    results.push(compiled.evaluate(&Vehicle::from(v)).into());
                }
                results
            })
            .await?;
        Ok(Response::new(pb::EvaluateResponse { results }))
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let req = req.into_inner();
        let compiled = self.compiled(req.rules).await?;
        if req.vin.is_empty() {
            return Err(RuleEngineError::Invalid("vin is required".to_owned()).into());
        }
        let vehicle = self
            .source
            .get(&req.vin)
            .await
            .map_err(RuleEngineError::Source)?;
        let explanation = self.pool.run(move |_| compiled.explain(&vehicle)).await?;
        Ok(Response::new(explanation.into()))
    }

    async fn preview(
        &self,
        req: Request<pb::PreviewRequest>,
    ) -> Result<Response<pb::PreviewResponse>, Status> {
        let req = req.into_inner();
        let compiled = self.compiled(req.rules).await?;
        let sample_size = match req.sample_size as usize {
            0 => DEFAULT_SAMPLE_SIZE,
            n => n.min(MAX_SAMPLE_SIZE),
        };
        let batches = self.source.scan().await.map_err(RuleEngineError::Source)?;
        let counts = preview(&self.pool, compiled, batches, sample_size, |_| {}).await?;
        Ok(Response::new(counts.into()))
    }

    async fn preview_stream(
        &self,
        req: Request<pb::PreviewRequest>,
    ) -> Result<Response<PreviewProgressStream>, Status> {
        let req = req.into_inner();
        let compiled = self.compiled(req.rules).await?;
        let sample_size = match req.sample_size as usize {
            0 => DEFAULT_SAMPLE_SIZE,
            n => n.min(MAX_SAMPLE_SIZE),
        };
        let total = self
            .source
            .count()
            .await
            .map_err(RuleEngineError::Source)?
            .unwrap_or(0);
        let batches = self.source.scan().await.map_err(RuleEngineError::Source)?;
        // Few messages (one per batch), so an unbounded channel cannot grow
        // far; the scan stops as soon as the caller goes away, and so does
        // the job counting the current batch (dropping `work` cancels it).
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let pool = Arc::clone(&self.pool);
        tokio::spawn(async move {
            let progress = tx.clone();
            let work = preview(&pool, compiled, batches, sample_size, |p| {
                let _ = progress.send(Ok(pb::PreviewProgress {
                    scanned: p.scanned,
                    total,
                    result: None,
                }));
            });
            tokio::select! {
                _ = tx.closed() => {}
                result = work => {
                    let _ = tx.send(match result {
                        Ok(p) => Ok(pb::PreviewProgress {
                            scanned: p.scanned,
                            total,
                            result: Some(p.into()),
                        }),
                        Err(e) => Err(e),
                    });
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }
}

type PreviewProgressStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PreviewProgress, Status>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{bare, fleet, id4, rule_set};
    use tonic::Code;

    fn service() -> RuleEngineService<InMemoryVehicles> {
        RuleEngineService::new(InMemoryVehicles::new(fleet()).with_batch_size(3))
    }

    fn rules(target: &str) -> Option<pb::RuleSet> {
        Some(
            rule_set(
                target,
                &[(r#"vehicle.gateway == "hcp3""#, "hcp3"), ("", "other")],
            )
            .into(),
        )
    }

    #[tokio::test]
    async fn validate_lists_positioned_errors() {
        let res = service()
            .validate(Request::new(pb::ValidateRequest {
                rules: rules("vehicle.modle == 'ID.4'"),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(!res.valid);
        let e = &res.errors[0];
        assert_eq!(
            (e.path.as_str(), e.position),
            ("target", Some(pb::SourcePosition { line: 1, column: 9 }))
        );
        assert_eq!(
            e.message,
            "unknown field `modle` on vehicle, did you mean `model`?"
        );
        assert_eq!(e.excerpt, "vehicle.modle == 'ID.4'\n        ^");

        let ok = service()
            .validate(Request::new(pb::ValidateRequest {
                rules: rules("true"),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((ok.valid, ok.errors.len()), (true, 0));
    }

    #[tokio::test]
    async fn evaluate_answers_per_vehicle_and_reuses_the_compiled_rule_set() {
        let svc = service();
        let req = || pb::EvaluateRequest {
            rules: rules(r#"vehicle.region == "EU""#),
            vehicles: vec![id4().into(), bare().into()],
        };
        let res = svc
            .evaluate(Request::new(req()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(res.results.len(), 2);
        let ok = &res.results[0];
        assert_eq!(
            (ok.target_matched, ok.rule_index, ok.action.as_str()),
            (true, 0, "hcp3")
        );
        let failed = &res.results[1];
        assert_eq!(
            (
                failed.vin.as_str(),
                failed.target_matched,
                failed.rule_index,
                failed.error.as_str()
            ),
            (
                "WVWZZZE1ZMP000002",
                false,
                -1,
                "target: no such key `region`"
            )
        );
        svc.evaluate(Request::new(req())).await.unwrap();
        assert_eq!(
            (svc.cache().stats().misses, svc.cache().stats().hits),
            (1, 1)
        );

        let err = svc
            .evaluate(Request::new(pb::EvaluateRequest {
                rules: rules("vehicle.model =="),
                vehicles: vec![],
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "invalid rule set: target:1:17: syntax error: unexpected end of expression"
        );
    }

    #[tokio::test]
    async fn explain_reads_the_vehicle_from_the_source() {
        let res = service()
            .explain(Request::new(pb::ExplainRequest {
                rules: rules(r#"vehicle.region == "EU""#),
                vin: "WVWZZZE1ZMP000001".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(res.result.unwrap().rule_index, 0);
        let target = res.target.unwrap();
        assert_eq!(
            (target.expression.as_str(), target.value.as_str()),
            (r#"vehicle.region == "EU""#, "true")
        );
        assert_eq!(res.rules.len(), 2);

        let missing = service()
            .explain(Request::new(pb::ExplainRequest {
                rules: rules("true"),
                vin: "WVWZZZE1ZMP999999".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(
            (missing.code(), missing.message()),
            (Code::NotFound, "vehicle WVWZZZE1ZMP999999 not found")
        );
        let no_vin = service()
            .explain(Request::new(pb::ExplainRequest {
                rules: rules("true"),
                vin: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(no_vin.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn preview_stream_reports_progress_then_the_result() {
        let msgs: Vec<pb::PreviewProgress> = service()
            .preview_stream(Request::new(pb::PreviewRequest {
                rules: rules("has(vehicle.region)"),
                sample_size: 0,
            }))
            .await
            .unwrap()
            .into_inner()
            .map(|m| m.unwrap())
            .collect()
            .await;
        // 4 vehicles in batches of 3: two progress messages, then the result.
        let scanned: Vec<u64> = msgs.iter().map(|m| m.scanned).collect();
        assert_eq!(scanned, vec![3, 4, 4]);
        assert!(msgs.iter().all(|m| m.total == 4));
        assert!(msgs[..2].iter().all(|m| m.result.is_none()));
        let result = msgs[2]
            .result
            .as_ref()
            .expect("last message has the result");
        assert_eq!((result.scanned, result.matched), (4, 3));
    }

    #[tokio::test]
    async fn preview_scans_the_source() {
        let res = service()
            .preview(Request::new(pb::PreviewRequest {
                rules: rules("has(vehicle.region)"),
                sample_size: 0,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((res.scanned, res.matched, res.errors), (4, 3, 0));
        assert_eq!(
            res.by_rule,
            vec![
                pb::Count {
                    key: "rules[0]".into(),
                    count: 2
                },
                pb::Count {
                    key: "rules[1]".into(),
                    count: 1
                }
            ]
        );
        assert_eq!(
            res.by_region[0],
            pb::Count {
                key: "EU".into(),
                count: 2
            }
        );
        assert_eq!(res.sample_vins.len(), 3);
    }

    struct Broken;

    #[async_trait]
    impl VehicleSource for Broken {
        async fn get(&self, _: &str) -> Result<Vehicle, Status> {
            Err(Status::unavailable("vehicle store unavailable"))
        }

        async fn scan(&self) -> Result<VehicleBatches, Status> {
            let items = vec![
                Ok(vec![id4()]),
                Err(Status::unavailable("scan interrupted")),
            ];
            Ok(stream::iter(items).boxed())
        }
    }

    #[tokio::test]
    async fn source_failures_keep_their_status() {
        let svc = RuleEngineService::new(Broken);
        let err = svc
            .preview(Request::new(pb::PreviewRequest {
                rules: rules("true"),
                sample_size: 5,
            }))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::Unavailable, "scan interrupted")
        );
        let err = svc
            .explain(Request::new(pb::ExplainRequest {
                rules: rules("true"),
                vin: "X".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
}
