//! Why a vehicle does or does not get a campaign: every sub-expression of
//! the target and of each rule with the value it has for that vehicle.

use cel::common::ast::Expr;
use cel::{Context, IdedExpr};
use ota_common::vehicle::Vehicle;
use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::check::children;
use crate::guard::unwrapped;
use crate::interp::format_value;
use crate::ruleset::{interpret, CompiledExpr, CompiledRuleSet, Evaluation, LazyContext};
use crate::unparse::unparse;

/// One sub-expression and its value (or the error evaluating it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExplainNode {
    pub expression: String,
    pub value: Option<String>,
    pub error: Option<String>,
    #[schema(no_recursion)]
    pub children: Vec<ExplainNode>,
}

/// The value of every sub-expression and which rule won.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Explanation {
    /// The same result `evaluate` gives: which rule won, if any.
    pub result: Evaluation,
    pub target: ExplainNode,
    /// One tree per rule, in order, whether or not it was reached.
    pub rules: Vec<ExplainNode>,
}

impl From<ExplainNode> for pb::ExplainNode {
    fn from(n: ExplainNode) -> Self {
        pb::ExplainNode {
            expression: n.expression,
            value: n.value.unwrap_or_default(),
            error: n.error.unwrap_or_default(),
            children: n.children.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Explanation> for pb::ExplainResponse {
    fn from(e: Explanation) -> Self {
        pb::ExplainResponse {
            result: Some(e.result.into()),
            target: Some(e.target.into()),
            rules: e.rules.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::ExplainNode> for ExplainNode {
    fn from(n: pb::ExplainNode) -> Self {
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        ExplainNode {
            expression: n.expression,
            value: non_empty(n.value),
            error: non_empty(n.error),
            children: n.children.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::ExplainResponse> for Explanation {
    fn from(r: pb::ExplainResponse) -> Self {
        Explanation {
            result: r.result.unwrap_or_default().into(),
            target: r.target.unwrap_or_default().into(),
            rules: r.rules.into_iter().map(Into::into).collect(),
        }
    }
}

impl CompiledRuleSet {
    /// Evaluates every sub-expression on the interpreter. Each node is
    /// evaluated on its own, so the operands a short-circuit skipped are
    /// shown too.
    pub fn explain(&self, v: &Vehicle) -> Explanation {
        let mut cel = LazyContext::new(v);
        let ctx = cel.get();
        Explanation {
            result: self.evaluate(v),
            target: explain_expr(&self.target, ctx),
            rules: self
                .rules
                .iter()
                .map(|(rule, _)| explain_expr(rule, ctx))
                .collect(),
        }
    }
}

fn explain_expr(c: &CompiledExpr, ctx: &Context) -> ExplainNode {
    match &c.ast {
        Some(ast) => explain_node(ast, ctx, c.cost),
        None => ExplainNode {
            expression: String::new(),
            value: Some("true".to_owned()),
            error: None,
            children: Vec::new(),
        },
    }
}

/// `cost` bounds the iterations of each node, as it does the whole
/// expression's.
fn explain_node(e: &IdedExpr, ctx: &Context, cost: u64) -> ExplainNode {
    let (value, error) = match interpret(e, ctx, cost) {
        Ok(v) => (Some(format_value(&v)), None),
        Err(err) => (None, Some(err)),
    };
    let children = match &e.expr {
        // The body of a comprehension refers to its loop variable, which
        // only has a value inside the loop: show what it iterates over.
        Expr::Comprehension(c) => vec![explain_node(unwrapped(&c.iter_range), ctx, cost)],
        _ => children(e)
            .into_iter()
            .map(|c| explain_node(c, ctx, cost))
            .collect(),
    };
    ExplainNode {
        expression: unparse(e),
        value,
        error,
        children,
    }
}
