//! Fuzzes the connection state machine: arbitrary bytes, fed in arbitrary pieces with the clock
//! moving, never panic, and an error always leaves the connection closed.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pitaya_protocol::{Connection, ConnectionConfig, RouteDict, State};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let config = ConnectionConfig {
        max_packet_body: 4096,
        max_inflated: 4096,
        ..ConnectionConfig::default()
    };
    let dict = RouteDict::from_routes(["room.join", "room.message"]);
    let mut conn = Connection::new(Arc::new(config), Arc::new(dict), start);
    let mut now = start;
    // Each piece starts with a control byte: its low bits say how long the piece is, its high
    // bits whether to accept the handshake and how far to move the clock.
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let len = usize::from(control & 0x1f).min(tail.len());
        let (piece, tail) = tail.split_at(len);
        rest = tail;
        let accepted = if control & 0x20 != 0 {
            conn.accept_handshake()
        } else {
            Ok(())
        };
        now += Duration::from_secs(u64::from(control >> 6) * 20);
        let result = accepted
            .and_then(|()| conn.receive(piece, now))
            .and_then(|()| conn.handle_timeout(now));
        if result.is_err() {
            assert_eq!(conn.state(), State::Closed);
            assert_eq!(conn.poll_timeout(), None);
        }
        while conn.poll_event().is_some() {}
        while conn.poll_transmit().is_some() {}
    }
});
