//! The run-time backstop behind the static cost bound.
//!
//! The `cel` crate's interpreter runs comprehensions with no limit and has no
//! hook to meter or interrupt them, and the compiled fast path does not
//! cover comprehensions. So, once an expression is checked, the range of
//! each comprehension is wrapped in a call to [`GUARD`], a function that
//! returns its argument unchanged after counting its elements: the
//! iterations about to run. On the thread that evaluates, the count is held
//! against the expression's static cost (which bounds its iterations, so the
//! count only trips if the cost model is wrong or a vehicle is over
//! [`crate::cost::VEHICLE_BOUNDS`]), and the caller's cancellation flag is
//! read, so that an evaluation whose caller gave up or timed out stops at
//! the next comprehension it starts: in a runaway of nested loops, within
//! one pass of the innermost. Guarding the range, evaluated once per loop,
//! rather than the body keeps the cost off every iteration, and leaves the
//! interpreter's loop steps in the shapes it runs fastest.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cel::common::ast::{CallExpr, EntryExpr, Expr, LiteralValue};
use cel::common::value::CowVal;
use cel::{ExecutionError, IdedExpr};

/// A name no CEL source can spell, so only the rewrite below calls it.
pub(crate) const GUARD: &str = "@guard";

pub(crate) const OVER_BUDGET: &str = "evaluation exceeded its estimated cost";
pub(crate) const CANCELLED: &str = "evaluation cancelled";

thread_local! {
    /// Iterations left for the expression being interpreted.
    static LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    /// The flag of the job this thread runs, if any.
    static CANCEL: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// The `@guard(range)` overload: `range`, or an error once its elements
/// are more than the iterations left or the job is cancelled.
pub(crate) fn guard_overload<'b, 'v>(
    mut args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let range = args
        .pop()
        .ok_or_else(|| ExecutionError::function_error(GUARD, "expects one argument"))?;
    if cancelled() {
        return Err(ExecutionError::function_error(GUARD, CANCELLED));
    }
    let size = range
        .as_sizer()
        .map_or(1, |s| u64::try_from(*s.size().inner()).unwrap_or(0));
    let left = LEFT.get();
    if size > left {
        return Err(ExecutionError::function_error(GUARD, OVER_BUDGET));
    }
    LEFT.set(left - size);
    Ok(range)
}

/// Runs `f` with `limit` iterations allowed.
pub(crate) fn with_limit<T>(limit: u64, f: impl FnOnce() -> T) -> T {
    let before = LEFT.replace(limit);
    let out = f();
    LEFT.set(before);
    out
}

/// Whether the job running on this thread was cancelled.
pub(crate) fn cancelled() -> bool {
    CANCEL.with_borrow(|c| c.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)))
}

/// Makes `flag` the cancellation flag of this thread until dropped.
pub(crate) struct CancelScope {
    before: Option<Arc<AtomicBool>>,
}

impl CancelScope {
    pub(crate) fn enter(flag: Arc<AtomicBool>) -> Self {
        CancelScope {
            before: CANCEL.replace(Some(flag)),
        }
    }
}

impl Drop for CancelScope {
    fn drop(&mut self) {
        CANCEL.set(self.before.take());
    }
}

/// Wraps the range of every comprehension in `@guard`.
pub(crate) fn instrument(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                instrument(part);
            }
            wrap(&mut c.iter_range);
        }
        Expr::Call(call) => {
            if let Some(t) = call.target.as_deref_mut() {
                instrument(t);
            }
            call.args.iter_mut().for_each(instrument);
        }
        Expr::Select(s) => instrument(&mut s.operand),
        Expr::List(l) => l.elements.iter_mut().for_each(instrument),
        Expr::Map(m) => {
            for entry in &mut m.entries {
                match &mut entry.expr {
                    EntryExpr::MapEntry(me) => {
                        instrument(&mut me.key);
                        instrument(&mut me.value);
                    }
                    EntryExpr::StructField(f) => instrument(&mut f.value),
                }
            }
        }
        Expr::Struct(_) | Expr::Literal(_) | Expr::Ident(_) | Expr::Unspecified => {}
    }
}

/// `e` without the guard [`instrument`] may have put around it.
pub(crate) fn unwrapped(e: &IdedExpr) -> &IdedExpr {
    match &e.expr {
        Expr::Call(call) if call.func_name == GUARD && call.args.len() == 1 => &call.args[0],
        _ => e,
    }
}

fn wrap(e: &mut IdedExpr) {
    let inner = std::mem::replace(
        e,
        IdedExpr {
            id: e.id,
            expr: Expr::Literal(LiteralValue::Null),
        },
    );
    e.expr = Expr::Call(CallExpr {
        func_name: GUARD.to_owned(),
        target: None,
        args: vec![inner],
    });
}
