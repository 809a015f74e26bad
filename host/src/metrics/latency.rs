//! Handler latency as a Prometheus histogram that a request records with two relaxed atomic
//! additions: no lock, and no search of the bucket bounds, which are powers of two so that the
//! bucket is computed. Each thread adds to counts of its own (see [`crate::striped`]),
//! summed when scraped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::striped::{Padded, STRIPES, stripe};

/// The first bucket's upper bound: 50 µs.
const FIRST_BOUND_NANOS: u64 = 50_000;
/// Buckets with an upper bound, 50 µs × 2^i for i below this (the last is about 1.6 s); one
/// more bucket holds everything slower (`+Inf`).
const BOUNDED: usize = 16;

/// A latency histogram; clones share their counts.
#[derive(Clone, Debug, Default)]
pub struct Latency(Arc<[Padded<Counts>; STRIPES]>);

#[derive(Debug, Default)]
struct Counts {
    /// Observations per bucket, not cumulative; the last is `+Inf`. Their total is the count,
    /// so the count and the buckets never disagree in a scrape.
    buckets: [AtomicU64; BOUNDED + 1],
    /// The sum of all observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Latency {
    /// Records one call that took `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let counts = &self.0[stripe()].0;
        counts.buckets[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        counts.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The bucket of an observation: the smallest i with `nanos <= 50 µs × 2^i`, which is the
/// base-2 logarithm, rounded up, of `nanos` in (rounded-up) units of 50 µs.
fn bucket(nanos: u64) -> usize {
    let units = nanos.div_ceil(FIRST_BOUND_NANOS);
    if units <= 1 {
        return 0;
    }
    let log2_up = (u64::BITS - (units - 1).leading_zeros()) as usize;
    log2_up.min(BOUNDED)
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The same bounds, as text, as prometheus-client's own histogram with
        // `exponential_buckets(0.000_05, 2.0, 16)` writes.
        let bounds = exponential_buckets(FIRST_BOUND_NANOS as f64 / 1e9, 2.0, BOUNDED as u16)
            .chain(std::iter::once(f64::INFINITY));
        let total = |read: &dyn Fn(&Counts) -> &AtomicU64| {
            self.0
                .iter()
                .map(|stripe| read(&stripe.0).load(Ordering::Relaxed))
                .fold(0, u64::wrapping_add)
        };
        let buckets: Vec<(f64, u64)> = bounds
            .enumerate()
            .map(|(i, bound)| (bound, total(&|counts| &counts.buckets[i])))
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = total(&|counts| &counts.sum_nanos) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_observation_lands_in_the_first_bucket_whose_bound_holds_it() {
        let micros = |us: u64| bucket(us * 1_000);
        assert_eq!(bucket(0), 0);
        assert_eq!(micros(50), 0, "a bound holds its own value (le)");
        assert_eq!(bucket(50_001), 1);
        assert_eq!(micros(100), 1);
        assert_eq!(micros(101), 2);
        assert_eq!(micros(200), 2);
        assert_eq!(micros(201), 3);
        // The last bound is 50 µs × 2^15 = 1.6384 s.
        assert_eq!(micros(1_638_400), BOUNDED - 1);
        assert_eq!(micros(1_638_401), BOUNDED);
        assert_eq!(bucket(u64::MAX), BOUNDED);
    }

    #[test]
    fn it_encodes_like_prometheus_clients_own_histogram() {
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::histogram::Histogram;
        use prometheus_client::registry::Registry;

        let ours = Latency::default();
        let theirs = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        // Values that are exact in both nanoseconds and binary fractions of a second, so the
        // two sums agree to the last digit.
        for seconds in [0.0, 0.001_953_125, 0.25, 0.5, 2.0, 8.0] {
            ours.observe(Duration::from_secs_f64(seconds));
            theirs.observe(seconds);
        }
        let text = |register: &dyn Fn(&mut Registry)| {
            let mut registry = Registry::default();
            register(&mut registry);
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        let ours_text = text(&|r| r.register("latency", "x", ours.clone()));
        let theirs_text = text(&|r| r.register("latency", "x", theirs.clone()));
        assert_eq!(ours_text, theirs_text);
        assert!(ours_text.contains("latency_count 6"), "{ours_text}");
        // Observed from more threads than there are stripes: every stripe is summed.
        std::thread::scope(|scope| {
            for _ in 0..STRIPES + 1 {
                scope.spawn(|| {
                    ours.observe(Duration::from_secs_f64(0.001_953_125));
                    ours.observe(Duration::ZERO);
                });
                theirs.observe(0.001_953_125);
                theirs.observe(0.0);
            }
        });
        let ours_text = text(&|r| r.register("latency", "x", ours.clone()));
        let theirs_text = text(&|r| r.register("latency", "x", theirs.clone()));
        assert_eq!(ours_text, theirs_text);
        assert!(
            ours_text.contains(&format!("latency_count {}", 6 + 2 * (STRIPES + 1))),
            "{ours_text}"
        );
        // And as a family, the way the host registers it.
        let family = Family::<Vec<(String, String)>, Latency>::default();
        family
            .get_or_create(&vec![("route".into(), "a.b".into())])
            .observe(Duration::from_millis(1));
        let family_text = text(&|r| r.register("handler_seconds", "x", family.clone()));
        assert!(
            family_text.contains(r#"handler_seconds_bucket{le="0.0016",route="a.b"} 1"#),
            "{family_text}"
        );
    }
}
