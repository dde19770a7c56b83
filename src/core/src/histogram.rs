//! Latency histogram with log-spaced buckets: at most 1% relative error for any value between
//! 1 microsecond and 1 hour, fixed size, mergeable by adding counts.
//!
//! Bucket `i` (1..=BUCKETS) covers [MIN_US * GAMMA^(i-1), MIN_US * GAMMA^i); bucket 0 holds
//! values below 1 us and the last bucket everything from 1 hour up. A value is reported as its
//! bucket's geometric midpoint, which is within sqrt(GAMMA) - 1 = 0.995% of any value in the
//! bucket; percentiles are further clamped to the exact min and max.

/// Bucket width ratio. sqrt(1.02) - 1 < 1%.
pub const GAMMA: f64 = 1.02;
pub const MIN_US: f64 = 1.0;
pub const MAX_US: f64 = 3_600_000_000.0;
/// Underflow bucket 0, ceil(ln(MAX_US / MIN_US) / ln(GAMMA)) = 1112 log buckets, and one
/// overflow bucket for 1 hour and more.
pub const BUCKETS: usize = 1114;

/// Bucket index of a latency in microseconds: floor(log_GAMMA(us / MIN_US)) + 1.
///
/// Recorded for every statement, so without `ln` (~45 instructions): log2 of the f64 is its
/// exponent plus log2 of its mantissa, read from a table of 256 steps and interpolated linearly
/// (error below 3e-6 in log2, a ten-thousandth of a bucket's width: only a value that close to a
/// bucket boundary can land in the neighbouring bucket).
#[inline]
pub fn bucket_of(us: f64) -> usize {
    if us.is_nan() || us < MIN_US {
        return 0;
    }
    bucket_of_log2(fast_log2(us / MIN_US))
}

/// `bucket_of` for a time in nanoseconds, as the hooks measure it: a multiplication where
/// `bucket_of(ns / 1000)` divides (it runs for every statement).
#[inline]
pub fn bucket_of_ns(ns: u64) -> usize {
    let scaled = ns as f64 * (1.0 / (1000.0 * MIN_US));
    if scaled < 1.0 {
        return 0;
    }
    bucket_of_log2(fast_log2(scaled))
}

#[inline]
fn bucket_of_log2(log2: f64) -> usize {
    ((log2 * (1.0 / LOG2_GAMMA)) as usize + 1).min(BUCKETS - 1)
}

/// log2(GAMMA), the width of one bucket in log2 units.
const LOG2_GAMMA: f64 = 0.028_569_152_196_770_894; // log2(1.02)

/// log2(1 + i/256) for i in 0..=256, computed at compile time: log2(1 + x) =
/// 2 atanh(x / (2 + x)) / ln 2, whose series converges fast for x <= 1.
const MANTISSA_LOG2: [f64; 257] = {
    let mut table = [0.0; 257];
    let mut i = 0;
    while i <= 256 {
        let x = i as f64 / 256.0;
        let z = x / (2.0 + x);
        let (mut term, mut sum, mut k) = (z, 0.0, 1.0);
        while k < 60.0 {
            sum += term / k;
            term *= z * z;
            k += 2.0;
        }
        table[i] = 2.0 * sum / std::f64::consts::LN_2;
        i += 1;
    }
    table
};

/// log2(x) for finite x >= 1.
#[inline]
fn fast_log2(x: f64) -> f64 {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let step = ((bits >> 44) & 0xFF) as usize;
    let within = (bits & ((1 << 44) - 1)) as f64 * (1.0 / (1u64 << 44) as f64);
    let (lo, hi) = (MANTISSA_LOG2[step], MANTISSA_LOG2[step + 1]);
    exponent as f64 + lo + (hi - lo) * within
}

/// The value a bucket stands for (its geometric midpoint), in microseconds.
pub fn bucket_value(i: usize) -> f64 {
    if i == 0 {
        return MIN_US / 2.0;
    }
    MIN_US * GAMMA.powf(i as f64 - 1.0) * GAMMA.sqrt()
}

