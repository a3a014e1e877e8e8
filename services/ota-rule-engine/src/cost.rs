//! The static cost of an expression: an upper bound on the work of
//! evaluating it for any vehicle, computed once from the checked AST so that
//! an expression that could stall a worker (four nested `all()` over
//! 1,000-element lists: 10^12 iterations) is refused at validation instead.
//!
//! A step is one node evaluated, one element or entry visited, or one byte of
//! a string read or copied. The bound follows the sizes of values: list and
//! map literals have the size they are written with, the vehicle's fields
//! the sizes [`VehicleBounds`] allows, `+` adds sizes, `map` and `filter`
//! keep them; a comprehension costs the size of its range times the cost of
//! its body. Every value an expression can build has a finite size bound
//! (there is no recursion in CEL and the source is bounded), so the bound is
//! always computed; run time counts too, as a backstop (see
//! [`crate::guard`]).

use std::rc::Rc;

use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, LiteralValue};
use cel::IdedExpr;

use crate::schema::Field;

/// The most an expression may cost, in steps: about 0.2 s of interpreter
/// time at worst (the `cost` group of the `evaluate` benchmark). The
/// realistic campaign of that benchmark costs a few hundred per expression,
/// `vehicle.tags.exists(t, t.startsWith("fleet-"))` about 4,000.
pub const MAX_EXPRESSION_COST: u64 = 1_000_000;

/// How many times the cost of one expression the target and all rules may
/// cost together: deciding one vehicle stays within a few seconds whatever
/// the number of rules.
pub const RULE_SET_COST_FACTOR: u64 = 10;

/// The most a rule set may cost per vehicle, in steps, by default.
pub const MAX_RULE_SET_COST: u64 = RULE_SET_COST_FACTOR * MAX_EXPRESSION_COST;

/// The largest vehicle the cost model assumes: the caps the vehicle store
/// puts on a merged inventory (`ota_common::vehicle`). A vehicle over them
/// (one stored before the caps) still evaluates, and the run-time count
/// stops it if it then runs past its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VehicleBounds {
    pub tags: u64,
    pub attributes: u64,
    pub ecus: u64,
    /// Bytes of any text: a field, tag, attribute name or value, ECU name,
    /// hardware or software version.
    pub text_bytes: u64,
}

pub const VEHICLE_BOUNDS: VehicleBounds = {
    use ota_common::vehicle as v;
    VehicleBounds {
        tags: v::MAX_TAGS as u64,
        attributes: v::MAX_ATTRIBUTES as u64,
        ecus: v::MAX_ECUS as u64,
        text_bytes: if v::MAX_VALUE_LEN > v::MAX_KEY_LEN {
            v::MAX_VALUE_LEN as u64
        } else {
            v::MAX_KEY_LEN as u64
        },
    }
};

/// Bytes of text read or copied per step: a node of the interpreter takes
/// about a hundred times longer than a byte of `memcmp`, so charging each
/// byte a whole step would refuse cheap expressions over long texts.
const BYTES_PER_STEP: u64 = 8;
/// Steps charged for compiling a regular expression, per byte of pattern,
/// on top of matching: the interpreter compiles `matches` patterns on every
/// call.
const REGEX_COMPILE_PER_BYTE: u64 = 64;
/// Longest text a conversion such as `string(1.5)` produces.
const CONVERTED_TEXT: u64 = 64;

/// What is known of a value's size.
#[derive(Debug, Clone, Default)]
struct Shape {
    /// Bytes of a string or bytes value, entries of a list or map; 0 for a
    /// scalar.
    len: u64,
    /// What iterating yields: a list's elements, a map's keys.
    item: Option<Rc<Shape>>,
    /// What indexing a map yields.
    value: Option<Rc<Shape>>,
    /// A map with known fields.
    record: Option<Record>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Vehicle,
    Ecu,
}

impl Shape {
    fn scalar() -> Shape {
        Shape::default()
    }

    fn text(len: u64) -> Shape {
        Shape {
            len,
            ..Shape::default()
        }
    }

