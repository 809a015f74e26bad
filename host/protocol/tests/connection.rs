//! The connection state machine: packet ordering rules, handshake replies, heartbeats and
//! timeouts, all driven by a fake `now`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pitaya_protocol::{
    Connection, ConnectionConfig, Event, MessageError, MessageType, PacketDecoder, PacketError,
    PacketType, ProtocolError, RouteDict, State, deflate, encode_message, encode_packet, inflate,
};
use serde_json::Value;

const SECOND: Duration = Duration::from_secs(1);
const HANDSHAKE: &[u8] = &[1, 0, 0, 2, b'{', b'}'];
const ACK: &[u8] = &[2, 0, 0, 0];
const HEARTBEAT: &[u8] = &[3, 0, 0, 0];
const KICK: &[u8] = &[5, 0, 0, 0];

fn packet(kind: PacketType, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_packet(kind, body, &mut out).unwrap();
    out.to_vec()
}

fn data(
    kind: MessageType,
    id: u64,
    route: Option<&str>,
    code: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = BytesMut::new();
    encode_message(kind, id, route, code, payload, false, false, &mut body).unwrap();
    packet(PacketType::Data, &body)
}

fn request(id: u64, route: &str) -> Vec<u8> {
    data(MessageType::Request, id, Some(route), None, b"{}")
}

struct Harness {
    conn: Connection,
    start: Instant,
}

impl Harness {
    fn with(config: ConnectionConfig, dict: RouteDict) -> Self {
        let start = Instant::now();
        Self {
            conn: Connection::new(Arc::new(config), Arc::new(dict), start),
            start,
        }
    }

    fn new() -> Self {
        Self::with(ConnectionConfig::default(), RouteDict::default())
    }

    fn at(&self, offset: Duration) -> Instant {
        self.start + offset
    }

    fn receive(&mut self, bytes: &[u8], offset: Duration) -> Result<(), ProtocolError> {
        let now = self.at(offset);
        self.conn.receive(bytes, now)
    }

