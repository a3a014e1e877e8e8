//! Rule sets: a campaign's target plus ordered rules, compiled once and
//! evaluated against many vehicles.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cel::{Context, IdedExpr, Value};
use ota_common::vehicle::Vehicle;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::check::parse_and_check;
use crate::cost::{MAX_EXPRESSION_COST, RULE_SET_COST_FACTOR};
use crate::diagnostics::{ExpressionError, Source};
use crate::fast::{self, Fault};
use crate::{guard, interp};

/// Most rules a rule set may have.
pub const MAX_RULES: usize = 1000;

/// What `Evaluation::error` says in the protobuf when the target matched but
/// no rule did: the proto has no separate field for the reason.
pub const NO_RULE_MATCHED: &str = "target matched but no rule matched";

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleSet {
    pub target: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rule {
    /// Empty means "always".
    #[serde(default)]
    pub when: String,
    /// Opaque: what the winning rule gives the vehicle.
    pub action: String,
}

impl From<pb::RuleSet> for RuleSet {
    fn from(r: pb::RuleSet) -> Self {
        RuleSet {
            target: r.target,
            rules: r
                .rules
                .into_iter()
                .map(|r| Rule {
                    when: r.when,
                    action: r.action,
                })
                .collect(),
        }
    }
}

impl From<RuleSet> for pb::RuleSet {
    fn from(r: RuleSet) -> Self {
        pb::RuleSet {
            target: r.target,
            rules: r
                .rules
                .into_iter()
                .map(|r| pb::Rule {
                    when: r.when,
                    action: r.action,
                })
                .collect(),
        }
    }
}

/// One parsed, checked expression of a rule set.
pub(crate) struct CompiledExpr {
    pub path: String,
    /// `None` for an empty `when`, which always holds.
    pub ast: Option<IdedExpr>,
    /// Absent when the expression uses something the fast path lacks.
    pub fast: Option<fast::Node>,
    /// The static bound on its work, in steps of [`crate::cost`]; 0 for an
    /// empty `when`.
    pub cost: u64,
}

/// Why an expression produced no verdict for a vehicle.
pub(crate) enum Failure<'a> {
    Fast(Fault<'a>),
    Interpreter(String),
}

impl Failure<'_> {
    fn message(&self) -> String {
        match self {
            Failure::Fast(f) => f.message(),
            Failure::Interpreter(m) => m.clone(),
        }
    }
}

/// The interpreter's context, built only if some expression needs it.
pub(crate) struct LazyContext<'v> {
    vehicle: &'v Vehicle,
    ctx: Option<Context<'static, 'static>>,
}

impl<'v> LazyContext<'v> {
    pub fn new(vehicle: &'v Vehicle) -> Self {
        LazyContext { vehicle, ctx: None }
    }

    pub fn get(&mut self) -> &Context<'static, 'static> {
        let vehicle = self.vehicle;
        self.ctx.get_or_insert_with(|| interp::context_for(vehicle))
    }
}

/// Runs the interpreter with at most `cost` comprehension iterations (the
/// expression's static cost bounds them); a panic inside it is one
/// vehicle's error, never the end of a batch.
pub(crate) fn interpret(expr: &IdedExpr, ctx: &Context, cost: u64) -> Result<Value, String> {
    guard::with_limit(cost, || {
        catch_unwind(AssertUnwindSafe(|| interp::eval(expr, ctx)))
            .unwrap_or_else(|_| Err("internal error: the interpreter panicked".to_owned()))
    })
}

impl CompiledExpr {
    fn compile(path: String, text: &str, max_cost: u64) -> Result<Self, Vec<ExpressionError>> {
        if text.trim().is_empty() {
            return Ok(CompiledExpr {
                path,
                ast: None,
                fast: None,
                cost: 0,
            });
        }
        let checked = parse_and_check(Source { path: &path, text }, max_cost)?;
        let mut ast = checked.ast;
        let fast = fast::compile(&ast);
        guard::instrument(&mut ast);
        Ok(CompiledExpr {
            path,
            ast: Some(ast),
            fast,
            cost: checked.cost,
        })
    }

