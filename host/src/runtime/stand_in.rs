//! Stand-ins for a component call, for measuring what the rest of the host costs
//! (`bench/budget.sh`). Built only with the `stand-in` feature, which no shipped build has.
//!
//! `PITAYA_STAND_IN`, read once, chooses what every handler call does instead of calling the
//! component; unset, calls go to the component as usual:
//!
//! - `free`: answers the payload at once, without the instance's lock;
//! - `locked`: takes the instance's lock as a call does, then answers at once;
//! - `spin:NS`: busies its thread for NS nanoseconds (no memory touched), then answers;
//! - `locked-spin:NS`: the same, holding the instance's lock.
//!
//! A spin stands for a component call that costs NS of CPU, so a series of them shows how much
//! a call may cost before the host's CPU per request passes a given multiple of the floor's.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{CallResult, Shard};

/// What a call does instead; see the module's doc.
#[derive(Clone, Copy)]
struct StandIn {
    locked: bool,
    spin: Duration,
}

/// The stand-in chosen by `PITAYA_STAND_IN`, if any. A value it cannot read stops the host:
/// a measurement of the wrong thing is worse than none.
fn chosen() -> Option<StandIn> {
    static CHOSEN: OnceLock<Option<StandIn>> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let value = std::env::var("PITAYA_STAND_IN").ok()?;
        let nanos = |n: &str| n.parse().ok().map(Duration::from_nanos);
        let stand_in = |locked, spin| Some(StandIn { locked, spin });
        let read = match value.split_once(':') {
            None if value == "free" => stand_in(false, Duration::ZERO),
            None if value == "locked" => stand_in(true, Duration::ZERO),
            Some(("spin", n)) => nanos(n).and_then(|spin| stand_in(false, spin)),
            Some(("locked-spin", n)) => nanos(n).and_then(|spin| stand_in(true, spin)),
            _ => None,
        };
        if read.is_none() {
            eprintln!(
                "PITAYA_STAND_IN: expected free, locked, spin:NS or locked-spin:NS, not {value:?}"
            );
            std::process::exit(2);
        }
        read
    })
}

/// Runs the chosen stand-in for a call into `shard`; `None` when none is chosen.
pub(super) async fn call(shard: &Shard, payload: &[u8]) -> Option<CallResult> {
    let stand_in = chosen()?;
    let _held = if stand_in.locked {
        Some(shard.lock().await)
    } else {
        None
    };
    let start = Instant::now();
    while start.elapsed() < stand_in.spin {
        std::hint::spin_loop();
    }
    Some(Ok(Ok(payload.to_vec())))
}