    fn timeout(&mut self, offset: Duration) -> Result<(), ProtocolError> {
        let now = self.at(offset);
        self.conn.handle_timeout(now)
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    fn transmits(&mut self) -> Vec<Bytes> {
        std::iter::from_fn(|| self.conn.poll_transmit()).collect()
    }

    /// Handshake at `offset`, accepted at once.
    fn handshake_sent(offset: Duration) -> Self {
        let mut h = Self::new();
        h.receive(HANDSHAKE, offset).unwrap();
        h.conn.accept_handshake().unwrap();
        h.events();
        h.transmits();
        assert_eq!(h.conn.state(), State::HandshakeSent);
        h
    }

    /// Handshake at t=0 with a `heartbeat` interval, accepted at once.
    fn answered_with_heartbeat(heartbeat: Duration) -> Self {
        let config = ConnectionConfig {
            heartbeat,
            ..ConnectionConfig::default()
        };
        let mut h = Self::with(config, RouteDict::default());
        h.receive(HANDSHAKE, Duration::ZERO).unwrap();
        h.conn.accept_handshake().unwrap();
        h.transmits();
        h
    }

    fn working(offset: Duration) -> Self {
        let mut h = Self::handshake_sent(offset);
        h.receive(ACK, offset).unwrap();
        assert!(matches!(h.events().as_slice(), [Event::Ready]));
        h
    }

    fn in_state(state: State) -> Self {
        match state {
            State::AwaitingHandshake => Self::new(),
            State::AwaitingValidation => {
                let mut h = Self::new();
                h.receive(HANDSHAKE, Duration::ZERO).unwrap();
                h.events();
                h
            }
            State::HandshakeSent => Self::handshake_sent(Duration::ZERO),
            State::Working => Self::working(Duration::ZERO),
            State::Closed => {
                let mut h = Self::new();
                h.conn.close();
                h
            }
        }
    }

    fn assert_closed_by(&mut self, bytes: &[u8], expected: ProtocolError) {
        assert_eq!(self.receive(bytes, Duration::ZERO), Err(expected));
        assert_eq!(self.conn.state(), State::Closed);
        assert_eq!(self.conn.poll_timeout(), None);
        assert_eq!(
            self.receive(HEARTBEAT, Duration::ZERO),
            Err(ProtocolError::Closed)
        );
    }
}

/// States in which packets are decoded as they arrive (while the host validates a handshake,
/// later packets wait for its decision).
const DECODING_STATES: [State; 3] = [
    State::AwaitingHandshake,
    State::HandshakeSent,
    State::Working,
];

const LIVE_STATES: [State; 4] = [
    State::AwaitingHandshake,
    State::AwaitingValidation,
    State::HandshakeSent,
    State::Working,
];

#[test]
fn handshake_only_while_awaiting_it() {
    for state in [State::HandshakeSent, State::Working] {
        let mut h = Harness::in_state(state);
        h.assert_closed_by(
            HANDSHAKE,
            ProtocolError::UnexpectedPacket {
                kind: PacketType::Handshake,
                state,
            },
        );
    }
}

#[test]
fn ack_only_after_the_handshake_was_sent() {
    for state in [State::AwaitingHandshake, State::Working] {
        let mut h = Harness::in_state(state);
        h.assert_closed_by(
            ACK,
            ProtocolError::UnexpectedPacket {
                kind: PacketType::HandshakeAck,
                state,
            },
        );
    }
}

#[test]
fn data_only_once_working() {
    for state in [State::AwaitingHandshake, State::HandshakeSent] {
        let mut h = Harness::in_state(state);
        h.assert_closed_by(
            &request(1, "room.join"),
            ProtocolError::UnexpectedPacket {
                kind: PacketType::Data,
                state,
            },
        );
    }
}

#[test]
fn heartbeat_accepted_in_every_live_state() {
    for state in LIVE_STATES {
        let mut h = Harness::in_state(state);
        h.receive(HEARTBEAT, Duration::ZERO).unwrap();
        // Heartbeats from a client may carry a body; it is ignored.
        h.receive(&packet(PacketType::Heartbeat, b"x"), Duration::ZERO)
            .unwrap();
        assert_eq!(h.conn.state(), state);
        assert!(h.events().is_empty());
    }
}

#[test]
fn kick_from_a_client_is_an_error() {
    for state in DECODING_STATES {
        let mut h = Harness::in_state(state);
        h.assert_closed_by(
            KICK,
            ProtocolError::UnexpectedPacket {
                kind: PacketType::Kick,
                state,
            },
        );
    }
}

#[test]
fn unknown_packet_types_close_in_every_state() {
    for state in DECODING_STATES {
        for byte in [0u8, 6, 0x7f, 0xff] {
            let mut h = Harness::in_state(state);
            h.assert_closed_by(
                &[byte, 0, 0, 0],
                ProtocolError::Packet(PacketError::UnknownType(byte)),
            );
        }
    }
}

#[test]
fn oversize_header_closes_as_soon_as_it_is_in() {
    let config = ConnectionConfig {
        max_packet_body: 100,
        ..ConnectionConfig::default()
    };
    let mut h = Harness::with(config, RouteDict::default());
    h.receive(&[1, 0], Duration::ZERO).unwrap();
    h.assert_closed_by(
        &[0, 101],
        ProtocolError::Packet(PacketError::TooLarge { len: 101, max: 100 }),
    );
}

#[test]
fn client_may_not_send_responses_or_pushes() {
    let mut h = Harness::working(Duration::ZERO);
    h.assert_closed_by(
        &data(MessageType::Response, 1, None, None, b"{}"),
        ProtocolError::UnexpectedMessageType(MessageType::Response),
    );
    let mut h = Harness::working(Duration::ZERO);
    h.assert_closed_by(
        &data(MessageType::Push, 0, Some("onX"), None, b"{}"),
        ProtocolError::UnexpectedMessageType(MessageType::Push),
    );
}

#[test]
fn bad_messages_close() {
    let cases: [(&[u8], MessageError); 4] = [
        (&[], MessageError::Empty),
        (&[0x08], MessageError::BadType(4)),
        (&[0x00, 0x00, 0x00], MessageError::ZeroRequestId),
        (&[0x03, 0x00, 0x09], MessageError::UnknownRouteCode(9)),
    ];
    for (body, error) in cases {
        let mut h = Harness::working(Duration::ZERO);
        h.assert_closed_by(
            &packet(PacketType::Data, body),
            ProtocolError::Message(error),
        );
    }
}

#[test]
fn full_session_with_requests_notifies_codes_and_zlib() {
    let dict = RouteDict::from_routes(["room.join", "room.message"]);
    let mut h = Harness::with(ConnectionConfig::default(), dict);
    h.receive(HANDSHAKE, Duration::ZERO).unwrap();
    h.conn.accept_handshake().unwrap();
    let reply = h.transmits();
    assert_eq!(reply.len(), 1);
    let json: Value = serde_json::from_slice(&reply[0][4..]).unwrap();
    assert_eq!(json["sys"]["dict"]["room.join"], 1);
    assert_eq!(json["sys"]["dict"]["room.message"], 2);
    h.receive(ACK, Duration::ZERO).unwrap();
    assert!(matches!(
        h.events().as_slice(),
        [Event::Handshake(_), Event::Ready]
    ));

    let big = br#"{"text":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
    let mut compressed_request = BytesMut::new();
    encode_message(
        MessageType::Request,
        2,
        Some("room.join"),
        None,
        big,
        false,
        true,
        &mut compressed_request,
    )
    .unwrap();
    assert_eq!(compressed_request[0], 0x10);

    let mut wire = request(1, "room.join");
    wire.extend(data(MessageType::Notify, 0, None, Some(2), b"{\"m\":1}"));
    wire.extend(packet(PacketType::Data, &compressed_request));
    wire.extend(HEARTBEAT);
    h.receive(&wire, Duration::ZERO).unwrap();

    let events = h.events();
    let messages: Vec<_> = events
        .iter()
        .map(|event| match event {
            Event::Message(message) => message,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        (messages[0].kind, messages[0].id, messages[0].route.as_str()),
        (MessageType::Request, 1, "room.join")
    );
    assert_eq!(
        (
            messages[1].kind,
            messages[1].route.as_str(),
            messages[1].route_compressed
        ),
        (MessageType::Notify, "room.message", true)
    );
    assert_eq!(messages[2].payload.as_ref(), big);
    assert_eq!(h.conn.state(), State::Working);
}

#[test]
fn a_whole_session_fed_one_byte_at_a_time() {
    let mut h = Harness::new();
    for &byte in HANDSHAKE {
        h.receive(&[byte], Duration::ZERO).unwrap();
    }
    assert!(matches!(h.events().as_slice(), [Event::Handshake(_)]));
    h.conn.accept_handshake().unwrap();
    let mut wire = ACK.to_vec();
    wire.extend(request(7, "a.b"));
    wire.extend(HEARTBEAT);
    for &byte in &wire {
        h.receive(&[byte], Duration::ZERO).unwrap();
    }
    let events = h.events();
    assert!(matches!(events[0], Event::Ready));
    assert!(matches!(&events[1], Event::Message(m) if m.id == 7 && m.route == "a.b"));
    assert_eq!(events.len(), 2);
}

#[test]
fn events_before_an_error_stay_queued() {
    let mut h = Harness::working(Duration::ZERO);
    let mut wire = request(1, "a.b");
    wire.extend(KICK);
    wire.extend(request(2, "a.b"));
    assert!(h.receive(&wire, Duration::ZERO).is_err());
    let events = h.events();
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0], Event::Message(m) if m.id == 1));
}

