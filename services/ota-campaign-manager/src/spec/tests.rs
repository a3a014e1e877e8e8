use super::*;
use chrono::TimeZone;

const EXAMPLE: &str = r#"
name: bms-2.3.1-eu
target: 'vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0'
rules:                      # first matching rule gives the vehicle its action
  - when: 'vehicle.gateway == "hcp3"'
    install: {package: bms-fw-hcp3, version: 2.3.1, ecu: BMS}
  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}
rollout:
  waves: [1, 10, 50, 100]   # cumulative percent of matched vehicles
  wave_soak: 1h             # minimum time before the next wave opens
  advance: auto             # or manual
  max_per_minute: 5000      # how fast actions are staged and notified
  failure_threshold: {percent: 5, min_finished: 50, action: pause}   # or abort
  action_timeout: 72h
  max_retries: 2
schedule: {start: 2026-12-01T00:00:00Z, end: 2027-01-31T00:00:00Z}
priority: 100
"#;

fn install(package: &str, version: &str) -> Install {
    Install {
        package: package.into(),
        version: version.into(),
        ecu: "BMS".into(),
    }
}

fn expected_example() -> CampaignSpec {
    CampaignSpec {
        name: "bms-2.3.1-eu".into(),
        target: r#"vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0"#.into(),
        rules: vec![
            RuleSpec {
                when: Some(r#"vehicle.gateway == "hcp3""#.into()),
                install: install("bms-fw-hcp3", "2.3.1"),
            },
            RuleSpec {
                when: None,
                install: install("bms-fw", "2.3.1"),
            },
        ],
        rollout: Rollout {
            waves: vec![1.0, 10.0, 50.0, 100.0],
            wave_soak: Duration::from_secs(3600),
            advance: Advance::Auto,
            max_per_minute: 5000,
            failure_threshold: Some(FailureThreshold {
                percent: 5.0,
                min_finished: 50,
                action: ThresholdAction::Pause,
            }),
            action_timeout: Some(Duration::from_secs(72 * 3600)),
            max_retries: 2,
        },
        schedule: Schedule {
            start: Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()),
            end: Some(Utc.with_ymd_and_hms(2027, 1, 31, 0, 0, 0).unwrap()),
        },
        priority: 100,
    }
}

const MINIMAL: &str =
    "name: n\ntarget: 'true'\nrules:\n  - install: {package: p, version: '1', ecu: E}\n";

fn errors(text: &str) -> Vec<SpecError> {
    parse(text).expect_err("expected validation errors")
}

fn paths(errs: &[SpecError]) -> Vec<&str> {
    errs.iter().map(|e| e.path.as_str()).collect()
}

