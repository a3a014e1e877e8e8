//! Parsing and static checks: everything that can be known about an
//! expression without a vehicle. Catching `vehicle.modle` or
//! `vehicle.model_year == "2023"` here is what keeps a campaign from
//! silently matching nobody.

use cel::common::ast::{EntryExpr, Expr, LiteralValue, SourceInfo};
use cel::IdedExpr;

use crate::cost::{estimate, Overrun};
use crate::diagnostics::{
    lexical_nesting_overflow, suggest, syntax_message, ExpressionError, Source,
    MAX_EXPRESSION_BYTES, MAX_NESTING,
};
use crate::interp::ENV;
use crate::schema::{Field, ECU_FIELDS};
use crate::types::{
    common_type, comparable, field_type, function_names, literal_type, orderable, Ty,
    GLOBAL_FUNCTIONS, STRING_METHODS, TIME_METHODS, TYPE_NAMES,
};
use crate::unparse::unparse_short;

/// A checked expression and its static cost.
pub(crate) struct Checked {
    pub ast: IdedExpr,
    pub cost: u64,
}

/// Parses and checks one expression, and bounds its cost by `max_cost`
/// steps. All of its problems are returned, or the AST with its cost.
pub(crate) fn parse_and_check(
    src: Source<'_>,
    max_cost: u64,
) -> Result<Checked, Vec<ExpressionError>> {
    if src.text.len() > MAX_EXPRESSION_BYTES {
        return Err(vec![src.error(
            1,
            1,
            format!(
                "expression is {} bytes long, the limit is {MAX_EXPRESSION_BYTES}",
                src.text.len()
            ),
        )]);
    }
    let too_deep = format!("expression is nested more than {MAX_NESTING} levels deep");
    if let Some(at) = lexical_nesting_overflow(src.text, 3 * MAX_NESTING) {
        return Err(vec![src.error_at(at, too_deep)]);
    }
    let (expr, info) = match ENV.parser().parse_with_source_info(src.text) {
        Ok(parsed) => parsed,
        Err(errors) => {
            let mut out: Vec<ExpressionError> = Vec::new();
            for e in errors.errors {
                let (line, column) = (e.pos.0.max(1) as usize, e.pos.1.max(1) as usize);
                let message = if e.msg.contains("Recursion limit") {
                    too_deep.clone()
                } else if e.msg.starts_with("No `") {
                    // the parser's follow-up to a recursion limit
                    continue;
                } else {
                    syntax_message(&e.msg)
                };
                let err = src.error(line, column, message);
                if !out.contains(&err) {
                    out.push(err);
                }
            }
            return Err(out);
        }
    };
    if let Some(id) = deeper_than(&expr, MAX_NESTING) {
        return Err(vec![
            src.error_at(src.char_offset(offset(&info, id)), too_deep)
        ]);
    }
    let mut checker = Checker {
        src,
        info: &info,
        errors: Vec::new(),
        scopes: Vec::new(),
    };
    let ty = checker.check(&expr);
    if !ty.is(&Ty::Bool) {
        let start = src.text.chars().take_while(|c| c.is_whitespace()).count();
        checker.errors.push(src.error_at(
            start,
            format!(
                "expression must evaluate to a bool, but it is {}",
                ty.name()
            ),
        ));
    }
    if !checker.errors.is_empty() {
        return Err(checker.errors);
    }
    let (cost, overrun) = estimate(&expr, max_cost);
    match overrun {
        None => Ok(Checked { ast: expr, cost }),
        Some(at) => Err(vec![too_costly(src, &info, cost, max_cost, &at)]),
    }
}

