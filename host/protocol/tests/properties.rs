//! Property tests: encode/decode round trips for packets and messages, and arbitrary input into
//! every decoder and the connection, which must never panic and must keep their invariants.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pitaya_protocol::{
    Connection, ConnectionConfig, EncodeOptions, Event, HEADER_LEN, MessageType, Packet,
    PacketDecoder, PacketType, ProtocolError, RouteDict, State, decode_message, decode_varint,
    encode_message, encode_packet, encode_push, encode_response, encode_varint,
};
use proptest::prelude::*;

const ROUTES: [&str; 4] = ["room.join", "room.message", "onMessage", "chat.room.say"];
const MAX_INFLATED: usize = 64 * 1024;

fn dict() -> RouteDict {
    RouteDict::from_routes(ROUTES)
}

fn packet_type() -> impl Strategy<Value = PacketType> {
    prop_oneof![
        Just(PacketType::Handshake),
        Just(PacketType::HandshakeAck),
        Just(PacketType::Heartbeat),
        Just(PacketType::Data),
        Just(PacketType::Kick),
    ]
}

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Request),
        Just(MessageType::Notify),
        Just(MessageType::Response),
        Just(MessageType::Push),
    ]
}

/// Payloads that are sometimes random (zlib makes them bigger) and sometimes repetitive (zlib
/// makes them smaller), so both branches of "compress when strictly smaller" are taken.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (any::<u8>(), 0usize..2000).prop_map(|(byte, len)| vec![byte; len]),
        "[a-c\"{}:,]{0,400}".prop_map(String::into_bytes),
    ]
}

/// Plain routes of at most 255 bytes, including empty and multi-byte UTF-8 ones.
fn plain_route() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z.]{0,40}",
        "\\PC{0,60}",
        Just("r".repeat(255)),
        Just("é".repeat(127)),
    ]
    .prop_filter("routes are at most 255 bytes", |route| route.len() <= 255)
}

/// Either a plain route or one of the dictionary's codes.
fn route() -> impl Strategy<Value = (String, Option<u16>)> {
    prop_oneof![
        plain_route().prop_map(|route| (route, None)),
        (1u16..=ROUTES.len() as u16).prop_map(|code| {
            let route = dict().route(code).unwrap().to_owned();
            (route, Some(code))
        }),
    ]
}

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..300,
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

