//! Unit tests of the client codec against the worked examples of `shared/protocol.md`, so that a bug in this
//! client is caught independently of the server.

use anyhow::{Context, Result, ensure};

use crate::codec::*;

/// Parses "04 00 00 0e" style hex.
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// Concatenates byte pieces.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Decodes a buffer that must hold exactly one Data packet, and its message.
fn one_message(wire: &[u8]) -> Result<Message> {
    let packets = decode_packets(wire).context("decoding packets")?;
    ensure!(
        packets.len() == 1,
        "expected one packet, got {}",
        packets.len()
    );
    ensure!(packets[0].kind == DATA, "expected a Data packet");
    Message::decode(&packets[0].body).context("decoding message")
}

#[test]
fn handshake_worked_example() -> Result<()> {
    // C→S 01 00 00 78 {"sys":...}
    let wire = encode_packet(HANDSHAKE, PITAYA_HANDSHAKE.as_bytes());
    assert_eq!(&wire[..4], &hex("01 00 00 78")[..]);
    assert_eq!(&wire[4..], PITAYA_HANDSHAKE.as_bytes());

    // S→C 01 00 00 41 {"code":200,...}
    let reply = r#"{"code":200,"sys":{"dict":{},"heartbeat":30,"serializer":"json"}}"#;
    let wire = cat(&[&hex("01 00 00 41"), reply.as_bytes()]);
    let packets = decode_packets(&wire)?;
    assert_eq!(packets, vec![Packet::new(HANDSHAKE, reply)]);

    // C→S 02 00 00 00
    assert_eq!(encode_packet(HANDSHAKE_ACK, &[]), hex("02 00 00 00"));
    Ok(())
}

#[test]
fn fixed_packets() {
    assert_eq!(encode_packet(HANDSHAKE_ACK, &[]), hex("02 00 00 00"));
    assert_eq!(encode_packet(HEARTBEAT, &[]), hex("03 00 00 00"));
    assert_eq!(encode_packet(KICK, &[]), hex("05 00 00 00"));
}

#[test]
fn pomelo_handshake_is_json() -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(POMELO_HANDSHAKE)?;
    assert_eq!(v["sys"]["type"], "js-websocket");
    let v: serde_json::Value = serde_json::from_str(PITAYA_HANDSHAKE)?;
    assert_eq!(v["user"]["age"], 30);
    Ok(())
}

#[test]
fn request_id_1_room_join() -> Result<()> {
    let expected = cat(&[&hex("04 00 00 0e 00 01 09"), b"room.join", b"{}"]);
    let wire = Message::request(1, "room.join", b"{}").to_packet()?;
    assert_eq!(wire, expected);
    let m = one_message(&expected)?;
    assert_eq!(m, Message::request(1, "room.join", b"{}"));
    Ok(())
}

#[test]
fn request_id_300_chat_room_join() -> Result<()> {
    let expected = cat(&[&hex("04 00 00 14 00 ac 02 0e"), b"chat.room.join", b"{}"]);
    let wire = Message::request(300, "chat.room.join", b"{}").to_packet()?;
    assert_eq!(wire, expected);
    let m = one_message(&expected)?;
    assert_eq!(m.id, 300);
    assert_eq!(m.route, Some(Route::Plain("chat.room.join".into())));
    Ok(())
}

#[test]
fn response_id_1() -> Result<()> {
    let payload = br#"{"code":0,"result":"success"}"#;
    let expected = cat(&[&hex("04 00 00 1f 04 01"), payload]);
    assert_eq!(Message::response(1, payload).to_packet()?, expected);
    let m = one_message(&expected)?;
    assert_eq!(m.kind, MessageType::Response);
    assert_eq!(m.id, 1);
    assert_eq!(m.route, None);
    assert!(!m.error && !m.zlib);
    assert_eq!(
        m.json()?,
        serde_json::json!({"code": 0, "result": "success"})
    );
    Ok(())
}

#[test]
fn error_response_id_2() -> Result<()> {
    let payload = br#"{"code":"PIT-404","msg":"pitaya/handler: chat.room.foo not found"}"#;
    let expected = cat(&[&hex("04 00 00 44 24 02"), payload]);
    assert_eq!(
        Message::response(2, payload).with_error().to_packet()?,
        expected
    );
    let m = one_message(&expected)?;
    assert_eq!((m.kind, m.id, m.error), (MessageType::Response, 2, true));
    assert_eq!(m.json()?["code"], "PIT-404");
    Ok(())
}

#[test]
fn push_on_members() -> Result<()> {
    let payload = br#"{"members":["1"]}"#;
    let expected = cat(&[&hex("04 00 00 1c 06 09"), b"onMembers", payload]);
    assert_eq!(Message::push("onMembers", payload).to_packet()?, expected);
    let m = one_message(&expected)?;
    assert_eq!(m.kind, MessageType::Push);
    assert_eq!(m.route, Some(Route::Plain("onMembers".into())));
    assert_eq!(m.payload, payload);
    Ok(())
}

