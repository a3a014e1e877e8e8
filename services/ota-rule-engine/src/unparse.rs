//! Turns a parsed expression back into CEL text, for error messages and for
//! labelling the nodes of an explanation. Macros (`exists`, `all`, ...)
//! are recognised in their expanded form and written as the user wrote them.

use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, LiteralValue};
use cel::IdedExpr;

const TERNARY: u8 = 1;
const OR: u8 = 2;
const AND: u8 = 3;
const RELATION: u8 = 4;
const SUM: u8 = 5;
const PRODUCT: u8 = 6;
const UNARY: u8 = 7;
const MEMBER: u8 = 8;
const PRIMARY: u8 = 9;

pub(crate) fn unparse(e: &IdedExpr) -> String {
    render(e).0
}

/// [`unparse`], cut to `max` characters for inclusion in a message.
pub(crate) fn unparse_short(e: &IdedExpr, max: usize) -> String {
    let text = unparse(e);
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

fn binary_precedence(op: &str) -> Option<(u8, &'static str)> {
    Some(match op {
        "_||_" => (OR, "||"),
        "_&&_" => (AND, "&&"),
        "_==_" => (RELATION, "=="),
        "_!=_" => (RELATION, "!="),
        "_<_" => (RELATION, "<"),
        "_<=_" => (RELATION, "<="),
        "_>_" => (RELATION, ">"),
        "_>=_" => (RELATION, ">="),
        "@in" => (RELATION, "in"),
        "_+_" => (SUM, "+"),
        "_-_" => (SUM, "-"),
        "_*_" => (PRODUCT, "*"),
        "_/_" => (PRODUCT, "/"),
        "_%_" => (PRODUCT, "%"),
        _ => return None,
    })
}

fn at(e: &IdedExpr, min: u8) -> String {
    let (text, prec) = render(e);
    if prec < min {
        format!("({text})")
    } else {
        text
    }
}

fn list(items: &[IdedExpr]) -> String {
    items
        .iter()
        .map(|a| at(a, 0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(e: &IdedExpr) -> (String, u8) {
    match &e.expr {
        Expr::Literal(l) => (literal(l), PRIMARY),
        Expr::Ident(name) => (name.clone(), PRIMARY),
        Expr::Select(s) if s.test => (
            format!("has({}.{})", at(&s.operand, MEMBER), s.field),
            PRIMARY,
        ),
        Expr::Select(s) => (format!("{}.{}", at(&s.operand, MEMBER), s.field), MEMBER),
        Expr::List(l) => (format!("[{}]", list(&l.elements)), PRIMARY),
        Expr::Map(m) => {
            let entries: Vec<String> = m
                .entries
                .iter()
                .filter_map(|entry| match &entry.expr {
                    EntryExpr::MapEntry(me) => {
                        Some(format!("{}: {}", at(&me.key, 0), at(&me.value, 0)))
                    }
                    EntryExpr::StructField(_) => None,
                })
                .collect();
            (format!("{{{}}}", entries.join(", ")), PRIMARY)
        }
        Expr::Struct(s) => {
            let fields: Vec<String> = s
                .entries
                .iter()
                .filter_map(|entry| match &entry.expr {
                    EntryExpr::StructField(f) => Some(format!("{}: {}", f.field, at(&f.value, 0))),
                    EntryExpr::MapEntry(_) => None,
                })
                .collect();
            (format!("{}{{{}}}", s.type_name, fields.join(", ")), PRIMARY)
        }
        Expr::Comprehension(c) => (comprehension(c), MEMBER),
        Expr::Call(call) => {
            let args = &call.args;
            if let Some(target) = &call.target {
                return (
                    format!("{}.{}({})", at(target, MEMBER), call.func_name, list(args)),
                    MEMBER,
                );
            }
            match (call.func_name.as_str(), args.len()) {
                ("!_", 1) => (format!("!{}", at(&args[0], UNARY)), UNARY),
                ("-_", 1) => (format!("-{}", at(&args[0], UNARY)), UNARY),
                ("@not_strictly_false", 1) | (crate::guard::GUARD, 1) => render(&args[0]),
                ("_[_]", 2) => (
                    format!("{}[{}]", at(&args[0], MEMBER), at(&args[1], 0)),
                    MEMBER,
                ),
                ("_?_:_", 3) => (
                    format!(
                        "{} ? {} : {}",
                        at(&args[0], OR),
                        at(&args[1], OR),
                        at(&args[2], TERNARY)
                    ),
                    TERNARY,
                ),
                (op, 2) => match binary_precedence(op) {
                    Some((prec, symbol)) => {
                        // && and || are associative and the parser balances
                        // long chains: no parentheses needed on either side.
                        let right_min = if prec <= AND { prec } else { prec + 1 };
                        (
                            format!(
                                "{} {symbol} {}",
                                at(&args[0], prec),
                                at(&args[1], right_min)
                            ),
                            prec,
                        )
                    }
                    None => (format!("{op}({})", list(args)), PRIMARY),
                },
                (name, _) => (format!("{name}({})", list(args)), PRIMARY),
            }
        }
        Expr::Unspecified => ("<invalid>".to_owned(), PRIMARY),
    }
}

fn literal(l: &LiteralValue) -> String {
    match l {
        LiteralValue::Boolean(b) => b.inner().to_string(),
        LiteralValue::Int(i) => i.inner().to_string(),
        LiteralValue::UInt(u) => format!("{}u", u.inner()),
        LiteralValue::Double(d) => format!("{:?}", d.inner()),
        LiteralValue::String(s) => format!("{:?}", s.inner()),
        LiteralValue::Bytes(b) => format!("b{:?}", String::from_utf8_lossy(b.inner())),
        LiteralValue::Null => "null".to_owned(),
    }
}

/// The macro call a comprehension was expanded from.
fn comprehension(c: &ComprehensionExpr) -> String {
    let range = at(&c.iter_range, MEMBER);
    let v = &c.iter_var;
    let accu = c.accu_var.as_str();
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if n == accu);
    let init = &c.accu_init.expr;
    if let Expr::Call(step) = &c.loop_step.expr {
        let a = &step.args;
        match (step.func_name.as_str(), a.len(), init) {
            ("_&&_", 2, Expr::Literal(LiteralValue::Boolean(_))) if is_accu(&a[0]) => {
                return format!("{range}.all({v}, {})", at(&a[1], 0));
            }
            ("_||_", 2, Expr::Literal(LiteralValue::Boolean(_))) if is_accu(&a[0]) => {
                return format!("{range}.exists({v}, {})", at(&a[1], 0));
            }
            ("_?_:_", 3, Expr::Literal(LiteralValue::Int(_))) => {
                return format!("{range}.exists_one({v}, {})", at(&a[0], 0));
            }
            ("_+_", 2, Expr::List(_)) => {
                if let Some(f) = appended(&a[1]) {
                    return format!("{range}.map({v}, {})", at(f, 0));
                }
            }
            ("_?_:_", 3, Expr::List(_)) => {
                if let Expr::Call(add) = &a[1].expr {
                    if let Some(f) = add.args.get(1).and_then(appended) {
                        return match &f.expr {
                            Expr::Ident(n) if n == v => {
                                format!("{range}.filter({v}, {})", at(&a[0], 0))
                            }
                            _ => format!("{range}.map({v}, {}, {})", at(&a[0], 0), at(f, 0)),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    format!("{range}.<comprehension over {v}>")
}

/// The macro a comprehension was expanded from, by the shape of its step.
pub(crate) fn macro_name(c: &ComprehensionExpr) -> &'static str {
    let accu = c.accu_var.as_str();
    let Expr::Call(step) = &c.loop_step.expr else {
        return "comprehension";
    };
    let a = &step.args;
    match (step.func_name.as_str(), &c.accu_init.expr) {
        ("_&&_", _) => "all",
        ("_||_", _) => "exists",
        ("_?_:_", Expr::Literal(LiteralValue::Int(_))) => "exists_one",
        ("_+_", _) => "map",
        ("_?_:_", Expr::List(_)) => {
            let appends_var = match a.get(1).map(|add| &add.expr) {
                Some(Expr::Call(add)) => add.args.get(1).and_then(appended).is_some_and(
                    |f| matches!(&f.expr, Expr::Ident(n) if *n == c.iter_var && n != accu),
                ),
                _ => false,
            };
            if appends_var {
                "filter"
            } else {
                "map"
            }
        }
        _ => "comprehension",
    }
}

/// `x` of the `[x]` a map or filter step appends.
fn appended(e: &IdedExpr) -> Option<&IdedExpr> {
    match &e.expr {
        Expr::List(l) if l.elements.len() == 1 => l.elements.first(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::ENV;

    #[track_caller]
    fn round_trip(src: &str) {
        let parsed = ENV.compile(src).unwrap();
        assert_eq!(unparse(parsed.expression()), src);
    }

    #[test]
    fn writes_back_what_was_parsed() {
        round_trip(r#"vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0"#);
        round_trip(r#"!("test-fleet" in vehicle.tags)"#);
        round_trip(r#"has(vehicle.ecus.BMS) || vehicle.model.startsWith("ID.")"#);
        round_trip("(1 + 2) * 3 - -4 == vehicle.attributes[\"seats\"].size()");
        round_trip("a || b || c || d && e");
        round_trip("x ? 1 : y ? 2 : 3");
        round_trip("[1, 2u, 1.5, null, true]");
    }

    #[test]
    fn writes_macros_as_called() {
        round_trip(r#"vehicle.tags.exists(t, t.startsWith("fleet-"))"#);
        round_trip("vehicle.tags.all(t, t != \"x\")");
        round_trip("vehicle.tags.exists_one(t, t == \"x\")");
        round_trip("vehicle.tags.map(t, t + \"!\")");
        round_trip("vehicle.tags.map(t, t != \"a\", t + \"!\")");
        round_trip("vehicle.tags.filter(t, t != \"a\")");
    }
}
