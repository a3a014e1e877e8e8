//! The limits that keep a hostile campaign file cheap to refuse, and the
//! placing of expression positions in the file.

use super::*;

const MINIMAL: &str =
    "name: n\ntarget: 'true'\nrules:\n  - install: {package: p, version: '1', ecu: E}\n";

fn errors(text: &str) -> Vec<SpecError> {
    parse(text).expect_err("expected validation errors")
}

/// A list of 2,000 scalars, 500 aliases of it, 50 of those and 4 of those:
/// 9 KB of text, 200 million nodes once expanded.
fn wide_alias_bomb() -> String {
    let mut text = format!("{MINIMAL}x0: &a0 [{}]\n", vec!["a"; 2000].join(", "));
    for (i, n) in [(1, 500), (2, 50), (3, 4)] {
        let items = vec![format!("*a{}", i - 1); n].join(", ");
        text.push_str(&format!("x{i}: &a{i} [{items}]\n"));
    }
    text
}

/// Ten levels of anchors, each a list of ten aliases of the one before:
/// 10^10 nodes once expanded, from well under a kilobyte of text.
fn deep_alias_bomb() -> String {
    let mut text = format!("{MINIMAL}x0: &a0 [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..10 {
        let alias = format!("*a{}", i - 1);
        let items = [alias.as_str(); 10].join(", ");
        text.push_str(&format!("x{i}: &a{i} [{items}]\n"));
    }
    text
}

const TOO_MANY_NODES: &str = "the file has more than 100000 nodes once its aliases are expanded, \
                              the most a campaign file may have; it crossed the limit here";

#[test]
fn an_alias_bomb_is_refused_where_it_crosses_the_node_limit() {
    let text = wide_alias_bomb();
    assert!(text.len() < 10_000, "{}", text.len());
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!((e.path.as_str(), e.message.as_str()), ("", TOO_MANY_NODES));
    // 16 nodes of campaign, 2,002 for x0 and its list, 2 for x1 and its
    // list: the 49th alias of x0's 2,001 nodes crosses 100,000.
    assert_eq!((e.line, e.column), (Some(6), Some(250)));
    assert_eq!(&text.lines().nth(5).unwrap()[249..252], "*a0");

    let text = deep_alias_bomb();
    assert!(text.len() < 1024, "{}", text.len());
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!((e.path.as_str(), e.message.as_str()), ("", TOO_MANY_NODES));
    // 16 nodes of campaign, then 12, 112, 1112 and 11112 for x0 to x3, 2
    // for x4 and its list: x4's eighth alias, of 11111 nodes, crosses 100000.
    let x4 = text.lines().position(|l| l.starts_with("x4:")).unwrap() as u32 + 1;
    assert_eq!((e.line, e.column), (Some(x4), Some(45)));
    assert_eq!(&text.lines().nth(x4 as usize - 1).unwrap()[44..47], "*a3");
}

#[test]
fn merge_keys_count_against_the_node_limit() {
    let mut text = format!("{MINIMAL}m0: &m0 {{a: 1, b: 2, c: 3, d: 4, e: 5}}\n");
    for i in 1..12 {
        let alias = format!("*m{}", i - 1);
        text.push_str(&format!(
            "m{i}: &m{i} {{<<: [{alias}], k{i}: [{alias}, {alias}, {alias}, {alias}]}}\n"
        ));
    }
    let e = &errors(&text)[0];
    assert!(
        e.message.starts_with("the file has more than 100000 nodes"),
        "{e}"
    );
    assert!(e.line.is_some());
}

