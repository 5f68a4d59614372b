//! Samples and schedules shared by the benchmarks: latency percentiles, the open-loop schedule of a
//! fixed rate, and the process figures (peak memory, cores) printed beside the timings.

use std::time::Duration;

/// Latency percentiles of one set of samples (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Percentiles {
    /// The percentiles of `nanos` (sorted here); all zero when empty.
    pub fn of(mut nanos: Vec<u64>) -> Percentiles {
        nanos.sort_unstable();
        let at = |fraction| Duration::from_nanos(percentile(&nanos, fraction).unwrap_or(0));
        Percentiles {
            count: nanos.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_nanos(nanos.last().copied().unwrap_or(0)),
        }
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least `fraction` of the
/// samples at or below it (`None` when empty).
fn percentile(sorted: &[u64], fraction: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (fraction.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// A duration as a sample for [`Percentiles::of`] (saturating).
pub fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// When event `index` of a fixed `rate` per second is due, after the start.
pub fn due_offset(index: u64, rate: u32) -> Duration {
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Events due within `duration` at `rate` (the event due exactly at the end excluded).
pub fn requests_within(duration: Duration, rate: u32) -> u64 {
    let count = (duration.as_secs_f64() * f64::from(rate)).ceil();
    if count.is_finite() && count > 0.0 {
        count as u64
    } else {
        0
    }
}

/// The process's peak resident set size in KiB, from `/proc/self/status` (Linux): the high-water
/// mark so far, so one benchmark per process gives a clean figure.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// [`peak_rss_kib`] as text, `n/a` where the system does not say.
pub fn peak_rss_text() -> String {
    peak_rss_kib().map_or_else(|| "n/a".to_owned(), |kib| crate::table::bytes(kib * 1024))
}

/// Logical cores: the figures depend on how many the client and the measured code share.
pub fn logical_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=1_000).rev().collect();
        let figures = Percentiles::of(samples);
        assert_eq!(figures.count, 1_000);
        assert_eq!(figures.p50, Duration::from_nanos(500));
        assert_eq!(figures.p90, Duration::from_nanos(900));
        assert_eq!(figures.p99, Duration::from_nanos(990));
        assert_eq!(figures.p999, Duration::from_nanos(999));
        assert_eq!(figures.max, Duration::from_nanos(1_000));

        assert_eq!(percentile(&[7], 0.5), Some(7));
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[1, 2, 3, 4], 0.99), Some(4));
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }

    #[test]
    fn the_schedule_spaces_requests_evenly_from_the_start() {
        assert_eq!(due_offset(0, 5_000), Duration::ZERO);
        assert_eq!(due_offset(1, 5_000), Duration::from_micros(200));
        assert_eq!(due_offset(5_000, 5_000), Duration::from_secs(1));
        assert_eq!(due_offset(1, 3), Duration::from_nanos(333_333_333));
        // Saturates rather than overflowing.
        assert_eq!(due_offset(u64::MAX, 1), Duration::from_nanos(u64::MAX));
        assert_eq!(requests_within(Duration::from_secs(3), 5_000), 15_000);
        assert_eq!(requests_within(Duration::from_millis(500), 1_000), 500);
        assert_eq!(requests_within(Duration::from_millis(1), 300), 1);
        assert_eq!(requests_within(Duration::ZERO, 300), 0);
        // The last request falls before the end of the window.
        let count = requests_within(Duration::from_secs(2), 7);
        assert!(due_offset(count - 1, 7) < Duration::from_secs(2));
        assert!(due_offset(count, 7) >= Duration::from_secs(2));
    }
}
