//! Round-trip statistics: nearest-rank percentiles over every measured sample.
//!
//! Samples are µs in a `Vec<u32>` (1000 calls × 50 frames/s × 60 s = 3 M samples = 12 MB), sorted
//! once at the end: exact percentiles, no bucket error.

use serde::Serialize;

/// Round trip of the measured frames, in ms with µs resolution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RttSummary {
    /// Frames measured (echoes of frames sent after each call's warm-up).
    pub samples: u64,
    /// Arithmetic mean, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Slowest round trip, ms.
    pub max_ms: f64,
}

impl RttSummary {
    /// Summarizes round trips given in µs (sorts them in place). All zero when `samples_us` is empty.
    pub fn from_micros(samples_us: &mut [u32]) -> Self {
        samples_us.sort_unstable();
        let ms = |p: f64| percentile(samples_us, p).map_or(0.0, micros_to_ms);
        let total: u64 = samples_us.iter().map(|&us| u64::from(us)).sum();
        let mean_us = if samples_us.is_empty() {
            0.0
        } else {
            total as f64 / samples_us.len() as f64
        };
        RttSummary {
            samples: samples_us.len() as u64,
            mean_ms: (mean_us).round() / 1000.0,
            p50_ms: ms(50.0),
            p90_ms: ms(90.0),
            p99_ms: ms(99.0),
            p999_ms: ms(99.9),
            max_ms: ms(100.0),
        }
    }
}

/// µs as ms, exact to the µs (prints with at most 3 decimals).
fn micros_to_ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

/// The nearest-rank `p`th percentile (0–100) of `sorted` (ascending): the smallest sample with at
/// least `p`% of the samples at or below it. `None` for no samples.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps float noise (99.9 / 100 × 1000 = 999.000…1) from moving up a rank.
    let rank = (p / 100.0 * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_known_samples() {
        let mut samples: Vec<u32> = (1..=1000).rev().collect();
        let summary = RttSummary::from_micros(&mut samples);
        assert_eq!(summary.samples, 1000);
        assert_eq!(summary.p50_ms, 0.5);
        assert_eq!(summary.p90_ms, 0.9);
        assert_eq!(summary.p99_ms, 0.99);
        assert_eq!(summary.p999_ms, 0.999);
        assert_eq!(summary.max_ms, 1.0);
        assert_eq!(summary.mean_ms, 0.501);
    }

    #[test]
    fn percentiles_of_tiny_and_empty_sets() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 51.0), Some(3));
        assert_eq!(percentile(&[1, 2, 3, 4], 100.0), Some(4));
        assert_eq!(RttSummary::from_micros(&mut []), RttSummary::default());
    }
}
