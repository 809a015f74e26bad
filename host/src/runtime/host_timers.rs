//! The `pitaya:host/timers` interface: timers that fire into the component as jobs on its
//! queue, so a tick runs between calls, never inside one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::bindings::pitaya::host::timers;
use super::instance::HostState;
use super::{Job, TimerEntry};

impl HostState {
    fn start_timer(&mut self, ms: u32, repeat: bool) -> u64 {
        let id = self.shared.next_timer.fetch_add(1, Ordering::Relaxed);
        let period = Duration::from_millis(u64::from(ms.max(1)));
        let jobs = self.jobs.clone();
        let task = self.context.runtime.spawn(async move {
            if repeat {
                // `interval` schedules each tick from the intended time of the last, so a
                // fixed-rate loop does not drift; a late tick is followed by quicker ones.
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
                loop {
                    ticks.tick().await;
                    if jobs.send(Job::Timer(id)).await.is_err() {
                        break;
                    }
                }
            } else {
                tokio::time::sleep(period).await;
                let _ = jobs.send(Job::Timer(id)).await;
            }
        });
        self.timers.lock().insert(
            id,
            TimerEntry {
                task: task.abort_handle(),
                once: !repeat,
            },
        );
        id
    }
}

impl timers::Host for HostState {
    fn after(&mut self, ms: u32) -> u64 {
        self.start_timer(ms, false)
    }

    fn every(&mut self, ms: u32) -> u64 {
        self.start_timer(ms, true)
    }

    fn cancel(&mut self, timer: u64) -> bool {
        match self.timers.lock().remove(&timer) {
            Some(entry) => {
                entry.task.abort();
                true
            }
            None => false,
        }
    }
}
