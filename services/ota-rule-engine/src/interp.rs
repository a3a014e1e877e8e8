//! The reference evaluator: the `cel` crate's interpreter with `vehicle`
//! bound and `version_cmp` declared. Every expression can run here; the
//! compiled fast path ([`crate::fast`]) must agree with it.

use std::sync::{Arc, LazyLock};

use cel::common::types::{CelInt, CelString, DYN_TYPE, STRING_TYPE};
use cel::common::value::CowVal;
use cel::{Context, Env, ExecutionError, IdedExpr, Value};
use ota_common::vehicle::Vehicle;

use crate::schema::vehicle_value;
use crate::version::version_cmp_int;

/// The standard library without optional values (`a.?b`), plus
/// `version_cmp(string, string) -> int` and the run-time guard of
/// comprehensions ([`crate::guard`]).
pub(crate) static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib().with_optional_support(false);
    env.add_overload(
        "version_cmp",
        "version_cmp_string_string",
        vec![STRING_TYPE, STRING_TYPE],
        version_cmp_overload,
    )
    .expect("version_cmp is declared once");
    env.add_overload(
        crate::guard::GUARD,
        "guard_dyn",
        vec![DYN_TYPE],
        crate::guard::guard_overload,
    )
    .expect("the guard is declared once");
    Arc::new(env)
});

fn version_cmp_overload<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    // The overload is only picked for two strings, so the downcasts hold.
    let text = |i: usize| {
        args.get(i)
            .and_then(|a| a.downcast_ref::<CelString>())
            .map(|s| s.inner().to_owned())
            .ok_or_else(|| ExecutionError::function_error("version_cmp", "expects two strings"))
    };
    let (a, b) = (text(0)?, text(1)?);
    Ok(CowVal::owned(CelInt::from(version_cmp_int(&a, &b))))
}

/// A context with `vehicle` bound, built once per vehicle and shared by the
/// target and every rule.
pub(crate) fn context_for(v: &Vehicle) -> Context<'static, 'static> {
    let mut ctx = Context::with_env(Arc::clone(&ENV));
    ctx.add_variable_from_value("vehicle", vehicle_value(v));
    ctx
}

pub(crate) fn eval(expr: &IdedExpr, ctx: &Context) -> Result<Value, String> {
    ctx.resolve(expr).map_err(|e| describe_error(&e))
}

/// Runtime errors in the house style: lowercase, naming the offending key or
/// types. The fast path renders its errors the same way.
pub(crate) fn describe_error(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(key) => no_such_key(key),
        ExecutionError::NoSuchOverload(o) => no_overload(o.function(), o.argument_types()),
        ExecutionError::UnexpectedType { got, want } => unexpected_type(got, want),
        ExecutionError::UndeclaredReference(name) => format!("undeclared reference to `{name}`"),
        ExecutionError::FunctionError { function, message } if function == crate::guard::GUARD => {
            message.clone()
        }
        other => lowercase_first(&other.to_string()),
    }
}

pub(crate) fn no_such_key(key: &str) -> String {
    format!("no such key `{key}`")
}

pub(crate) fn no_overload<S: AsRef<str>>(function: &str, types: &[S]) -> String {
    let types: Vec<&str> = types.iter().map(AsRef::as_ref).collect();
    format!(
        "no matching overload for `{}` applied to ({})",
        operator_symbol(function),
        types.join(", ")
    )
}

pub(crate) fn unexpected_type(got: &str, want: &str) -> String {
    format!("expected {want}, got {got}")
}

/// `_<_` as a user wrote it: `<`.
pub(crate) fn operator_symbol(function: &str) -> &str {
    match function {
        "@in" => "in",
        "!_" => "!",
        "-_" => "-",
        "_[_]" => "[]",
        "_?_:_" => "?:",
        _ => function
            .strip_prefix('_')
            .and_then(|f| f.strip_suffix('_'))
            .unwrap_or(function),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A value as CEL source would write it, shortened for display.
pub(crate) fn format_value(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    const MAX: usize = 512;
    if out.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(0);
        out.truncate(cut);
        out.push('…');
    }
    out
}

fn write_value(out: &mut String, v: &Value) {
    use std::fmt::Write;
    match v {
        Value::String(s) => {
            let _ = write!(out, "{:?}", s.as_str());
        }
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}u");
        }
        Value::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Null => out.push_str("null"),
        Value::Timestamp(t) => {
            let _ = write!(out, "timestamp({:?})", t.to_rfc3339());
        }
        Value::Duration(d) => {
            let _ = write!(out, "duration(\"{}s\")", d.num_seconds());
        }
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Map(m) => {
            // Sorted, so that the same vehicle always reads the same.
            let mut entries: Vec<_> = m.map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, &Value::from(k));
                out.push_str(": ");
                write_value(out, v);
            }
            out.push('}');
        }
        other => {
            let _ = write!(out, "{other:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use ota_common::vehicle::Ecu;

    fn run(src: &str, v: &Vehicle) -> Result<Value, String> {
        let program = ENV.compile(src).unwrap();
        eval(program.expression(), &context_for(v))
    }

    fn vehicle() -> Vehicle {
        let mut v = Vehicle::new("WVWZZZE1ZMP000001", Utc.timestamp_opt(0, 0).unwrap());
        v.model = Some("ID.4".into());
        v.model_year = Some(2023);
        v.tags = vec!["fleet-a".into()];
        v.ecus.insert(
            "BMS".into(),
            Ecu {
                hw: "H2".into(),
                sw: "2.2.0".into(),
            },
        );
        v
    }

    #[test]
    fn vehicle_fields_and_version_cmp_are_visible() {
        let v = vehicle();
        assert_eq!(
            run("vehicle.model == 'ID.4' && vehicle.model_year == 2023", &v),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            run("version_cmp(vehicle.ecus.BMS.sw, '2.10.0')", &v),
            Ok(Value::Int(-1))
        );
        assert_eq!(
            run("has(vehicle.ecus.BMS) && !has(vehicle.ecus.HU)", &v),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            run("has(vehicle.model) && !has(vehicle.region)", &v),
            Ok(Value::Bool(true))
        );
        assert_eq!(run("'fleet-a' in vehicle.tags", &v), Ok(Value::Bool(true)));
    }

    #[test]
    fn a_missing_ecu_is_an_error_naming_it() {
        let err = run("vehicle.ecus.HU.sw == '1'", &vehicle()).unwrap_err();
        assert_eq!(err, "no such key `HU`");
    }

    #[test]
    fn values_render_as_cel() {
        let v = run("[vehicle.model, 1, true, {'a': 'b'}]", &vehicle()).unwrap();
        assert_eq!(format_value(&v), r#"["ID.4", 1, true, {"a": "b"}]"#);
    }
}