#[test]
fn invalid_handshake_json_queues_a_400_then_closes() {
    // An empty body is not JSON either (`{}` is the smallest handshake).
    for body in [&b"{"[..], b"", b"[1]", b"\xff\xfe", br#"{"sys":"mac"}"#] {
        let mut h = Harness::new();
        let result = h.receive(&packet(PacketType::Handshake, body), Duration::ZERO);
        assert!(
            matches!(result, Err(ProtocolError::InvalidHandshake(_))),
            "{result:?}"
        );
        assert_eq!(h.conn.state(), State::Closed);
        assert!(h.events().is_empty());
        let replies = h.transmits();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0][0], PacketType::Handshake as u8);
        let json: Value = serde_json::from_slice(&replies[0][4..]).unwrap();
        assert_eq!(json["code"], 400);
        assert!(json["msg"].is_string());
    }
}

#[test]
fn refused_handshake() {
    let mut h = Harness::in_state(State::AwaitingValidation);
    h.conn.refuse_handshake(403, "banned");
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(
        h.transmits(),
        [Bytes::from(packet(
            PacketType::Handshake,
            br#"{"code":403,"msg":"banned"}"#
        ))]
    );
    assert_eq!(h.receive(ACK, Duration::ZERO), Err(ProtocolError::Closed));
    // Accepting afterwards changes nothing.
    h.conn.accept_handshake().unwrap();
    assert_eq!(h.conn.state(), State::Closed);
    assert!(h.transmits().is_empty());
}

