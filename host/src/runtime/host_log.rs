//! The `pitaya:host/log` interface: component logs go to the host's log, tagged with the
//! component, within a budget per component, so that guest code cannot flood the host's log.

use std::sync::Mutex;
use std::time::Instant;

use super::ComponentShared;
use super::bindings::LogLevel;
use super::bindings::pitaya::host::log;
use super::instance::HostState;

/// Longest message a component logs in one line, in bytes; the rest is cut.
const MAX_LINE: usize = 16 * 1024;

impl log::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        let level = match level {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        };
        // A line the filter drops costs nothing, budget included.
        if !enabled(level) {
            return;
        }
        let component = self.component();
        let Some(dropped) = self.shared.logs.admit(message.len(), Instant::now()) else {
            return;
        };
        if dropped > 0 {
            tracing::warn!(
                component,
                dropped,
                "component log lines dropped: over its budget of {} bytes a second",
                LogBudget::LINES.rate
            );
        }
        let message = crate::clip(&message, MAX_LINE);
        match level {
            tracing::Level::TRACE => tracing::trace!(component, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(component, "{message}"),
            tracing::Level::INFO => tracing::info!(component, "{message}"),
            tracing::Level::WARN => tracing::warn!(component, "{message}"),
            _ => tracing::error!(component, "{message}"),
        }
    }
}

impl ComponentShared {
    /// Warns that the host refused or held back something the component asked for (a timer, a
    /// group, session data over a bound, a timer fire over the budget), within the budget of the
    /// host's lines about the component. `what` is formatted only when the line is written.
    pub(crate) fn refused(&self, what: impl std::fmt::Display) {
        if let Some(unlogged) = self.failures.admit_line() {
            tracing::warn!(component = %self.name, unlogged, "{what}");
        }
    }
}

/// Whether the log filter lets lines of `level` through (`tracing::enabled!` wants a constant).
fn enabled(level: tracing::Level) -> bool {
    match level {
        tracing::Level::TRACE => tracing::enabled!(tracing::Level::TRACE),
        tracing::Level::DEBUG => tracing::enabled!(tracing::Level::DEBUG),
        tracing::Level::INFO => tracing::enabled!(tracing::Level::INFO),
        tracing::Level::WARN => tracing::enabled!(tracing::Level::WARN),
        _ => tracing::enabled!(tracing::Level::ERROR),
    }
}

/// How fast a budget refills and how much it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowance {
    /// Units a second.
    pub(crate) rate: f64,
    /// Most units held: what may be spent at once.
    pub(crate) burst: f64,
}

/// A component's share of the host's log: a token bucket, shared by its instances. A component
/// that logs in a loop, or fails on every call of an attacker's, would otherwise write as fast
/// as the disk takes it, and a log on a pipe that is not drained blocks the thread writing.
#[derive(Debug)]
pub(crate) struct LogBudget {
    allowance: Allowance,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Option<Instant>,
    /// Lines refused since the last one let through.
    dropped: u64,
}

impl LogBudget {
    /// For a component's own lines, counted in bytes: 1 MiB a second, 4 MiB at once.
    pub(crate) const LINES: Allowance = Allowance {
        rate: 1024.0 * 1024.0,
        burst: 4.0 * 1024.0 * 1024.0,
    };
    /// For the host's lines about a component's failures (each with a backtrace), counted in
    /// lines: one a second, ten at once.
    pub(crate) const FAILURES: Allowance = Allowance {
        rate: 1.0,
        burst: 10.0,
    };

    pub(crate) fn new(allowance: Allowance) -> Self {
        Self {
            allowance,
            state: Mutex::new(Bucket {
                tokens: allowance.burst,
                last: None,
                dropped: 0,
            }),
        }
    }

    /// [`Self::admit`] for one line now, as budgets counted in lines spend.
    pub(crate) fn admit_line(&self) -> Option<u64> {
        self.admit(1, Instant::now())
    }

    /// Spends `cost` (at least one unit, at most what the bucket holds) if it is there: then
    /// `Some` with the number of lines refused since the last one let through, else `None`.
    pub(crate) fn admit(&self, cost: usize, now: Instant) -> Option<u64> {
        let mut bucket = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(last) = bucket.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.allowance.rate;
            bucket.tokens = (bucket.tokens + refill).min(self.allowance.burst);
        }
        bucket.last = Some(now);
        // A line longer than the burst still goes out (cut) once the bucket is full.
        let cost = (cost as f64).clamp(1.0, self.allowance.burst);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Some(std::mem::take(&mut bucket.dropped))
        } else {
            bucket.dropped += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_budget_lets_a_burst_through_then_its_rate() {
        let budget = LogBudget::new(LogBudget::FAILURES);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(budget.admit(1, t0), Some(0));
        }
        assert_eq!(budget.admit(1, t0), None);
        assert_eq!(budget.admit(1, t0 + Duration::from_millis(500)), None);
        // A second on, one more line, which says how many were refused before it.
        assert_eq!(budget.admit(1, t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(budget.admit(1, t0 + Duration::from_millis(1100)), None);
        // Idle for long, the bucket holds its burst again, no more.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(budget.admit(1, later).is_some());
        }
        assert_eq!(budget.admit(1, later), None);
    }

    #[test]
    fn bytes_are_counted_and_a_huge_line_waits_for_a_full_bucket() {
        let budget = LogBudget::new(LogBudget::LINES);
        let t0 = Instant::now();
        assert_eq!(budget.admit(3 << 20, t0), Some(0));
        assert_eq!(budget.admit(2 << 20, t0), None);
        assert_eq!(budget.admit(1 << 20, t0), Some(1));
        // 100 MiB costs the whole burst: refused until the bucket is full, then let through.
        assert_eq!(budget.admit(100 << 20, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            budget.admit(100 << 20, t0 + Duration::from_secs(4)),
            Some(1)
        );
    }
}
