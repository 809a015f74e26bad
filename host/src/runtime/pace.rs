//! The timer-fire budget of one instance: how many timer fires a second it may take.
//!
//! Each fire is a call into the instance. Without a bound, a component that sets a few hundred
//! 1 ms timers (it may have 10,000) keeps a core busy with calls for as long as the host runs,
//! and every other component's requests share what is left (docs/operations.md, "Limits, and
//! what clients see").
//! Fires past the budget are not dropped: each waits for its turn at the budget's rate, so a
//! repeating timer under pressure fires as often as the budget lets it, and no more.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How far ahead of its rate an instance may fire, so that timers set together (a room's tick,
/// a round's end) fire together: a tenth of a second's worth of the budget.
const BURST: Duration = Duration::from_millis(100);

/// The default budget, in fires a second per instance: a thousand rooms ticking ten times a
/// second fit, while a storm of timers costs a few per cent of a core.
pub const DEFAULT_TIMER_FIRES: u32 = 10_000;

/// The highest budget that may be set: past a million fires a second, each fire would have less
/// than the microsecond a call takes.
pub const MAX_TIMER_FIRES: u32 = 1_000_000;

/// A rate of fires, booked in turn (the generic cell rate algorithm, with bookings ahead).
#[derive(Debug)]
pub(crate) struct Pace {
    /// The budget, for messages.
    per_second: u32,
    /// The time between two fires at the budget's rate.
    interval: Duration,
    /// When the next fire would be due if fires came exactly at the budget's rate; nothing
    /// before the first fire.
    next: Mutex<Option<Instant>>,
}

impl Pace {
    /// A budget of `per_second` fires a second (at least one).
    pub(crate) fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        Self {
            per_second,
            interval: Duration::from_secs(1) / per_second,
            next: Mutex::new(None),
        }
    }

    /// The budget, in fires a second.
    pub(crate) fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Books a fire asked for at `now`: `None` when it may run at once, else the instant its
    /// turn comes. Every booking takes a turn, so fires that wait are spread out at the
    /// budget's rate instead of all waking for the same turn.
    pub(crate) fn book(&self, now: Instant) -> Option<Instant> {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let due = next.map_or(now, |next| next.max(now));
        *next = Some(due + self.interval);
        // A fire may run early by up to BURST; near the clock's origin there is nothing before.
        let turn = due.checked_sub(BURST)?;
        (turn > now).then_some(turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instants at which `count` fires asked for at `now` may run.
    fn turns(pace: &Pace, now: Instant, count: usize) -> Vec<Option<Duration>> {
        (0..count)
            .map(|_| pace.book(now).map(|turn| turn - now))
            .collect()
    }

    #[test]
    fn a_burst_of_a_tenth_of_a_second_runs_at_once_and_the_rest_waits_its_turn() {
        // 100 a second: one every 10 ms, and 100 ms of them (10, plus the first) at once.
        let pace = Pace::new(100);
        let now = Instant::now() + Duration::from_secs(1);
        let turns = turns(&pace, now, 14);
        assert_eq!(turns[..11], [None; 11]);
        assert_eq!(
            turns[11..],
            [
                Some(Duration::from_millis(10)),
                Some(Duration::from_millis(20)),
                Some(Duration::from_millis(30)),
            ]
        );
    }

    #[test]
    fn fires_at_the_budgets_rate_never_wait() {
        let pace = Pace::new(1_000);
        let start = Instant::now() + Duration::from_secs(1);
        for n in 0..5_000 {
            let now = start + Duration::from_millis(n);
            assert_eq!(pace.book(now), None, "fire {n}");
        }
    }

    #[test]
    fn over_a_second_no_more_than_the_budget_and_its_burst_run() {
        // 10 timers of 1 ms ask for 10,000 fires a second; the budget is 500.
        let pace = Pace::new(500);
        let start = Instant::now() + Duration::from_secs(1);
        let mut ran_by = Vec::new();
        let mut asks: Vec<Instant> = vec![start; 10];
        // Each timer asks again as soon as its fire has run: what a repeating timer behind its
        // schedule does.
        while ran_by.len() < 2_000 {
            let (timer, &now) = asks.iter().enumerate().min_by_key(|(_, at)| **at).unwrap();
            let ran = pace.book(now).unwrap_or(now);
            ran_by.push(ran);
            asks[timer] = ran.max(now + Duration::from_millis(1));
        }
        let in_first_second = ran_by
            .iter()
            .filter(|&&at| at < start + Duration::from_secs(1))
            .count();
        // 500 in the second, and 50 more that the burst lets run early.
        assert_eq!(in_first_second, 550);
    }

    #[test]
    fn a_quiet_spell_refills_the_burst_and_no_more() {
        let pace = Pace::new(100);
        let now = Instant::now() + Duration::from_secs(1);
        assert!(turns(&pace, now, 30).iter().any(Option::is_some));
        // An hour later the bookings of long ago count for nothing: the burst again, no more.
        let later = now + Duration::from_secs(3600);
        let turns = turns(&pace, later, 12);
        assert_eq!(turns[..11], [None; 11]);
        assert_eq!(turns[11], Some(Duration::from_millis(10)));
    }

    #[test]
    fn a_budget_of_zero_is_one_a_second() {
        let pace = Pace::new(0);
        let now = Instant::now() + Duration::from_secs(1);
        // One second of interval is ten times the burst window: the second fire waits.
        assert_eq!(pace.book(now), None);
        assert_eq!(pace.book(now), Some(now + Duration::from_millis(900)));
    }
}