/// The single error of a minimal file extended with `extra`.
fn only_error(extra: &str) -> SpecError {
    let errs = errors(&format!("{MINIMAL}{extra}"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn example_parses_to_expected_struct() {
    assert_eq!(parse(EXAMPLE).unwrap(), expected_example());
}

#[test]
fn json_form_parses_like_yaml() {
    let json = r#"{
      "name": "bms-2.3.1-eu",
      "target": "vehicle.region == \"EU\" && version_cmp(vehicle.ecus.BMS.sw, \"2.3.1\") < 0",
      "rules": [
        {"when": "vehicle.gateway == \"hcp3\"",
         "install": {"package": "bms-fw-hcp3", "version": "2.3.1", "ecu": "BMS"}},
        {"install": {"package": "bms-fw", "version": "2.3.1", "ecu": "BMS"}}
      ],
      "rollout": {"waves": [1, 10, 50, 100], "wave_soak": "1h", "advance": "auto",
                  "max_per_minute": 5000, "action_timeout": "72h", "max_retries": 2,
                  "failure_threshold": {"percent": 5, "min_finished": 50, "action": "pause"}},
      "schedule": {"start": "2026-12-01T00:00:00Z", "end": "2027-01-31T00:00:00Z"},
      "priority": 100
    }"#;
    assert_eq!(parse(json).unwrap(), expected_example());
}

#[test]
fn stored_json_looks_like_the_file_and_parses_back() {
    let spec = expected_example();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["rollout"]["wave_soak"], "1h");
    assert_eq!(json["rollout"]["action_timeout"], "72h");
    assert_eq!(json["rollout"]["advance"], "auto");
    assert_eq!(json["rollout"]["failure_threshold"]["action"], "pause");
    assert_eq!(json["schedule"]["start"], "2026-12-01T00:00:00Z");
    assert_eq!(
        serde_json::from_value::<CampaignSpec>(json.clone()).unwrap(),
        spec
    );
    assert_eq!(parse(&json.to_string()).unwrap(), spec);

    let mut no_timeout = parse(&format!("{MINIMAL}rollout: {{action_timeout: never}}")).unwrap();
    assert_eq!(no_timeout.rollout.action_timeout, None);
    let json = serde_json::to_string(&no_timeout).unwrap();
    assert!(json.contains(r#""action_timeout":"never""#), "{json}");
    assert_eq!(parse(&json).unwrap(), no_timeout);
    no_timeout.rollout.action_timeout = Some(Duration::from_secs(90));
    let json = serde_json::to_string(&no_timeout).unwrap();
    assert_eq!(
        serde_json::from_str::<CampaignSpec>(&json).unwrap(),
        no_timeout
    );
}

#[test]
fn defaults_apply_when_optional_sections_are_missing_or_null() {
    for text in [
        MINIMAL.to_owned(),
        format!("{MINIMAL}rollout:\nschedule: ~\npriority:\n"),
    ] {
        let spec = parse(&text).unwrap();
        assert_eq!(spec.rollout, Rollout::default());
        assert_eq!(spec.rollout.waves, vec![100.0]);
        assert_eq!(spec.rollout.max_per_minute, 1000);
        assert_eq!(
            spec.rollout.action_timeout,
            Some(Duration::from_secs(72 * 3600))
        );
        assert_eq!(spec.schedule, Schedule::default());
        assert_eq!(spec.priority, 0);
    }
    let t = parse(&format!(
        "{MINIMAL}rollout: {{failure_threshold: {{percent: 2.5}}}}"
    ))
    .unwrap()
    .rollout
    .failure_threshold
    .unwrap();
    assert_eq!(
        t,
        FailureThreshold {
            percent: 2.5,
            min_finished: 10,
            action: ThresholdAction::Pause
        }
    );
}

#[test]
fn reports_every_problem_with_its_path_and_position() {
    let text = "\
name: ok
target: ''
rules:
  - install: {package: p, version: '1'}
rollout:
  waves: [10, 50, 40, 100]
  wave_sok: 1h
priority: 5000
";
    let errs = errors(text);
    assert_eq!(
        paths(&errs),
        [
            "target",
            "rules[0].install.ecu",
            "rollout.waves[2]",
            "rollout.wave_sok",
            "priority"
        ]
    );
    let by_path = |p: &str| errs.iter().find(|e| e.path == p).unwrap();
    assert_eq!(by_path("target").message, r#"must not be empty, found """#);
    assert_eq!(
        by_path("rules[0].install.ecu").message,
        "missing required field"
    );
    assert_eq!(
        by_path("rollout.waves[2]").message,
        "40 is not above the previous wave 50"
    );
    assert_eq!(
        by_path("priority").message,
        "must be between -1000 and 1000, found 5000"
    );
    let pos = |p: &str| (by_path(p).line, by_path(p).column);
    assert_eq!(pos("target"), (Some(2), Some(9)));
    // A missing field points at the mapping that lacks it.
    assert_eq!(pos("rules[0].install.ecu"), (Some(4), Some(14)));
    assert_eq!(pos("rollout.wave_sok"), (Some(7), Some(3)));
    assert_eq!(pos("rollout.waves[2]"), (Some(6), Some(19)));
    assert_eq!(pos("priority"), (Some(8), Some(11)));
    assert_eq!(
        by_path("rollout.waves[2]").to_string(),
        "rollout.waves[2]: 40 is not above the previous wave 50 (line 6, column 19)"
    );
}

#[test]
fn unknown_keys_are_reported_with_suggestions() {
    let e = only_error("rollout:\n  wave_sok: 1h\n");
    assert_eq!(e.path, "rollout.wave_sok");
    assert_eq!(
        e.message,
        "unknown field; did you mean `wave_soak`? expected one of waves, wave_soak, advance, \
         max_per_minute, failure_threshold, action_timeout, max_retries"
    );
    assert_eq!((e.line, e.column), (Some(6), Some(3)));
    let e = only_error("colour: blue\n");
    assert_eq!(e.path, "colour");
    assert!(
        e.message
            .starts_with("unknown field; expected one of name, target"),
        "{}",
        e.message
    );
    let errs =
        errors("name: n\ntarget: t\nrules:\n  - install: {package: p, version: '1', ECU: E}\n");
    assert_eq!(
        paths(&errs),
        ["rules[0].install.ecu", "rules[0].install.ECU"]
    );
    assert!(errs[1].message.contains("did you mean `ecu`?"));
}

#[test]
fn odd_keys_are_reported_without_hiding_later_positions() {
    let text = "1: 2\n? [a]\n: b\nname: n\ntarget: t\nrules:\n  - when: ''\n    \
                install: {package: p, version: '1', ecu: E}\n";
    let errs = errors(text);
    let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "keys must be strings, found number 1 (line 1, column 1)",
            "keys must be strings, found a list (line 1, column 1)",
            r#"rules[0].when: must not be empty, found "" (line 7, column 11)"#,
        ]
    );
}

#[test]
fn wrong_types_name_the_value() {
    let e = only_error("rollout: {waves: [10, 50, x, 100]}\n");
    assert_eq!(
        e.to_string(),
        r#"rollout.waves[2]: expected a number, found string "x" (line 5, column 27)"#
    );
    let e = only_error("rollout: {max_per_minute: 2.5}\n");
    assert_eq!(e.message, "expected an integer, found number 2.5");
    let e = only_error("rollout: {advance: sometimes}\n");
    assert_eq!(
        e.message,
        r#"expected one of auto, manual, found string "sometimes""#
    );
    let e = only_error("rollout: [1]\n");
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        ("rollout", "expected a mapping, found a list")
    );
    let errs = errors("name: [a]\ntarget: 3\nrules: {}\n");
    assert_eq!(paths(&errs), ["name", "target", "rules"]);
    assert_eq!(errs[1].message, "expected a string, found number 3");
    assert_eq!(errs[2].message, "expected a list of rules, found a mapping");
}

#[test]
fn missing_required_fields() {
    let errs = errors("rollout: {}\n");
    assert_eq!(paths(&errs), ["name", "target", "rules"]);
    assert!(errs
        .iter()
        .all(|e| e.message == "missing required field" && e.line == Some(1)));
    let errs = errors("name: n\ntarget: t\nrules: []\n");
    assert_eq!(
        (errs[0].path.as_str(), errs[0].message.as_str()),
        ("rules", "must contain at least one rule")
    );
    let errs = errors("name: n\ntarget: t\nrules:\n  - when: x\n");
    assert_eq!(paths(&errs), ["rules[0].install"]);
}

#[test]
fn name_limits() {
    let long = "x".repeat(129);
    let errs = errors(&format!(
        "name: {long}\ntarget: t\nrules: [{{install: {{package: p, version: '1', ecu: E}}}}]\n"
    ));
    assert_eq!(paths(&errs), ["name"]);
    assert!(
        errs[0]
            .message
            .ends_with("is 129 characters long; at most 128 are allowed"),
        "{}",
        errs[0].message
    );
    let ok = format!(
        "name: {}\ntarget: t\nrules: [{{install: {{package: p, version: '1', ecu: E}}}}]\n",
        "é".repeat(128)
    );
    assert!(parse(&ok).is_ok());
    let errs = errors(
        "name: \"a\\tb\"\ntarget: t\nrules: [{install: {package: p, version: '1', ecu: E}}]\n",
    );
    assert_eq!(errs[0].message, r#""a\tb" contains a control character"#);
}

#[test]
fn numeric_versions_keep_their_text() {
    let text = "name: n\ntarget: t\nrules:\n\
        \x20 - {when: a, install: {package: p, version: 2.3, ecu: E}}\n\
        \x20 - {when: b, install: {package: p, version: 2, ecu: E}}\n\
        \x20 - when: c\n    install:\n      package: p\n      version: 2.10\n      ecu: E\n\
        \x20 - {when: d, install: {package: p, version: 1.0e3, ecu: E}}\n\
        \x20 - {install: {package: p, version: \"2.10\", ecu: E}}\n";
    let versions: Vec<String> = parse(text)
        .unwrap()
        .rules
        .into_iter()
        .map(|r| r.install.version)
        .collect();
    assert_eq!(versions, ["2.3", "2", "2.10", "1.0e3", "2.10"]);
    let json = r#"{"name": "n", "target": "t", "rules": [{"install": {"package": "p", "version": 2.10, "ecu": "E"}}]}"#;
    assert_eq!(parse(json).unwrap().rules[0].install.version, "2.10");
    // An alias is followed to its anchor, whose text is what was written.
    let aliased = "name: n\ntarget: t\nrules:\n\
        \x20 - {when: a, install: {package: p, version: &v 3.10, ecu: E}}\n\
        \x20 - {install: {package: q, version: *v, ecu: E}}\n";
    let versions: Vec<String> = parse(aliased)
        .unwrap()
        .rules
        .into_iter()
        .map(|r| r.install.version)
        .collect();
    assert_eq!(versions, ["3.10", "3.10"]);
}

#[test]
fn numeric_version_through_merge_key_keeps_its_text() {
    // The tree keeps every scalar's text, so a number merged in with `<<` is
    // read as written (it used to be rejected with a request to quote it).
    let text = "name: n\ntarget: t\nrules:\n  - install:\n      <<: {version: 2.10}\n      package: p\n      ecu: E\n";
    assert_eq!(parse(text).unwrap().rules[0].install.version, "2.10");
    // Merged text is accepted as it is.
    let text = "name: n\ntarget: t\nrules:\n  - install:\n      <<: {version: '2.10'}\n      package: p\n      ecu: E\n";
    assert_eq!(parse(text).unwrap().rules[0].install.version, "2.10");
    // The file's own keys win over merged ones, the first merged mapping over
    // later ones; a problem in a merged value is placed where it was written.
    let text = "name: n\ntarget: t\nrules:\n\
        \x20 - {when: a, install: &b {package: q, version: '1', ecu: X}}\n\
        \x20 - install: {<<: [{ecu: E, package: r}, *b], package: p}\n";
    let got = &parse(text).unwrap().rules[1].install;
    assert_eq!(
        (got.package.as_str(), got.version.as_str(), got.ecu.as_str()),
        ("p", "1", "E")
    );
    let text = "name: n\ntarget: t\nrules:\n  - install:\n      <<: {version: 2.10, ecu: [E]}\n      package: p\n";
    let e = &errors(text)[0];
    assert_eq!(
        e.to_string(),
        "rules[0].install.ecu: expected a string, found a list (line 5, column 32)"
    );
}

#[test]
fn rules_after_a_catch_all_are_unreachable() {
    let text = "name: n\ntarget: t\nrules:\n\
        \x20 - {when: a, install: {package: p, version: '1', ecu: E}}\n\
        \x20 - {install: {package: p, version: '1', ecu: E}}\n\
        \x20 - {when: b, install: {package: p, version: '1', ecu: E}}\n\
        \x20 - {install: {package: p, version: '1', ecu: E}}\n";
    let errs = errors(text);
    assert_eq!(paths(&errs), ["rules[2]", "rules[3]"]);
    assert_eq!(
        errs[0].message,
        "unreachable: rules[1] has no `when` and matches every vehicle"
    );
    assert_eq!((errs[0].line, errs[0].column), (Some(6), Some(5)));
    // A broken `when` is its own error and does not make the rule a catch-all.
    let text = "name: n\ntarget: t\nrules:\n\
        \x20 - {when: 7, install: {package: p, version: '1', ecu: E}}\n\
        \x20 - {install: {package: p, version: '1', ecu: E}}\n";
    assert_eq!(paths(&errors(text)), ["rules[0].when"]);
}

#[test]
fn wave_rules() {
    let e = only_error("rollout: {waves: [10, 50]}\n");
    assert_eq!(e.path, "rollout.waves[1]");
    assert!(
        e.message.starts_with("the last wave must be 100"),
        "{}",
        e.message
    );
    let errs = errors(&format!(
        "{MINIMAL}rollout: {{waves: [0, 5.5, 5, 120, 100]}}\n"
    ));
    assert_eq!(
        paths(&errs),
        ["rollout.waves[0]", "rollout.waves[2]", "rollout.waves[3]"]
    );
    assert!(errs[0].message.starts_with("0 is out of range"));
    assert_eq!(errs[1].message, "5 is not above the previous wave 5.5");
    assert!(errs[2].message.starts_with("120 is out of range"));
    let e = only_error("rollout: {waves: []}\n");
    assert_eq!(e.path, "rollout.waves");
    let spec = parse(&format!("{MINIMAL}rollout: {{waves: [0.5, 33.3, 100]}}\n")).unwrap();
    assert_eq!(spec.rollout.waves, vec![0.5, 33.3, 100.0]);
}

#[test]
fn rollout_limits() {
    let errs = errors(&format!(
        "{MINIMAL}rollout:\n  max_per_minute: 0\n  max_retries: 11\n  action_timeout: 0s\n  \
         wave_soak: 5\n  failure_threshold: {{percent: 101, min_finished: -1, action: stop}}\n"
    ));
    let got: Vec<(&str, &str)> = errs
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("rollout.max_per_minute", "must be at least 1, found 0"),
            ("rollout.max_retries", "must be between 0 and 10, found 11"),
            (
                "rollout.action_timeout",
                r#"must be longer than 0s, found string "0s"; use `never` for no timeout"#
            ),
            (
                "rollout.wave_soak",
                r#"expected a duration such as "90s" or "1h30m", found number 5"#
            ),
            (
                "rollout.failure_threshold.percent",
                "101 is out of range; must be between 0 and 100"
            ),
            (
                "rollout.failure_threshold.min_finished",
                "must be at least 0, found -1"
            ),
            (
                "rollout.failure_threshold.action",
                r#"expected one of pause, abort, found string "stop""#
            ),
        ]
    );
    let e = only_error("rollout: {max_per_minute: 5000000000}\n");
    assert_eq!(e.message, "must be at most 4294967295, found 5000000000");
    let e = only_error("rollout: {wave_soak: 1x}\n");
    assert_eq!(
        e.message,
        r#"invalid duration "1x": unknown unit `x`; use d, h, m or s"#
    );
    let e = only_error("rollout: {failure_threshold: {action: abort}}\n");
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        (
            "rollout.failure_threshold.percent",
            "missing required field"
        )
    );
}