#[test]
fn accept_only_while_awaiting_validation() {
    for state in [
        State::AwaitingHandshake,
        State::HandshakeSent,
        State::Working,
    ] {
        let mut h = Harness::in_state(state);
        h.conn.accept_handshake().unwrap();
        assert_eq!(h.conn.state(), state);
        assert!(h.transmits().is_empty());
    }
}

#[test]
fn kick_queues_the_packet_and_closes() {
    let mut h = Harness::working(Duration::ZERO);
    h.conn.kick(Some("maintenance"));
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(
        h.transmits(),
        [Bytes::from(packet(
            PacketType::Kick,
            br#"{"reason":"maintenance"}"#
        ))]
    );
    h.conn.kick(None);
    assert!(h.transmits().is_empty());
}

#[test]
fn server_handshake_reflects_config() {
    let config = ConnectionConfig {
        heartbeat: 5 * SECOND,
        serializer: "protobuf".to_owned(),
        ..ConnectionConfig::default()
    };
    let mut h = Harness::with(config, RouteDict::from_routes(["x.y"]));
    h.receive(HANDSHAKE, Duration::ZERO).unwrap();
    h.conn.accept_handshake().unwrap();
    assert_eq!(
        h.transmits()[0][4..],
        *br#"{"code":200,"sys":{"dict":{"x.y":1},"heartbeat":5,"serializer":"protobuf"}}"#
    );
}

#[test]
fn compressed_server_handshake() {
    let routes: Vec<String> = (0..50).map(|i| format!("room.handler{i}")).collect();
    let dict = RouteDict::from_routes(routes);
    let config = ConnectionConfig {
        compress_handshake: true,
        ..ConnectionConfig::default()
    };
    let plain = pitaya_protocol::server_handshake_json(30, &dict, "json");
    let mut h = Harness::with(config.clone(), dict);
    h.receive(HANDSHAKE, Duration::ZERO).unwrap();
    h.conn.accept_handshake().unwrap();
    let reply = h.transmits().remove(0);
    let mut buf = BytesMut::from(reply.as_ref());
    let packet = PacketDecoder::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(packet.kind, PacketType::Handshake);
    assert_eq!(packet.body[0], 0x78, "zlib magic byte clients look for");
    assert_eq!(inflate(&packet.body, 1 << 20).unwrap(), plain);

    // Left plain when zlib would not make it smaller.
    let tiny = pitaya_protocol::server_handshake_json(30, &RouteDict::default(), "json");
    assert!(deflate(&tiny).len() >= tiny.len());
    let mut h = Harness::with(config, RouteDict::default());
    h.receive(HANDSHAKE, Duration::ZERO).unwrap();
    h.conn.accept_handshake().unwrap();
    assert_eq!(h.transmits()[0][4..], tiny);
}

