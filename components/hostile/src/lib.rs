//! The `hostile` component: each handler misbehaves in one way the sandbox must contain.
//! The host's sandbox tests call these; they are also a catalogue of what the host stops.
//!
//! - `hostile.spin` loops forever: stopped by the call deadline (epoch interruption).
//! - `hostile.hog` allocates without end: stopped by the instance's memory cap.
//! - `hostile.trap` panics: a trap.
//! - `hostile.deep` recurses without end: a stack overflow trap.
//! - `hostile.big` answers with 100 MB: refused (memory cap, or the host's reply size cap).
//! - `hostile.ok` answers `{}`: proves the component is serving again afterwards.
//! - `hostile.chatter` `{"lines":N,"bytes":B}` logs N info lines of B bytes each: the host keeps
//!   a component's share of its log within a budget.
//! - `hostile.fail` `{"bytes":N}` fails with code `HOSTILE-FAIL` and a message of N bytes: an
//!   error is held to the answer size limit too.
//! - `hostile.badpush` `{"count":N,"bytes":B}` pushes N times to the caller on a route of B
//!   bytes, which the host refuses past 255: what it logs of them stays within a budget.
//! - `hostile.timers` `{"count":N}` sets N timers of a minute and never cancels them, answering
//!   `{"set":S}` with how many the host started: an instance may have only so many.
//! - `hostile.peek` answers what the sandbox lets it see: `{"env":N,"clockSecs":S,"files":bool}`
//!   (environment variables, seconds since the epoch, whether `/` can be listed). With nothing
//!   granted that is `{"env":0,"clockSecs":0,"files":false}`.
//! - `hostile.groups` `{"count":N}` makes groups `hostile-0`, `hostile-1`, ... until N or the host
//!   refuses one, answering `{"made":M}`: a component may make only its share of the host's
//!   groups, so that it cannot leave the other components none.
//! - `hostile.flood` `{"bytes":N,"chunk":C}` pushes `onFlood` chunks of C bytes to the caller
//!   until N bytes are queued or a push is refused: a client that does not read is disconnected
//!   once its bounded send queue is full, and the host's memory stays bounded.

use std::hint::black_box;

use pitaya_guest::prelude::*;
use serde::Deserialize;

/// What `hostile.chatter` is asked to log.
#[derive(Deserialize)]
struct Chatter {
    lines: usize,
    bytes: usize,
}

/// What `hostile.badpush` is asked to push.
#[derive(Deserialize)]
struct BadPush {
    count: usize,
    bytes: usize,
}

/// How long a message `hostile.fail` is asked to fail with.
#[derive(Deserialize)]
struct Fail {
    bytes: usize,
}

/// How many timers `hostile.timers` is asked to set.
#[derive(Deserialize)]
struct Timers {
    count: usize,
}

/// How many groups `hostile.groups` is asked to make.
#[derive(Deserialize)]
struct Groups {
    count: usize,
}

/// What `hostile.flood` is asked to push.
#[derive(Deserialize)]
struct Flood {
    bytes: usize,
    chunk: usize,
}

#[derive(Default)]
struct Hostile;

#[component(name = "hostile")]
impl Hostile {
    #[request]
    fn spin() -> Result<Raw> {
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }

    #[request]
    fn hog() -> Result<Raw> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(black_box(vec![1u8; 1 << 20]));
        }
    }

    #[request]
    fn trap() -> Result<Raw> {
        panic!("hostile.trap panics on purpose")
    }

    #[request]
    fn deep() -> Result<Raw> {
        Ok(Raw(vec![recurse(black_box(1)) as u8]))
    }

    #[request]
    fn big() -> Result<Raw> {
        Ok(Raw(black_box(vec![b'x'; 100 << 20])))
    }

    #[request]
    fn flood(session: &Session, flood: Flood) -> Result<serde_json::Value> {
        let chunk = Raw(vec![b'f'; flood.chunk.clamp(1, 1 << 20)]);
        let mut pushed = 0;
        while pushed < flood.bytes && session.push_raw("onFlood", &chunk) {
            pushed += chunk.len();
        }
        Ok(serde_json::json!({ "pushed": pushed }))
    }

    #[request]
    fn chatter(chatter: Chatter) -> Result<serde_json::Value> {
        let line = "c".repeat(chatter.bytes);
        for _ in 0..chatter.lines {
            pitaya_guest::log::log(pitaya_guest::log::Level::Info, &line);
        }
        Ok(serde_json::json!({ "logged": chatter.lines }))
    }

    #[request]
    fn badpush(session: &Session, push: BadPush) -> Result<serde_json::Value> {
        let route = "r".repeat(push.bytes);
        let sent = (0..push.count)
            .filter(|_| session.push_raw(&route, b"{}"))
            .count();
        Ok(serde_json::json!({ "sent": sent }))
    }

    #[request]
    fn fail(fail: Fail) -> Result<()> {
        Err(HandlerError::new("HOSTILE-FAIL", "f".repeat(fail.bytes)))
    }

    #[request]
    fn timers(timers: Timers) -> Result<serde_json::Value> {
        let set = (0..timers.count)
            .map(|_| pitaya_guest::timers::every(std::time::Duration::from_secs(60)))
            .filter(|timer| u64::from(*timer) != 0)
            .count();
        Ok(serde_json::json!({ "set": set }))
    }

    #[request]
    fn groups(groups: Groups) -> Result<serde_json::Value> {
        let made = (0..groups.count)
            .take_while(|n| Group::named(format!("hostile-{n}")).create())
            .count();
        Ok(serde_json::json!({ "made": made }))
    }

    #[request]
    fn peek() -> Result<serde_json::Value> {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        Ok(serde_json::json!({
            "env": std::env::vars().count(),
            "clockSecs": clock,
            "files": std::fs::read_dir("/").is_ok(),
        }))
    }

    #[request]
    fn ok() -> Result<Raw> {
        Ok(Raw(b"{}".to_vec()))
    }
}

/// Not a tail call, so the compiler cannot turn it into a loop; it never returns on purpose.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    recurse(depth + 1).wrapping_add(frame[black_box(3)])
}
