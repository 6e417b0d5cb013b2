//! Latency summaries and medians, with the shared mailbench's percentile rule (the sample
//! at rank round(p/100 · (n−1)) of the sorted samples, ties to even as Python rounds), so
//! the numbers compare.

use std::time::Duration;

use serde::Serialize;

/// Mean, median, 99th percentile and maximum of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// The summary of `samples` (sorted here); `None` when there are none.
    pub fn of(samples: &mut [Duration]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let ms = |d: Duration| round(d.as_secs_f64() * 1000.0, 3);
        let total: Duration = samples.iter().sum();
        Some(Latency {
            count: samples.len(),
            mean: ms(total / samples.len() as u32),
            p50: ms(samples[rank(samples.len(), 50.0)]),
            p99: ms(samples[rank(samples.len(), 99.0)]),
            max: ms(samples[samples.len() - 1]),
        })
    }
}

/// Index of percentile `p` among `n` sorted samples (`n` > 0).
fn rank(n: usize, p: f64) -> usize {
    ((p / 100.0 * (n - 1) as f64).round_ties_even() as usize).min(n - 1)
}

/// The median of `values` (mean of the middle two for an even count); `None` if empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

/// `x` rounded to `digits` decimals, for reports that show what was measured, not float noise.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Seconds as a rounded float (microseconds).
pub fn secs(d: Duration) -> f64 {
    round(d.as_secs_f64(), 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = Latency::of(&mut samples).unwrap();
        assert_eq!(l, Latency { count: 100, mean: 50.5, p50: 51.0, p99: 99.0, max: 100.0 });
        let mut one = [Duration::from_micros(1500)];
        assert_eq!(Latency::of(&mut one).unwrap(), Latency { count: 1, mean: 1.5, p50: 1.5, p99: 1.5, max: 1.5 });
        assert_eq!(Latency::of(&mut []), None);
        // Python's round(0.5) is 0: the median of two is the first, as mailbench reports it.
        let mut two = [Duration::from_millis(1), Duration::from_millis(2)];
        assert_eq!(Latency::of(&mut two).unwrap().p50, 1.0);
    }

    #[test]
    fn medians_and_rounding() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median([]), None);
        assert_eq!(round(1.23456, 2), 1.23);
        assert_eq!(secs(Duration::from_nanos(1_234_567_890)), 1.234568);
    }
}