#[test]
fn notify_with_compressed_route() -> Result<()> {
    let payload = br#"{"name":"a","content":"hi"}"#;
    let expected = cat(&[&hex("04 00 00 1e 03 00 01"), payload]);
    assert_eq!(Message::notify(1u16, payload).to_packet()?, expected);
    let m = one_message(&expected)?;
    assert_eq!(m.kind, MessageType::Notify);
    assert_eq!(m.route, Some(Route::Code(1)));
    assert_eq!(m.payload, payload);
    Ok(())
}

#[test]
fn response_id_129_without_payload() -> Result<()> {
    assert_eq!(Message::response(129, b"").encode()?, hex("04 81 01"));
    let m = Message::decode(&hex("04 81 01"))?;
    assert_eq!(
        (m.kind, m.id, m.payload.len()),
        (MessageType::Response, 129, 0)
    );
    Ok(())
}

#[test]
fn varints() -> Result<()> {
    let cases: &[(u64, &str)] = &[
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "80 01"),
        (129, "81 01"),
        (300, "ac 02"),
        (16383, "ff 7f"),
        (16384, "80 80 01"),
        ((1 << 32) - 1, "ff ff ff ff 0f"),
        (u64::MAX, "ff ff ff ff ff ff ff ff ff 01"),
    ];
    for &(value, bytes) in cases {
        let mut out = Vec::new();
        encode_varint(value, &mut out);
        assert_eq!(out, hex(bytes), "encoding {value}");
        let (v, n) = decode_varint(&out)?;
        assert_eq!((v, n), (value, out.len()), "decoding {value}");
    }
    // Longer than needed for u64, overflowing, truncated.
    assert!(decode_varint(&hex("80 80 80 80 80 80 80 80 80 80 01")).is_err());
    assert!(decode_varint(&hex("ff ff ff ff ff ff ff ff ff 02")).is_err());
    assert!(decode_varint(&hex("80 80")).is_err());
    Ok(())
}

#[test]
fn stream_decoder_handles_pieces_and_batches() -> Result<()> {
    let a = Message::request(1, "room.join", b"{}").to_packet()?;
    let b = encode_packet(HEARTBEAT, &[]);
    let c = Message::push("onMembers", br#"{"members":["1"]}"#).to_packet()?;
    let stream = cat(&[&a, &b, &c]);

    // One byte at a time.
    let mut dec = PacketDecoder::default();
    let mut got = Vec::new();
    for byte in &stream {
        dec.push(std::slice::from_ref(byte));
        while let Some(p) = dec.next_packet()? {
            got.push(p);
        }
    }
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], Packet::new(HEARTBEAT, Vec::new()));
    assert_eq!(dec.pending(), 0);

    // All at once.
    let all = decode_packets(&stream)?;
    assert_eq!(all, got);

    // A frame with a partial packet is an error.
    assert!(decode_packets(&stream[..stream.len() - 1]).is_err());
    Ok(())
}

#[test]
fn unknown_packet_types_are_errors() {
    for kind in [0x00u8, 0x06, 0x7f, 0xff] {
        let mut dec = PacketDecoder::default();
        dec.push(&[kind, 0, 0, 0]);
        assert!(dec.next_packet().is_err(), "type 0x{kind:02x}");
    }
}

#[test]
fn invalid_message_types_are_errors() {
    for t in 4u8..=7 {
        let body = [t << 1, 1, 0];
        assert!(Message::decode(&body).is_err(), "type {t}");
    }
}

#[test]
fn zlib_payload_round_trip() -> Result<()> {
    let payload = br#"{"text":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
    let msg = Message::request(7, "echo.echo", payload).with_zlib();
    let body = msg.encode()?;
    assert_eq!(body[0], 0x10, "Request with zlib flag");
    // zlib magic byte right after id and route.
    assert_eq!(body[2 + 1 + "echo.echo".len()], 0x78);
    let back = Message::decode(&body)?;
    assert!(back.zlib);
    assert_eq!(back.payload, payload);
    assert!(back.wire_payload_len < payload.len());
    Ok(())
}

#[test]
fn zlib_inflate_is_capped() {
    let big = vec![0u8; 1 << 20];
    let z = zlib_compress(&big);
    assert!(zlib_decompress(&z, 1 << 20).is_ok());
    assert!(zlib_decompress(&z, (1 << 20) - 1).is_err());
}

#[test]
fn flags() -> Result<()> {
    assert_eq!(Message::request(1, "a.b", b"").flag(), 0x00);
    assert_eq!(Message::request(1, 5u16, b"").flag(), 0x01);
    assert_eq!(Message::notify("a.b", b"").flag(), 0x02);
    assert_eq!(Message::response(1, b"").flag(), 0x04);
    assert_eq!(Message::push("on", b"").flag(), 0x06);
    assert_eq!(
        Message::response(1, b"").with_error().with_zlib().flag(),
        0x34
    );
    // A route on a Response, or none on a Request, cannot be encoded.
    let mut bad = Message::response(1, b"");
    bad.route = Some("x".into());
    assert!(bad.encode().is_err());
    // A route-compressed flag on a Response is rejected when decoding.
    assert!(Message::decode(&hex("05 01")).is_err());
    Ok(())
}
