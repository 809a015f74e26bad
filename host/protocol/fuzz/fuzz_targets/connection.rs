//! Fuzzes the protocol's connection state machine with what a client may do: any bytes, cut
//! anywhere, between handshake answers and the passing of time. It must never panic; an error
//! closes it for good; every packet it writes is exactly one well-formed packet; and it hands
//! the host only Requests (with an id) and Notifies.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pitaya_protocol::{
    Connection, ConnectionConfig, Event, MessageType, PacketDecoder, ProtocolError, RouteDict,
    State,
};

fuzz_target!(|data: &[u8]| {
    let config = ConnectionConfig {
        max_packet_body: 4096,
        max_inflated: 4096,
        heartbeat: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(2),
        ..ConnectionConfig::default()
    };
    let dict = RouteDict::from_routes(["room.join", "room.message"]);
    let start = Instant::now();
    let mut conn = Connection::new(Arc::new(config), Arc::new(dict), start);
    let mut now = start;
    // Each step: an op byte, a length byte, then that many bytes (fewer at the end).
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(take);
        rest = after;
        let was_closed = conn.state() == State::Closed;
        let result = match op % 6 {
            0 | 1 => conn.receive(bytes, now),
            2 => conn.accept_handshake(),
            3 => {
                conn.refuse_handshake(400, "no");
                Ok(())
            }
            4 => {
                now += Duration::from_millis(u64::from(*len) * 20);
                conn.handle_timeout(now)
            }
            _ => {
                if len % 2 == 0 {
                    conn.kick(Some("bye"));
                } else {
                    conn.close();
                }
                Ok(())
            }
        };
        if result.is_err() {
            assert_eq!(conn.state(), State::Closed);
            assert_eq!(conn.poll_timeout(), None);
        }
        if was_closed {
            assert_eq!(conn.state(), State::Closed);
        }
        while let Some(event) = conn.poll_event() {
            if let Event::Message(message) = event {
                assert!(matches!(
                    message.kind,
                    MessageType::Request | MessageType::Notify
                ));
                assert!(message.kind != MessageType::Request || message.id > 0);
            }
        }
        while let Some(packet) = conn.poll_transmit() {
            let mut buf = BytesMut::from(packet.as_ref());
            let decoded = PacketDecoder::default().decode(&mut buf);
            assert!(matches!(decoded, Ok(Some(_))), "{decoded:?}");
            assert!(buf.is_empty());
        }
        if let Some(deadline) = conn.poll_timeout() {
            assert!(deadline >= start);
        }
    }
    if conn.state() == State::Closed {
        assert_eq!(conn.receive(&[3, 0, 0, 0], now), Err(ProtocolError::Closed));
    }
});