    fn list(len: u64, item: Shape) -> Shape {
        Shape {
            len,
            item: Some(Rc::new(item)),
            ..Shape::default()
        }
    }

    fn map(len: u64, key: Shape, value: Shape) -> Shape {
        Shape {
            len,
            item: Some(Rc::new(key)),
            value: Some(Rc::new(value)),
            record: None,
        }
    }

    fn vehicle() -> Shape {
        let value = Field::ALL
            .into_iter()
            .map(field_shape)
            .reduce(|a, b| a.join(&b))
            .unwrap_or_default();
        Shape {
            record: Some(Record::Vehicle),
            ..Shape::map(Field::ALL.len() as u64, Shape::text(16), value)
        }
    }

    fn ecu() -> Shape {
        Shape {
            record: Some(Record::Ecu),
            ..Shape::map(2, Shape::text(2), Shape::text(VEHICLE_BOUNDS.text_bytes))
        }
    }

    /// Whether the value is a string, bytes or scalar rather than a
    /// collection.
    fn is_flat(&self) -> bool {
        self.item.is_none() && self.value.is_none()
    }

    /// The bound of either of two values.
    fn join(&self, other: &Shape) -> Shape {
        let join = |a: &Option<Rc<Shape>>, b: &Option<Rc<Shape>>| match (a, b) {
            (Some(a), Some(b)) => Some(Rc::new(a.join(b))),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        Shape {
            len: self.len.max(other.len),
            item: join(&self.item, &other.item),
            value: join(&self.value, &other.value),
            record: self.record.filter(|r| other.record == Some(*r)),
        }
    }

    /// Steps to read or copy the top level of the value: its text, or one
    /// per element.
    fn steps(&self) -> u64 {
        if self.is_flat() {
            self.len.div_ceil(BYTES_PER_STEP)
        } else {
            self.len
        }
    }

    /// Steps to visit the whole value, as equality or a conversion may.
    fn weight(&self) -> u64 {
        if self.is_flat() {
            return 1u64.saturating_add(self.steps());
        }
        let part = |s: &Option<Rc<Shape>>| s.as_ref().map_or(0, |s| s.weight());
        let per_entry = 1u64
            .saturating_add(part(&self.item))
            .saturating_add(part(&self.value));
        1u64.saturating_add(self.len.saturating_mul(per_entry))
    }

    /// The value of `self.name`, or of `self["name"]`.
    fn field(&self, name: &str) -> Shape {
        match self.record {
            Some(Record::Vehicle) => Field::from_name(name).map_or_else(Shape::scalar, field_shape),
            Some(Record::Ecu) => Shape::text(VEHICLE_BOUNDS.text_bytes),
            None => self.index(),
        }
    }

    /// The value of `self[i]` for an unknown `i`.
    fn index(&self) -> Shape {
        self.value
            .as_deref()
            .or(self.item.as_deref())
            .cloned()
            .unwrap_or_default()
    }

    fn item(&self) -> Shape {
        self.item.as_deref().cloned().unwrap_or_default()
    }
}

fn field_shape(f: Field) -> Shape {
    let b = VEHICLE_BOUNDS;
    let text = || Shape::text(b.text_bytes);
    match f {
        Field::Vin => Shape::text(17),
        Field::ModelYear | Field::LastSeen => Shape::scalar(),
        Field::Tags => Shape::list(b.tags, text()),
        Field::Attributes => Shape::map(b.attributes, text(), text()),
        Field::Ecus => Shape::map(b.ecus, text(), Shape::ecu()),
        Field::Model
        | Field::Platform
        | Field::Gateway
        | Field::Protocol
        | Field::Region
        | Field::Country => text(),
    }
}

/// Where an expression goes over its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overrun {
    /// The smallest sub-expression whose own cost is over the limit.
    pub id: u64,
    /// For a comprehension: the macro, and how often it runs its body.
    pub repeats: Option<(&'static str, u64)>,
}

/// The cost of an expression, and the first place it went over `limit`.
pub(crate) fn estimate(e: &IdedExpr, limit: u64) -> (u64, Option<Overrun>) {
    let mut model = Model {
        scopes: Vec::new(),
        limit,
        overrun: None,
    };
    let (cost, _) = model.cost(e);
    (cost, model.overrun)
}

struct Model {
    /// Variables bound by comprehensions, innermost last.
    scopes: Vec<(String, Shape)>,
    limit: u64,
    overrun: Option<Overrun>,
}

fn sum(costs: impl IntoIterator<Item = u64>) -> u64 {
    costs.into_iter().fold(0, u64::saturating_add)
}

impl Model {
    fn cost(&mut self, e: &IdedExpr) -> (u64, Shape) {
        let (cost, shape) = self.node(e);
        if cost > self.limit && self.overrun.is_none() {
            let repeats = match &e.expr {
                Expr::Comprehension(c) => Some((
                    crate::unparse::macro_name(c),
                    self.peek_range(&c.iter_range),
                )),
                _ => None,
            };
            self.overrun = Some(Overrun { id: e.id, repeats });
        }
        (cost, shape)
    }

