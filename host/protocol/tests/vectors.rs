//! The worked examples of protocol.md §1–§3, byte for byte, in both directions.

use bytes::BytesMut;
use pitaya_protocol::{
    Connection, ConnectionConfig, EncodeOptions, Event, HEADER_LEN, Message, MessageType, Packet,
    PacketDecoder, PacketType, RouteDict, State, decode_message, encode_message, encode_packet,
    encode_push, encode_response, error_payload_json, server_handshake_json,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

const MAX_INFLATED: usize = 1 << 20;

/// Concatenates hex strings and raw text pieces, the way protocol.md writes its examples.
fn bytes(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).expect("test vector hex"))
        .collect()
}

/// Decodes `wire` as exactly one Data packet and returns its message.
fn decode_data_packet(wire: &[u8], dict: &RouteDict) -> Message {
    let mut buf = BytesMut::from(wire);
    let packet = PacketDecoder::default()
        .decode(&mut buf)
        .expect("valid packet")
        .expect("complete packet");
    assert!(buf.is_empty(), "exactly one packet");
    assert_eq!(packet.kind, PacketType::Data);
    decode_message(&packet.body, dict, MAX_INFLATED).expect("valid message")
}

/// Encodes a message with `encode_message` and wraps it in a Data packet.
#[allow(clippy::too_many_arguments)]
fn encode_data_packet(
    kind: MessageType,
    id: u64,
    route: Option<&str>,
    route_code: Option<u16>,
    payload: &[u8],
    error: bool,
) -> Vec<u8> {
    let mut body = BytesMut::new();
    encode_message(
        kind, id, route, route_code, payload, error, false, &mut body,
    )
    .unwrap();
    let mut out = BytesMut::new();
    encode_packet(PacketType::Data, &body, &mut out).unwrap();
    out.to_vec()
}

fn message(kind: MessageType, id: u64, route: &str, payload: &[u8]) -> Message {
    Message {
        kind,
        id,
        route: route.to_owned(),
        route_compressed: false,
        payload: payload.to_vec().into(),
        error: false,
    }
}

#[test]
fn request_id_1_room_join() {
    let wire = bytes(&[&hex("04 00 00 0e 00 01 09"), b"room.join", b"{}"]);
    assert_eq!(
        wire,
        hex("04 00 00 0e 00 01 09 72 6f 6f 6d 2e 6a 6f 69 6e 7b 7d")
    );
    assert_eq!(
        decode_data_packet(&wire, &RouteDict::default()),
        message(MessageType::Request, 1, "room.join", b"{}")
    );
    assert_eq!(
        encode_data_packet(
            MessageType::Request,
            1,
            Some("room.join"),
            None,
            b"{}",
            false
        ),
        wire
    );
}

#[test]
fn request_id_300_chat_room_join() {
    let wire = hex("04 00 00 14 00 ac 02 0e 63 68 61 74 2e 72 6f 6f 6d 2e 6a 6f 69 6e 7b 7d");
    assert_eq!(
        decode_data_packet(&wire, &RouteDict::default()),
        message(MessageType::Request, 300, "chat.room.join", b"{}")
    );
    assert_eq!(
        encode_data_packet(
            MessageType::Request,
            300,
            Some("chat.room.join"),
            None,
            b"{}",
            false
        ),
        wire
    );
}

#[test]
fn response_id_1() {
    let payload = br#"{"code":0,"result":"success"}"#;
    let wire = bytes(&[&hex("04 00 00 1f 04 01"), payload]);
    assert_eq!(
        decode_data_packet(&wire, &RouteDict::default()),
        message(MessageType::Response, 1, "", payload)
    );
    let mut out = BytesMut::new();
    encode_response(1, payload, false, &EncodeOptions::default(), &mut out).unwrap();
    assert_eq!(out.as_ref(), wire);
    assert_eq!(
        encode_data_packet(MessageType::Response, 1, None, None, payload, false),
        wire
    );
}

