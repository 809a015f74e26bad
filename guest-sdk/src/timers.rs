//! Timers that call the component back: [`after`], [`every`], [`cancel`], and [`TimerId`].
//!
//! A timer's fire reaches the component's `#[timer]` hook, one call at a time with its other
//! calls (never in the middle of one), with the id the timer was given. A component with
//! several timers keeps what each one is for in its state, keyed by id:
//!
//! ```
//! use std::collections::HashMap;
//! use std::time::Duration;
//!
//! use pitaya_guest::prelude::*;
//! use pitaya_guest::{log, timers};
//!
//! enum Purpose {
//!     RoundEnd,
//!     Reminder(SessionId),
//! }
//!
//! #[derive(Default)]
//! struct Quiz {
//!     timers: HashMap<TimerId, Purpose>,
//! }
//!
//! #[component(name = "quiz")]
//! impl Quiz {
//!     #[request]
//!     fn start(&mut self, session: &Session) -> Result<TimerId> {
//!         let round = timers::after(Duration::from_secs(30));
//!         self.timers.insert(round, Purpose::RoundEnd);
//!         let reminder = timers::after(Duration::from_secs(20));
//!         self.timers.insert(reminder, Purpose::Reminder(session.id()));
//!         Ok(round)
//!     }
//!
//!     #[timer]
//!     fn fired(&mut self, timer: TimerId) {
//!         match self.timers.remove(&timer) {
//!             Some(Purpose::RoundEnd) => log::info!("the round is over"),
//!             Some(Purpose::Reminder(session)) => {
//!                 session.session().push("onReminder", "10 seconds left");
//!             }
//!             None => {}
//!         }
//!     }
//! }
//! ```
//!
//! Durations are whole milliseconds: shorter ones round up to 1 ms (for [`every`]; [`after`]
//! takes 0 as "as soon as possible"), longer ones than `u32::MAX` ms (49 days) are cut to that.
//!
//! An instance may have 10,000 timers running (a one-shot timer stops running once it fired).
//! Past that the host sets no timer and [`after`] and [`every`] return `TimerId(0)`, which
//! never fires: a component that sets a timer per request and never cancels it cannot grow the
//! host without end.
//!
//! An instance's fires draw on a budget of fires a second (the host's `timer-fires`, 10,000 by
//! default, with a burst of a tenth of a second's worth). A fire over it is not lost: it comes
//! late, in its turn, so timers that ask for more fire at the budget's rate between them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sys;

/// A timer, as numbered by the host for this component. Kept in state to tell timers apart
/// in the `#[timer]` hook, and to [`cancel`] them.
///
/// ```
/// use pitaya_guest::TimerId;
///
/// let id = TimerId(4);
/// assert_eq!(id.to_string(), "4");
/// assert_eq!(serde_json::to_string(&id).unwrap(), "4");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimerId(pub u64);

impl TimerId {
    /// Cancels the timer: the same as [`cancel`].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let timer = pitaya_guest::timers::after(Duration::from_secs(5));
    /// assert!(timer.cancel());
    /// assert!(!timer.cancel());
    /// ```
    pub fn cancel(self) -> bool {
        cancel(self)
    }
}

impl fmt::Display for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u64> for TimerId {
    fn from(id: u64) -> Self {
        TimerId(id)
    }
}

impl From<TimerId> for u64 {
    fn from(id: TimerId) -> Self {
        id.0
    }
}

/// Starts a timer that fires once, `delay` from now.
///
/// ```
/// use std::time::Duration;
///
/// let timer = pitaya_guest::timers::after(Duration::from_millis(1500));
/// # timer.cancel();
/// ```
pub fn after(delay: Duration) -> TimerId {
    TimerId(sys::timer_after(millis(delay)))
}

/// Starts a timer that fires every `period`, at a fixed rate: each tick is scheduled from the
/// intended time of the one before, so a 20 Hz game loop does not drift. It runs until
/// cancelled.
///
/// ```
/// use std::time::Duration;
///
/// let game_loop = pitaya_guest::timers::every(Duration::from_millis(50));
/// # game_loop.cancel();
/// ```
pub fn every(period: Duration) -> TimerId {
    TimerId(sys::timer_every(millis(period).max(1)))
}

/// Cancels a timer. Returns `false` if it had already finished (a one-shot timer that fired)
/// or never existed.
///
/// ```
/// use pitaya_guest::{TimerId, timers};
///
/// assert!(!timers::cancel(TimerId(12345)));
/// ```
pub fn cancel(timer: TimerId) -> bool {
    sys::timer_cancel(timer.0)
}

/// Whole milliseconds, rounded up (a timer never fires early), at most `u32::MAX`.
fn millis(duration: Duration) -> u32 {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    u32::try_from(millis).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_milliseconds_and_saturate() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_millis(50)), 50);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
