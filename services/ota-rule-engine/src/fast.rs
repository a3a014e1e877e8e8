//! The fast path: a checked expression compiled into a tree that reads a
//! [`Vehicle`] in place.
//!
//! The `cel` interpreter needs the vehicle as a CEL map, so every evaluation
//! would copy every field of every vehicle; a preview over millions of
//! vehicles would spend its time allocating. This tree borrows instead. It
//! covers what targeting uses (field access, comparisons, `&&`, `||`, `!`,
//! `in`, `has`, `?:`, `version_cmp`, `size`, the string predicates, literal
//! strings, ints, bools and lists of them). An expression outside that subset
//! is not compiled and runs on the interpreter, and a case met at run time
//! that the tree does not model (say, comparing values of two different
//! types through a map lookup) answers [`Fault::Unsupported`] so that the
//! caller asks the interpreter. Errors mirror the interpreter's, message for
//! message, including which of two failing operands is reported.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use cel::common::ast::{Expr, LiteralValue};
use cel::IdedExpr;
use ota_common::vehicle::{Ecu, Vehicle};
use regex::Regex;

use crate::interp::{no_overload, no_such_key, unexpected_type};
use crate::schema::Field;
use crate::version::version_cmp_int;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Const {
    Bool(bool),
    Int(i64),
    Str(Box<str>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn function(self) -> &'static str {
        match self {
            CmpOp::Lt => "_<_",
            CmpOp::Le => "_<=_",
            CmpOp::Gt => "_>_",
            CmpOp::Ge => "_>=_",
        }
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum StrOp {
    StartsWith,
    EndsWith,
    Contains,
}

impl StrOp {
    fn function(self) -> &'static str {
        match self {
            StrOp::StartsWith => "startsWith",
            StrOp::EndsWith => "endsWith",
            StrOp::Contains => "contains",
        }
    }
}

#[derive(Debug)]
pub(crate) enum Node {
    Const(Const),
    List(Vec<Const>),
    Vehicle,
    Field(Field),
    HasField(Field),
    Select(Box<Node>, Box<str>),
    Has(Box<Node>, Box<str>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Eq(Box<Node>, Box<Node>),
    Ne(Box<Node>, Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    In(Box<Node>, Box<Node>),
    VersionCmp(Box<Node>, Box<Node>),
    Size(Box<Node>),
    /// receiver, argument
    Str(StrOp, Box<Node>, Box<Node>),
    Matches(Box<Node>, Regex),
}

/// A value during evaluation, borrowed from the vehicle or the program.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Bool(bool),
    Int(i64),
    Str(&'a str),
    Strings(&'a [String]),
    Consts(&'a [Const]),
    Attributes(&'a BTreeMap<String, String>),
    Ecus(&'a BTreeMap<String, Ecu>),
    Ecu(&'a Ecu),
    Vehicle(&'a Vehicle),
}

impl Val<'_> {
    /// The interpreter's name for the type, as its errors print it.
    fn type_name(&self) -> &'static str {
        match self {
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Str(_) => "string",
            Val::Strings(_) | Val::Consts(_) => "list",
            Val::Attributes(_) | Val::Ecus(_) | Val::Ecu(_) | Val::Vehicle(_) => "map",
        }
    }
}

/// Why an evaluation did not produce a value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fault<'a> {
    NoSuchKey(&'a str),
    Overload(&'static str, Vec<&'static str>),
    UnexpectedType {
        got: &'static str,
        want: &'static str,
    },
    /// Outside what this tree models: ask the interpreter.
    Unsupported,
}

impl Fault<'_> {
    pub fn message(&self) -> String {
        match self {
            Fault::NoSuchKey(k) => no_such_key(k),
            Fault::Overload(f, types) => no_overload(f, types),
            Fault::UnexpectedType { got, want } => unexpected_type(got, want),
            Fault::Unsupported => "unsupported by the compiled evaluator".to_owned(),
        }
    }
}

pub(crate) type Eval<'a> = Result<Val<'a>, Fault<'a>>;

/// Compiles a checked expression, or `None` when it uses anything outside
/// the subset.
pub(crate) fn compile(e: &IdedExpr) -> Option<Node> {
    let boxed = |e: &IdedExpr| compile(e).map(Box::new);
    Some(match &e.expr {
        Expr::Literal(l) => Node::Const(constant(l)?),
        Expr::List(l) => {
            let items = l.elements.iter().map(|el| match &el.expr {
                Expr::Literal(lit) => constant(lit),
                _ => None,
            });
            Node::List(items.collect::<Option<Vec<_>>>()?)
        }
        Expr::Ident(name) if name == "vehicle" => Node::Vehicle,
        Expr::Select(s) => match (&s.operand.expr, Field::from_name(&s.field)) {
            (Expr::Ident(v), Some(f)) if v == "vehicle" && s.test => Node::HasField(f),
            (Expr::Ident(v), Some(f)) if v == "vehicle" && f != Field::LastSeen => Node::Field(f),
            (Expr::Ident(v), _) if v == "vehicle" => return None,
            _ if s.test => Node::Has(boxed(&s.operand)?, s.field.as_str().into()),
            _ => Node::Select(boxed(&s.operand)?, s.field.as_str().into()),
        },
        Expr::Call(call) => {
            let a = &call.args;
            match (call.func_name.as_str(), call.target.as_deref(), a.len()) {
                ("_&&_", None, 2) => Node::And(boxed(&a[0])?, boxed(&a[1])?),
                ("_||_", None, 2) => Node::Or(boxed(&a[0])?, boxed(&a[1])?),
                ("!_", None, 1) => Node::Not(boxed(&a[0])?),
                ("_?_:_", None, 3) => Node::Cond(boxed(&a[0])?, boxed(&a[1])?, boxed(&a[2])?),
                ("_==_", None, 2) => Node::Eq(boxed(&a[0])?, boxed(&a[1])?),
                ("_!=_", None, 2) => Node::Ne(boxed(&a[0])?, boxed(&a[1])?),
                ("_<_", None, 2) => Node::Cmp(CmpOp::Lt, boxed(&a[0])?, boxed(&a[1])?),
                ("_<=_", None, 2) => Node::Cmp(CmpOp::Le, boxed(&a[0])?, boxed(&a[1])?),
                ("_>_", None, 2) => Node::Cmp(CmpOp::Gt, boxed(&a[0])?, boxed(&a[1])?),
                ("_>=_", None, 2) => Node::Cmp(CmpOp::Ge, boxed(&a[0])?, boxed(&a[1])?),
                ("@in", None, 2) => Node::In(boxed(&a[0])?, boxed(&a[1])?),
                // `m["key"]` is `m.key` for the maps a vehicle has
                ("_[_]", None, 2) => match &a[1].expr {
                    Expr::Literal(LiteralValue::String(key)) => {
                        Node::Select(boxed(&a[0])?, key.inner().into())
                    }
                    _ => return None,
                },
                ("version_cmp", None, 2) => Node::VersionCmp(boxed(&a[0])?, boxed(&a[1])?),
                ("size", None, 1) => Node::Size(boxed(&a[0])?),
                ("size", Some(t), 0) => Node::Size(boxed(t)?),
                ("startsWith", Some(t), 1) => {
                    Node::Str(StrOp::StartsWith, boxed(t)?, boxed(&a[0])?)
                }
                ("endsWith", Some(t), 1) => Node::Str(StrOp::EndsWith, boxed(t)?, boxed(&a[0])?),
                ("contains", Some(t), 1) => Node::Str(StrOp::Contains, boxed(t)?, boxed(&a[0])?),
                ("matches", Some(t), 1) => match &a[0].expr {
                    Expr::Literal(LiteralValue::String(p)) => {
                        Node::Matches(boxed(t)?, Regex::new(p.inner()).ok()?)
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn constant(l: &LiteralValue) -> Option<Const> {
    Some(match l {
        LiteralValue::Boolean(b) => Const::Bool(*b.inner()),
        LiteralValue::Int(i) => Const::Int(*i.inner()),
        LiteralValue::String(s) => Const::Str(s.inner().into()),
        _ => return None,
    })
}

fn const_val(c: &Const) -> Val<'_> {
    match c {
        Const::Bool(b) => Val::Bool(*b),
        Const::Int(i) => Val::Int(*i),
        Const::Str(s) => Val::Str(s),
    }
}

impl Node {
    pub(crate) fn eval<'a>(&'a self, v: &'a Vehicle) -> Eval<'a> {
        match self {
            Node::Const(c) => Ok(const_val(c)),
            Node::List(items) => Ok(Val::Consts(items)),
            Node::Vehicle => Ok(Val::Vehicle(v)),
            Node::Field(f) => field(v, *f),
            Node::HasField(f) => Ok(Val::Bool(f.is_present(v))),
            Node::Select(operand, key) => select(operand.eval(v)?, key),
            Node::Has(operand, key) => has(operand.eval(v)?, key),
            Node::And(a, b) => logic(a, b, v, false),
            Node::Or(a, b) => logic(a, b, v, true),
            Node::Not(a) => match a.eval(v)? {
                Val::Bool(b) => Ok(Val::Bool(!b)),
                other => Err(Fault::Overload("!_", vec![other.type_name()])),
            },
            Node::Cond(c, a, b) => match c.eval(v)? {
                Val::Bool(true) => a.eval(v),
                Val::Bool(false) => b.eval(v),
                other => Err(Fault::UnexpectedType {
                    got: other.type_name(),
                    want: "bool",
                }),
            },
            Node::Eq(a, b) => Ok(Val::Bool(equal(a.eval(v)?, b.eval(v)?)?)),
            Node::Ne(a, b) => Ok(Val::Bool(!equal(a.eval(v)?, b.eval(v)?)?)),
            Node::Cmp(op, a, b) => {
                let (x, y) = (a.eval(v)?, b.eval(v)?);
                let order = match (x, y) {
                    (Val::Int(x), Val::Int(y)) => x.cmp(&y),
                    (Val::Str(x), Val::Str(y)) => x.cmp(y),
                    (Val::Bool(x), Val::Bool(y)) => x.cmp(&y),
                    (
                        x @ (Val::Int(_) | Val::Str(_) | Val::Bool(_)),
                        y @ (Val::Int(_) | Val::Str(_) | Val::Bool(_)),
                    ) => {
                        return Err(Fault::Overload(
                            op.function(),
                            vec![x.type_name(), y.type_name()],
                        ))
                    }
                    _ => return Err(Fault::Unsupported),
                };
                Ok(Val::Bool(op.holds(order)))
            }
            Node::In(item, container) => contains(item.eval(v)?, container.eval(v)?),
            Node::VersionCmp(a, b) => match (a.eval(v)?, b.eval(v)?) {
                (Val::Str(x), Val::Str(y)) => Ok(Val::Int(version_cmp_int(x, y))),
                (x, y) => Err(Fault::Overload(
                    "version_cmp",
                    vec![x.type_name(), y.type_name()],
                )),
            },
            Node::Size(a) => match a.eval(v)? {
                Val::Str(s) => Ok(Val::Int(s.chars().count() as i64)),
                Val::Strings(l) => Ok(Val::Int(l.len() as i64)),
                Val::Consts(l) => Ok(Val::Int(l.len() as i64)),
                _ => Err(Fault::Unsupported),
            },
            Node::Str(op, receiver, arg) => {
                // The interpreter evaluates a method's arguments before its receiver.
                let arg = arg.eval(v)?;
                match (receiver.eval(v)?, arg) {
                    (Val::Str(s), Val::Str(p)) => Ok(Val::Bool(match op {
                        StrOp::StartsWith => s.starts_with(p),
                        StrOp::EndsWith => s.ends_with(p),
                        StrOp::Contains => s.contains(p),
                    })),
                    (s, p) => Err(Fault::Overload(
                        op.function(),
                        vec![s.type_name(), p.type_name()],
                    )),
                }
            }
            Node::Matches(receiver, re) => match receiver.eval(v)? {
                Val::Str(s) => Ok(Val::Bool(re.is_match(s))),
                other => Err(Fault::Overload(
                    "matches",
                    vec![other.type_name(), "string"],
                )),
            },
        }
    }
}

fn field(v: &Vehicle, f: Field) -> Eval<'_> {
    let missing = || Fault::NoSuchKey(f.name());
    Ok(match f {
        Field::ModelYear => Val::Int(v.model_year.ok_or_else(missing)?.into()),
        Field::Tags => Val::Strings(&v.tags),
        Field::Attributes => Val::Attributes(&v.attributes),
        Field::Ecus => Val::Ecus(&v.ecus),
        Field::LastSeen => return Err(Fault::Unsupported),
        text => Val::Str(text.text(v).ok_or_else(missing)?),
    })
}

fn select<'a>(operand: Val<'a>, key: &'a str) -> Eval<'a> {
    let missing = Fault::NoSuchKey(key);
    match operand {
        Val::Attributes(m) => m.get(key).map(|s| Val::Str(s)).ok_or(missing),
        Val::Ecus(m) => m.get(key).map(Val::Ecu).ok_or(missing),
        Val::Ecu(e) => match key {
            "hw" => Ok(Val::Str(&e.hw)),
            "sw" => Ok(Val::Str(&e.sw)),
            _ => Err(missing),
        },
        Val::Vehicle(v) => match Field::from_name(key) {
            Some(f) => field(v, f),
            None => Err(missing),
        },
        _ => Err(Fault::Unsupported),
    }
}

fn has<'a>(operand: Val<'a>, key: &'a str) -> Eval<'a> {
    Ok(Val::Bool(match operand {
        Val::Attributes(m) => m.contains_key(key),
        Val::Ecus(m) => m.contains_key(key),
        Val::Ecu(_) => matches!(key, "hw" | "sw"),
        Val::Vehicle(v) => Field::from_name(key).is_some_and(|f| f.is_present(v)),
        _ => return Err(Fault::Unsupported),
    }))
}

/// `&&` (`short_on` false) and `||` (true), with CEL's commutative error
/// handling: an error on one side is absorbed when the other side decides.
fn logic<'a>(a: &'a Node, b: &'a Node, v: &'a Vehicle, short_on: bool) -> Eval<'a> {
    let function = if short_on { "_||_" } else { "_&&_" };
    let left = match a.eval(v) {
        Ok(Val::Bool(x)) => Ok(x),
        Ok(other) => Err(Fault::UnexpectedType {
            got: other.type_name(),
            want: "bool",
        }),
        // Whether the interpreter would short-circuit here is unknown.
        Err(Fault::Unsupported) => return Err(Fault::Unsupported),
        Err(e) => Err(e),
    };
    if left == Ok(short_on) {
        return Ok(Val::Bool(short_on));
    }
    let right = b.eval(v)?;
    match (left, right) {
        (Ok(_), Val::Bool(r)) => Ok(Val::Bool(r)),
        (Err(_), Val::Bool(r)) if r == short_on => Ok(Val::Bool(short_on)),
        (Err(Fault::UnexpectedType { got, want: "bool" }), r) => {
            Err(Fault::Overload(function, vec![got, r.type_name()]))
        }
        (Err(e), _) => Err(e),
        (Ok(_), r) => Err(Fault::Overload(function, vec!["bool", r.type_name()])),
    }
}

fn equal<'a>(x: Val<'a>, y: Val<'a>) -> Result<bool, Fault<'a>> {
    Ok(match (x, y) {
        (Val::Bool(a), Val::Bool(b)) => a == b,
        (Val::Int(a), Val::Int(b)) => a == b,
        (Val::Str(a), Val::Str(b)) => a == b,
        (Val::Strings(a), Val::Strings(b)) => a == b,
        (Val::Strings(a), Val::Consts(b)) | (Val::Consts(b), Val::Strings(a)) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|(s, c)| match c {
                    Const::Str(c) => **c == **s,
                    _ => false,
                })
        }
        (Val::Consts(a), Val::Consts(b)) if same_kinds(a, b) => a == b,
        // CEL's equality is heterogeneous: values of different types differ
        (Val::Bool(_) | Val::Int(_) | Val::Str(_), Val::Bool(_) | Val::Int(_) | Val::Str(_)) => {
            false
        }
        _ => return Err(Fault::Unsupported),
    })
}

fn same_kinds(a: &[Const], b: &[Const]) -> bool {
    let kind = |c: &Const| std::mem::discriminant(c);
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| kind(x) == kind(y))
}

fn contains<'a>(item: Val<'a>, container: Val<'a>) -> Eval<'a> {
    Ok(Val::Bool(match (item, container) {
        (Val::Str(s), Val::Strings(list)) => list.iter().any(|t| t == s),
        (Val::Str(s), Val::Attributes(m)) => m.contains_key(s),
        (Val::Str(s), Val::Ecus(m)) => m.contains_key(s),
        (Val::Str(s), Val::Ecu(_)) => matches!(s, "hw" | "sw"),
        (Val::Str(s), Val::Vehicle(v)) => Field::from_name(s).is_some_and(|f| f.is_present(v)),
        (item, Val::Consts(list)) => {
            let mut found = false;
            for c in list {
                match (item, c) {
                    (Val::Str(a), Const::Str(b)) => found |= a == &**b,
                    (Val::Int(a), Const::Int(b)) => found |= a == *b,
                    (Val::Bool(a), Const::Bool(b)) => found |= a == *b,
                    _ => return Err(Fault::Unsupported),
                }
            }
            found
        }
        _ => return Err(Fault::Unsupported),
    }))
}