    /// A range's size, without recording an overrun twice.
    fn peek_range(&mut self, range: &IdedExpr) -> u64 {
        let saved = self.overrun.take();
        let (_, shape) = self.node(range);
        self.overrun = saved;
        shape.len
    }

    fn node(&mut self, e: &IdedExpr) -> (u64, Shape) {
        match &e.expr {
            Expr::Literal(l) => (1, literal_shape(l)),
            Expr::Ident(name) => (1, self.ident(name)),
            Expr::Select(s) => {
                let (cost, operand) = self.cost(&s.operand);
                let shape = if s.test {
                    Shape::scalar()
                } else {
                    operand.field(&s.field)
                };
                (cost.saturating_add(1), shape)
            }
            Expr::List(l) => {
                let mut cost = 1u64;
                let mut item: Option<Shape> = None;
                for el in &l.elements {
                    let (c, s) = self.cost(el);
                    cost = cost.saturating_add(c);
                    item = Some(match item {
                        Some(i) => i.join(&s),
                        None => s,
                    });
                }
                (
                    cost,
                    Shape::list(l.elements.len() as u64, item.unwrap_or_default()),
                )
            }
            Expr::Map(m) => {
                let mut cost = 1u64;
                let (mut key, mut value) = (Shape::scalar(), Shape::scalar());
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        let (kc, ks) = self.cost(&me.key);
                        let (vc, vs) = self.cost(&me.value);
                        // hashing the key on insertion
                        cost = sum([cost, kc, vc, ks.weight()]);
                        key = key.join(&ks);
                        value = value.join(&vs);
                    }
                }
                (cost, Shape::map(m.entries.len() as u64, key, value))
            }
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Call(call) => {
                let target = call.target.as_deref().map(|t| self.cost(t));
                let args: Vec<(u64, Shape)> = call.args.iter().map(|a| self.cost(a)).collect();
                let mut cost = 1u64.saturating_add(target.as_ref().map_or(0, |t| t.0));
                let (op, shape) = if call.func_name == "_?_:_" && args.len() == 3 {
                    // only one branch runs
                    cost = sum([cost, args[0].0, args[1].0.max(args[2].0)]);
                    (0, args[1].1.join(&args[2].1))
                } else {
                    cost = sum([cost, sum(args.iter().map(|a| a.0))]);
                    let shapes: Vec<&Shape> = target.iter().chain(&args).map(|a| &a.1).collect();
                    self.call(&call.func_name, &call.args, &shapes)
                };
                (cost.saturating_add(op), shape)
            }
            Expr::Struct(_) | Expr::Unspecified => (1, Shape::scalar()),
        }
    }

    fn ident(&self, name: &str) -> Shape {
        if let Some((_, shape)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return shape.clone();
        }
        if name == "vehicle" {
            Shape::vehicle()
        } else {
            Shape::scalar()
        }
    }

    /// The range once, the accumulator's start once, the condition and step
    /// once per element, the result once.
    fn comprehension(&mut self, c: &ComprehensionExpr) -> (u64, Shape) {
        let (range_cost, range) = self.cost(&c.iter_range);
        let (init_cost, init) = self.cost(&c.accu_init);
        let n = range.len;
        let depth = self.scopes.len();
        self.scopes.push((c.iter_var.clone(), range.item()));
        if let Some(v2) = &c.iter_var2 {
            self.scopes.push((v2.clone(), range.index()));
        }
        // What one step adds to a list accumulator (an element for `map`
        // and `filter`) bounds it after n steps; the boolean and counting
        // macros keep a scalar.
        self.scopes.push((c.accu_var.clone(), init.clone()));
        if !init.is_flat() {
            let saved = self.overrun.clone();
            let (_, once) = self.node(&c.loop_step);
            self.overrun = saved;
            let grows = once.len.saturating_sub(init.len);
            let accu = Shape {
                len: init.len.saturating_add(n.saturating_mul(grows)),
                ..init.join(&once)
            };
            self.scopes.last_mut().expect("just pushed").1 = accu;
        }
        let (cond, _) = self.cost(&c.loop_cond);
        let (step, _) = self.cost(&c.loop_step);
        let (result_cost, result) = self.cost(&c.result);
        self.scopes.truncate(depth);
        let body = cond.saturating_add(step);
        let cost = sum([
            1,
            range_cost,
            init_cost,
            n.saturating_mul(body),
            result_cost,
        ]);
        (cost, result)
    }

    /// The cost of the operation itself, beyond evaluating its operands, and
    /// the shape of its result. `shapes` has the receiver of a method first.
    fn call(&self, name: &str, args: &[IdedExpr], shapes: &[&Shape]) -> (u64, Shape) {
        let text_of = |i: usize| shapes.get(i).map_or(0, |s| s.steps());
        let scalar = |cost: u64| (cost, Shape::scalar());
        match (name, shapes) {
            ("_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_", [a, b]) => {
                scalar(a.weight().min(b.weight()))
            }
            ("@in", [item, container]) => {
                if container.value.is_some() || container.record.is_some() {
                    // a map: one lookup
                    scalar(item.weight())
                } else {
                    let each = 1u64.saturating_add(item.weight().min(container.item().weight()));
                    scalar(container.len.saturating_mul(each))
                }
            }
            ("_+_", [a, b]) => {
                let appends = matches!(&args[0].expr, Expr::Ident(n) if self.is_accumulator(n));
                let len = a.len.saturating_add(b.len);
                let shape = Shape { len, ..a.join(b) };
                // `map` and `filter` append in place; any other `+` of
                // strings, bytes or lists copies both sides.
                let op = if appends { b.steps() } else { shape.steps() };
                (op, shape)
            }
            ("_[_]", [container, index]) => {
                let shape = match &args[1].expr {
                    Expr::Literal(LiteralValue::String(key)) => container.field(key.inner()),
                    _ => container.index(),
                };
                (index.weight(), shape)
            }
            // a string's size counts its characters
            ("size", [a]) => scalar(if a.is_flat() { a.steps() } else { 0 }),
            ("version_cmp" | "startsWith" | "endsWith" | "contains", [_, _]) => {
                scalar(text_of(0).saturating_add(text_of(1)))
            }
            ("matches", [_, p]) => {
                let (text, pattern) = (text_of(0), p.len);
                let compile = pattern.saturating_mul(REGEX_COMPILE_PER_BYTE);
                // a backtracking-free engine: linear in the text, but each
                // byte may advance every state of the pattern
                let scan = text.saturating_mul(pattern.saturating_add(1));
                scalar(compile.saturating_add(scan))
            }
            ("string" | "bytes", [a]) => (
                a.weight(),
                Shape::text(if a.is_flat() { a.len } else { 0 }.max(CONVERTED_TEXT)),
            ),
            ("dyn", [a]) => (0, (*a).clone()),
            (_, shapes) => scalar(sum(shapes.iter().map(|s| s.steps()))),
        }
    }

    /// Only macros bind names starting with `@`, and only their
    /// accumulators.
    fn is_accumulator(&self, name: &str) -> bool {
        name.starts_with('@') && self.scopes.iter().any(|(n, _)| n == name)
    }
}