    /// Whether the expression holds for the vehicle.
    pub(crate) fn test<'a>(
        &'a self,
        cel: &mut LazyContext<'a>,
        fast_path: bool,
    ) -> Result<bool, Failure<'a>> {
        let Some(ast) = &self.ast else {
            return Ok(true);
        };
        if fast_path {
            if let Some(node) = &self.fast {
                match node.eval(cel.vehicle) {
                    Ok(fast::Val::Bool(b)) => return Ok(b),
                    Err(Fault::Unsupported) => {}
                    Err(f) => return Err(Failure::Fast(f)),
                    // a dyn() result: let the interpreter word it
                    Ok(_) => {}
                }
            }
        }
        match interpret(ast, cel.get(), self.cost) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(Failure::Interpreter(format!(
                "expression evaluated to {}, not a bool",
                other.type_of()
            ))),
            Err(e) => Err(Failure::Interpreter(e)),
        }
    }
}

/// A rule set ready to evaluate: every expression parsed and checked once.
pub struct CompiledRuleSet {
    pub(crate) target: CompiledExpr,
    pub(crate) rules: Vec<(CompiledExpr, String)>,
    fast_path: bool,
}

impl std::fmt::Debug for CompiledRuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (fast, total) = self.fast_path_coverage();
        f.debug_struct("CompiledRuleSet")
            .field("rules", &self.rules.len())
            .field("fast_path", &format_args!("{fast}/{total}"))
            .finish()
    }
}

/// The outcome for one vehicle, borrowing from the rule set: nothing is
/// allocated unless evaluation fails.
pub struct Decision<'a> {
    target_matched: bool,
    rule_index: Option<usize>,
    failure: Option<(&'a str, Failure<'a>)>,
}

impl Decision<'_> {
    /// Whether the target matched; false when evaluation failed.
    pub fn target_matched(&self) -> bool {
        self.target_matched
    }

    /// The first rule that matched.
    pub fn rule_index(&self) -> Option<usize> {
        self.rule_index
    }

    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// "target: no such key `BMS`": which expression failed and why.
    pub fn error(&self) -> Option<String> {
        self.failure
            .as_ref()
            .map(|(path, f)| format!("{path}: {}", f.message()))
    }
}

/// The outcome for one vehicle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Evaluation {
    pub vin: String,
    /// Whether the target matched; false when evaluation failed.
    pub target_matched: bool,
    /// The first rule that matched.
    pub rule_index: Option<usize>,
    /// The winning rule's action.
    pub action: Option<String>,
    /// Why evaluation failed, naming the expression: the vehicle is then a
    /// non-match.
    pub error: Option<String>,
}

impl Evaluation {
    /// Why the vehicle gets, or does not get, an action.
    pub fn reason(&self) -> String {
        match (&self.error, self.target_matched, self.rule_index) {
            (Some(e), _, _) => format!("evaluation failed: {e}"),
            (None, false, _) => "target did not match".to_owned(),
            (None, true, None) => NO_RULE_MATCHED.to_owned(),
            (None, true, Some(i)) => format!("rules[{i}] matched"),
        }
    }
}

/// In the protobuf, `error` also carries [`NO_RULE_MATCHED`] for a vehicle
/// the target matched but no rule did (`target_matched` tells it apart
/// from a failure, which is never a target match).
impl From<Evaluation> for pb::Evaluation {
    fn from(e: Evaluation) -> Self {
        let error = match (&e.error, e.target_matched, e.rule_index) {
            (Some(err), _, _) => err.clone(),
            (None, true, None) => NO_RULE_MATCHED.to_owned(),
            _ => String::new(),
        };
        pb::Evaluation {
            vin: e.vin,
            target_matched: e.target_matched,
            rule_index: e.rule_index.map_or(-1, |i| i as i32),
            action: e.action.unwrap_or_default(),
            error,
        }
    }
}

impl From<pb::Evaluation> for Evaluation {
    fn from(e: pb::Evaluation) -> Self {
        let no_rule = e.target_matched && e.rule_index < 0;
        Evaluation {
            vin: e.vin,
            target_matched: e.target_matched,
            rule_index: usize::try_from(e.rule_index).ok(),
            action: (e.rule_index >= 0).then_some(e.action),
            error: (!e.error.is_empty() && !no_rule).then_some(e.error),
        }
    }
}

/// Results for a batch, with the failures counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEvaluation {
    pub results: Vec<Evaluation>,
    /// Vehicles that got an action.
    pub matched: usize,
    pub errors: usize,
}

impl CompiledRuleSet {
    /// Compiles every expression, each within [`MAX_EXPRESSION_COST`] and
    /// all together within [`crate::cost::MAX_RULE_SET_COST`]; all problems
    /// are reported together.
    pub fn compile(rules: &RuleSet) -> Result<Self, Vec<ExpressionError>> {
        Self::compile_with_limit(rules, MAX_EXPRESSION_COST)
    }

