//! Evaluations per second of a realistic campaign (target plus three rules)
//! over a generated fleet of 1,000,000 vehicles, on one core: the compiled
//! fast path against the `cel` interpreter it is checked against. Then, in
//! the `cost` group, how long the costliest admitted expressions take.
//!
//! cargo bench -p ota-rule-engine --bench evaluate

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ota_common::vehicle::{Ecu, Vehicle};
use ota_rule_engine::{
    CompiledRuleSet, Preview, Rule, RuleSet, MAX_EXPRESSION_COST, VEHICLE_BOUNDS,
};

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

/// A vehicle at every cap of the cost model, with texts of the longest.
fn largest_vehicle() -> Vehicle {
    let b = VEHICLE_BOUNDS;
    let text = |i: u64| format!("{i:0>width$}", width = b.text_bytes as usize);
    let mut v = Vehicle::new("WVWZZZE1ZMP000001", Utc.timestamp_opt(0, 0).unwrap());
    v.model = Some(text(0));
    v.tags = (0..b.tags).map(text).collect();
    v.attributes = (0..b.attributes).map(|i| (text(i), text(i))).collect();
    v.ecus = (0..b.ecus)
        .map(|i| {
            let ecu = Ecu {
                hw: text(i),
                sw: text(i),
            };
            (text(i), ecu)
        })
        .collect();
    v
}

/// What a step of the cost model takes on the interpreter: expressions
/// close to [`MAX_EXPRESSION_COST`], decided for the largest vehicle.
fn cost(crit: &mut Criterion) {
    let v = largest_vehicle();
    let list = (1..=95)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let cases = [
        (
            "nested all over literals",
            format!("[{list}].all(a, [{list}].all(b, [1,2,3,4,5,6,7].all(c, a + b + c > 0)))"),
        ),
        (
            "long texts of the largest vehicle",
            "vehicle.attributes.all(k, vehicle.attributes[k] != k + 'x' && !vehicle.attributes[k].contains(k + 'x'))".to_owned(),
        ),
        (
            "regular expressions over tags",
            "vehicle.tags.exists(t, t.matches('^fleet-[a-z]+$'))".to_owned(),
        ),
    ];
    let mut group = crit.benchmark_group("cost");
    group.sample_size(10);
    for (name, target) in cases {
        let rules = RuleSet {
            target,
            rules: vec![],
        };
        let compiled = CompiledRuleSet::compile(&rules).expect("within the budget");
        let steps = compiled.cost();
        assert!(steps <= MAX_EXPRESSION_COST);
        // elements: steps of the cost model, so the throughput reads as
        // steps per second
        group.throughput(Throughput::Elements(steps));
        group.bench_function(format!("{name}/{steps} steps"), |b| {
            b.iter(|| black_box(compiled.decide(&v)).target_matched())
        });
    }
    group.finish();
}

criterion_group!(benches, bench, cost);
criterion_main!(benches);
