//! Packet and message codec edge cases: split reads, batched packets, size limits, every invalid
//! type and flag, varint limits, and zlib payloads including a bomb.

use std::io::Write;

use bytes::{BufMut, BytesMut};
use flate2::Compression;
use flate2::write::ZlibEncoder;
use pitaya_protocol::{
    EncodeOptions, MAX_BODY_LEN, MessageError, MessageType, Packet, PacketDecoder, PacketError,
    PacketType, RouteDict, decode_message, decode_varint, deflate, encode_message, encode_packet,
    encode_push, encode_response, encode_varint,
};

const MIB: usize = 1 << 20;

fn packets(list: &[(PacketType, &[u8])]) -> BytesMut {
    let mut out = BytesMut::new();
    for (kind, body) in list {
        encode_packet(*kind, body, &mut out).unwrap();
    }
    out
}

fn sample_packets() -> Vec<Packet> {
    vec![
        Packet::new(PacketType::Handshake, &b"{\"sys\":{}}"[..]),
        Packet::new(PacketType::HandshakeAck, &[][..]),
        Packet::new(PacketType::Heartbeat, &[][..]),
        Packet::new(PacketType::Data, vec![0x42; 300]),
        Packet::new(PacketType::Kick, &b"{\"reason\":\"x\"}"[..]),
    ]
}

fn encode_all(list: &[Packet]) -> BytesMut {
    let mut out = BytesMut::new();
    for packet in list {
        packet.encode(&mut out).unwrap();
    }
    out
}

#[test]
fn split_reads_one_byte_at_a_time() {
    let expected = sample_packets();
    let wire = encode_all(&expected);
    let decoder = PacketDecoder::new(1024);
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for &byte in wire.iter() {
        buf.put_u8(byte);
        while let Some(packet) = decoder.decode(&mut buf).unwrap() {
            decoded.push(packet);
        }
    }
    assert_eq!(decoded, expected);
    assert!(buf.is_empty());
}

#[test]
fn need_more_bytes_until_the_last_one() {
    let wire = packets(&[(PacketType::Data, b"hello")]);
    let decoder = PacketDecoder::default();
    for cut in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..cut]);
        assert_eq!(decoder.decode(&mut buf), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed");
    }
}

#[test]
fn several_packets_in_one_buffer() {
    let expected = sample_packets();
    let mut buf = encode_all(&expected);
    // Half of another packet stays buffered.
    buf.extend_from_slice(&[4, 0, 0, 3, 1]);
    let decoder = PacketDecoder::default();
    let mut decoded = Vec::new();
    while let Some(packet) = decoder.decode(&mut buf).unwrap() {
        decoded.push(packet);
    }
    assert_eq!(decoded, expected);
    assert_eq!(buf.as_ref(), [4, 0, 0, 3, 1]);
}

#[test]
fn oversize_header_rejected_with_only_the_header() {
    let decoder = PacketDecoder::new(64 * 1024);
    let mut buf = BytesMut::with_capacity(4);
    buf.extend_from_slice(&[4, 0x01, 0x00, 0x01]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(PacketError::TooLarge {
            len: 0x01_00_01,
            max: 64 * 1024
        })
    );
    // Nothing was reserved for the body.
    assert!(buf.capacity() < 1024);

    // The limit itself is fine: the decoder waits for the body.
    let mut buf = BytesMut::from(&[4, 0x01, 0x00, 0x00][..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));

    // The largest length field with the largest limit is a wait, not an error.
    let mut buf = BytesMut::from(&[4, 0xff, 0xff, 0xff][..]);
    assert_eq!(PacketDecoder::new(MAX_BODY_LEN).decode(&mut buf), Ok(None));
    let mut buf = BytesMut::from(&[4, 0xff, 0xff, 0xff][..]);
    assert_eq!(
        PacketDecoder::new(MAX_BODY_LEN - 1).decode(&mut buf),
        Err(PacketError::TooLarge {
            len: MAX_BODY_LEN,
            max: MAX_BODY_LEN - 1
        })
    );
}