#[test]
fn deep_nesting_and_self_reference_are_refused() {
    let deep = format!("{MINIMAL}x: {}{}\n", "[".repeat(70), "]".repeat(70));
    let e = &errors(&deep)[0];
    assert_eq!(
        e.to_string(),
        "the file nests lists and mappings more than 64 levels deep, aliases expanded \
         (line 5, column 67)"
    );
    // Nesting reached through aliases counts too.
    let mut text = format!("{MINIMAL}d0: &d0 {}{}\n", "[".repeat(30), "]".repeat(30));
    text.push_str(&format!("d1: {}*d0{}\n", "[".repeat(35), "]".repeat(35)));
    let e = &errors(&text)[0];
    assert!(e.message.contains("more than 64 levels deep"), "{e}");
    let e = &errors(&format!("{MINIMAL}x: &a [1, *a]\n"))[0];
    assert_eq!(
        e.to_string(),
        "an alias refers to the node it is part of (line 5, column 11)"
    );
}

#[test]
fn thousands_of_bad_rules_list_the_first_problems_and_count_the_rest() {
    let mut text = String::from("name: n\ntarget: 'true'\nrules:\n");
    for _ in 0..8000 {
        text.push_str("  - {when: 7, install: {package: p, version: '1', ecu: E}}\n");
    }
    let errs = errors(&text);
    assert_eq!(errs.len(), MAX_PROBLEMS + 1);
    assert_eq!(MAX_PROBLEMS, 100);
    assert_eq!(
        (errs[0].path.as_str(), errs[0].message.as_str()),
        ("rules", "too many rules: 8000; at most 1000 are allowed")
    );
    assert_eq!(errs[0].line, Some(4));
    for (i, e) in errs[1..MAX_PROBLEMS].iter().enumerate() {
        assert_eq!(e.path, format!("rules[{i}].when"));
        assert_eq!(e.message, "expected a string, found number 7");
        assert_eq!((e.line, e.column), (Some(i as u32 + 4), Some(12)));
    }
    let last = errs.last().unwrap();
    assert_eq!(
        last.to_string(),
        "... and 7901 more problems; only the first 100 are listed"
    );
}

#[test]
fn durations_are_bounded() {
    let e = only_error("rollout: {action_timeout: 100000000d}\n");
    assert_eq!(
        e.to_string(),
        r#"rollout.action_timeout: "100000000d" is too long; durations are at most 365d (line 5, column 27)"#
    );
    let e = only_error("rollout:\n  wave_soak: 8761h\n");
    assert_eq!(e.path, "rollout.wave_soak");
    assert_eq!(
        e.message,
        r#""8761h" is too long; durations are at most 365d"#
    );
    let spec = parse(&format!(
        "{MINIMAL}rollout: {{wave_soak: 365d, action_timeout: 8760h}}\n"
    ))
    .unwrap();
    assert_eq!(spec.rollout.wave_soak, MAX_DURATION);
    assert_eq!(spec.rollout.action_timeout, Some(MAX_DURATION));
}