proptest! {
    #[test]
    fn packet_round_trip(kind in packet_type(), body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut buf = BytesMut::new();
        encode_packet(kind, &body, &mut buf).unwrap();
        prop_assert_eq!(buf.len(), HEADER_LEN + body.len());
        let decoded = PacketDecoder::new(body.len()).decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(decoded, Packet::new(kind, body));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn packet_stream_survives_any_chunking(
        packets in proptest::collection::vec((packet_type(), proptest::collection::vec(any::<u8>(), 0..200)), 0..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut wire = BytesMut::new();
        for (kind, body) in &packets {
            encode_packet(*kind, body, &mut wire).unwrap();
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();

        let decoder = PacketDecoder::new(200);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut fed = 0;
        for cut in cuts {
            buf.extend_from_slice(&wire[fed..cut]);
            fed = cut;
            while let Some(packet) = decoder.decode(&mut buf).unwrap() {
                decoded.push((packet.kind, packet.body.to_vec()));
            }
        }
        prop_assert_eq!(decoded, packets);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn message_round_trip(
        kind in message_type(),
        id in id(),
        (route, code) in route(),
        payload in payload(),
        error in any::<bool>(),
        compress in any::<bool>(),
    ) {
        let dict = dict();
        let id = if kind == MessageType::Request { id.max(1) } else { id };
        let mut body = BytesMut::new();
        let route_arg = if code.is_some() { None } else { Some(route.as_str()) };
        encode_message(kind, id, route_arg, code, &payload, error, compress, &mut body).unwrap();

        let message = decode_message(&body, &dict, MAX_INFLATED.max(payload.len())).unwrap();
        prop_assert_eq!(message.kind, kind);
        prop_assert_eq!(message.id, if kind.has_id() { id } else { 0 });
        prop_assert_eq!(&message.route, if kind.has_route() { route.as_str() } else { "" });
        prop_assert_eq!(message.route_compressed, kind.has_route() && code.is_some());
        prop_assert_eq!(message.payload.as_ref(), payload.as_slice());
        prop_assert_eq!(message.error, error);

        // Compression is used only when it pays, and never without being asked for.
        let compressed = body[0] & 0x10 != 0;
        prop_assert!(!compressed || compress);
        if compressed {
            prop_assert!(body.len() < 1 + 10 + 256 + payload.len());
        }
    }

    #[test]
    fn server_packets_round_trip(
        id in id(),
        route in plain_route(),
        payload in payload(),
        error in any::<bool>(),
        compress in any::<bool>(),
        push_route_codes in any::<bool>(),
    ) {
        let dict = dict();
        let opts = EncodeOptions { compress, push_route_codes };
        let decoder = PacketDecoder::default();

        let mut out = BytesMut::new();
        encode_response(id, &payload, error, &opts, &mut out).unwrap();
        let packet = decoder.decode(&mut out).unwrap().unwrap();
        prop_assert!(out.is_empty());
        let message = decode_message(&packet.body, &dict, MAX_INFLATED.max(payload.len())).unwrap();
        prop_assert_eq!((message.kind, message.id, message.error), (MessageType::Response, id, error));
        prop_assert_eq!(message.payload.as_ref(), payload.as_slice());

        // Pushes to a dictionary route and to any other route.
        for route in [route.as_str(), "onMessage"] {
            encode_push(route, &payload, &dict, &opts, &mut out).unwrap();
            let packet = decoder.decode(&mut out).unwrap().unwrap();
            let message = decode_message(&packet.body, &dict, MAX_INFLATED.max(payload.len())).unwrap();
            prop_assert_eq!(message.kind, MessageType::Push);
            prop_assert_eq!(message.route.as_str(), route);
            prop_assert_eq!(message.route_compressed, push_route_codes && dict.code(route).is_some());
            prop_assert_eq!(message.payload.as_ref(), payload.as_slice());
        }
    }

    #[test]
    fn varint_round_trip(value in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
        let mut out = BytesMut::new();
        encode_varint(value, &mut out);
        let len = out.len();
        out.extend_from_slice(&tail);
        prop_assert_eq!(decode_varint(&out), Ok((value, len)));
    }

    #[test]
    fn varint_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        if let Ok((value, used)) = decode_varint(&bytes) {
            prop_assert!((1..=10).contains(&used));
            // Re-encoding is never longer than what was read.
            let mut out = BytesMut::new();
            encode_varint(value, &mut out);
            prop_assert!(out.len() <= used);
        }
    }

    #[test]
    fn packet_decoder_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..40) {
        let decoder = PacketDecoder::new(max);
        let mut buf = BytesMut::from(bytes.as_slice());
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    // The lengths add up: exactly one header and one body were consumed.
                    prop_assert!(packet.body.len() <= max);
                    prop_assert_eq!(before - buf.len(), HEADER_LEN + packet.body.len());
                }
                Ok(None) | Err(_) => {
                    prop_assert_eq!(buf.len(), before);
                    break;
                }
            }
        }
    }

    #[test]
    fn message_decoder_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..64) {
        if let Ok(message) = decode_message(&bytes, &dict(), max) {
            prop_assert_eq!(message.kind as u8, (bytes[0] >> 1) & 7);
            prop_assert!(bytes[0] & 0x10 != 0 || message.payload.len() < bytes.len());
            prop_assert!(message.payload.len() <= max || bytes[0] & 0x10 == 0);
        }
    }

    #[test]
    fn message_decoder_on_arbitrary_zlib_like_bytes(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        // A valid header with the zlib flag, then noise that starts like a zlib stream.
        let mut body = vec![0x12, 0x01, b'x', 0x78, 0x9c];
        body.extend_from_slice(&tail);
        let _ = decode_message(&body, &dict(), 1024);
    }
}