    /// [`CompiledRuleSet::compile`] with another bound on the static cost of
    /// each expression (and [`RULE_SET_COST_FACTOR`] times it on the whole).
    pub fn compile_with_limit(
        rules: &RuleSet,
        max_cost: u64,
    ) -> Result<Self, Vec<ExpressionError>> {
        let mut errors = Vec::new();
        if rules.rules.len() > MAX_RULES {
            let src = Source {
                path: "rules",
                text: "",
            };
            errors.push(src.error(
                1,
                1,
                format!("too many rules: {} (max {MAX_RULES})", rules.rules.len()),
            ));
            return Err(errors);
        }
        if rules.target.trim().is_empty() {
            let src = Source {
                path: "target",
                text: &rules.target,
            };
            errors.push(src.error(
                1,
                1,
                "target is empty; write `true` to target every vehicle",
            ));
        }
        let target = CompiledExpr::compile("target".to_owned(), &rules.target, max_cost)
            .map_err(|e| errors.extend(e));
        let mut compiled = Vec::with_capacity(rules.rules.len());
        for (i, rule) in rules.rules.iter().enumerate() {
            match CompiledExpr::compile(format!("rules[{i}].when"), &rule.when, max_cost) {
                Ok(c) => compiled.push((c, rule.action.clone())),
                Err(e) => errors.extend(e),
            }
        }
        let compiled = match target {
            Ok(target) if errors.is_empty() => CompiledRuleSet {
                target,
                rules: compiled,
                fast_path: true,
            },
            _ => return Err(errors),
        };
        let (total, limit) = (
            compiled.cost(),
            max_cost.saturating_mul(RULE_SET_COST_FACTOR),
        );
        if total > limit {
            return Err(vec![compiled.too_costly(rules, total, limit)]);
        }
        Ok(compiled)
    }

    /// The error of a rule set over its total budget, at its costliest
    /// expression.
    fn too_costly(&self, rules: &RuleSet, total: u64, limit: u64) -> ExpressionError {
        let exprs = std::iter::once((&self.target, rules.target.as_str())).chain(
            self.rules
                .iter()
                .zip(&rules.rules)
                .map(|((c, _), r)| (c, r.when.as_str())),
        );
        // the first of the costliest
        let (costliest, text) = exprs
            .reduce(|best, e| if e.0.cost > best.0.cost { e } else { best })
            .expect("the target is always there");
        let src = Source {
            path: &costliest.path,
            text,
        };
        let start = text.chars().take_while(|c| c.is_whitespace()).count();
        src.error_at(
            start,
            format!(
                "rule set is too costly: the target and rules together have an estimated cost \
                 of {total} per vehicle, the limit is {limit}; this expression costs {}",
                costliest.cost
            ),
        )
    }

    /// This rule set evaluated by the `cel` interpreter alone: the reference
    /// the fast path is tested and measured against.
    pub fn interpreter_only(mut self) -> Self {
        self.fast_path = false;
        self
    }

    /// How many of the expressions (target first, then non-empty `when`s)
    /// run on the compiled fast path, and how many there are.
    pub fn fast_path_coverage(&self) -> (usize, usize) {
        let exprs = std::iter::once(&self.target).chain(self.rules.iter().map(|(c, _)| c));
        let exprs: Vec<_> = exprs.filter(|c| c.ast.is_some()).collect();
        let fast = exprs
            .iter()
            .filter(|c| self.fast_path && c.fast.is_some())
            .count();
        (fast, exprs.len())
    }

    /// A bound on the work of deciding one vehicle: the static costs of the
    /// target and every rule, in steps of [`crate::cost`].
    pub fn cost(&self) -> u64 {
        std::iter::once(&self.target)
            .chain(self.rules.iter().map(|(c, _)| c))
            .fold(0, |sum, c| sum.saturating_add(c.cost))
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn action(&self, rule_index: usize) -> Option<&str> {
        self.rules.get(rule_index).map(|(_, a)| a.as_str())
    }

    /// The hot path: target, then the first matching rule.
    pub fn decide<'a>(&'a self, v: &'a Vehicle) -> Decision<'a> {
        let mut cel = LazyContext::new(v);
        self.decide_with(&mut cel)
    }

    pub(crate) fn decide_with<'a>(&'a self, cel: &mut LazyContext<'a>) -> Decision<'a> {
        let failed = |path: &'a str, f| Decision {
            target_matched: false,
            rule_index: None,
            failure: Some((path, f)),
        };
        match self.target.test(cel, self.fast_path) {
            Err(f) => return failed(&self.target.path, f),
            Ok(false) => {
                return Decision {
                    target_matched: false,
                    rule_index: None,
                    failure: None,
                }
            }
            Ok(true) => {}
        }
        for (i, (rule, _)) in self.rules.iter().enumerate() {
            // A failing rule fails the vehicle rather than falling through to
            // a later, more general rule that might give it the wrong package.
            match rule.test(cel, self.fast_path) {
                Ok(true) => {
                    return Decision {
                        target_matched: true,
                        rule_index: Some(i),
                        failure: None,
                    }
                }
                Ok(false) => {}
                Err(f) => return failed(&rule.path, f),
            }
        }
        Decision {
            target_matched: true,
            rule_index: None,
            failure: None,
        }
    }

