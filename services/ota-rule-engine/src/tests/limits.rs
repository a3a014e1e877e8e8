//! The bounds on evaluation: the static cost refused at validation, the
//! run-time count behind it, the deadline and the pool that keep a costly
//! evaluation off the async workers.

use std::sync::Arc;
use std::time::Duration;

use ota_proto::v1 as pb;
use pb::rule_engine_server::RuleEngine;
use tonic::{Code, Request};

use super::{fleet, id4, rule_set};
use crate::interp::{context_for, eval, format_value, ENV};
use crate::{
    CompiledRuleSet, EvalPool, InMemoryVehicles, RuleEngineService, RuleSetCache,
    MAX_EXPRESSION_COST,
};

/// `[1,2,…,n]`.
fn list(n: usize) -> String {
    let items: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// The expression that froze the server: 10^12 iterations.
fn attack() -> String {
    let l = list(1000);
    format!("{l}.all(a, {l}.all(b, {l}.all(c, {l}.all(d, a + b + c + d > 0))))")
}

/// 1-based column of the `n`th (from 1) `.all(` in `src`, at the `a`.
fn column_of_all(src: &str, n: usize) -> u32 {
    let (at, _) = src.match_indices(".all(").nth(n - 1).expect("so many");
    at as u32 + 2
}

fn service() -> RuleEngineService<InMemoryVehicles> {
    RuleEngineService::new(InMemoryVehicles::new(fleet()))
}

fn rules(target: &str) -> Option<pb::RuleSet> {
    Some(rule_set(target, &[]).into())
}

#[tokio::test]
async fn the_nested_all_attack_is_refused_at_validation_with_its_cost() {
    let src = attack();
    assert!(src.len() <= crate::MAX_EXPRESSION_BYTES, "{}", src.len());
    let res = service()
        .validate(Request::new(pb::ValidateRequest { rules: rules(&src) }))
        .await
        .unwrap()
        .into_inner();
    assert!(!res.valid);
    assert_eq!(res.errors.len(), 1, "{:?}", res.errors);
    let e = &res.errors[0];
    let estimate: u64 = e
        .message
        .strip_prefix("expression is too costly: estimated cost ")
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", e.message));
    assert!(estimate > 1_000_000_000_000, "{estimate}");
    assert!(
        e.message.ends_with(&format!(
            ", the limit is {MAX_EXPRESSION_COST} (this `all` runs its body 1000 times)"
        )),
        "{}",
        e.message
    );
    // at the first loop, from the inside, that goes over: the third
    let column = column_of_all(&src, 3);
    assert_eq!(
        (e.path.as_str(), e.position),
        ("target", Some(pb::SourcePosition { line: 1, column }))
    );
    let (shown, caret) = e.excerpt.split_once('\n').unwrap();
    let under = caret.chars().count() - 1;
    assert_eq!(shown.chars().skip(under).take(3).collect::<String>(), "all");

    // explain and evaluate compile the same way, before any evaluation
    let err = service()
        .explain(Request::new(pb::ExplainRequest {
            rules: rules(&src),
            vin: id4().vin,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with(&format!(
            "invalid rule set: target:1:{column}: expression is too costly"
        )),
        "{}",
        err.message()
    );
}

#[test]
fn a_cost_just_under_the_budget_still_evaluates() {
    let l = list(50);
    let rs = rule_set(&format!("{l}.all(a, {l}.exists(b, a + b == 51))"), &[]);
    let cost = CompiledRuleSet::compile_with_limit(&rs, u64::MAX)
        .unwrap()
        .cost();
    assert!(cost > 2500, "{cost}");

    let at_budget = CompiledRuleSet::compile_with_limit(&rs, cost).unwrap();
    let e = at_budget.evaluate(&id4());
    assert_eq!((e.target_matched, e.error), (true, None));
    let rs_false = rule_set(&format!("{l}.all(a, {l}.exists(b, a + b == 52))"), &[]);
    let e = CompiledRuleSet::compile_with_limit(&rs_false, cost)
        .unwrap()
        .evaluate(&id4());
    assert_eq!((e.target_matched, e.error), (false, None), "a = 1 has no b");

    let over = CompiledRuleSet::compile_with_limit(&rs, cost - 1).unwrap_err();
    assert_eq!(over.len(), 1);
    assert_eq!(
        over[0].message,
        format!(
            "expression is too costly: estimated cost {cost}, the limit is {} \
             (this `all` runs its body 50 times)",
            cost - 1
        )
    );
}

#[test]
fn a_rule_set_is_bounded_as_a_whole_at_its_costliest_expression() {
    let costly = format!("{}.exists(x, x == 7)", list(300));
    let costliest = format!("{}.exists(x, x == 7)", list(301));
    let mut rules: Vec<(&str, &str)> = vec![(costly.as_str(), "a"); 11];
    rules[4] = (costliest.as_str(), "b");
    let rs = rule_set("vehicle.tags.exists(t, t == 'x')", &rules);
    let compiled = CompiledRuleSet::compile_with_limit(&rs, u64::MAX).unwrap();
    let limit = compiled.rules[4].0.cost;
    assert!(compiled.rules.iter().all(|(c, _)| c.cost <= limit));
    let total_limit = limit * crate::cost::RULE_SET_COST_FACTOR;
    assert!(compiled.cost() > total_limit);

    let errors = CompiledRuleSet::compile_with_limit(&rs, limit).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!((e.path.as_str(), e.line, e.column), ("rules[4].when", 1, 1));
    assert_eq!(
        e.message,
        format!(
            "rule set is too costly: the target and rules together have an estimated cost of {} \
             per vehicle, the limit is {total_limit}; this expression costs {limit}",
            compiled.cost(),
        )
    );
    // one rule fewer fits
    let mut fewer = rs.clone();
    fewer.rules.truncate(8);
    assert!(CompiledRuleSet::compile_with_limit(&fewer, limit).is_ok());
}

#[test]
fn a_vehicle_over_the_assumed_caps_is_stopped_by_the_run_time_count() {
    let c = CompiledRuleSet::compile(&rule_set("vehicle.tags.all(t, t != '')", &[])).unwrap();
    let cost = c.cost();
    let mut v = id4();
    v.tags = (0..crate::VEHICLE_BOUNDS.tags)
        .map(|i| format!("t{i}"))
        .collect();
    let e = c.evaluate(&v);
    assert_eq!((e.target_matched, e.error), (true, None), "within the caps");

    v.tags = (0..=cost).map(|i| format!("t{i}")).collect();
    let e = c.evaluate(&v);
    assert_eq!(
        e.error.as_deref(),
        Some("target: evaluation exceeded its estimated cost")
    );
    let x = c.explain(&v);
    assert_eq!(
        x.target.error.as_deref(),
        Some("evaluation exceeded its estimated cost")
    );
}

/// The guard around comprehension ranges changes no result, value or error.
#[test]
fn guarded_comprehensions_give_what_the_interpreter_gives() {
    const CORPUS: &[&str] = &[
        "vehicle.tags.all(t, t != 'x')",
        "vehicle.tags.exists(t, t == 'fleet-a')",
        "vehicle.tags.exists_one(t, t.startsWith('fleet'))",
        "vehicle.tags.map(t, t + '!') == ['fleet-a!']",
        "vehicle.tags.map(t, t != 'a', size(t)).all(n, n > 0)",
        "vehicle.ecus.filter(e, vehicle.ecus[e].hw.startsWith('H')).size() == 1",
        "vehicle.ecus.all(e, vehicle.ecus[e].sw.size() > 0) && vehicle.tags.exists(t, t.size() < 10)",
        "[1, 2, 3].all(i, vehicle.tags.exists(t, t.size() > i))",
        "vehicle.tags.all(t, vehicle.ecus.XX.sw == t)",
        "vehicle.tags.exists(t, vehicle.ecus.XX.sw == t) || true",
        "[1, 2, 3].all(i, [4, 5].exists(j, i + j == 6))",
        "vehicle.attributes.all(k, vehicle.attributes[k] != vehicle.model)",
    ];
    for src in CORPUS {
        let compiled = CompiledRuleSet::compile(&rule_set(src, &[]))
            .unwrap_or_else(|e| panic!("{src}: {e:?}"))
            .interpreter_only();
        let program = ENV.compile(src).unwrap();
        for v in fleet() {
            let reference = match eval(program.expression(), &context_for(&v)) {
                Ok(value) => Ok(format_value(&value)),
                Err(e) => Err(format!("target: {e}")),
            };
            let e = compiled.evaluate(&v);
            let got = match e.error {
                Some(err) => Err(err),
                None => Ok(e.target_matched.to_string()),
            };
            assert_eq!(got, reference, "{src} on {}", v.vin);
        }
    }
}

#[tokio::test]
async fn an_evaluation_over_its_deadline_answers_deadline_exceeded_and_others_go_on() {
    let pool = Arc::new(EvalPool::new(2, Duration::from_secs(1)));
    // a budget that admits 10^9 iterations: only the deadline stops them
    let cache = Arc::new(RuleSetCache::with_max_cost(16, u64::MAX / 64));
    let svc = Arc::new(
        RuleEngineService::with_cache(InMemoryVehicles::new(fleet()), cache)
            .with_pool(Arc::clone(&pool)),
    );
    let l = list(1000);
    let slow = rules(&format!(
        "{l}.all(a, {l}.all(b, {l}.all(c, a + b + c > 0)))"
    ));
    let valid = svc
        .validate(Request::new(pb::ValidateRequest {
            rules: slow.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid, "{:?}", valid.errors);

    let slow_call = tokio::spawn({
        let svc = Arc::clone(&svc);
        async move {
            svc.evaluate(Request::new(pb::EvaluateRequest {
                rules: slow,
                vehicles: vec![id4().into()],
            }))
            .await
        }
    });
    // the slow evaluation holds a slot
    while pool.idle_slots() == 2 {
        tokio::task::yield_now().await;
    }
    let cheap = svc
        .evaluate(Request::new(pb::EvaluateRequest {
            rules: rules("vehicle.region == 'EU'"),
            vehicles: vec![id4().into()],
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(cheap.results[0].target_matched);
    assert!(
        !slow_call.is_finished(),
        "the cheap call was answered while the slow one ran"
    );

    let err = slow_call.await.unwrap().unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::DeadlineExceeded,
            "evaluation took longer than 1s and was stopped"
        )
    );
    // the runaway loop saw its cancellation and gave its slot back
    for _ in 0..3000 {
        if pool.idle_slots() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.idle_slots(), 2);
}

#[tokio::test]
async fn a_preview_stops_when_its_caller_goes_away() {
    let pool = Arc::new(EvalPool::new(1, Duration::from_secs(600)));
    let cache = Arc::new(RuleSetCache::with_max_cost(16, u64::MAX / 64));
    let many = std::iter::repeat_n(id4(), 10).collect::<Vec<_>>();
    let svc = RuleEngineService::with_cache(InMemoryVehicles::new(many), cache)
        .with_pool(Arc::clone(&pool));
    let l = list(1000);
    let slow = rules(&format!(
        "{l}.all(a, {l}.all(b, {l}.all(c, a + b + c > 0)))"
    ));
    let stream = svc
        .preview_stream(Request::new(pb::PreviewRequest {
            rules: slow,
            sample_size: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    while pool.idle_slots() == 1 {
        tokio::task::yield_now().await;
    }
    drop(stream);
    for _ in 0..3000 {
        if pool.idle_slots() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.idle_slots(), 1, "the counting job stopped");
}