/// Summary of a set of latencies; all times in milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    pub count: u64,
    pub mean_ms: f64,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// A histogram plus exact count, sum, min and max.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum_us: f64,
    pub min_us: f64,
    pub max_us: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum_us: 0.0,
            min_us: f64::INFINITY,
            max_us: 0.0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, us: f64) {
        self.counts[bucket_of(us)] += 1;
        self.count += 1;
        self.sum_us += us;
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    /// Add sparse bucket counts (as stored in history rows) with their exact aggregates.
    pub fn add_sparse(
        &mut self,
        buckets: &[i32],
        counts: &[i64],
        sum_us: f64,
        min_us: f64,
        max_us: f64,
    ) {
        let mut added = 0u64;
        for (b, c) in buckets.iter().zip(counts) {
            if let (Ok(b), Ok(c)) = (usize::try_from(*b), u64::try_from(*c)) {
                if b < BUCKETS {
                    self.counts[b] += c;
                    added += c;
                }
            }
        }
        if added == 0 {
            return;
        }
        self.count += added;
        self.sum_us += sum_us;
        self.min_us = self.min_us.min(min_us);
        self.max_us = self.max_us.max(max_us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Non-empty buckets as (index, count) arrays, for storage.
    pub fn sparse(&self) -> (Vec<i32>, Vec<i64>) {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i as i32, *c as i64))
            .unzip()
    }

    /// Nearest-rank percentile (0 < p <= 1), in microseconds, clamped to [min, max].
    pub fn percentile_us(&self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p * self.count as f64).ceil() as u64).clamp(1, self.count);
        let (min_us, max_us) = self.extremes();
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_value(i).clamp(min_us, max_us));
            }
        }
        Some(max_us)
    }

    /// Exact min and max when they were recorded, else the values of the lowest and highest
    /// non-empty buckets (history rows whose interval saw no extreme, e.g. an entry evicted
    /// and re-created between snapshots).
    fn extremes(&self) -> (f64, f64) {
        if self.min_us <= self.max_us {
            return (self.min_us, self.max_us);
        }
        let first = self.counts.iter().position(|c| *c > 0).unwrap_or(0);
        let last = self.counts.iter().rposition(|c| *c > 0).unwrap_or(0);
        (bucket_value(first), bucket_value(last))
    }

    pub fn stats(&self) -> Option<Stats> {
        if self.count == 0 {
            return None;
        }
        let (min_us, max_us) = self.extremes();
        let ms = |us: f64| us / 1000.0;
        Some(Stats {
            count: self.count,
            mean_ms: ms(self.sum_us / self.count as f64),
            median_ms: ms(self.percentile_us(0.5)?),
            min_ms: ms(min_us),
            max_ms: ms(max_us),
            p95_ms: ms(self.percentile_us(0.95)?),
            p99_ms: ms(self.percentile_us(0.99)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_land_in_the_bucket_of_their_microseconds() {
        let mut ns = 1u64;
        while ns < 4_000_000_000_000 {
            let (a, b) = (bucket_of_ns(ns), bucket_of(ns as f64 / 1000.0));
            // The two differ only in the last bit of the scaled value: at most a neighbour,
            // and only right at a boundary.
            assert!(a.abs_diff(b) <= 1, "{ns} ns: {a} vs {b}");
            ns = ns * 21 / 20 + 1;
        }
        assert_eq!(bucket_of_ns(999), 0);
        assert_eq!(bucket_of_ns(1_000), 1);
        assert_eq!(bucket_of_ns(u64::MAX), BUCKETS - 1);
    }

    fn exact_percentile(sorted: &[f64], p: f64) -> f64 {
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// Deterministic pseudo-random numbers in [0, 1) (xorshift), so tests need no crate.
    fn uniform(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    fn check(values: &mut [f64]) {
        let mut h = Histogram::default();
        for v in values.iter() {
            h.record(*v);
        }
        values.sort_by(f64::total_cmp);
        for p in [0.5, 0.95, 0.99] {
            let exact = exact_percentile(values, p);
            let approx = h.percentile_us(p).unwrap();
            let err = (approx - exact).abs() / exact;
            assert!(err <= 0.01, "p{p}: exact {exact} approx {approx} err {err}");
        }
        assert_eq!(h.count, values.len() as u64);
        assert_eq!(h.min_us, values[0]);
        assert_eq!(h.max_us, *values.last().unwrap());
    }

    #[test]
    fn the_fast_bucket_index_is_the_exact_one_away_from_boundaries() {
        let exact = |us: f64| ((us / MIN_US).ln() / GAMMA.ln()) as usize + 1;
        let mut x = 1.0f64;
        let mut checked = 0;
        while x < MAX_US {
            for v in [x, x * 1.0001, x * 1.003_7, x * 1.011, x * 1.017_3] {
                let position = (v / MIN_US).ln() / GAMMA.ln();
                let near_boundary = (position - position.round()).abs() < 1e-3;
                if !near_boundary {
                    assert_eq!(bucket_of(v), exact(v).min(BUCKETS - 1), "{v}");
                    checked += 1;
                }
            }
            x *= 1.013;
        }
        assert!(checked > 5_000, "{checked}");
        assert!(fast_log2(1024.0) == 10.0 && (fast_log2(3.0) - 3f64.log2()).abs() < 3e-6);
        for (i, v) in MANTISSA_LOG2.iter().enumerate() {
            assert!((v - (1.0 + i as f64 / 256.0).log2()).abs() < 1e-12, "{i}");
        }
    }

    #[test]
    fn bucket_layout_covers_1us_to_1h_within_1_percent() {
        assert_eq!(bucket_of(0.5), 0);
        assert!(bucket_of(MAX_US * 0.999) < BUCKETS - 1);
        assert_eq!(bucket_of(MAX_US * 10.0), BUCKETS - 1);
        let mut v = MIN_US;
        while v < MAX_US {
            let mid = bucket_value(bucket_of(v));
            assert!((mid - v).abs() / v <= 0.01, "{v} -> {mid}");
            v *= 1.003;
        }
    }

    #[test]
    fn lognormal_latencies_100k() {
        let mut seed = 42;
        let mut values: Vec<f64> = (0..100_000)
            .map(|_| {
                // Box-Muller normal, then exp: a typical latency shape around 2 ms.
                let (u1, u2) = (uniform(&mut seed).max(1e-12), uniform(&mut seed));
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (7.6 + 1.2 * z).exp()
            })
            .collect();
        check(&mut values);
    }

    #[test]
    fn bimodal_cache_hit_miss_latencies() {
        let mut seed = 7;
        let mut values: Vec<f64> = (0..100_000)
            .map(|i| {
                let jitter = 1.0 + uniform(&mut seed);
                if i % 20 == 0 {
                    80_000.0 * jitter
                } else {
                    150.0 * jitter
                }
            })
            .collect();
        check(&mut values);
    }

    #[test]
    fn uniform_wide_range() {
        let mut seed = 99;
        let mut values: Vec<f64> = (0..100_000)
            .map(|_| 10f64.powf(uniform(&mut seed) * 9.0))
            .collect();
        check(&mut values);
    }

    #[test]
    fn history_without_recorded_extremes_still_has_stats() {
        // A stored interval whose min/max were not observed (NULL in optidb.latency).
        let mut h = Histogram::default();
        h.add_sparse(
            &[bucket_of(100.0) as i32, bucket_of(900.0) as i32],
            &[5, 5],
            5000.0,
            f64::INFINITY,
            0.0,
        );
        let s = h.stats().expect("ten samples");
        assert!((s.min_ms - 0.1).abs() / 0.1 < 0.01, "{s:?}");
        assert!((s.max_ms - 0.9).abs() / 0.9 < 0.01, "{s:?}");
        assert!(s.min_ms <= s.median_ms && s.median_ms <= s.p99_ms && s.p99_ms <= s.max_ms);
    }

    #[test]
    fn sparse_round_trip_and_merge() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in [10.0, 20.0, 30.0] {
            a.record(v);
        }
        for v in [1000.0, 2000.0] {
            b.record(v);
        }
        let (idx, counts) = b.sparse();
        let mut c = a.clone();
        c.add_sparse(&idx, &counts, b.sum_us, b.min_us, b.max_us);
        let mut d = a.clone();
        d.merge(&b);
        assert_eq!(c, d);
        let s = d.stats().unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.max_ms, 2.0);
        assert_eq!(s.min_ms, 0.01);
        assert!((s.mean_ms - 0.612).abs() < 1e-9);
        assert!(Histogram::default().stats().is_none());
    }
}