    pub fn evaluate(&self, v: &Vehicle) -> Evaluation {
        let d = self.decide(v);
        Evaluation {
            vin: v.vin.clone(),
            target_matched: d.target_matched,
            rule_index: d.rule_index,
            action: d.rule_index.and_then(|i| self.action(i)).map(str::to_owned),
            error: d.error(),
        }
    }

    /// Evaluates every vehicle; a failure is that vehicle's error only.
    pub fn evaluate_batch(&self, vehicles: &[Vehicle]) -> BatchEvaluation {
        let results: Vec<Evaluation> = vehicles.iter().map(|v| self.evaluate(v)).collect();
        BatchEvaluation {
            matched: results.iter().filter(|r| r.rule_index.is_some()).count(),
            errors: results.iter().filter(|r| r.error.is_some()).count(),
            results,
        }
    }
}

/// Every problem of a rule set; empty when it is valid.
pub fn validate(rules: &RuleSet) -> Vec<ExpressionError> {
    CompiledRuleSet::compile(rules).err().unwrap_or_default()
}

type Compiled = Result<Arc<CompiledRuleSet>, Arc<[ExpressionError]>>;

/// Compiled rule sets by content, so that the staging of a campaign, a
/// preview and an explain of the same rule set compile it once.
pub struct RuleSetCache {
    capacity: usize,
    max_cost: u64,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<u64, (RuleSet, Compiled)>,
    /// Oldest first, for eviction.
    order: VecDeque<u64>,
    hits: u64,
    misses: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

impl Default for RuleSetCache {
    fn default() -> Self {
        Self::new(256)
    }
}

impl RuleSetCache {
    pub fn new(capacity: usize) -> Self {
        Self::with_max_cost(capacity, MAX_EXPRESSION_COST)
    }

    /// A cache whose rule sets are compiled with this bound on the static
    /// cost of each expression.
    pub fn with_max_cost(capacity: usize, max_cost: u64) -> Self {
        RuleSetCache {
            capacity: capacity.max(1),
            max_cost,
            state: Mutex::default(),
        }
    }

    /// The rule set if it was compiled already: cheap enough for an async
    /// task, unlike [`RuleSetCache::get`] on a miss.
    pub fn cached(&self, rules: &RuleSet) -> Option<Compiled> {
        let key = content_hash(rules);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // the hash only finds the entry; the content must match too
        let compiled = match state.entries.get(&key) {
            Some((stored, compiled)) if stored == rules => compiled.clone(),
            _ => return None,
        };
        state.hits += 1;
        Some(compiled)
    }

    /// The compiled rule set, or all of its problems; compiled on first use.
    pub fn get(&self, rules: &RuleSet) -> Compiled {
        if let Some(compiled) = self.cached(rules) {
            return compiled;
        }
        let key = content_hash(rules);
        self.state.lock().unwrap_or_else(|e| e.into_inner()).misses += 1;
        // Compiled outside the lock: a slow compile must not stall the others.
        let compiled: Compiled = CompiledRuleSet::compile_with_limit(rules, self.max_cost)
            .map(Arc::new)
            .map_err(Arc::from);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .entries
            .insert(key, (rules.clone(), compiled.clone()))
            .is_none()
        {
            state.order.push_back(key);
        }
        while state.entries.len() > self.capacity {
            match state.order.pop_front() {
                Some(old) => {
                    state.entries.remove(&old);
                }
                None => break,
            }
        }
        compiled
    }

    pub fn stats(&self) -> CacheStats {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        CacheStats {
            hits: state.hits,
            misses: state.misses,
            entries: state.entries.len(),
        }
    }
}

/// A hash of everything in the rule set, actions included.
pub fn content_hash(rules: &RuleSet) -> u64 {
    let mut h = DefaultHasher::new();
    rules.hash(&mut h);
    h.finish()
}