#[test]
fn error_response_id_2() {
    let payload = error_payload_json("PIT-404", "pitaya/handler: chat.room.foo not found", &[]);
    assert_eq!(
        payload,
        br#"{"code":"PIT-404","msg":"pitaya/handler: chat.room.foo not found"}"#
    );
    let wire = bytes(&[&hex("04 00 00 44 24 02"), &payload]);
    let mut expected = message(MessageType::Response, 2, "", &payload);
    expected.error = true;
    assert_eq!(decode_data_packet(&wire, &RouteDict::default()), expected);
    let mut out = BytesMut::new();
    encode_response(2, &payload, true, &EncodeOptions::default(), &mut out).unwrap();
    assert_eq!(out.as_ref(), wire);
}

#[test]
fn error_payload_with_metadata_matches_section_5() {
    let payload = error_payload_json(
        "PIT-404",
        "pitaya/handler: connector.room.foo not found",
        &[("k".to_owned(), "v".to_owned())],
    );
    assert_eq!(
        payload,
        br#"{"code":"PIT-404","msg":"pitaya/handler: connector.room.foo not found","metadata":{"k":"v"}}"#
    );
}

#[test]
fn push_on_members() {
    let payload = br#"{"members":["1"]}"#;
    let wire = bytes(&[&hex("04 00 00 1c 06 09"), b"onMembers", payload]);
    assert_eq!(
        decode_data_packet(&wire, &RouteDict::default()),
        message(MessageType::Push, 0, "onMembers", payload)
    );
    // The route is in the dict, but codes for push routes are off by default (libpitaya).
    let dict = RouteDict::from_routes(["onMembers"]);
    let mut out = BytesMut::new();
    encode_push(
        "onMembers",
        payload,
        &dict,
        &EncodeOptions::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.as_ref(), wire);
}

#[test]
fn push_with_route_code_when_enabled() {
    let payload = br#"{"members":["1"]}"#;
    let dict = RouteDict::from_routes(["onMembers"]);
    let opts = EncodeOptions {
        push_route_codes: true,
        ..EncodeOptions::default()
    };
    let mut out = BytesMut::new();
    encode_push("onMembers", payload, &dict, &opts, &mut out).unwrap();
    assert_eq!(
        out.as_ref(),
        bytes(&[&hex("04 00 00 14 07 00 01"), payload])
    );
    let decoded = decode_data_packet(&out, &dict);
    assert_eq!(decoded.route, "onMembers");
    assert!(decoded.route_compressed);
    // A route outside the dict stays a string.
    out.clear();
    encode_push("onOther", payload, &dict, &opts, &mut out).unwrap();
    assert_eq!(out[4], 0x06);
}

#[test]
fn notify_with_compressed_route() {
    let dict = RouteDict::from_routes(["room.message"]);
    assert_eq!(dict.code("room.message"), Some(1));
    let payload = br#"{"name":"a","content":"hi"}"#;
    let wire = bytes(&[&hex("04 00 00 1e 03 00 01"), payload]);
    let mut expected = message(MessageType::Notify, 0, "room.message", payload);
    expected.route_compressed = true;
    assert_eq!(decode_data_packet(&wire, &dict), expected);
    assert_eq!(
        encode_data_packet(MessageType::Notify, 0, None, Some(1), payload, false),
        wire
    );
}

#[test]
fn response_id_129_no_payload() {
    let body = hex("04 81 01");
    assert_eq!(
        decode_message(&body, &RouteDict::default(), MAX_INFLATED).unwrap(),
        message(MessageType::Response, 129, "", b"")
    );
    let mut out = BytesMut::new();
    encode_message(
        MessageType::Response,
        129,
        None,
        None,
        b"",
        false,
        false,
        &mut out,
    )
    .unwrap();
    assert_eq!(out.as_ref(), body);
}

