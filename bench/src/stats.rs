//! Latency samples and their percentiles (nearest rank over every sample:
//! nothing is bucketed or dropped), and medians of repeated runs.

use std::time::Duration;

use serde_json::{Value, json};

/// Latencies in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    micros: Vec<u64>,
}

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Samples {
    pub fn new() -> Samples {
        Samples::default()
    }

    pub fn push(&mut self, d: Duration) {
        self.micros.push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// A sample given in milliseconds (negative values count as 0: a
    /// clock comparison a little below zero is "immediately").
    pub fn push_ms(&mut self, ms: f64) {
        let micros = (ms.max(0.0) * 1000.0).round();
        // Saturating float-to-int conversion: fine for latencies.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        self.micros.push(micros as u64);
    }

    pub fn extend(&mut self, other: Samples) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    pub fn summary(&self) -> Summary {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let count = sorted.len();
        if count == 0 {
            return Summary {
                count: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            };
        }
        let sum: u128 = sorted.iter().map(|&m| u128::from(m)).sum();
        let ms = |micros: u64| micros as f64 / 1000.0;
        Summary {
            count,
            mean_ms: sum as f64 / count as f64 / 1000.0,
            p50_ms: ms(percentile(&sorted, 0.50)),
            p90_ms: ms(percentile(&sorted, 0.90)),
            p99_ms: ms(percentile(&sorted, 0.99)),
            max_ms: ms(sorted[count - 1]),
        }
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `p` of the samples at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let index = (rank as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

impl Summary {
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "mean_ms": round3(self.mean_ms),
            "p50_ms": round3(self.p50_ms),
            "p90_ms": round3(self.p90_ms),
            "p99_ms": round3(self.p99_ms),
            "max_ms": round3(self.max_ms),
        })
    }

    /// `p50 1.23 / p99 4.56 / max 7.89 ms (n=100)`
    pub fn line(self) -> String {
        if self.count == 0 {
            return "no samples".to_owned();
        }
        format!(
            "p50 {:.2} / p99 {:.2} / max {:.2} ms (n={})",
            self.p50_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// Rounds to three decimals, for JSON that stays readable.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A rate per second; 0 when the interval is empty.
pub fn per_second(count: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.50), 50);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&sorted, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
        let mut s = Samples::new();
        for ms in [1.0, 2.0, 3.0, 4.0] {
            s.push_ms(ms);
        }
        let sum = s.summary();
        assert_eq!(sum.count, 4);
        assert!((sum.p50_ms - 2.0).abs() < 1e-9);
        assert!((sum.max_ms - 4.0).abs() < 1e-9);
        assert!((sum.mean_ms - 2.5).abs() < 1e-9);
    }
}