#[test]
fn handshake_timeout_in_every_state_before_the_ack() {
    for state in [
        State::AwaitingHandshake,
        State::AwaitingValidation,
        State::HandshakeSent,
    ] {
        let mut h = Harness::in_state(state);
        let deadline = h.at(10 * SECOND);
        assert_eq!(h.conn.poll_timeout(), Some(deadline), "{state:?}");
        h.timeout(10 * SECOND - Duration::from_nanos(1)).unwrap();
        assert_eq!(h.conn.state(), state);
        // Heartbeats do not extend the handshake deadline.
        h.receive(HEARTBEAT, 9 * SECOND).unwrap();
        assert_eq!(h.timeout(10 * SECOND), Err(ProtocolError::HandshakeTimeout));
        assert_eq!(h.conn.state(), State::Closed);
        assert_eq!(h.conn.poll_timeout(), None);
        assert_eq!(h.timeout(11 * SECOND), Ok(()));
    }
}

#[test]
fn no_handshake_timeout_once_working() {
    let mut h = Harness::working(SECOND);
    // The first heartbeat, half an interval after the ack, is what comes next.
    assert_eq!(h.conn.poll_timeout(), Some(h.at(16 * SECOND)));
    h.timeout(10 * SECOND).unwrap();
    assert_eq!(h.conn.state(), State::Working);
}

#[test]
fn zero_handshake_timeout_disables_it() {
    let config = ConnectionConfig {
        handshake_timeout: Duration::ZERO,
        ..ConnectionConfig::default()
    };
    let mut h = Harness::with(config, RouteDict::default());
    assert_eq!(h.conn.poll_timeout(), None);
    h.timeout(1000 * SECOND).unwrap();
    assert_eq!(h.conn.state(), State::AwaitingHandshake);
}