#[test]
fn schedule_checks() {
    let e = only_error("schedule: {start: 2027-01-01T00:00:00Z, end: 2026-12-01T00:00:00+01:00}\n");
    assert_eq!(e.path, "schedule.end");
    assert_eq!(
        e.message,
        "end 2026-11-30T23:00:00Z is not after start 2027-01-01T00:00:00Z"
    );
    let e = only_error("schedule:\n  start: tomorrow\n");
    assert_eq!(e.path, "schedule.start");
    assert!(
        e.message
            .starts_with(r#""tomorrow" is not an RFC 3339 timestamp"#),
        "{}",
        e.message
    );
    let e = only_error("schedule: {end: 2026}\n");
    assert!(e.message.ends_with("found number 2026"), "{}", e.message);
    let s = parse(&format!(
        "{MINIMAL}schedule: {{start: '2026-12-01T01:00:00+01:00'}}\n"
    ))
    .unwrap()
    .schedule;
    assert_eq!(
        s.start,
        Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
    );
    assert_eq!(s.end, None);
}

#[test]
fn syntax_errors_carry_positions() {
    let errs = errors("name: n\nrules: [\n  - x\n");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "");
    assert!(
        errs[0].line.is_some() && errs[0].column.is_some(),
        "{errs:?}"
    );
    assert!(
        !errs[0].message.contains(" at line "),
        "{}",
        errs[0].message
    );
    let errs = errors("name: a\nname: b\n");
    assert!(
        errs[0].message.contains("duplicate entry"),
        "{}",
        errs[0].message
    );
    let errs = errors("name: n\nrollout:\n  waves: [1]\n  waves: [2]\n");
    assert_eq!(errs[0].path, "rollout");
    assert_eq!(
        errors("")[0].message,
        "the file is empty; expected a campaign mapping"
    );
    assert_eq!(errors("# only a comment\n")[0].path, "");
    assert_eq!(
        errors("- a\n- b\n")[0].message,
        "expected a mapping at the top level, found a list"
    );
    assert_eq!(errors("a: 1\n---\nb: 2\n").len(), 1);
}

