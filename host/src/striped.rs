//! State that every worker thread touches on every request, kept per thread: counts summed only
//! when scraped, and read-mostly values copied per thread. An atomic write on a cache line that
//! another core wrote last (an add, or taking a read lock) waits for that line to move, and a
//! request made several such writes.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

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

/// A value read on every request and changed rarely (a reload, a route first served): one copy
/// per stripe, so that a reader takes a read lock on its own thread's cache line. Every change
/// is made to all copies while holding all their locks, so the copies never disagree.
#[derive(Debug)]
pub(crate) struct ReadMostly<T>([Padded<RwLock<T>>; STRIPES]);

impl<T: Clone> ReadMostly<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(std::array::from_fn(|_| Padded(RwLock::new(value.clone()))))
    }
}

impl<T: Clone + Default> Default for ReadMostly<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> ReadMostly<T> {
    /// The calling thread's copy.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0[stripe()]
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` to every copy. The locks are taken in stripe order, so two changes
    /// cannot deadlock.
    pub(crate) fn update(&self, mut change: impl FnMut(&mut T)) {
        let mut copies: Vec<_> = self
            .0
            .iter()
            .map(|copy| copy.0.write().unwrap_or_else(PoisonError::into_inner))
            .collect();
        for copy in &mut copies {
            change(copy);
        }
    }
}

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
    fn every_thread_reads_the_latest_change() {
        let value = ReadMostly::new(vec![1]);
        value.update(|copy| copy.push(2));
        std::thread::scope(|scope| {
            for _ in 0..STRIPES + 1 {
                scope.spawn(|| assert_eq!(*value.read(), [1, 2]));
            }
        });
        assert_eq!(*value.read(), [1, 2]);
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
