//! CEL targeting: which vehicles a campaign reaches and which of its rules
//! gives each one its action.
//!
//! A [`RuleSet`] (a target expression plus ordered rules) is compiled once
//! into a [`CompiledRuleSet`], with every problem reported at once as
//! positioned [`ExpressionError`]s, then evaluated against any number of
//! vehicles: one at a time ([`CompiledRuleSet::evaluate`]), per batch,
//! explained node by node ([`CompiledRuleSet::explain`]), or counted over a
//! streamed inventory ([`preview()`]). [`RuleSetCache`] keeps compiled rule
//! sets by content, and [`grpc::RuleEngineService`] serves all of it as the
//! `ota.v1.RuleEngine` gRPC service.
//!
//! Expressions see one variable, `vehicle`, and the function
//! [`version_cmp`]. A field the vehicle lacks (an unset `model`, an ECU it
//! does not have) is a missing map key, as in CEL: `has()` tests for it, and
//! reading it is an error that makes that vehicle a non-match with the
//! reason recorded, never a guess. A failing rule fails the vehicle rather
//! than letting a later rule give it a possibly wrong action.
//!
//! Expressions run on a compiled evaluator that reads the vehicle in place,
//! falling back to the `cel` interpreter for what it does not cover; the two
//! are tested to agree.
//!
//! Evaluation is bounded. Each expression has a static cost ([`cost`]),
//! computed once at compile time, and one over [`MAX_EXPRESSION_COST`] (a
//! rule set over [`MAX_RULE_SET_COST`]) is refused like any other invalid
//! expression; the interpreter's comprehensions count their iterations
//! against that cost at run time as a backstop. The service and campaign
//! targeting evaluate on an [`EvalPool`]: blocking threads, one job per core
//! at once, each within a deadline, cancelled when its caller goes away.

mod check;
pub mod cost;
pub mod diagnostics;
pub mod error;
pub mod explain;
mod fast;
pub mod grpc;
mod guard;
mod interp;
pub mod pool;
pub mod preview;
pub mod ruleset;
mod schema;
mod store_source;
mod types;
mod unparse;
pub mod version;

#[cfg(test)]
mod tests;

pub use cost::{VehicleBounds, MAX_EXPRESSION_COST, MAX_RULE_SET_COST, VEHICLE_BOUNDS};
pub use diagnostics::{ExpressionError, MAX_EXPRESSION_BYTES, MAX_NESTING};
pub use error::RuleEngineError;
pub use explain::{ExplainNode, Explanation};
pub use grpc::{InMemoryVehicles, RuleEngineService, VehicleBatches, VehicleSource, VinBatches};
pub use pool::{Cancellation, EvalPool, DEFAULT_EVAL_TIMEOUT};
pub use preview::{preview, ErrorSample, Preview};
pub use ruleset::{
    content_hash, validate, BatchEvaluation, CacheStats, CompiledRuleSet, Decision, Evaluation,
    Rule, RuleSet, RuleSetCache,
};
pub use store_source::StoreVehicles;
pub use version::version_cmp;