#[test]
fn every_invalid_packet_type() {
    let decoder = PacketDecoder::default();
    for byte in std::iter::once(0).chain(6..=255u8) {
        let mut buf = BytesMut::from(&[byte, 0, 0, 0][..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(PacketError::UnknownType(byte))
        );
        assert_eq!(
            PacketType::try_from(byte),
            Err(PacketError::UnknownType(byte))
        );
        // The type byte alone is enough to know.
        let mut buf = BytesMut::from(&[byte][..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(PacketError::UnknownType(byte))
        );
    }
    for byte in 1..=5u8 {
        let kind = PacketType::try_from(byte).unwrap();
        assert_eq!(kind as u8, byte);
        let mut buf = BytesMut::from(&[byte, 0, 0, 0][..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Some(Packet::new(kind, &[][..])))
        );
    }
}

/// For every flag byte, a body that would be well formed if the flag were valid: an id of 5 for
/// the types with an id, route code 1 or route "a" for those with a route, then `{}`.
#[test]
fn every_flag_byte() {
    let dict = RouteDict::from_routes(["a"]);
    for flag in 0..=255u8 {
        let type_bits = (flag >> 1) & 7;
        let mut body = vec![flag];
        if matches!(type_bits, 0 | 2) {
            body.push(5);
        }
        if matches!(type_bits, 0 | 1 | 3) {
            if flag & 1 != 0 {
                body.extend_from_slice(&[0, 1]);
            } else {
                body.extend_from_slice(&[1, b'a']);
            }
        }
        let payload: Vec<u8> = if flag & 0x10 != 0 {
            deflate(b"{}")
        } else {
            b"{}".to_vec()
        };
        body.extend_from_slice(&payload);

        let result = decode_message(&body, &dict, MIB);
        if flag & 0xc0 != 0 {
            assert_eq!(result, Err(MessageError::BadFlag(flag)), "flag {flag:#04x}");
        } else if type_bits >= 4 {
            assert_eq!(
                result,
                Err(MessageError::BadType(type_bits)),
                "flag {flag:#04x}"
            );
        } else if type_bits == 2 && flag & 1 != 0 {
            assert_eq!(result, Err(MessageError::BadFlag(flag)), "flag {flag:#04x}");
        } else {
            let message = result.unwrap_or_else(|e| panic!("flag {flag:#04x}: {e}"));
            assert_eq!(message.kind as u8, type_bits);
            assert_eq!(message.payload.as_ref(), b"{}");
            assert_eq!(message.error, flag & 0x20 != 0);
            assert_eq!(message.route_compressed, flag & 1 != 0);
            let has_id = matches!(message.kind, MessageType::Request | MessageType::Response);
            assert_eq!(message.id, if has_id { 5 } else { 0 });
            let has_route = message.kind != MessageType::Response;
            assert_eq!(message.route, if has_route { "a" } else { "" });
        }
    }
}

#[test]
fn message_errors() {
    let dict = RouteDict::from_routes(["a"]);
    let cases: &[(&[u8], MessageError)] = &[
        (&[], MessageError::Empty),
        // Request without id, with id 0, with a truncated id.
        (&[0x00], MessageError::Truncated),
        (&[0x00, 0x00, 0x01, b'a'], MessageError::ZeroRequestId),
        (&[0x00, 0x80], MessageError::Truncated),
        // Route length byte missing, route shorter than its length.
        (&[0x00, 0x01], MessageError::Truncated),
        (&[0x02, 0x05, b'a', b'b'], MessageError::Truncated),
        // Compressed route: one byte of code, unknown code, code 0.
        (&[0x03, 0x00], MessageError::Truncated),
        (&[0x03, 0x00, 0x02], MessageError::UnknownRouteCode(2)),
        (&[0x03, 0x00, 0x00], MessageError::UnknownRouteCode(0)),
        (
            &[0x07, 0xff, 0xff, b'{', b'}'],
            MessageError::UnknownRouteCode(0xffff),
        ),
        // Route bytes that are not UTF-8.
        (&[0x02, 0x02, 0xc3, 0x28], MessageError::RouteNotUtf8),
        // Response with no id at all.
        (&[0x04], MessageError::Truncated),
    ];
    for (body, expected) in cases {
        assert_eq!(
            &decode_message(body, &dict, MIB).unwrap_err(),
            expected,
            "{body:02x?}"
        );
    }
}

#[test]
fn edge_cases_that_are_valid() {
    let dict = RouteDict::default();
    // An empty route and an empty payload.
    let message = decode_message(&[0x02, 0x00], &dict, MIB).unwrap();
    assert_eq!(message.kind, MessageType::Notify);
    assert_eq!(message.route, "");
    assert!(message.payload.is_empty());
    // A 255-byte route, the longest.
    let mut body = vec![0x06, 0xff];
    body.extend(std::iter::repeat_n(b'r', 255));
    assert_eq!(decode_message(&body, &dict, MIB).unwrap().route.len(), 255);
    // A non-minimal varint is still the same id.
    let message = decode_message(&[0x04, 0x81, 0x80, 0x00], &dict, MIB).unwrap();
    assert_eq!(message.id, 1);
}

#[test]
fn varint_edges() {
    for value in [
        0,
        1,
        127,
        128,
        300,
        u64::from(u32::MAX) - 1,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
        u64::MAX - 1,
        u64::MAX,
    ] {
        let mut out = BytesMut::new();
        encode_varint(value, &mut out);
        assert_eq!(decode_varint(&out), Ok((value, out.len())), "{value}");
        // Every proper prefix is truncated.
        for cut in 0..out.len() {
            assert_eq!(decode_varint(&out[..cut]), Err(MessageError::Truncated));
        }
    }

    let mut out = BytesMut::new();
    encode_varint(u64::from(u32::MAX), &mut out);
    assert_eq!(out.as_ref(), [0xff, 0xff, 0xff, 0xff, 0x0f]);
    out.clear();
    encode_varint(u64::MAX, &mut out);
    assert_eq!(out.len(), 10);

    // Eleven bytes: the tenth still has its continuation bit.
    let eleven = [
        0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
    ];
    assert_eq!(decode_varint(&eleven), Err(MessageError::BadVarint));
    // Ten bytes whose last one overflows 64 bits.
    let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    assert_eq!(decode_varint(&overflow), Err(MessageError::BadVarint));

    // The same through decode_message: request ids 2^32-1 and u64::MAX work.
    let dict = RouteDict::default();
    for id in [u64::from(u32::MAX), u64::MAX] {
        let mut body = BytesMut::new();
        encode_message(
            MessageType::Request,
            id,
            Some("a.b"),
            None,
            b"{}",
            false,
            false,
            &mut body,
        )
        .unwrap();
        let message = decode_message(&body, &dict, MIB).unwrap();
        assert_eq!((message.id, message.route.as_str()), (id, "a.b"));
    }
    let mut body = vec![0x00];
    body.extend_from_slice(&eleven);
    body.extend_from_slice(&[0x01, b'a']);
    assert_eq!(
        decode_message(&body, &dict, MIB),
        Err(MessageError::BadVarint)
    );
    assert_eq!(
        decode_message(&[0x00, 0xff, 0xff], &dict, MIB),
        Err(MessageError::Truncated)
    );
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn compressed_request_payload_is_inflated() {
    let payload = br#"{"text":"hello hello hello hello hello hello hello hello"}"#;
    let compressed = zlib(payload);
    assert_eq!(compressed[0], 0x78, "zlib magic byte");
    let mut body = vec![0x10, 0x07, 0x09];
    body.extend_from_slice(b"room.join");
    body.extend_from_slice(&compressed);
    let message = decode_message(&body, &RouteDict::default(), MIB).unwrap();
    assert_eq!(message.kind, MessageType::Request);
    assert_eq!(message.id, 7);
    assert_eq!(message.route, "room.join");
    assert_eq!(message.payload.as_ref(), payload);

    // The cap is inclusive.
    assert!(decode_message(&body, &RouteDict::default(), payload.len()).is_ok());
    assert_eq!(
        decode_message(&body, &RouteDict::default(), payload.len() - 1),
        Err(MessageError::InflatedTooLarge {
            max: payload.len() - 1
        })
    );
}

#[test]
fn zlib_bomb_is_refused() {
    // 100 MB of zeros, streamed into the compressor so the test never holds them.
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::fast());
    let zeros = vec![0u8; MIB];
    for _ in 0..100 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < MIB, "the bomb itself is small");
    let mut body = vec![0x12, 0x01, b'x'];
    body.extend_from_slice(&bomb);
    assert_eq!(
        decode_message(&body, &RouteDict::default(), MIB),
        Err(MessageError::InflatedTooLarge { max: MIB })
    );
}

#[test]
fn corrupt_zlib_is_refused() {
    let good = zlib(b"hello hello hello hello");
    let mut bad_checksum = good.clone();
    *bad_checksum.last_mut().unwrap() ^= 1;
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"not zlib at all".to_vec(),
        vec![0x78, 0x9c, 0xff, 0xff, 0xff],
        good[..good.len() - 5].to_vec(),
        bad_checksum,
        // gzip is not what the protocol sends.
        vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff],
    ];
    for payload in cases {
        let mut body = vec![0x12, 0x01, b'x'];
        body.extend_from_slice(&payload);
        assert_eq!(
            decode_message(&body, &RouteDict::default(), MIB),
            Err(MessageError::Inflate),
            "{payload:02x?}"
        );
    }
}

