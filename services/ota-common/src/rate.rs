//! Per-vehicle request rate, for every vehicle-facing protocol (HTTP, DDI,
//! MQTT): token buckets keyed by VIN. Keying by IP would throttle whole
//! fleets at once, since thousands of vehicles share one carrier NAT
//! address.
//!
//! One policy ([`VehicleLimits`]) with two budgets per vehicle: polls (what
//! a device repeats in a loop: fetching its actions or deployment) and
//! reports (every write: status, inventory, DDI feedback and configData,
//! MQTT status, inventory and presence). Reports get their own, larger
//! budget, so a vehicle that polls eagerly can still report, and one that
//! reports in a loop cannot write the database without bound.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shards keep concurrent polls of different vehicles off one lock.
const SHARDS: usize = 64;
/// Buckets a shard holds before it drops the idle (full) ones.
const SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl RateLimit {
    /// Polls: `adapters.vehicle_rate_per_s`, `adapters.vehicle_burst`.
    pub const POLLS: Self = Self {
        per_second: 2.0,
        burst: 10,
    };
    /// Reports: `adapters.report_rate_per_s`, `adapters.report_burst`. A
    /// whole install (accepted, a few progress steps, the outcome, the new
    /// inventory) fits in the burst.
    pub const REPORTS: Self = Self {
        per_second: 5.0,
        burst: 20,
    };
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::POLLS
    }
}

/// Which of a vehicle's budgets a request takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Poll,
    Report,
}

impl Budget {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Report => "report",
        }
    }
}

/// The rates of both budgets.
#[derive(Debug, Clone, Copy)]
pub struct VehicleRates {
    pub polls: RateLimit,
    pub reports: RateLimit,
}

impl Default for VehicleRates {
    fn default() -> Self {
        Self {
            polls: RateLimit::POLLS,
            reports: RateLimit::REPORTS,
        }
    }
}

/// Both budgets of every vehicle. One instance is shared by the adapters of
/// a process, so speaking another protocol does not buy a vehicle more.
pub struct VehicleLimits {
    polls: Limiter,
    reports: Limiter,
}

impl VehicleLimits {
    pub fn new(rates: VehicleRates) -> Self {
        Self {
            polls: Limiter::new(rates.polls),
            reports: Limiter::new(rates.reports),
        }
    }

    /// Takes one request from the vehicle's `budget`; `Err` says how long
    /// until the next one is allowed. Refusals are counted in
    /// `ota_vehicle_rate_limited_total{budget}`.
    pub fn check(&self, vin: &str, budget: Budget) -> Result<(), Duration> {
        let limiter = match budget {
            Budget::Poll => &self.polls,
            Budget::Report => &self.reports,
        };
        limiter.check(vin).inspect_err(|_| {
            metrics::counter!("ota_vehicle_rate_limited_total", "budget" => budget.as_str())
                .increment(1);
        })
    }
}

impl Default for VehicleLimits {
    fn default() -> Self {
        Self::new(VehicleRates::default())
    }
}

/// A Retry-After header's value for a wait the limiter returned: whole
/// seconds, rounded up, at least 1.
pub fn retry_after_s(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Shard {
    buckets: HashMap<String, Bucket>,
    sweep_at: usize,
}

pub struct Limiter {
    limit: RateLimit,
    shards: Vec<Mutex<Shard>>,
    min_sweep: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_sweep(limit, SWEEP_AT)
    }

    fn with_sweep(limit: RateLimit, min_sweep: usize) -> Self {
        Self {
            limit,
            min_sweep,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        sweep_at: min_sweep,
                    })
                })
                .collect(),
            hasher: Default::default(),
        }
    }

    /// Takes one request from the vehicle's bucket; `Err` says how long
    /// until the next one is allowed.
    pub fn check(&self, vin: &str) -> Result<(), Duration> {
        self.check_at(vin, Instant::now())
    }

    fn check_at(&self, vin: &str, now: Instant) -> Result<(), Duration> {
        let rate = self.limit.per_second.max(f64::MIN_POSITIVE);
        let burst = f64::from(self.limit.burst.max(1));
        let mut shard = self.shards[self.hasher.hash_one(vin) as usize % SHARDS]
            .lock()
            .expect("rate limit shard");
        if shard.buckets.len() >= shard.sweep_at {
            // A bucket that has refilled completely is the same as no
            // bucket: dropping it forgets nothing.
            let full_after = Duration::from_secs_f64(burst / rate);
            shard
                .buckets
                .retain(|_, b| now.saturating_duration_since(b.at) < full_after);
            shard.sweep_at = (shard.buckets.len() * 2).max(self.min_sweep);
        }
        let b = shard.buckets.entry(vin.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(retry_after_s(Duration::ZERO), 1);
        assert_eq!(retry_after_s(Duration::from_millis(200)), 1);
        assert_eq!(retry_after_s(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1200)), 2);
    }

    #[test]
    fn burst_then_sustained_rate_per_vehicle() {
        let l = Limiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("A", t0).is_ok());
        }
        let wait = l.check_at("A", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(l.check_at("B", t0).is_ok(), "other vehicles are unaffected");
        assert!(l.check_at("A", t0 + Duration::from_millis(500)).is_ok());
        assert!(l.check_at("A", t0 + Duration::from_millis(500)).is_err());
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(
                l.check_at("A", later).is_ok(),
                "refills only up to the burst"
            );
        }
        assert!(l.check_at("A", later).is_err());
    }

    #[test]
    fn polls_and_reports_are_separate_budgets() {
        let l = VehicleLimits::new(VehicleRates {
            polls: RateLimit {
                per_second: 0.001,
                burst: 1,
            },
            reports: RateLimit {
                per_second: 0.001,
                burst: 2,
            },
        });
        assert!(l.check("A", Budget::Poll).is_ok());
        assert!(l.check("A", Budget::Poll).is_err());
        assert!(l.check("A", Budget::Report).is_ok(), "polls used up");
        assert!(l.check("A", Budget::Report).is_ok());
        assert!(l.check("A", Budget::Report).is_err());
        assert!(l.check("B", Budget::Report).is_ok(), "per vehicle");
    }

    #[test]
    fn idle_buckets_are_dropped() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 1,
        };
        let l = Limiter::with_sweep(limit, 4);
        let t0 = Instant::now();
        for i in 0..1000 {
            let _ = l.check_at(&format!("V{i}"), t0);
        }
        let later = t0 + Duration::from_secs(1);
        for i in 0..3000 {
            let _ = l.check_at(&format!("W{i}"), later);
        }
        let held: usize = l
            .shards
            .iter()
            .map(|s| s.lock().unwrap().buckets.len())
            .sum();
        assert!(held < 3500, "idle buckets were kept: {held}");
    }
}
