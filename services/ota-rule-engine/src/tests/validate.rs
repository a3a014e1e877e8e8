use super::{one_error, rule_set, target_errors};
use crate::interp::{context_for, eval, ENV};
use crate::{validate, MAX_EXPRESSION_BYTES};

#[test]
fn a_valid_rule_set_has_no_errors() {
    let rules = rule_set(
        r#"vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0 && !("test-fleet" in vehicle.tags)"#,
        &[
            (r#"vehicle.gateway == "hcp3""#, "a"),
            (
                r#"vehicle.model in ["ID.3", "ID.4"] && has(vehicle.ecus.HU)"#,
                "b",
            ),
            (
                r#"vehicle.tags.exists(t, t.startsWith("fleet-")) || vehicle.attributes["color"] == "blue""#,
                "c",
            ),
            (
                r#"vehicle.ecus.exists(name, vehicle.ecus[name].hw.matches("^H[0-9]$"))"#,
                "d",
            ),
            (
                r#"vehicle.last_seen > timestamp("2024-01-01T00:00:00Z")"#,
                "e",
            ),
            ("", "f"),
        ],
    );
    assert_eq!(validate(&rules), vec![]);
}

#[test]
fn syntax_errors_point_at_line_and_column_with_a_caret() {
    let e = one_error("vehicle.model ==");
    assert_eq!((e.path.as_str(), e.line, e.column), ("target", 1, 17));
    assert_eq!(e.message, "syntax error: unexpected end of expression");
    assert_eq!(e.excerpt, "vehicle.model ==\n                ^");

    let e = one_error("vehicle.region == \"EU\" &&\n  vehicle.model == )");
    assert_eq!((e.line, e.column), (2, 20));
    assert_eq!(e.excerpt, "  vehicle.model == )\n                   ^");
    assert!(e.message.starts_with("syntax error: "), "{}", e.message);
    assert_eq!(e.to_string(), format!("target:2:20: {}", e.message));
}

#[test]
fn unknown_fields_are_named_with_a_suggestion() {
    let e = one_error(r#"vehicle.modle == "ID.4""#);
    assert_eq!(
        e.message,
        "unknown field `modle` on vehicle, did you mean `model`?"
    );
    assert_eq!((e.line, e.column), (1, 9));
    assert_eq!(e.excerpt, "vehicle.modle == \"ID.4\"\n        ^");

    let e = one_error(r#"has(vehicle.colour)"#);
    assert!(
        e.message
            .starts_with("unknown field `colour` on vehicle (fields: vin, model,"),
        "{}",
        e.message
    );

    let e = one_error(r#"vehicle.ecus.BMS.sv == "1.0""#);
    assert_eq!(
        e.message,
        "unknown field `sv` on ecu `vehicle.ecus.BMS`, did you mean `sw`?"
    );
    assert_eq!(e.column, 18);

    let e = one_error(r#"vehicel.model == "ID.4""#);
    assert_eq!(
        e.message,
        "unknown variable `vehicel`, did you mean `vehicle`?"
    );
}

#[test]
fn unknown_functions_are_rejected() {
    let e = one_error(r#"verison_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0"#);
    assert_eq!(
        e.message,
        "unknown function `verison_cmp`, did you mean `version_cmp`?"
    );
    assert_eq!((e.line, e.column), (1, 1));
    assert_eq!(
        one_error("frobnicate(vehicle.vin)").message,
        "unknown function `frobnicate`"
    );
    assert_eq!(
        one_error("vehicle.model.lowerAscii() == 'id.4'").message,
        "unknown function `lowerAscii`"
    );
    assert_eq!(
        one_error("optional.of(1) == 1").message,
        "unknown function `optional.of`"
    );
    assert_eq!(
        one_error(r#"vehicle.ecus.BMS.sw.version_cmp("1") < 0"#).message,
        "`version_cmp` is a function, not a method: write `version_cmp(a, b)`"
    );
}

#[test]
fn comparing_a_field_with_a_literal_of_another_type_is_an_error() {
    let e = one_error(r#"vehicle.model_year == "2023""#);
    assert_eq!(
        e.message,
        r#"type mismatch: `vehicle.model_year` is int but `"2023"` is string"#
    );
    assert_eq!(e.column, 20, "under the operator");
    assert_eq!(
        one_error("vehicle.model == 5").message,
        "type mismatch: `vehicle.model` is string but `5` is int"
    );
    assert!(one_error(r#"vehicle.model_year < "2020""#)
        .message
        .starts_with("type mismatch"));
    assert!(one_error(r#"vehicle.ecus.BMS.sw != 2"#)
        .message
        .starts_with("type mismatch"));
    assert_eq!(
        one_error(r#"vehicle.tags.exists(t, t == 1)"#).message,
        "type mismatch: `t` is string but `1` is int"
    );
    assert_eq!(
        one_error("2023 in vehicle.tags").message,
        "type mismatch: `2023` is int but `vehicle.tags` holds string"
    );
    // numbers of different kinds do compare in CEL
    assert_eq!(target_errors("vehicle.model_year > 2020.5"), vec![]);
}

#[test]
fn columns_count_characters_not_bytes() {
    let e = one_error(r#""ü" == 5"#);
    assert_eq!(e.column, 5);
    assert_eq!(e.excerpt, "\"ü\" == 5\n    ^");
    assert_eq!(
        one_error("vehicle.model == 'ä' && vehicle.modle == 'x'").column,
        33
    );
    assert_eq!(one_error("'ä' == ").column, 8);
}

#[test]
fn other_type_errors_are_explained() {
    assert_eq!(
        one_error(r#"version_cmp(vehicle.model_year, "2020") > 0"#).message,
        "`version_cmp` needs a string, but `vehicle.model_year` is int"
    );
    assert_eq!(
        one_error(r#"vehicle.tags.contains("fleet-a")"#).message,
        r#"lists have no `contains`: write `"fleet-a" in vehicle.tags` to test membership"#
    );
    assert_eq!(
        one_error(r#""EU" in vehicle.region"#).message,
        "`in` needs a list or map on its right, but `vehicle.region` is string"
    );
    assert_eq!(
        one_error("vehicle.model && true").message,
        "`&&` needs a bool, but `vehicle.model` is string"
    );
    assert_eq!(
        one_error(r#"vehicle.model.matches("(")"#).message,
        r#"invalid regular expression "(": unclosed group"#
    );
    assert_eq!(
        one_error("vehicle.model_year + 'a' > 1").message,
        "`+` cannot combine `vehicle.model_year` (int) and `'a'` (string)".replace('\'', "\"")
    );
}

#[test]
fn the_result_must_be_a_bool() {
    let e = one_error("vehicle.model");
    assert_eq!(
        e.message,
        "expression must evaluate to a bool, but it is string"
    );
    assert_eq!((e.line, e.column), (1, 1));
    assert_eq!(
        one_error(r#"  version_cmp(vehicle.ecus.BMS.sw, "1")"#).column,
        3,
        "at the expression's first character"
    );
    assert_eq!(
        target_errors("dyn(vehicle.model)"),
        vec![],
        "unknown types are left to run time"
    );
}

#[test]
fn expressions_over_16_kib_are_rejected() {
    let literal = |len: usize| format!("vehicle.model == \"{}\"", "a".repeat(len - 19));
    assert_eq!(literal(MAX_EXPRESSION_BYTES).len(), MAX_EXPRESSION_BYTES);
    assert_eq!(target_errors(&literal(MAX_EXPRESSION_BYTES)), vec![]);
    let e = one_error(&literal(MAX_EXPRESSION_BYTES + 1));
    assert_eq!(
        e.message,
        "expression is 16385 bytes long, the limit is 16384"
    );
    assert_eq!((e.line, e.column), (1, 1));
    assert!(e.excerpt.len() < 400, "the excerpt is windowed");
}

#[test]
fn nesting_deeper_than_32_levels_is_rejected() {
    // k lists in `size(…) > 0` nest k + 3 levels
    let nested = |k: usize| format!("size({}1{}) > 0", "[".repeat(k), "]".repeat(k));
    assert_eq!(target_errors(&nested(29)), vec![]);
    let e = one_error(&nested(30));
    assert_eq!(e.message, "expression is nested more than 32 levels deep");

    let parens = format!("{}true{}", "(".repeat(200), ")".repeat(200));
    assert_eq!(
        one_error(&parens).message,
        "expression is nested more than 32 levels deep"
    );
}

#[test]
fn degenerate_16_kib_chains_are_rejected_without_exhausting_the_stack() {
    let n = MAX_EXPRESSION_BYTES / 2 - 20;
    for src in [
        format!("vehicle.attributes{} == 'x'", ".b".repeat(n)),
        format!("1{} == 2", "+1".repeat(n)),
        format!("{}true", "!".repeat(2 * n)),
        format!("{}1{} == 1", "-(".repeat(n / 2), ")".repeat(n / 2)),
        format!("vehicle.tags{}", "[0]".repeat(n / 2)),
    ] {
        let e = one_error(&src);
        assert_eq!(
            e.message,
            "expression is nested more than 32 levels deep",
            "{}",
            &src[..40]
        );
    }
}

#[test]
fn every_error_of_a_rule_set_is_listed_with_its_path() {
    let rules = rule_set(
        r#"vehicle.modle == "ID.4" && vehicle.regin == "EU""#,
        &[
            (r#"vehicle.gateway == "hcp3""#, "a"),
            ("vehicle.model ==", "b"),
            ("", "c"),
            ("vehicle.model_year == '2023'", "d"),
        ],
    );
    let errors = validate(&rules);
    let got: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), &e.message[..16]))
        .collect();
    assert_eq!(
        got,
        vec![
            ("target", "unknown field `m"),
            ("target", "unknown field `r"),
            ("rules[1].when", "syntax error: un"),
            ("rules[3].when", "type mismatch: `"),
        ]
    );
}

#[test]
fn an_empty_target_is_rejected() {
    let e = one_error("  ");
    assert_eq!(
        e.message,
        "target is empty; write `true` to target every vehicle"
    );
}

/// The names the checker accepts must be ones the interpreter knows, or a
/// valid rule set would fail on every vehicle.
#[test]
fn every_accepted_builtin_runs_on_the_interpreter() {
    let ctx = context_for(&super::id4());
    for src in [
        "size(vehicle.tags) == 1 && vehicle.tags.size() == 1 && size(vehicle.model) == 4",
        "vehicle.model.size() == 4 && size(vehicle.attributes) == 1",
        "int('1') == 1 && uint(1) == 1u && double(1) == 1.0 && string(1) == '1'",
        "bool('true') && bytes('a') == b'a' && dyn(1) == 1 && type(1) == int",
        "timestamp('2024-01-01T00:00:00Z') < vehicle.last_seen && duration('1h') > duration('1m')",
        "matches(vehicle.model, '^ID') && vehicle.model.matches('4$')",
        "vehicle.model.startsWith('ID') && vehicle.model.endsWith('4') && vehicle.model.contains('.')",
        "vehicle.last_seen.getFullYear() == 2024 && vehicle.last_seen.getMonth() >= 0",
        "vehicle.last_seen.getDayOfYear() >= 0 && vehicle.last_seen.getDayOfMonth() >= 0",
        "vehicle.last_seen.getDate() >= 1 && vehicle.last_seen.getDayOfWeek() >= 0",
        "vehicle.last_seen.getHours('Europe/Berlin') >= 0 && vehicle.last_seen.getMinutes() >= 0",
        "vehicle.last_seen.getSeconds() >= 0 && vehicle.last_seen.getMilliseconds() >= 0",
        "duration('90m').getHours() == 1",
        "version_cmp('2.10.0', '2.9.1') == 1",
    ] {
        assert_eq!(target_errors(src), vec![], "{src}");
        let program = ENV.compile(src).unwrap();
        assert_eq!(eval(program.expression(), &ctx), Ok(cel::Value::Bool(true)), "{src}");
    }
}

#[test]
fn messages_read_as_english() {
    assert_eq!(
        one_error("-vehicle.model == 'x'").message,
        "`-` needs an int, but `vehicle.model` is string"
    );
    assert_eq!(
        one_error("size(1) > 0").message,
        "`size` needs a string, bytes, list or map, but `1` is int"
    );
}
