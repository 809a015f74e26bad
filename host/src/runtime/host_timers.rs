//! The `pitaya:host/timers` interface: timers that fire into the instance that set them, each
//! fire a call of its own, so a tick runs between calls, never inside one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};

use super::bindings::pitaya::host::timers;
use super::instance::HostState;
use super::{ComponentShared, TimerEntry};
use crate::metrics::{ComponentLabel, Metrics};

/// Most timers one instance may have running: each is a task and an entry in the host's memory,
/// outside the instance's memory cap, so a component that sets a timer per request and never
/// cancels it would otherwise grow the host without end. Past it a timer is refused: id 0.
pub(crate) const MAX_TIMERS: usize = 10_000;

impl HostState {
    fn start_timer(&mut self, ms: u32, repeat: bool) -> u64 {
        if self.timers.lock().len() >= MAX_TIMERS {
            self.shared
                .refused("timer refused: the instance has 10,000 timers running");
            return 0;
        }
        let id = self.shared.next_timer.fetch_add(1, Ordering::Relaxed);
        let period = Duration::from_millis(u64::from(ms.max(1)));
        let shard = self.shard.clone();
        let shared = self.shared.clone();
        let metrics = self.context.metrics.clone();
        // The task stops when the entry goes: cancelled, fired once, or its instance gone.
        let (stop, mut stopped) = oneshot::channel();
        self.context.runtime.spawn(async move {
            // `interval` schedules each tick from the intended time of the last, so a
            // fixed-rate loop does not drift; a late tick is followed by quicker ones.
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    _ = ticks.tick() => {}
                }
                // Past the instance's timer-fire budget, the fire waits for its turn.
                let Some(pace) = shard.upgrade() else { return };
                let turn = pace.timer_pace.book(Instant::now());
                if turn.is_some() {
                    held_back(&shared, &metrics, pace.timer_pace.per_second());
                }
                // Not held while it waits: the shard going (its component unloaded) ends the timer.
                drop(pace);
                if let Some(turn) = turn {
                    tokio::select! {
                        biased;
                        _ = &mut stopped => return,
                        () = tokio::time::sleep_until(turn) => {}
                    }
                }
                // Never cut short once it runs: the stop signal is not heard during a fire.
                loop {
                    let Some(shard) = shard.upgrade() else { return };
                    if shard.fire(id).await {
                        break;
                    }
                    // The shard's instance does not know the timer: the instance that set it
                    // is a reload's new build, not in place yet (or it has just been dropped,
                    // and the stop signal is on its way). A repeating timer waits for its
                    // next tick; a one-shot tries again shortly.
                    if repeat {
                        break;
                    }
                    tokio::select! {
                        biased;
                        _ = &mut stopped => return,
                        () = tokio::time::sleep(Duration::from_millis(1)) => {}
                    }
                }
                if !repeat {
                    return;
                }
            }
        });
        self.timers.lock().insert(
            id,
            TimerEntry {
                _stop: stop,
                once: !repeat,
            },
        );
        id
    }
}

/// Counts a fire that waits for its turn, and says so within the budget of the host's lines
/// about the component.
fn held_back(shared: &ComponentShared, metrics: &Metrics, per_second: u32) {
    metrics
        .timer_fires_delayed
        .get_or_create(&ComponentLabel {
            component: shared.name.to_string(),
        })
        .inc();
    shared.refused(format_args!(
        "timers ask for more than the component's timer-fires budget ({per_second} a second): fires wait their turn"
    ));
}

impl timers::Host for HostState {
    fn after(&mut self, ms: u32) -> u64 {
        self.start_timer(ms, false)
    }

    fn every(&mut self, ms: u32) -> u64 {
        self.start_timer(ms, true)
    }

    fn cancel(&mut self, timer: u64) -> bool {
        self.timers.lock().remove(&timer).is_some()
    }
}
