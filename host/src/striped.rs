//! Counts that every worker thread adds to on every request, kept per thread and summed only
//! when scraped: an atomic add on a cache line that another core wrote last waits for that line
//! to move, and a request made several such adds.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::metrics::counter::{Atomic, Counter};

/// Stripes per count. Threads beyond this share stripes, which is still correct, only slower.
pub(crate) const STRIPES: usize = 8;

/// One value on cache lines of its own (two: neighbouring lines are fetched in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's stripe, handed out in turn as threads first ask.
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE.with(|stripe| {
        let mine = stripe.get();
        if mine != usize::MAX {
            return mine;
        }
        let mine = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
        stripe.set(mine);
        mine
    })
}

/// A counter's value, striped.
#[derive(Debug, Default)]
pub struct Striped([Padded<AtomicU64>; STRIPES]);

impl Atomic<u64> for Striped {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Returns the previous value of this thread's stripe, not of the whole count: the host
    /// never reads it, and the whole count would mean reading every stripe.
    fn inc_by(&self, v: u64) -> u64 {
        self.0[stripe()].0.fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.0
            .iter()
            .map(|stripe| stripe.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// A Prometheus counter whose additions stay on the adding thread's cache lines.
pub type StripedCounter = Counter<u64, Striped>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_all_count() {
        let counter = StripedCounter::default();
        std::thread::scope(|scope| {
            for _ in 0..STRIPES + 3 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counter.inc();
                    }
                    counter.inc_by(5);
                });
            }
        });
        assert_eq!(counter.get(), (STRIPES as u64 + 3) * 1005);
    }

    #[test]
    fn a_thread_keeps_its_stripe() {
        let first = stripe();
        assert!(first < STRIPES);
        assert_eq!(stripe(), first);
        let other = std::thread::spawn(|| (stripe(), stripe())).join().unwrap();
        assert_eq!(other.0, other.1);
        assert!(other.0 < STRIPES);
    }
}