#[test]
fn compression_out_only_when_strictly_smaller() {
    let compress = EncodeOptions {
        compress: true,
        ..EncodeOptions::default()
    };
    let dict = RouteDict::default();

    // Tiny payloads grow under zlib: sent as they are.
    let mut out = BytesMut::new();
    encode_response(1, b"{}", false, &compress, &mut out).unwrap();
    assert_eq!(out.as_ref(), [4, 0, 0, 4, 0x04, 0x01, b'{', b'}']);

    // A repetitive payload shrinks: flag 0x10, and it decodes back.
    let payload = br#"{"members":["1","1","1","1","1","1","1","1","1","1","1","1","1","1"]}"#;
    out.clear();
    encode_push("onMembers", payload, &dict, &compress, &mut out).unwrap();
    assert_eq!(out[4], 0x06 | 0x10);
    assert!(out.len() < 4 + 1 + 10 + payload.len());
    let message = decode_message(&out[4..], &dict, MIB).unwrap();
    assert_eq!(message.payload.as_ref(), payload);

    // Empty payloads are never compressed.
    out.clear();
    encode_response(9, b"", false, &compress, &mut out).unwrap();
    assert_eq!(out.as_ref(), [4, 0, 0, 2, 0x04, 0x09]);
}

#[test]
fn encode_refuses_long_routes() {
    let mut out = BytesMut::new();
    let route = "r".repeat(256);
    assert_eq!(
        encode_message(
            MessageType::Notify,
            0,
            Some(&route),
            None,
            b"",
            false,
            false,
            &mut out
        ),
        Err(MessageError::RouteTooLong(256))
    );
    assert!(out.is_empty());
    encode_message(
        MessageType::Notify,
        0,
        Some(&route[..255]),
        None,
        b"",
        false,
        false,
        &mut out,
    )
    .unwrap();
    assert_eq!(out[1], 255);
    // With a code the length does not matter.
    let dict = RouteDict::from_routes([route.clone()]);
    let opts = EncodeOptions {
        push_route_codes: true,
        ..EncodeOptions::default()
    };
    out.clear();
    encode_push(&route, b"{}", &dict, &opts, &mut out).unwrap();
    assert_eq!(out.as_ref(), [4, 0, 0, 5, 0x07, 0, 1, b'{', b'}']);
}
