use std::sync::Arc;

use futures::stream;
use ota_proto::v1 as pb;

use super::{bare, fleet, id4, rule_set, test_fleet_id3, unusual};
use crate::preview::{NO_RULE, UNSET};
use crate::ruleset::NO_RULE_MATCHED;
use crate::{preview, CompiledRuleSet, EvalPool, Evaluation, RuleSet, RuleSetCache};

const TARGET: &str = r#"vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0 && !("test-fleet" in vehicle.tags)"#;

fn campaign() -> RuleSet {
    rule_set(
        TARGET,
        &[
            (r#"vehicle.gateway == "hcp3""#, "bms-fw-hcp3"),
            (r#"vehicle.model == "ID.3""#, "bms-fw-id3"),
            ("", "bms-fw"),
        ],
    )
}

fn compile(rules: &RuleSet) -> CompiledRuleSet {
    CompiledRuleSet::compile(rules).unwrap()
}

#[test]
fn the_first_matching_rule_gives_the_action() {
    let c = compile(&campaign());
    let e = c.evaluate(&id4());
    assert_eq!(
        e,
        Evaluation {
            vin: "WVWZZZE1ZMP000001".into(),
            target_matched: true,
            rule_index: Some(0),
            action: Some("bms-fw-hcp3".into()),
            error: None,
        }
    );
    assert_eq!(e.reason(), "rules[0] matched");

    let mut other_gateway = id4();
    other_gateway.gateway = Some("icas1".into());
    let e = c.evaluate(&other_gateway);
    assert_eq!(
        (e.rule_index, e.action.as_deref()),
        (Some(2), Some("bms-fw")),
        "empty `when` is always"
    );

    let e = c.evaluate(&test_fleet_id3());
    assert_eq!(
        (e.target_matched, e.rule_index, &e.error),
        (false, None, &None)
    );
    assert_eq!(e.reason(), "target did not match");
}

#[test]
fn a_target_match_without_a_rule_is_reported_as_such() {
    let c = compile(&rule_set("true", &[(r#"vehicle.gateway == "none""#, "x")]));
    let e = c.evaluate(&id4());
    assert_eq!(
        (e.target_matched, e.rule_index, &e.action, &e.error),
        (true, None, &None, &None)
    );
    assert_eq!(e.reason(), NO_RULE_MATCHED);
    let pb = pb::Evaluation::from(e);
    assert_eq!(
        (pb.target_matched, pb.rule_index, pb.error.as_str()),
        (true, -1, NO_RULE_MATCHED)
    );
}

#[test]
fn a_missing_ecu_is_a_non_match_with_the_reason_and_the_batch_goes_on() {
    let c = compile(&campaign());
    let vehicles = vec![id4(), bare(), test_fleet_id3(), id4()];
    let batch = c.evaluate_batch(&vehicles);
    assert_eq!(
        (batch.results.len(), batch.matched, batch.errors),
        (4, 2, 1)
    );
    let failed = &batch.results[1];
    assert_eq!((failed.target_matched, failed.rule_index), (false, None));
    // `bare` lacks the region and the BMS: either is an error `&&` cannot absorb
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .starts_with("target: no such key `"),
        "{failed:?}"
    );

    let mut no_bms = id4();
    no_bms.ecus.remove("BMS");
    let e = c.evaluate(&no_bms);
    assert_eq!(e.error.as_deref(), Some("target: no such key `BMS`"));
    assert_eq!(e.reason(), "evaluation failed: target: no such key `BMS`");
    let pb = pb::Evaluation::from(e);
    assert_eq!(
        (pb.target_matched, pb.rule_index, pb.error.as_str()),
        (false, -1, "target: no such key `BMS`")
    );

    // guarded with has(), the same vehicle is a clean non-match
    let guarded = compile(&rule_set(
        r#"has(vehicle.ecus.BMS) && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0"#,
        &[],
    ));
    assert_eq!(guarded.evaluate(&no_bms).error, None);
    assert!(!guarded.evaluate(&no_bms).target_matched);
}

#[test]
fn a_failing_rule_fails_the_vehicle_instead_of_falling_through() {
    let c = compile(&rule_set(
        "true",
        &[(r#"vehicle.ecus.HU.sw == "5.1.0""#, "hu"), ("", "fallback")],
    ));
    let e = c.evaluate(&test_fleet_id3());
    assert_eq!(
        (e.target_matched, e.rule_index, e.error.as_deref()),
        (false, None, Some("rules[0].when: no such key `HU`"))
    );
    assert_eq!(c.evaluate(&id4()).action.as_deref(), Some("hu"));
}

#[test]
fn version_cmp_orders_versions_in_expressions() {
    let c = compile(&rule_set(
        r#"version_cmp("2.10.0", "2.9.1") == 1 && version_cmp("1.0", "1.0.0") == 0 && version_cmp("1.0.0-rc1", "1.0.0") == -1"#,
        &[],
    ));
    assert!(c.evaluate(&bare()).target_matched);
    let newer = compile(&rule_set(
        r#"version_cmp(vehicle.ecus.BMS.sw, "2.9.1") > 0"#,
        &[],
    ));
    assert!(
        newer.evaluate(&test_fleet_id3()).target_matched,
        "2.10.0 > 2.9.1"
    );
    assert!(!newer.evaluate(&id4()).target_matched, "2.2.0 < 2.9.1");
}

#[test]
fn the_fast_path_covers_the_typical_campaign_and_agrees_with_the_interpreter() {
    let c = compile(&campaign());
    assert_eq!(c.fast_path_coverage(), (3, 3));
    let reference = compile(&campaign()).interpreter_only();
    assert_eq!(reference.fast_path_coverage(), (0, 3));
    for v in fleet() {
        assert_eq!(c.evaluate(&v), reference.evaluate(&v), "{}", v.vin);
    }
    // compiled, but a map's size is left to the interpreter at run time
    let deferred = compile(&rule_set("size(vehicle.attributes) == 1", &[]));
    assert_eq!(deferred.fast_path_coverage(), (1, 1));
    let matched: Vec<bool> = fleet()
        .iter()
        .map(|v| deferred.evaluate(v).target_matched)
        .collect();
    assert_eq!(matched, vec![true, false, true, false]);

    let outside = compile(&rule_set("vehicle.tags.exists(t, t == 'fleet-a')", &[]));
    assert_eq!(outside.fast_path_coverage(), (0, 1));
    assert!(outside.evaluate(&id4()).target_matched);
}

#[test]
fn explain_shows_every_sub_expression_and_the_winner() {
    let c = compile(&campaign());
    let x = c.explain(&id4());
    assert_eq!(x.result, c.evaluate(&id4()));
    assert_eq!(x.target.expression, TARGET);
    assert_eq!(x.target.value.as_deref(), Some("true"));
    assert_eq!(x.rules.len(), 3);
    assert_eq!(x.rules[0].expression, r#"vehicle.gateway == "hcp3""#);
    assert_eq!(x.rules[0].value.as_deref(), Some("true"));
    let gateway = &x.rules[0].children[0];
    assert_eq!(
        (gateway.expression.as_str(), gateway.value.as_deref()),
        ("vehicle.gateway", Some("\"hcp3\""))
    );
    assert_eq!(x.rules[2].expression, "", "the empty `when`");

    // find version_cmp(...) < 0 somewhere below the target
    fn find<'a>(n: &'a crate::ExplainNode, expr: &str) -> Option<&'a crate::ExplainNode> {
        if n.expression == expr {
            return Some(n);
        }
        n.children.iter().find_map(|c| find(c, expr))
    }
    let cmp = find(&x.target, r#"version_cmp(vehicle.ecus.BMS.sw, "2.3.1")"#).unwrap();
    assert_eq!(cmp.value.as_deref(), Some("-1"));

    let mut no_bms = id4();
    no_bms.ecus.remove("BMS");
    let x = c.explain(&no_bms);
    assert_eq!(x.target.error.as_deref(), Some("no such key `BMS`"));
    let sw = find(&x.target, "vehicle.ecus.BMS.sw").unwrap();
    assert_eq!(sw.error.as_deref(), Some("no such key `BMS`"));
    let ecus = find(&x.target, "vehicle.ecus").unwrap();
    assert!(ecus.value.as_deref().unwrap().contains("\"HU\""));
    assert_eq!(x.result.error.as_deref(), Some("target: no such key `BMS`"));

    let pb = pb::ExplainResponse::from(x);
    assert_eq!(pb.rules.len(), 3);
    assert_eq!(pb.target.unwrap().error, "no such key `BMS`");
}

#[test]
fn explain_shows_a_comprehension_as_written_and_what_it_ranges_over() {
    let c = compile(&rule_set(
        r#"vehicle.tags.exists(t, t.startsWith("fleet-"))"#,
        &[],
    ));
    let x = c.explain(&id4());
    assert_eq!(
        x.target.expression,
        r#"vehicle.tags.exists(t, t.startsWith("fleet-"))"#
    );
    assert_eq!(x.target.value.as_deref(), Some("true"));
    assert_eq!(x.target.children.len(), 1);
    assert_eq!(
        x.target.children[0].value.as_deref(),
        Some(r#"["fleet-a"]"#)
    );
}

fn batches(
    vehicles: Vec<ota_common::vehicle::Vehicle>,
    size: usize,
) -> Vec<Result<Vec<ota_common::vehicle::Vehicle>, tonic::Status>> {
    vehicles.chunks(size).map(|c| Ok(c.to_vec())).collect()
}

#[tokio::test]
async fn preview_counts_matches_by_field_and_rule_with_progress() {
    let c = compile(&campaign());
    let mut other = id4();
    other.vin = "WVWZZZE1ZMP000005".into();
    other.gateway = Some("icas1".into());
    other.platform = None;
    let mut no_bms = id4();
    no_bms.vin = "WVWZZZE1ZMP000006".into();
    no_bms.ecus.remove("BMS");
    let vehicles = vec![id4(), bare(), test_fleet_id3(), unusual(), other, no_bms];

    let mut seen = Vec::new();
    let pool = EvalPool::shared();
    let p = preview(
        &pool,
        Arc::new(c),
        stream::iter(batches(vehicles, 4)),
        2,
        |p| seen.push(p.scanned),
    )
    .await
    .unwrap();
    assert_eq!(seen, vec![4, 6], "progress after each batch");
    assert_eq!((p.scanned, p.matched, p.errors), (6, 3, 2));
    assert_eq!(p.by_rule.get("rules[0]"), Some(&2));
    assert_eq!(p.by_rule.get("rules[2]"), Some(&1), "not hcp3, not an ID.3");
    assert_eq!(p.by_platform.get(UNSET), Some(&1));
    assert_eq!(p.by_gateway.get("icas1"), Some(&1));
    assert_eq!(p.by_model.get("ID.4"), Some(&2));
    assert_eq!(p.by_region.get("EU"), Some(&3));
    assert_eq!(
        p.sample_vins,
        vec!["WVWZZZE1ZMP000001", "WVWZZZE1ZMP000004"]
    );
    assert_eq!(p.error_samples.len(), 2);
    assert_eq!(p.error_samples[1].vin, "WVWZZZE1ZMP000006");
    assert_eq!(p.error_samples[1].error, "target: no such key `BMS`");

    let pb = pb::PreviewResponse::from(p.clone());
    assert_eq!(
        pb.by_rule[0],
        pb::Count {
            key: "rules[0]".into(),
            count: 2
        }
    );
    assert_eq!(pb.by_model.iter().map(|c| c.count).sum::<u64>(), 3);
    let back = crate::Preview::from(pb);
    assert_eq!(back.by_model, p.by_model);
    assert_eq!(
        (back.sample_vins, back.error_samples.len()),
        (p.sample_vins, 0)
    );
}

#[tokio::test]
async fn preview_reports_target_matches_without_a_rule() {
    let c = compile(&rule_set("true", &[("vehicle.model == 'ID.3'", "x")]));
    let pool = EvalPool::shared();
    let p = preview(
        &pool,
        Arc::new(c),
        stream::iter(batches(fleet(), 10)),
        10,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        (p.scanned, p.matched, p.errors),
        (4, 3, 1),
        "bare has no model: an error"
    );
    assert_eq!(p.by_rule.get(NO_RULE), Some(&2));
    assert_eq!(p.by_rule.get("rules[0]"), Some(&1));
}

#[tokio::test]
async fn a_failing_stream_ends_the_preview_after_reporting_progress() {
    let c = compile(&campaign());
    let items = vec![
        Ok(vec![id4(), id4()]),
        Err(tonic::Status::unavailable("store went away")),
        Ok(vec![id4()]),
    ];
    let mut last = 0;
    let pool = EvalPool::shared();
    let err = preview(&pool, Arc::new(c), stream::iter(items), 10, |p| {
        last = p.scanned
    })
    .await
    .unwrap_err();
    assert_eq!((err.message(), last), ("store went away", 2));
}

#[test]
fn the_cache_compiles_each_rule_set_once() {
    let cache = RuleSetCache::new(2);
    let a = cache.get(&campaign()).unwrap();
    let again = cache.get(&campaign()).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &again));
    let mut other = campaign();
    other.rules[0].action = "different".into();
    let b = cache.get(&other).unwrap();
    assert_eq!(b.action(0), Some("different"));
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 2, 2));

    let invalid = rule_set("vehicle.modle == 'x'", &[]);
    assert_eq!(cache.get(&invalid).unwrap_err().len(), 1);
    assert_eq!(cache.get(&invalid).unwrap_err()[0].path, "target");
    assert_eq!(cache.stats().entries, 2, "oldest evicted");
    cache.get(&campaign()).unwrap();
    assert_eq!(cache.stats().misses, 4, "the evicted one is compiled again");
}

#[test]
fn evaluations_survive_the_proto_round_trip() {
    let c = compile(&rule_set(
        "true",
        &[
            ("vehicle.gateway == 'hcp3'", "a"),
            ("vehicle.ecus.HU.sw == '1'", "b"),
        ],
    ));
    let mut no_rule = id4();
    no_rule.gateway = Some("x".into());
    no_rule.ecus.get_mut("HU").unwrap().sw = "2".into();
    for v in [id4(), no_rule, test_fleet_id3()] {
        let e = c.evaluate(&v);
        assert_eq!(Evaluation::from(pb::Evaluation::from(e.clone())), e);
    }
    let x = c.explain(&id4());
    assert_eq!(
        crate::Explanation::from(pb::ExplainResponse::from(x.clone())),
        x
    );
    let errors = crate::validate(&rule_set("vehicle.modle == 1", &[]));
    let back: Vec<crate::ExpressionError> = errors
        .iter()
        .cloned()
        .map(|e| pb::ExpressionError::from(e).into())
        .collect();
    assert_eq!(back, errors);
}