fn too_costly(
    src: Source<'_>,
    info: &SourceInfo,
    cost: u64,
    limit: u64,
    at: &Overrun,
) -> ExpressionError {
    let near = src.char_offset(offset(info, at.id));
    let estimate = if cost == u64::MAX {
        format!("more than {}", u64::MAX - 1)
    } else {
        cost.to_string()
    };
    let mut message =
        format!("expression is too costly: estimated cost {estimate}, the limit is {limit}");
    let position = match at.repeats {
        Some((name, times)) => {
            message.push_str(&format!(" (this `{name}` runs its body {times} times)"));
            src.locate(near, name)
        }
        None => near,
    };
    src.error_at(position, message)
}

/// The byte offset where the parser saw a node.
fn offset(info: &SourceInfo, id: u64) -> usize {
    info.offset_for(id).map_or(0, |(start, _)| start as usize)
}

/// The sub-expressions of a node; for a comprehension, every part of its
/// expansion.
pub(crate) fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Call(c) => c
            .target
            .as_deref()
            .into_iter()
            .chain(c.args.iter())
            .collect(),
        Expr::Select(s) => vec![&s.operand],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m
            .entries
            .iter()
            .flat_map(|entry| match &entry.expr {
                EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect(),
        Expr::Struct(s) => s
            .entries
            .iter()
            .filter_map(|entry| match &entry.expr {
                EntryExpr::StructField(f) => Some(&f.value),
                EntryExpr::MapEntry(_) => None,
            })
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::Literal(_) | Expr::Ident(_) | Expr::Unspecified => vec![],
    }
}

/// The first node found below `max` levels, without recursing, so that a
/// degenerate tree cannot exhaust the stack here.
fn deeper_than(root: &IdedExpr, max: usize) -> Option<u64> {
    let mut stack = vec![(root, 1usize)];
    while let Some((e, depth)) = stack.pop() {
        if depth > max {
            return Some(e.id);
        }
        stack.extend(children(e).into_iter().map(|c| (c, depth + 1)));
    }
    None
}

struct Checker<'a> {
    src: Source<'a>,
    info: &'a SourceInfo,
    errors: Vec<ExpressionError>,
    /// Variables bound by comprehensions, innermost last.
    scopes: Vec<(String, Ty)>,
}