/// What a client might send: well-formed packets of every kind, Data packets with arbitrary
/// message bodies, and raw noise.
fn client_chunk() -> impl Strategy<Value = Vec<u8>> {
    let framed =
        (packet_type(), proptest::collection::vec(any::<u8>(), 0..24)).prop_map(|(kind, body)| {
            let mut out = BytesMut::new();
            encode_packet(kind, &body, &mut out).unwrap();
            out.to_vec()
        });
    let message = (message_type(), 0u64..3, route(), payload(), any::<bool>()).prop_map(
        |(kind, id, (route, code), payload, compress)| {
            let mut body = BytesMut::new();
            let route_arg = if code.is_some() {
                None
            } else {
                Some(route.as_str())
            };
            let _ = encode_message(
                kind, id, route_arg, code, &payload, false, compress, &mut body,
            );
            let mut out = BytesMut::new();
            encode_packet(PacketType::Data, &body, &mut out).unwrap();
            out.to_vec()
        },
    );
    prop_oneof![
        3 => framed,
        3 => message,
        1 => Just(vec![1, 0, 0, 2, b'{', b'}']),
        1 => Just(vec![2, 0, 0, 0]),
        1 => proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Receive(Vec<u8>),
    Accept,
    Refuse,
    Timeout(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => client_chunk().prop_map(Step::Receive),
        2 => Just(Step::Accept),
        1 => Just(Step::Refuse),
        2 => (0u64..100_000).prop_map(Step::Timeout),
    ]
}

fn new_connection(start: Instant) -> Connection {
    let config = ConnectionConfig {
        max_packet_body: 4096,
        max_inflated: 4096,
        ..ConnectionConfig::default()
    };
    Connection::new(Arc::new(config), Arc::new(dict()), start)
}

proptest! {
    #[test]
    fn connection_never_panics_and_closes_on_error(
        start_working in any::<bool>(),
        steps in proptest::collection::vec(step(), 0..24),
    ) {
        let start = Instant::now();
        let mut conn = new_connection(start);
        // Half the runs skip the handshake, so that most of their steps reach Data handling.
        if start_working {
            conn.receive(&[1, 0, 0, 2, b'{', b'}'], start).unwrap();
            conn.accept_handshake().unwrap();
            conn.receive(&[2, 0, 0, 0], start).unwrap();
            while conn.poll_event().is_some() {}
            while conn.poll_transmit().is_some() {}
        }
        let mut elapsed = Duration::ZERO;
        for step in steps {
            let was_closed = conn.state() == State::Closed;
            let result = match step {
                Step::Receive(bytes) => conn.receive(&bytes, start + elapsed),
                Step::Accept => conn.accept_handshake(),
                Step::Refuse => { conn.refuse_handshake(400, "no"); Ok(()) }
                Step::Timeout(millis) => {
                    elapsed += Duration::from_millis(millis);
                    conn.handle_timeout(start + elapsed)
                }
            };
            if result.is_err() {
                prop_assert_eq!(conn.state(), State::Closed);
                prop_assert_eq!(conn.poll_timeout(), None);
            }
            if was_closed {
                prop_assert_eq!(conn.state(), State::Closed);
            }
            while let Some(event) = conn.poll_event() {
                if let Event::Message(message) = event {
                    prop_assert!(matches!(message.kind, MessageType::Request | MessageType::Notify));
                    prop_assert!(message.kind != MessageType::Request || message.id > 0);
                }
            }
            while let Some(packet) = conn.poll_transmit() {
                // Every outgoing buffer is exactly one well-formed packet.
                let mut buf = BytesMut::from(packet.as_ref());
                let decoded = PacketDecoder::default().decode(&mut buf).unwrap();
                prop_assert!(decoded.is_some());
                prop_assert!(buf.is_empty());
            }
        }
        if conn.state() == State::Closed {
            prop_assert_eq!(conn.receive(&[3, 0, 0, 0], start + elapsed), Err(ProtocolError::Closed));
        }
    }

    #[test]
    fn connection_result_does_not_depend_on_chunking(
        chunks in proptest::collection::vec(client_chunk(), 0..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        // A working connection, fed the same stream whole and in pieces.
        let prefix = [1, 0, 0, 2, b'{', b'}', 2, 0, 0, 0];
        let wire: Vec<u8> = chunks.concat();
        let start = Instant::now();

        let run = |pieces: Vec<&[u8]>| {
            let mut conn = new_connection(start);
            conn.receive(&prefix[..6], start).unwrap();
            conn.accept_handshake().unwrap();
            conn.receive(&prefix[6..], start).unwrap();
            let mut error = None;
            for piece in pieces {
                if let Err(e) = conn.receive(piece, start) {
                    error = Some(e);
                    break;
                }
            }
            let events: Vec<Event> = std::iter::from_fn(|| conn.poll_event()).collect();
            (events, error, conn.state())
        };

        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for cut in cuts {
            pieces.push(&wire[from..cut]);
            from = cut;
        }
        prop_assert_eq!(run(vec![&wire]), run(pieces));
    }
}