fn only_error(extra: &str) -> SpecError {
    let errs = errors(&format!("{MINIMAL}{extra}"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn sizes_are_bounded() {
    let waves: Vec<String> = (1..=101).map(|i| format!("{}", i as f64 * 0.99)).collect();
    let e = &errors(&format!(
        "{MINIMAL}rollout: {{waves: [{}]}}\n",
        waves.join(", ")
    ))[0];
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        (
            "rollout.waves",
            "too many waves: 101; at most 100 are allowed"
        )
    );
    let long = "p".repeat(129);
    let text = MINIMAL.replace("package: p", &format!("package: {long}"));
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "rules[0].install.package");
    assert!(
        errs[0]
            .message
            .ends_with("is 129 characters long; at most 128 are allowed"),
        "{}",
        errs[0].message
    );
    let huge = format!("{MINIMAL}# {}\n", "x".repeat(MAX_FILE_BYTES));
    let e = &errors(&huge)[0];
    assert_eq!(
        e.message,
        format!(
            "the file is {} bytes long; a campaign file may have at most 1048576",
            huge.len()
        )
    );
    // An unknown key is cut short in the path, like any quoted value.
    let key = "k".repeat(500);
    let e = only_error(&format!("{key}: 1\n"));
    assert_eq!(e.path, format!("{}...", "k".repeat(60)));
    assert_eq!(
        errors("a: 1\n---\nb: 2\n")[0].message,
        "the file holds more than one YAML document; a campaign file is one"
    );
}

/// The file position of a position within the expression at `path`.
fn place(text: &str, path: &str, line: u32, column: u32) -> (u32, u32) {
    check(text)
        .expression_position(path, line, column)
        .unwrap_or_else(|| panic!("no expression at {path}"))
}

#[test]
fn expression_positions_map_into_the_file() {
    // Single-line scalars, character by character.
    let text = "name: n\ntarget: vehicle.a == 1\nrules:\n\
        \x20 - when: 'vehicle.b == ''x'' && y'\n    install: {package: p, version: '1', ecu: E}\n\
        \x20 - when: \"\\u00e9 == \\\"x\\\" && z\"\n    install: {package: p, version: '1', ecu: E}\n";
    assert_eq!(place(text, "target", 1, 1), (2, 9));
    assert_eq!(place(text, "target", 1, 12), (2, 20));
    // The end of the expression is one past its last character.
    assert_eq!(place(text, "target", 1, 15), (2, 23));
    // 'vehicle.b == ''x'' && y': `y` is character 21, written at column 34;
    // a quote doubled in the file is found at its first half.
    assert_eq!(place(text, "rules[0].when", 1, 21), (4, 34));
    assert_eq!(place(text, "rules[0].when", 1, 14), (4, 25));
    assert_eq!(place(text, "rules[0].when", 1, 15), (4, 27));
    // "\u00e9 == \"x\" && z": `z` is character 13, written at column 31;
    // an escaped character is found at its backslash.
    assert_eq!(place(text, "rules[1].when", 1, 13), (6, 31));
    assert_eq!(place(text, "rules[1].when", 1, 6), (6, 22));
    assert_eq!(place(text, "rules[1].when", 1, 1), (6, 12));
}

#[test]
fn block_scalar_positions_are_exact() {
    let text = "name: n\ntarget: |\n  vehicle.a == 1 &&\n\n    vehicle.b\nrules:\n\
        \x20 - when: &w >-\n      vehicle.c\n      == 2\n\n      || d\n    \
        install: {package: p, version: '1', ecu: E}\n";
    let spec = parse(text).unwrap();
    assert_eq!(spec.target, "vehicle.a == 1 &&\n\n  vehicle.b\n");
    assert_eq!(place(text, "target", 1, 1), (3, 3));
    assert_eq!(place(text, "target", 3, 3), (5, 5));
    assert_eq!(spec.rules[0].when.as_deref(), Some("vehicle.c == 2\n|| d"));
    assert_eq!(place(text, "rules[0].when", 1, 11), (9, 7));
    assert_eq!(place(text, "rules[0].when", 2, 4), (11, 10));
    // A CEL `!` at the start of a block scalar is not taken for a tag.
    let text = "name: n\ntarget: |-\n  !vehicle.a\nrules:\n\
        \x20 - install: {package: p, version: '1', ecu: E}\n";
    assert_eq!(place(text, "target", 1, 2), (3, 4));
}

#[test]
fn folded_flow_scalars_map_what_is_not_white_space() {
    let text = "name: n\ntarget: vehicle.a\n  == 1\n  && b\nrules:\n\
        \x20 - when: \"x \\\n        && y\"\n    install: {package: p, version: '1', ecu: E}\n";
    let spec = parse(text).unwrap();
    assert_eq!(spec.target, "vehicle.a == 1 && b");
    assert_eq!(place(text, "target", 1, 11), (3, 3));
    assert_eq!(place(text, "target", 1, 19), (4, 6));
    assert_eq!(spec.rules[0].when.as_deref(), Some("x && y"));
    assert_eq!(place(text, "rules[0].when", 1, 6), (7, 12));
}
