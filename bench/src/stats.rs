//! Latency recording: a fixed-size log-linear histogram (HDR style) with exact min, max and mean.
//!
//! Values are nanoseconds. Below 128 ns every value has its own bucket; above, each power of two
//! is split into 64 buckets, so a reported percentile is at most 1/64 (1.6 %) above the true
//! value. Memory is fixed (about 18 KiB) whatever the number of samples, so a run's memory is
//! bounded by its connection count, not by its length.

/// Sub-buckets per power of two, as a power of two (64 buckets: 1.6 % resolution).
const SUB_BITS: u32 = 6;
/// Largest value kept exactly per bucket; values from here on share buckets.
const LINEAR_LIMIT: u64 = 1 << (SUB_BITS + 1);
/// Values are clamped to this (about 18 minutes in nanoseconds), which bounds the bucket count.
const MAX_VALUE: u64 = (1 << 40) - 1;
/// Number of buckets needed to cover `0..=MAX_VALUE`.
const BUCKETS: usize = bucket_of(MAX_VALUE) + 1;

/// Bucket index of `value` (already clamped).
const fn bucket_of(value: u64) -> usize {
    if value < LINEAR_LIMIT {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    ((shift as u64) << SUB_BITS) as usize + (value >> shift) as usize
}

/// Largest value that falls in bucket `index`.
fn bucket_high(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR_LIMIT {
        return index;
    }
    let shift = (index >> SUB_BITS) - 1;
    let mantissa = index - (shift << SUB_BITS);
    ((mantissa + 1) << shift) - 1
}

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl Histogram {
    /// Records one value in nanoseconds (clamped to about 18 minutes).
    pub fn record(&mut self, nanos: u64) {
        let value = nanos.min(MAX_VALUE);
        if let Some(slot) = self.counts.get_mut(bucket_of(value)) {
            *slot += 1;
        }
        self.count += 1;
        self.sum += u128::from(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact largest sample, 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Exact smallest sample, 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 { 0 } else { self.min }
    }

    /// Mean of the samples, 0 when empty.
    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            return 0;
        }
        u64::try_from(self.sum / u128::from(self.count)).unwrap_or(u64::MAX)
    }

    /// The `p`-th percentile (0 < p <= 100) by nearest rank, as the top of its bucket but never
    /// above the exact maximum; 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let p = if p.is_finite() {
            p.clamp(0.0, 100.0)
        } else {
            100.0
        };
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_high(index).min(self.max).max(self.min());
            }
        }
        self.max
    }

    /// The usual summary, in microseconds.
    pub fn summary(&self) -> LatencySummary {
        let us = |nanos: u64| nanos as f64 / 1000.0;
        LatencySummary {
            samples: self.count(),
            min_us: us(self.min()),
            mean_us: us(self.mean()),
            p50_us: us(self.percentile(50.0)),
            p90_us: us(self.percentile(90.0)),
            p99_us: us(self.percentile(99.0)),
            p999_us: us(self.percentile(99.9)),
            max_us: us(self.max()),
        }
    }
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub samples: u64,
    /// Smallest sample.
    pub min_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_the_range() {
        let mut expected = 0;
        for index in 0..BUCKETS {
            let high = bucket_high(index);
            assert_eq!(bucket_of(expected), index, "low edge of bucket {index}");
            assert_eq!(bucket_of(high), index, "high edge of bucket {index}");
            expected = high + 1;
        }
        assert_eq!(expected, MAX_VALUE + 1);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 50);
        assert_eq!(h.percentile(90.0), 90);
        assert_eq!(h.percentile(99.0), 99);
        assert_eq!(h.percentile(100.0), 100);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 100);
        assert_eq!(h.mean(), 50);
    }

    #[test]
    fn large_values_are_within_resolution() {
        let mut h = Histogram::default();
        // 1 µs .. 10 ms in 10 µs steps.
        let values: Vec<u64> = (0..1000).map(|i| 1_000 + i * 10_000).collect();
        for &v in &values {
            h.record(v);
        }
        for p in [50.0, 90.0, 99.0] {
            let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
            let exact = values[rank - 1];
            let got = h.percentile(p);
            assert!(got >= exact, "p{p}: {got} < {exact}");
            assert!(
                (got - exact) as f64 <= exact as f64 / 64.0,
                "p{p}: {got} too far above {exact}"
            );
        }
        assert_eq!(h.percentile(100.0), *values.last().unwrap());
    }

    #[test]
    fn empty_and_merged() {
        let empty = Histogram::default();
        assert_eq!(empty.percentile(99.0), 0);
        assert_eq!(empty.min(), 0);
        assert_eq!(empty.mean(), 0);
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(10);
        b.record(30);
        b.record(u64::MAX);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.min(), 10);
        assert_eq!(a.max(), MAX_VALUE);
        assert_eq!(a.percentile(50.0), 30);
        assert_eq!(a.percentile(f64::NAN), MAX_VALUE);
    }
}