#[test]
fn heartbeat_schedule() {
    // Handshake received and answered at t=2s, acked at t=3s.
    let mut h = Harness::handshake_sent(2 * SECOND);
    // The handshake deadline (t=10s) comes before the first heartbeat (t=32s).
    assert_eq!(h.conn.poll_timeout(), Some(h.at(10 * SECOND)));
    // The ack brings the first heartbeat from t=32s to half an interval after it.
    h.receive(ACK, 3 * SECOND).unwrap();
    assert_eq!(h.conn.poll_timeout(), Some(h.at(18 * SECOND)));

    h.timeout(17 * SECOND).unwrap();
    assert!(h.transmits().is_empty(), "not due yet");
    h.timeout(18 * SECOND).unwrap();
    assert_eq!(h.transmits(), [Bytes::from_static(HEARTBEAT)]);
    assert_eq!(h.conn.poll_timeout(), Some(h.at(48 * SECOND)));
    h.timeout(40 * SECOND).unwrap();
    assert!(h.transmits().is_empty(), "one heartbeat per interval");
    h.timeout(48 * SECOND).unwrap();
    assert_eq!(h.transmits(), [Bytes::from_static(HEARTBEAT)]);

    // The client's heartbeat at t=50s keeps it alive past the t=63s liveness deadline, and
    // brings the next heartbeat from t=78s to half an interval after it.
    h.receive(HEARTBEAT, 50 * SECOND).unwrap();
    assert_eq!(h.conn.poll_timeout(), Some(h.at(65 * SECOND)));
    h.timeout(65 * SECOND).unwrap();
    assert_eq!(h.transmits(), [Bytes::from_static(HEARTBEAT)]);
    assert_eq!(h.conn.poll_timeout(), Some(h.at(95 * SECOND)));
    h.timeout(95 * SECOND).unwrap();
    assert_eq!(h.transmits(), [Bytes::from_static(HEARTBEAT)]);
    // Now the liveness deadline, 2 × 30 s after t=50s, comes first.
    assert_eq!(h.conn.poll_timeout(), Some(h.at(110 * SECOND)));
    h.timeout(110 * SECOND - Duration::from_millis(1)).unwrap();
    assert_eq!(
        h.timeout(110 * SECOND),
        Err(ProtocolError::HeartbeatTimeout)
    );
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn any_packet_is_a_sign_of_life() {
    let mut h = Harness::working(Duration::ZERO);
    h.receive(&request(1, "a.b"), 59 * SECOND).unwrap();
    h.timeout(60 * SECOND).unwrap();
    h.receive(
        &data(MessageType::Notify, 0, Some("a.b"), None, b""),
        118 * SECOND,
    )
    .unwrap();
    h.timeout(177 * SECOND).unwrap();
    assert_eq!(
        h.timeout(178 * SECOND),
        Err(ProtocolError::HeartbeatTimeout)
    );
}

#[test]
fn partial_packets_are_not_a_sign_of_life() {
    let mut h = Harness::working(Duration::ZERO);
    h.receive(&[3, 0], 59 * SECOND).unwrap();
    assert_eq!(h.timeout(60 * SECOND), Err(ProtocolError::HeartbeatTimeout));
}

#[test]
fn liveness_counts_from_the_handshake_while_waiting_for_the_ack() {
    let mut h = Harness::answered_with_heartbeat(SECOND);
    h.timeout(SECOND).unwrap();
    assert_eq!(h.transmits(), [Bytes::from_static(HEARTBEAT)]);
    assert_eq!(h.timeout(2 * SECOND), Err(ProtocolError::HeartbeatTimeout));
}

#[test]
fn a_late_host_gets_one_heartbeat_not_a_burst() {
    let mut h = Harness::working(Duration::ZERO);
    h.receive(HEARTBEAT, 50 * SECOND).unwrap();
    h.timeout(95 * SECOND).unwrap();
    assert_eq!(h.transmits().len(), 1);
    assert_eq!(h.conn.poll_timeout(), Some(h.at(110 * SECOND)));
    h.receive(HEARTBEAT, 100 * SECOND).unwrap();
    assert_eq!(h.conn.poll_timeout(), Some(h.at(115 * SECOND)));
}

/// A client that answers each server heartbeat it takes `answer_after` later; with
/// `drops_while_pending`, a heartbeat that arrives while its answer is pending is dropped, as
/// pomelo's web client does. Plays 30 s at a 1 s interval, each server heartbeat reaching the
/// client 1 ms after it is sent, and returns when the client's and the server's heartbeats went
/// out.
fn play_heartbeats(
    answer_after: Duration,
    drops_while_pending: bool,
) -> (Vec<Duration>, Vec<Duration>) {
    const MS: Duration = Duration::from_millis(1);
    let mut h = Harness::answered_with_heartbeat(SECOND);
    h.receive(ACK, MS).unwrap();
    let mut pending: Vec<Duration> = Vec::new(); // when the client's answers go out
    let (mut client, mut server) = (vec![MS], Vec::new());
    let mut now = Duration::ZERO;
    while now < 30 * SECOND {
        now += MS;
        if pending.first().is_some_and(|&at| at <= now) {
            pending.remove(0);
            h.receive(HEARTBEAT, now).unwrap();
            client.push(now);
        }
        h.timeout(now).unwrap();
        if !h.transmits().is_empty() {
            server.push(now);
            if pending.is_empty() || !drops_while_pending {
                pending.push(now + MS + answer_after);
            }
        }
    }
    assert_eq!(h.conn.state(), State::Working);
    (client, server)
}

fn longest_gap(times: &[Duration]) -> Duration {
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap()
}

/// pomelo's web client answers a heartbeat one interval after it receives it (here its timer
/// fires 2 ms late) and drops one that arrives while its answer is pending. Against beats exactly
/// one interval apart it would answer every other one, 2 s apart, and time out; here it never
/// goes 1.6 s without a packet.
#[test]
fn a_client_that_answers_heartbeats_an_interval_late_stays_alive() {
    let (client, _) = play_heartbeats(SECOND + Duration::from_millis(2), true);
    let longest = longest_gap(&client);
    assert!(
        longest <= Duration::from_millis(1600),
        "the client was silent for {longest:?}"
    );
    assert!(client.len() >= 18, "{} client beats", client.len());
}

/// A client that answers each heartbeat at once (as pitaya-bench does) still gets one an
/// interval: the half-interval beat is not a reply to every client heartbeat.
#[test]
fn a_client_that_answers_heartbeats_at_once_gets_one_an_interval() {
    let (client, server) = play_heartbeats(Duration::from_millis(1), false);
    assert!(
        (29..=31).contains(&server.len()),
        "{} server beats in 30 s",
        server.len()
    );
    assert!(
        longest_gap(&client) <= Duration::from_millis(1010),
        "{client:?}"
    );
}

/// protocol.md §6: the host beats every interval, whatever the client does. A client on a timer
/// of its own, slower than the host's (1.3 intervals: each of its beats is late enough to be
/// owed one half an interval later), pulls beats forward but never puts one off.
#[test]
fn a_client_slower_than_the_interval_never_puts_the_hosts_heartbeat_off() {
    const MS: Duration = Duration::from_millis(1);
    let mut h = Harness::answered_with_heartbeat(SECOND);
    h.receive(ACK, MS).unwrap();
    let mut server = Vec::new();
    let mut now = Duration::ZERO;
    while now < 30 * SECOND {
        now += MS;
        if now.as_millis().is_multiple_of(1300) {
            h.receive(HEARTBEAT, now).unwrap();
        }
        h.timeout(now).unwrap();
        if !h.transmits().is_empty() {
            server.push(now);
        }
    }
    assert_eq!(h.conn.state(), State::Working);
    let longest = longest_gap(&server);
    assert!(longest <= SECOND, "the host was silent for {longest:?}");
    // No more than one owed beat per client beat (23 in 30 s) beside one an interval.
    assert!(
        (30..=53).contains(&server.len()),
        "{} server beats in 30 s",
        server.len()
    );
}

/// pomelo's web client (answer one interval after a heartbeat arrives, drop heartbeats that
/// arrive while the answer is pending) against a host as busy as a loaded machine makes it: the
/// host acts on each deadline 0–4 ms late, but handles a packet that arrived meanwhile first
/// (its connection task polls the socket before its timer); the client's timer fires 0–4 ms late;
/// each packet takes 0.25–1 ms. Whichever comes first, the client's answer or the server's next
/// heartbeat, the client must never be cut off: 100 runs of 40 s at a 1 s interval, none closed,
/// none silent for over 1.6 s; and the host never silent for over an interval and its lateness.
#[test]
fn a_pomelo_client_stays_alive_beside_a_busy_host() {
    const STEP: Duration = Duration::from_micros(250);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    // xorshift64*: the same jitters on every run of the test.
    let mut jitter = |max_steps: u64| {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let random = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        STEP * u32::try_from(random % (max_steps + 1)).unwrap()
    };
    for run in 0..100 {
        let mut h = Harness::answered_with_heartbeat(SECOND);
        let start = h.at(Duration::ZERO);
        h.receive(ACK, STEP).unwrap();
        let mut to_client: Vec<Duration> = Vec::new(); // server heartbeats on the way
        let mut to_host: Vec<Duration> = Vec::new(); // client heartbeats on the way
        let mut answer: Option<Duration> = None; // when the client's pending answer goes out
        let mut wake: Option<Duration> = None; // when the host gets round to its deadline
        let mut last_client = STEP;
        let mut longest = Duration::ZERO;
        let mut last_server: Option<Duration> = None;
        let mut longest_server = Duration::ZERO;
        let mut now = Duration::ZERO;
        while now < 40 * SECOND {
            now += STEP;
            while to_host.first().is_some_and(|&at| at <= now) {
                to_host.remove(0);
                h.receive(HEARTBEAT, now).unwrap();
                longest = longest.max(now - last_client);
                last_client = now;
            }
            let due = h.conn.poll_timeout().map(|deadline| deadline - start);
            if due.is_some_and(|due| due <= now) {
                let at = *wake.get_or_insert_with(|| now + jitter(16));
                if at <= now {
                    wake = None;
                    if let Err(error) = h.timeout(now) {
                        panic!(
                            "run {run}: {error} at {now:?}; the client beat last at {last_client:?}"
                        );
                    }
                    if !h.transmits().is_empty() {
                        to_client.push(now + STEP + jitter(3));
                        if let Some(last) = last_server.replace(now) {
                            longest_server = longest_server.max(now - last);
                        }
                    }
                }
            }
            while to_client.first().is_some_and(|&at| at <= now) {
                to_client.remove(0);
                answer.get_or_insert(now + SECOND + jitter(16));
            }
            if answer.is_some_and(|at| at <= now) {
                answer = None;
                to_host.push(now + STEP + jitter(3));
            }
        }
        assert!(
            longest <= Duration::from_millis(1600),
            "run {run}: the client was silent for {longest:?}"
        );
        // A wake-up 4 ms late at most, counted from a deadline that was not.
        assert!(
            longest_server <= SECOND + 16 * STEP,
            "run {run}: the host was silent for {longest_server:?}"
        );
    }
}

#[test]
fn zero_heartbeat_disables_heartbeats_and_liveness() {
    let config = ConnectionConfig {
        heartbeat: Duration::ZERO,
        ..ConnectionConfig::default()
    };
    let mut h = Harness::with(config, RouteDict::default());
    h.receive(HANDSHAKE, Duration::ZERO).unwrap();
    h.conn.accept_handshake().unwrap();
    let reply = h.transmits().remove(0);
    let json: Value = serde_json::from_slice(&reply[4..]).unwrap();
    assert_eq!(json["sys"]["heartbeat"], 0);
    h.receive(ACK, Duration::ZERO).unwrap();
    assert_eq!(h.conn.poll_timeout(), None);
    h.timeout(100_000 * SECOND).unwrap();
    assert!(h.transmits().is_empty());
    assert_eq!(h.conn.state(), State::Working);
}

#[test]
fn no_heartbeats_before_the_handshake_is_answered() {
    let mut h = Harness::in_state(State::AwaitingValidation);
    h.timeout(9 * SECOND).unwrap();
    assert!(h.transmits().is_empty());
}

#[test]
fn packets_behind_the_handshake_wait_for_the_hosts_decision() {
    let mut batch = HANDSHAKE.to_vec();
    batch.extend_from_slice(ACK);
    batch.extend_from_slice(&request(1, "room.join"));
    let mut h = Harness::in_state(State::AwaitingHandshake);
    h.receive(&batch, Duration::ZERO).unwrap();
    assert_eq!(h.conn.state(), State::AwaitingValidation);
    assert!(matches!(h.events().as_slice(), [Event::Handshake(_)]));
    h.conn.accept_handshake().unwrap();
    assert_eq!(h.conn.state(), State::Working);
    assert!(matches!(
        h.events().as_slice(),
        [Event::Ready, Event::Message(_)]
    ));
}

#[test]
fn a_second_handshake_behind_the_first_fails_on_accept() {
    let mut batch = HANDSHAKE.to_vec();
    batch.extend_from_slice(HANDSHAKE);
    let mut h = Harness::in_state(State::AwaitingHandshake);
    h.receive(&batch, Duration::ZERO).unwrap();
    assert_eq!(
        h.conn.accept_handshake(),
        Err(ProtocolError::UnexpectedPacket {
            kind: PacketType::Handshake,
            state: State::HandshakeSent,
        })
    );
    assert_eq!(h.conn.state(), State::Closed);
}

#[test]
fn a_refused_handshake_drops_what_was_behind_it() {
    let mut batch = HANDSHAKE.to_vec();
    batch.extend_from_slice(ACK);
    let mut h = Harness::in_state(State::AwaitingHandshake);
    h.receive(&batch, Duration::ZERO).unwrap();
    h.events();
    h.conn.refuse_handshake(400, "no");
    assert_eq!(h.conn.state(), State::Closed);
    assert!(h.events().is_empty());
}
