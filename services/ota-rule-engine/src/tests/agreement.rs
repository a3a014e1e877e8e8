//! The compiled evaluator against the interpreter: same value, or same error
//! message, for every expression of a corpus on every vehicle of a fleet.
//! Expressions are parsed without the static checks so that run-time type
//! errors are compared too.

use std::sync::Arc;

use cel::Value;

use super::fleet;
use crate::fast::{self, Fault, Val};
use crate::interp::{context_for, eval, ENV};

const CORPUS: &[&str] = &[
    r#"vehicle.region == "EU""#,
    r#"vehicle.region != "EU""#,
    "vehicle.model_year >= 2022",
    r#"vehicle.model_year < 2022 || vehicle.model == "ID.3""#,
    r#"version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0"#,
    r#"version_cmp(vehicle.ecus.BMS.sw, "2.3.1")"#,
    r#"has(vehicle.ecus.BMS) && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0"#,
    r#"vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0 && !("test-fleet" in vehicle.tags)"#,
    r#"vehicle.ecus.BMS.sw == "2.2.0" || vehicle.region == "EU""#,
    r#"vehicle.region == "EU" && vehicle.ecus.HU.sw == "5.1.0""#,
    r#"vehicle.ecus.HU.sw == "5.1.0" && vehicle.country == "DE""#,
    r#"vehicle.ecus.HU.sw == "x" && false"#,
    r#"vehicle.ecus.HU.sw == "x" || true"#,
    r#"false || vehicle.ecus.HU.sw == "x""#,
    r#"!("test-fleet" in vehicle.tags)"#,
    r#""fleet-a" in vehicle.tags"#,
    r#"vehicle.model in ["ID.3", "ID.4"]"#,
    "vehicle.model_year in [2021, 2023]",
    r#""BMS" in vehicle.ecus && "color" in vehicle.attributes && "model" in vehicle"#,
    r#"vehicle.attributes.color == "blue""#,
    r#"vehicle.attributes["color"] == "blue" || vehicle.attributes.seats == "5""#,
    r#"vehicle.ecus["BMS"].hw == "H2""#,
    "has(vehicle.attributes.color)",
    "has(vehicle.model) && has(vehicle.last_seen) && has(vehicle.ecus.BMS.sw)",
    "has(vehicle.ecus.HU)",
    "size(vehicle.tags) > 1",
    "vehicle.tags.size() == 0",
    "size(vehicle.model)",
    "size(vehicle.vin) == 17",
    r#"vehicle.model.startsWith("ID")"#,
    r#"vehicle.vin.endsWith("1")"#,
    r#"vehicle.gateway.contains("cp")"#,
    r#"vehicle.model.matches("^ID\\.[0-9]$")"#,
    r#"vehicle.platform == "MEB" ? vehicle.gateway == "hcp3" : vehicle.gateway == "icas1""#,
    r#"vehicle.model < "ID.4""#,
    r#"vehicle.model >= "ID""#,
    "vehicle.tags == [\"fleet-a\"]",
    "vehicle.tags != []",
    // run-time type errors, which the checker would have rejected
    "vehicle.model < 5",
    "5 > vehicle.model",
    "!vehicle.model",
    "vehicle.model && true",
    "true && vehicle.model",
    "vehicle.model || false",
    "vehicle.model_year == \"2023\"",
    r#"version_cmp(vehicle.model_year, "1") < 0"#,
    r#"version_cmp(vehicle.ecus.HU.sw, vehicle.ecus.XX.sw) < 0"#,
    r#"vehicle.ecus.XX.sw.startsWith(vehicle.ecus.YY.sw)"#,
    r#"vehicle.model.startsWith(1)"#,
    r#"vehicle.ecus.BMS.sv == "x""#,
    r#"vehicle.model ? true : false"#,
    r#"vehicle.model == "ID.4" ? vehicle.ecus.HU.sw : "none""#,
    r#"vehicle.tags.exists(t, t == "fleet-a")"#,
    r#"vehicle.model_year + 1 > 2023"#,
    r#"vehicle.last_seen > timestamp("2024-01-01T00:00:00Z")"#,
];

/// Expressions the compiler leaves to the interpreter.
const NOT_COMPILED: &[&str] = &[
    r#"vehicle.tags.exists(t, t == "fleet-a")"#,
    "vehicle.model_year + 1 > 2023",
    r#"vehicle.last_seen > timestamp("2024-01-01T00:00:00Z")"#,
];

fn as_value(v: Val) -> Option<Value> {
    match v {
        Val::Bool(b) => Some(Value::Bool(b)),
        Val::Int(i) => Some(Value::Int(i)),
        Val::Str(s) => Some(Value::String(Arc::new(s.to_owned()))),
        _ => None,
    }
}

#[test]
fn the_compiled_evaluator_agrees_with_the_interpreter() {
    let vehicles = fleet();
    let (mut compared, mut deferred) = (0, 0);
    for src in CORPUS {
        let program = ENV.compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let node = fast::compile(program.expression());
        assert_eq!(
            node.is_none(),
            NOT_COMPILED.contains(src),
            "{src}: compiled = {}",
            node.is_some()
        );
        let Some(node) = node else { continue };
        for v in &vehicles {
            let expected = eval(program.expression(), &context_for(v));
            let got = match node.eval(v) {
                Err(Fault::Unsupported) => {
                    deferred += 1;
                    continue;
                }
                Err(f) => Err(f.message()),
                Ok(val) => Ok(as_value(val).unwrap_or_else(|| panic!("{src}: non-scalar result"))),
            };
            assert_eq!(got, expected, "{src} on {}", v.vin);
            compared += 1;
        }
    }
    assert_eq!(deferred, 0, "the corpus stays within what the tree models");
    assert!(compared > 190, "{compared}");
}
