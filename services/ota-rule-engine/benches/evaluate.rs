//! Evaluations per second of a realistic campaign (target plus three rules)
//! over a generated fleet of 1,000,000 vehicles, on one core: the compiled
//! fast path against the `cel` interpreter it is checked against.
//!
//! cargo bench -p ota-rule-engine --bench evaluate

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ota_common::vehicle::{Ecu, Vehicle};
use ota_rule_engine::{CompiledRuleSet, Preview, Rule, RuleSet};

const FLEET: usize = 1_000_000;
/// The interpreter is measured on a slice: it is too slow for a million.
const INTERPRETED: usize = 50_000;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn fleet() -> Vec<Vehicle> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let now = Utc.timestamp_opt(1_760_000_000, 0).unwrap();
    (0..FLEET)
        .map(|i| {
            let mut v = Vehicle::new(format!("WVWZZZE1Z{:08}", i), now);
            let model = rng.pick(&["ID.3", "ID.4", "ID.5", "ID.7", "Golf", "Passat"]);
            v.model = Some(model.into());
            v.model_year = Some(2015 + rng.below(11) as i32);
            v.platform = Some(
                if model.starts_with("ID") {
                    "MEB"
                } else {
                    rng.pick(&["MQB", "MQB-evo"])
                }
                .into(),
            );
            // a few vehicles lack data, as real inventories do
            v.gateway = rng
                .chance(97)
                .then(|| rng.pick(&["hcp3", "icas1", "icas3", "mib3"]).into());
            v.protocol = Some(rng.pick(&["mqtt", "http"]).into());
            v.region = rng
                .chance(99)
                .then(|| rng.pick(&["EU", "EU", "EU", "NA", "CN", "APAC"]).into());
            v.country = Some(rng.pick(&["DE", "FR", "US", "CN", "JP", "IT"]).into());
            v.tags
                .push(rng.pick(&["fleet-a", "fleet-b", "fleet-c"]).into());
            if rng.chance(5) {
                v.tags.push("test-fleet".into());
            }
            v.attributes
                .insert("color".into(), rng.pick(&["blue", "black", "white"]).into());
            if rng.chance(95) {
                let sw = format!("2.{}.{}", rng.below(13), rng.below(10));
                v.ecus.insert(
                    "BMS".into(),
                    Ecu {
                        hw: "H2".into(),
                        sw,
                    },
                );
            }
            v.ecus.insert(
                "HU".into(),
                Ecu {
                    hw: "MIB3".into(),
                    sw: format!("5.{}.0", rng.below(4)),
                },
            );
            v
        })
        .collect()
}

fn campaign() -> RuleSet {
    let rule = |when: &str, action: &str| Rule {
        when: when.into(),
        action: action.into(),
    };
    RuleSet {
        target: r#"vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0 && !("test-fleet" in vehicle.tags)"#
            .into(),
        rules: vec![
            rule(r#"vehicle.gateway == "hcp3""#, "bms-fw-hcp3"),
            rule(r#"vehicle.model in ["ID.3", "ID.4"] && vehicle.model_year >= 2021"#, "bms-fw-id"),
            rule(r#"vehicle.platform == "MEB""#, "bms-fw-meb"),
        ],
    }
}

fn run(c: &CompiledRuleSet, vehicles: &[Vehicle]) -> usize {
    let mut actions = 0;
    for v in vehicles {
        actions += usize::from(black_box(c.decide(v)).rule_index().is_some());
    }
    actions
}

fn bench(crit: &mut Criterion) {
    let vehicles = fleet();
    let compiled = CompiledRuleSet::compile(&campaign()).expect("valid campaign");
    assert_eq!(compiled.fast_path_coverage(), (4, 4));
    let interpreted = CompiledRuleSet::compile(&campaign())
        .unwrap()
        .interpreter_only();
    // both paths pick the same vehicles before anything is timed
    let slice = &vehicles[..INTERPRETED];
    assert_eq!(run(&compiled, slice), run(&interpreted, slice));

    let mut group = crit.benchmark_group("evaluate");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(FLEET as u64));
    group.bench_function("compiled/1M vehicles", |b| {
        b.iter(|| run(&compiled, &vehicles))
    });
    // what a preview adds: the breakdowns and samples
    group.bench_function("preview counting/1M vehicles", |b| {
        b.iter(|| {
            let mut p = Preview::new(&compiled, 10);
            vehicles.iter().for_each(|v| p.add(&compiled, v));
            p.matched
        })
    });
    group.throughput(Throughput::Elements(INTERPRETED as u64));
    group.bench_function("interpreter/50k vehicles", |b| {
        b.iter(|| run(&interpreted, slice))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