fn literal_shape(l: &LiteralValue) -> Shape {
    match l {
        LiteralValue::String(s) => Shape::text(s.inner().len() as u64),
        LiteralValue::Bytes(b) => Shape::text(b.inner().len() as u64),
        _ => Shape::scalar(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::ENV;

    fn cost(src: &str) -> u64 {
        let program = ENV.compile(src).unwrap();
        estimate(program.expression(), u64::MAX).0
    }

    fn list(n: usize) -> String {
        let items: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        format!("[{}]", items.join(","))
    }

    #[test]
    fn comprehensions_multiply_by_their_range() {
        let one = cost(&format!("{}.all(a, a > 0)", list(10)));
        let two = cost(&format!(
            "{}.all(a, {}.all(b, a + b > 0))",
            list(10),
            list(10)
        ));
        assert!((10..100).contains(&one), "{one}");
        assert!(two > 10 * one && two < 20 * one, "{one} {two}");
        let four = format!(
            "{l}.all(a, {l}.all(b, {l}.all(c, {l}.all(d, a + b + c + d > 0))))",
            l = list(1000)
        );
        assert!(cost(&four) > 1_000_000_000_000, "{}", cost(&four));
    }

    #[test]
    fn vehicle_collections_are_bounded_by_the_store_caps() {
        let tags = cost("vehicle.tags.exists(t, t == 'x')");
        let b = VEHICLE_BOUNDS;
        assert!(tags >= b.tags * 3 && tags < b.tags * 20, "{tags}");
        let ecus = cost("vehicle.ecus.exists(e, vehicle.ecus[e].sw == '1')");
        assert!(ecus >= b.ecus * 4, "{ecus}");
        let nested = cost("vehicle.tags.exists(t, vehicle.attributes.exists(a, a == t))");
        assert!(nested >= b.tags * b.attributes, "{nested}");
    }

    #[test]
    fn map_and_filter_keep_sizes_and_plus_adds_them() {
        let mapped = cost(&format!("{}.map(x, x * 2).all(y, y > 0)", list(100)));
        let filtered = cost(&format!("{}.filter(x, x > 2).all(y, y > 0)", list(100)));
        let joined = cost(&format!("({l} + {l}).all(y, y > 0)", l = list(100)));
        assert!((600..4000).contains(&mapped), "{mapped}");
        assert!((600..4000).contains(&filtered), "{filtered}");
        assert!(joined >= 200 * 3, "{joined}");
        // a string doubled 30 times over is too long to build
        let mut doubled = "'aaaa'".to_owned();
        for i in 0..30 {
            doubled = format!("[{doubled}].map(s{i}, s{i} + s{i})[0]");
        }
        assert!(cost(&format!("size({doubled}) > 0")) > (4 << 30) / BYTES_PER_STEP);
    }

    #[test]
    fn strings_cost_by_their_length() {
        let short = cost("vehicle.model == 'ID.4'");
        let long = cost("vehicle.model.contains('ID.4')");
        assert!(short < 20, "{short}");
        assert!(long >= VEHICLE_BOUNDS.text_bytes / BYTES_PER_STEP, "{long}");
        assert!(cost("vehicle.model.matches('^ID')") > long);
    }

    #[test]
    fn the_first_overrun_is_the_smallest_sub_expression_over_the_limit() {
        let src = format!(
            "{l}.all(a, {l}.all(b, {l}.all(c, a + b + c > 0)))",
            l = list(1000)
        );
        let program = ENV.compile(&src).unwrap();
        let (total, overrun) = estimate(program.expression(), 1_000_000);
        assert!(total > 1_000_000_000);
        let overrun = overrun.expect("over the limit");
        assert_eq!(overrun.repeats, Some(("all", 1000)));
        assert_ne!(overrun.id, program.expression().id, "not the outermost");
    }
}
