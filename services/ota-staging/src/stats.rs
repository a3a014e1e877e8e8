//! What Stats reports about this process's staging: events processed and
//! the recent lag distribution. Prometheus has the long view; these answer
//! "how is it right now" without a metrics stack.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lag samples older than this no longer count.
pub const LAG_WINDOW: Duration = Duration::from_secs(300);
/// At most this many samples are kept, so a burst cannot grow memory.
const LAG_SAMPLES: usize = 10_000;

#[derive(Default)]
pub struct StagingStats {
    events: AtomicU64,
    lag: Mutex<VecDeque<(Instant, f64)>>,
}

impl StagingStats {
    pub fn record_events(&self, n: u64) {
        self.events.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("ota_staging_events_total").increment(n);
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn record_lag(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        metrics::histogram!("ota_staging_lag_seconds").record(seconds);
        let mut lag = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        if lag.len() == LAG_SAMPLES {
            lag.pop_front();
        }
        lag.push_back((Instant::now(), seconds));
    }

    /// p50 and p99 of the lags within [`LAG_WINDOW`], zero without samples.
    pub fn lag_quantiles(&self) -> (f64, f64) {
        let mut recent: Vec<f64> = {
            let mut lag = self.lag.lock().unwrap_or_else(|e| e.into_inner());
            let cutoff = Instant::now().checked_sub(LAG_WINDOW);
            while let (Some(cutoff), Some((at, _))) = (cutoff, lag.front()) {
                if *at >= cutoff {
                    break;
                }
                lag.pop_front();
            }
            lag.iter().map(|(_, s)| *s).collect()
        };
        if recent.is_empty() {
            return (0.0, 0.0);
        }
        recent.sort_by(f64::total_cmp);
        (quantile(&recent, 0.50), quantile(&recent, 0.99))
    }
}

/// Nearest-rank quantile of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_recent_lags() {
        let stats = StagingStats::default();
        assert_eq!(stats.lag_quantiles(), (0.0, 0.0));
        for i in 1..=100 {
            stats.record_lag(f64::from(i));
        }
        assert_eq!(stats.lag_quantiles(), (50.0, 99.0));
    }

    #[test]
    fn keeps_a_bounded_number_of_samples() {
        let stats = StagingStats::default();
        for _ in 0..LAG_SAMPLES + 10 {
            stats.record_lag(1.0);
        }
        assert_eq!(stats.lag.lock().unwrap().len(), LAG_SAMPLES);
    }
}