impl Checker<'_> {
    fn error(&mut self, id: u64, word: Option<&str>, message: String) {
        let near = self.src.char_offset(offset(self.info, id));
        let at = word.map_or(near, |w| self.src.locate(near, w));
        self.errors.push(self.src.error_at(at, message));
    }

    fn check(&mut self, e: &IdedExpr) -> Ty {
        match &e.expr {
            Expr::Literal(l) => literal_type(l),
            Expr::Ident(name) => self.ident(e.id, name),
            Expr::Select(s) => {
                let operand = self.check(&s.operand);
                let ty = self.field(e.id, &s.operand, &operand, &s.field);
                if s.test {
                    Ty::Bool
                } else {
                    ty
                }
            }
            Expr::List(l) => {
                let types: Vec<Ty> = l.elements.iter().map(|el| self.check(el)).collect();
                Ty::List(Box::new(common_type(&types)))
            }
            Expr::Map(m) => {
                let (mut keys, mut values) = (Vec::new(), Vec::new());
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        keys.push(self.check(&me.key));
                        values.push(self.check(&me.value));
                    }
                }
                Ty::Map(Box::new(common_type(&keys)), Box::new(common_type(&values)))
            }
            Expr::Struct(s) => {
                self.error(
                    e.id,
                    Some(&s.type_name),
                    format!(
                        "message construction `{}{{…}}` is not supported",
                        s.type_name
                    ),
                );
                Ty::Dyn
            }
            Expr::Comprehension(c) => {
                let range = self.check(&c.iter_range);
                let item = match &range {
                    Ty::List(t) => (**t).clone(),
                    Ty::Map(k, _) => (**k).clone(),
                    Ty::Vehicle | Ty::Ecu => Ty::String,
                    Ty::Dyn => Ty::Dyn,
                    other => {
                        let what = unparse_short(&c.iter_range, 40);
                        self.error(
                            e.id,
                            None,
                            format!("cannot iterate over `{what}`, a {}", other.name()),
                        );
                        Ty::Dyn
                    }
                };
                let accu = self.check(&c.accu_init);
                let depth = self.scopes.len();
                self.scopes.push((c.accu_var.clone(), accu));
                self.scopes.push((c.iter_var.clone(), item));
                if let Some(v2) = &c.iter_var2 {
                    self.scopes.push((v2.clone(), Ty::Dyn));
                }
                self.check(&c.loop_cond);
                self.check(&c.loop_step);
                let ty = self.check(&c.result);
                self.scopes.truncate(depth);
                ty
            }
            Expr::Call(call) => {
                let target = call.target.as_deref();
                // `optional.of(x)` and the like: a dotted name, not a method
                if let Some(qualified) = target.and_then(|t| self.unbound_name(t)) {
                    let name = format!("{qualified}.{}", call.func_name);
                    self.error(e.id, Some(&qualified), format!("unknown function `{name}`"));
                    return Ty::Dyn;
                }
                let target_ty = target.map(|t| self.check(t));
                let args: Vec<Ty> = call.args.iter().map(|a| self.check(a)).collect();
                self.call(e, &call.func_name, target.zip(target_ty), &call.args, &args)
            }
            Expr::Unspecified => Ty::Dyn,
        }
    }

    /// The dotted name `t` spells when its root is no variable.
    fn unbound_name(&self, t: &IdedExpr) -> Option<String> {
        let mut parts = Vec::new();
        let mut e = t;
        loop {
            match &e.expr {
                Expr::Select(s) if !s.test => {
                    parts.push(s.field.as_str());
                    e = &s.operand;
                }
                Expr::Ident(root) => {
                    if root == "vehicle" || self.scopes.iter().any(|(n, _)| n == root) {
                        return None;
                    }
                    parts.push(root.as_str());
                    parts.reverse();
                    return Some(parts.join("."));
                }
                _ => return None,
            }
        }
    }

    fn ident(&mut self, id: u64, name: &str) -> Ty {
        if name == "vehicle" {
            return Ty::Vehicle;
        }
        if let Some((_, ty)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return ty.clone();
        }
        if TYPE_NAMES.contains(&name) {
            return Ty::Type;
        }
        let hint = match suggest(name, ["vehicle"]) {
            Some(s) => format!(", did you mean `{s}`?"),
            None => "; the only variable is `vehicle`".to_owned(),
        };
        self.error(id, Some(name), format!("unknown variable `{name}`{hint}"));
        Ty::Dyn
    }

    /// The type of `operand.field`, reporting a field that cannot exist.
    fn field(&mut self, id: u64, operand: &IdedExpr, ty: &Ty, field: &str) -> Ty {
        match ty {
            Ty::Vehicle => match Field::from_name(field) {
                Some(f) => field_type(f),
                None => {
                    let names = Field::ALL.map(Field::name);
                    let hint = match suggest(field, names) {
                        Some(s) => format!(", did you mean `{s}`?"),
                        None => format!(" (fields: {})", names.join(", ")),
                    };
                    self.error(
                        id,
                        Some(field),
                        format!("unknown field `{field}` on vehicle{hint}"),
                    );
                    Ty::Dyn
                }
            },
            Ty::Ecu => {
                if ECU_FIELDS.contains(&field) {
                    Ty::String
                } else {
                    let hint = match suggest(field, ECU_FIELDS) {
                        Some(s) => format!(", did you mean `{s}`?"),
                        None => " (fields: hw, sw)".to_owned(),
                    };
                    let what = unparse_short(operand, 40);
                    self.error(
                        id,
                        Some(field),
                        format!("unknown field `{field}` on ecu `{what}`{hint}"),
                    );
                    Ty::Dyn
                }
            }
            Ty::Map(k, v) if k.is(&Ty::String) => (**v).clone(),
            Ty::Dyn => Ty::Dyn,
            other => {
                let what = unparse_short(operand, 40);
                self.error(
                    id,
                    Some(field),
                    format!("`{what}` is a {}, it has no field `{field}`", other.name()),
                );
                Ty::Dyn
            }
        }
    }

    fn mismatch(&mut self, e: &IdedExpr, args: &[IdedExpr], types: &[Ty]) {
        let (a, b) = (unparse_short(&args[0], 40), unparse_short(&args[1], 40));
        self.error(
            e.id,
            None,
            format!(
                "type mismatch: `{a}` is {} but `{b}` is {}",
                types[0].name(),
                types[1].name()
            ),
        );
    }

    fn expect(&mut self, e: &IdedExpr, what: &str, arg: &IdedExpr, ty: &Ty, want: &Ty) {
        if !ty.is(want) {
            let shown = unparse_short(arg, 40);
            self.error(
                e.id,
                None,
                format!(
                    "{what} needs {}, but `{shown}` is {}",
                    want.with_article(),
                    ty.name()
                ),
            );
        }
    }

    fn arity(&mut self, e: &IdedExpr, name: &str, got: usize, want: usize) -> bool {
        if got != want {
            let s = if want == 1 { "" } else { "s" };
            self.error(
                e.id,
                Some(name),
                format!("`{name}` takes {want} argument{s}, got {got}"),
            );
        }
        got == want
    }

    fn call(
        &mut self,
        e: &IdedExpr,
        name: &str,
        target: Option<(&IdedExpr, Ty)>,
        args: &[IdedExpr],
        types: &[Ty],
    ) -> Ty {
        if let Some((target, receiver)) = target {
            return self.method(e, name, target, &receiver, args, types);
        }
        match (name, types) {
            ("_&&_" | "_||_", [a, b]) => {
                let op = if name == "_&&_" { "`&&`" } else { "`||`" };
                self.expect(e, op, &args[0], a, &Ty::Bool);
                self.expect(e, op, &args[1], b, &Ty::Bool);
                Ty::Bool
            }
            ("!_", [a]) => {
                self.expect(e, "`!`", &args[0], a, &Ty::Bool);
                Ty::Bool
            }
            ("@not_strictly_false", _) => Ty::Bool,
            ("_?_:_", [c, a, b]) => {
                self.expect(e, "the condition of `?:`", &args[0], c, &Ty::Bool);
                if a == b {
                    a.clone()
                } else {
                    Ty::Dyn
                }
            }
            ("_==_" | "_!=_", [a, b]) => {
                if !comparable(a, b) {
                    self.mismatch(e, args, types);
                }
                Ty::Bool
            }
            ("_<_" | "_<=_" | "_>_" | "_>=_", [a, b]) => {
                let same = comparable(a, b) && !matches!((a, b), (Ty::Null, _) | (_, Ty::Null));
                if !same {
                    self.mismatch(e, args, types);
                } else if !orderable(a) || !orderable(b) {
                    let bad = if orderable(a) { b } else { a };
                    self.error(
                        e.id,
                        None,
                        format!("{} values cannot be ordered", bad.name()),
                    );
                }
                Ty::Bool
            }
            ("@in", [item, container]) => {
                let element = match container {
                    Ty::List(t) => Some((**t).clone()),
                    Ty::Map(k, _) => Some((**k).clone()),
                    Ty::Vehicle | Ty::Ecu => Some(Ty::String),
                    Ty::Dyn => None,
                    other => {
                        let shown = unparse_short(&args[1], 40);
                        self.error(
                            e.id,
                            Some("in"),
                            format!(
                                "`in` needs a list or map on its right, but `{shown}` is {}",
                                other.name()
                            ),
                        );
                        None
                    }
                };
                if let Some(element) = element {
                    if !comparable(item, &element) {
                        let (a, b) = (unparse_short(&args[0], 40), unparse_short(&args[1], 40));
                        self.error(
                            e.id,
                            Some("in"),
                            format!(
                                "type mismatch: `{a}` is {} but `{b}` holds {}",
                                item.name(),
                                element.name()
                            ),
                        );
                    }
                }
                Ty::Bool
            }
            ("_+_" | "_-_" | "_*_" | "_/_" | "_%_", [a, b]) => self.arithmetic(e, name, args, a, b),
            ("-_", [a]) => {
                if a.known() && !matches!(a, Ty::Int | Ty::Double | Ty::Duration) {
                    self.expect(e, "`-`", &args[0], a, &Ty::Int);
                }
                a.clone()
            }
            ("_[_]", [container, index]) => self.index(e, args, container, index),
            ("version_cmp", _) => {
                if self.arity(e, name, types.len(), 2) {
                    for (arg, ty) in args.iter().zip(types) {
                        self.expect(e, "`version_cmp`", arg, ty, &Ty::String);
                    }
                }
                Ty::Int
            }
            ("size", _) => {
                if self.arity(e, name, types.len(), 1) {
                    self.sizeable(e, &args[0], &types[0]);
                }
                Ty::Int
            }
            ("matches", _) => {
                if self.arity(e, name, types.len(), 2) {
                    self.string_method(e, name, &args[0], &types[0], &args[1..], &types[1..]);
                }
                Ty::Bool
            }
            _ => match GLOBAL_FUNCTIONS.iter().find(|(n, _)| *n == name) {
                Some((_, result)) => {
                    self.arity(e, name, types.len(), 1);
                    result.clone()
                }
                None => {
                    self.unknown_function(e, name);
                    Ty::Dyn
                }
            },
        }
    }

    fn method(
        &mut self,
        e: &IdedExpr,
        name: &str,
        target: &IdedExpr,
        receiver: &Ty,
        args: &[IdedExpr],
        types: &[Ty],
    ) -> Ty {
        if STRING_METHODS.contains(&name) {
            if self.arity(e, name, types.len(), 1) {
                self.string_method(e, name, target, receiver, args, types);
            }
            Ty::Bool
        } else if name == "size" {
            self.arity(e, name, types.len(), 0);
            self.sizeable(e, target, receiver);
            Ty::Int
        } else if TIME_METHODS.contains(&name) {
            let duration_ok = matches!(
                name,
                "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds"
            );
            let ok = matches!(receiver, Ty::Dyn | Ty::Timestamp)
                || (duration_ok && *receiver == Ty::Duration);
            if !ok {
                let shown = unparse_short(target, 40);
                self.error(
                    e.id,
                    Some(name),
                    format!(
                        "`{name}` applies to timestamps, but `{shown}` is {}",
                        receiver.name()
                    ),
                );
            }
            if types.len() > 1 {
                self.arity(e, name, types.len(), 1);
            }
            Ty::Int
        } else if name == "version_cmp" {
            self.error(
                e.id,
                Some(name),
                "`version_cmp` is a function, not a method: write `version_cmp(a, b)`".to_owned(),
            );
            Ty::Int
        } else {
            self.unknown_function(e, name);
            Ty::Dyn
        }
    }

    fn string_method(
        &mut self,
        e: &IdedExpr,
        name: &str,
        target: &IdedExpr,
        receiver: &Ty,
        args: &[IdedExpr],
        types: &[Ty],
    ) {
        let shown = unparse_short(target, 40);
        if name == "contains" && matches!(receiver, Ty::List(_)) {
            let item = unparse_short(&args[0], 40);
            self.error(
                e.id,
                Some(name),
                format!("lists have no `contains`: write `{item} in {shown}` to test membership"),
            );
            return;
        }
        if !receiver.is(&Ty::String) {
            self.error(
                e.id,
                Some(name),
                format!(
                    "`{name}` applies to strings, but `{shown}` is {}",
                    receiver.name()
                ),
            );
        }
        self.expect(e, &format!("`{name}`"), &args[0], &types[0], &Ty::String);
        if name == "matches" {
            if let Expr::Literal(LiteralValue::String(pattern)) = &args[0].expr {
                if let Err(err) = regex::Regex::new(pattern.inner()) {
                    let text = err.to_string();
                    let last = text.lines().last().unwrap_or_default().trim();
                    let first = last.strip_prefix("error: ").unwrap_or(last).to_owned();
                    self.error(
                        args[0].id,
                        None,
                        format!("invalid regular expression {:?}: {first}", pattern.inner()),
                    );
                }
            }
        }
    }

    fn sizeable(&mut self, e: &IdedExpr, arg: &IdedExpr, ty: &Ty) {
        let ok = matches!(ty, Ty::Dyn | Ty::String | Ty::Bytes | Ty::List(_)) || ty.is_mapping();
        if !ok {
            let shown = unparse_short(arg, 40);
            self.error(
                e.id,
                Some("size"),
                format!(
                    "`size` needs a string, bytes, list or map, but `{shown}` is {}",
                    ty.name()
                ),
            );
        }
    }

    fn arithmetic(&mut self, e: &IdedExpr, name: &str, args: &[IdedExpr], a: &Ty, b: &Ty) -> Ty {
        use Ty::*;
        let result = match (name, a, b) {
            (_, Dyn, _) | (_, _, Dyn) => Some(Dyn),
            (_, Int, Int) => Some(Int),
            (_, Uint, Uint) => Some(Uint),
            ("_+_" | "_-_" | "_*_" | "_/_", Double, Double) => Some(Double),
            ("_+_", String, String) => Some(String),
            ("_+_", Bytes, Bytes) => Some(Bytes),
            ("_+_", List(x), List(y)) => Some(if x == y {
                List(x.clone())
            } else {
                List(Box::new(Dyn))
            }),
            ("_+_", Timestamp, Duration) | ("_+_", Duration, Timestamp) => Some(Timestamp),
            ("_+_" | "_-_", Duration, Duration) => Some(Duration),
            ("_-_", Timestamp, Duration) => Some(Timestamp),
            ("_-_", Timestamp, Timestamp) => Some(Duration),
            _ => None,
        };
        result.unwrap_or_else(|| {
            let (x, y) = (unparse_short(&args[0], 40), unparse_short(&args[1], 40));
            let op = crate::interp::operator_symbol(name).to_owned();
            self.error(
                e.id,
                None,
                format!(
                    "`{op}` cannot combine `{x}` ({}) and `{y}` ({})",
                    a.name(),
                    b.name()
                ),
            );
            Dyn
        })
    }

    fn index(&mut self, e: &IdedExpr, args: &[IdedExpr], container: &Ty, index: &Ty) -> Ty {
        match container {
            Ty::Vehicle | Ty::Ecu => match &args[1].expr {
                Expr::Literal(LiteralValue::String(key)) => {
                    self.field(args[1].id, &args[0], container, key.inner())
                }
                _ => {
                    self.expect(e, "indexing", &args[1], index, &Ty::String);
                    Ty::Dyn
                }
            },
            Ty::Map(k, v) => {
                if !comparable(k, index) {
                    self.mismatch(e, args, &[container.clone(), index.clone()]);
                }
                (**v).clone()
            }
            Ty::List(t) => {
                if !(index.is(&Ty::Int) || *index == Ty::Uint) {
                    self.expect(e, "a list index", &args[1], index, &Ty::Int);
                }
                (**t).clone()
            }
            Ty::Dyn => Ty::Dyn,
            other => {
                let shown = unparse_short(&args[0], 40);
                self.error(
                    e.id,
                    None,
                    format!("`{shown}` is {} and cannot be indexed", other.name()),
                );
                Ty::Dyn
            }
        }
    }

    fn unknown_function(&mut self, e: &IdedExpr, name: &str) {
        let hint = match suggest(name, function_names()) {
            Some(s) => format!(", did you mean `{s}`?"),
            None => String::new(),
        };
        self.error(e.id, Some(name), format!("unknown function `{name}`{hint}"));
    }
}