#[test]
fn duration_parsing_and_formatting() {
    let cases = [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("72h", 259_200),
        ("2d", 172_800),
        ("1h30m", 5400),
        ("0s", 0),
        ("1d2h3m4s", 93_784),
    ];
    for (text, secs) in cases {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_secs(secs)),
            "{text}"
        );
        let formatted = format_duration(Duration::from_secs(secs));
        assert_eq!(
            parse_duration(&formatted),
            Ok(Duration::from_secs(secs)),
            "{formatted}"
        );
    }
    for (secs, text) in [
        (0, "0s"),
        (90, "1m30s"),
        (5400, "1h30m"),
        (259_200, "72h"),
        (3601, "1h1s"),
    ] {
        assert_eq!(format_duration(Duration::from_secs(secs)), text);
    }
    for bad in [
        "",
        "5",
        "-1h",
        "1x",
        "h",
        "1h30",
        "30m1h",
        "1h1h",
        "1.5h",
        " 1h",
        "99999999999999999999s",
        "213503982334602d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
    }
    assert_eq!(
        parse_duration("5").unwrap_err(),
        r#"invalid duration "5": 5 has no unit; use d, h, m or s"#
    );
    assert_eq!(
        parse_duration("-1h").unwrap_err(),
        r#"invalid duration "-1h": durations cannot be negative"#
    );
    assert!(parse_duration("213503982334602d")
        .unwrap_err()
        .ends_with("it is too large"));
}

#[test]
fn spec_error_display() {
    let mut e = SpecError {
        path: "rollout.waves[2]".into(),
        message: "m".into(),
        line: None,
        column: None,
    };
    assert_eq!(e.to_string(), "rollout.waves[2]: m");
    (e.line, e.column) = (Some(3), Some(7));
    assert_eq!(e.to_string(), "rollout.waves[2]: m (line 3, column 7)");
    e.path.clear();
    assert_eq!(e.to_string(), "m (line 3, column 7)");
}