#[test]
fn fixed_packets() {
    let mut out = BytesMut::new();
    encode_packet(PacketType::HandshakeAck, &[], &mut out).unwrap();
    encode_packet(PacketType::Heartbeat, &[], &mut out).unwrap();
    encode_packet(PacketType::Kick, &[], &mut out).unwrap();
    assert_eq!(out.as_ref(), hex("02 00 00 00 03 00 00 00 05 00 00 00"));
    assert_eq!(
        pitaya_protocol::heartbeat_packet().as_ref(),
        hex("03 00 00 00")
    );
    assert_eq!(
        pitaya_protocol::kick_packet(None).as_ref(),
        hex("05 00 00 00")
    );
    let decoder = PacketDecoder::default();
    for kind in [
        PacketType::HandshakeAck,
        PacketType::Heartbeat,
        PacketType::Kick,
    ] {
        assert_eq!(
            decoder.decode(&mut out).unwrap(),
            Some(Packet::new(kind, &[][..]))
        );
    }
}

const CLIENT_HANDSHAKE: &[u8] = br#"{"sys":{"platform":"mac","libVersion":"0.3.5-release","clientBuildNumber":"20","clientVersion":"2.1"},"user":{"age":30}}"#;
const SERVER_HANDSHAKE: &[u8] =
    br#"{"code":200,"sys":{"dict":{},"heartbeat":30,"serializer":"json"}}"#;

#[test]
fn server_handshake_with_empty_dict() {
    assert_eq!(SERVER_HANDSHAKE.len(), 0x41);
    assert_eq!(
        server_handshake_json(30, &RouteDict::default(), "json"),
        SERVER_HANDSHAKE
    );
    let mut out = BytesMut::new();
    encode_packet(PacketType::Handshake, SERVER_HANDSHAKE, &mut out).unwrap();
    assert_eq!(out[..HEADER_LEN], hex("01 00 00 41"));
}

#[test]
fn handshake_exchange() {
    assert_eq!(CLIENT_HANDSHAKE.len(), 0x78);
    let start = Instant::now();
    let mut conn = Connection::new(
        Arc::new(ConnectionConfig::default()),
        Arc::new(RouteDict::default()),
        start,
    );

    conn.receive(&bytes(&[&hex("01 00 00 78"), CLIENT_HANDSHAKE]), start)
        .unwrap();
    let Some(Event::Handshake(handshake)) = conn.poll_event() else {
        panic!("expected the handshake event");
    };
    assert_eq!(
        handshake.sys,
        json!({"platform":"mac","libVersion":"0.3.5-release","clientBuildNumber":"20","clientVersion":"2.1"})
    );
    assert_eq!(handshake.user, json!({"age": 30}));
    assert_eq!(conn.state(), State::AwaitingValidation);
    assert_eq!(conn.poll_transmit(), None);

    conn.accept_handshake().unwrap();
    assert_eq!(
        conn.poll_transmit().unwrap().as_ref(),
        bytes(&[&hex("01 00 00 41"), SERVER_HANDSHAKE])
    );
    assert_eq!(conn.poll_transmit(), None);
    assert_eq!(conn.state(), State::HandshakeSent);

    conn.receive(&hex("02 00 00 00"), start).unwrap();
    assert!(matches!(conn.poll_event(), Some(Event::Ready)));
    assert_eq!(conn.state(), State::Working);
    assert!(conn.poll_event().is_none());
}

/// Found by the handshake fuzz target: a huge integer must survive a parse, write and parse
/// unchanged (serde_json's exact float parsing), or a component would see other handshake data
/// than the client sent.
#[test]
fn handshake_numbers_round_trip_exactly() {
    let body = br#"{"sys":{"pltnn":900000000000000000000000000000}}"#;
    let handshake = pitaya_protocol::parse_client_handshake(body).unwrap();
    let written = serde_json::json!({ "sys": handshake.sys, "user": handshake.user }).to_string();
    assert_eq!(
        pitaya_protocol::parse_client_handshake(written.as_bytes()).unwrap(),
        handshake
    );
}
