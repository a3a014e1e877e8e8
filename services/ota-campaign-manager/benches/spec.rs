//! Reading and checking hostile campaign files, the work a `POST
//! /api/v1/campaigns:validate` causes in the campaign manager before the rule
//! engine is asked: each input is at most 1 MiB (the file limit) and built to
//! make one part of the check as expensive as it can be.
//!
//! - `alias_bomb`: 9 KB that stand for 200 million nodes;
//! - `flat_list`: 1 MiB of one-character list items (stops at the node limit);
//! - `broken_rules`: 1 MiB of rules with long package names, each with
//!   problems, listed with their positions and capped;
//! - `long_expressions`: 1,000 rules with a 1 KB block-scalar `when` each,
//!   every expression placed in the file at its end, as the rule engine's
//!   errors are;
//! - `long_keys`: 1 MiB of unknown 1,000-character keys.
//!
//! cargo bench -p ota-campaign-manager --bench spec

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ota_campaign_manager::spec::{self, MAX_FILE_BYTES};

const HEAD: &str = "name: n\ntarget: 'true'\nrules:\n";
const RULE: &str = "  - install: {package: p, version: '1', ecu: E}\n";

fn alias_bomb() -> String {
    let mut text = format!("{HEAD}{RULE}x0: &a0 [{}]\n", vec!["a"; 2000].join(", "));
    for (i, n) in [(1, 500), (2, 50), (3, 4)] {
        let items = vec![format!("*a{}", i - 1); n].join(", ");
        text.push_str(&format!("x{i}: &a{i} [{items}]\n"));
    }
    text
}

fn fill(mut text: String, item: impl Fn(usize) -> String, tail: &str) -> String {
    let mut i = 0;
    loop {
        let next = item(i);
        if text.len() + next.len() + tail.len() > MAX_FILE_BYTES {
            break;
        }
        text.push_str(&next);
        i += 1;
    }
    text.push_str(tail);
    text
}

fn flat_list() -> String {
    fill(format!("{HEAD}{RULE}x: ["), |_| "a,".to_owned(), "a]\n")
}

fn broken_rules() -> String {
    let package = "p".repeat(120);
    fill(
        HEAD.to_owned(),
        |_| format!("  - {{when: 7, install: {{package: {package}, version: 1.0, ecu: [E]}}}}\n"),
        "",
    )
}

fn long_expressions() -> String {
    let body = "vehicle.model == \"ID.4\" &&\n        ".repeat(26);
    let mut text = HEAD.to_owned();
    for _ in 0..1000 {
        text.push_str(&format!(
            "  - when: |\n        {body}vehicle.region ==\n    install: {{package: p, version: '1', ecu: E}}\n"
        ));
    }
    text
}

fn long_keys() -> String {
    fill(
        format!("{HEAD}{RULE}"),
        |i| format!("{i:06}{}: 1\n", "k".repeat(994)),
        "",
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("campaign_file");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, text) in [
        ("alias_bomb", alias_bomb()),
        ("flat_list", flat_list()),
        ("broken_rules", broken_rules()),
        ("long_keys", long_keys()),
    ] {
        assert!(text.len() <= MAX_FILE_BYTES, "{name}: {}", text.len());
        assert!(spec::parse(&text).is_err(), "{name} should be refused");
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| spec::listed(spec::check(black_box(&text)).errors))
        });
    }
    let text = long_expressions();
    assert!(text.len() <= MAX_FILE_BYTES, "{}", text.len());
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("long_expressions", |b| {
        b.iter(|| {
            let checked = spec::check(black_box(&text));
            let spec = checked.spec.as_ref().expect("a campaign");
            for (i, rule) in spec.rules.iter().enumerate() {
                let when = rule.when.as_deref().unwrap_or_default();
                let lines = when.lines().count() as u32;
                let path = format!("rules[{i}].when");
                black_box(checked.expression_position(&path, lines, 20));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
