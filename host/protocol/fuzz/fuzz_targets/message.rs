//! Fuzzes the message decoder: both decoders agree, a compressed payload never inflates past its
//! cap, and whatever they accept re-encodes to a message that decodes to the same thing.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pitaya_protocol::{RouteDict, decode_message, decode_message_bytes, encode_message};

fuzz_target!(|data: &[u8]| {
    let dict = RouteDict::from_routes(["room.join", "room.message", "onMessage"]);
    // The first byte sets the inflate cap: small caps reach the bound, 0 the empty payload.
    let Some((&cap, data)) = data.split_first() else {
        return;
    };
    let max_inflated = usize::from(cap) * 64;
    let decoded = decode_message(data, &dict, max_inflated);
    assert_eq!(
        decode_message_bytes(&Bytes::copy_from_slice(data), &dict, max_inflated),
        decoded
    );
    let Ok(message) = decoded else {
        return;
    };
    assert!(message.payload.len() <= max_inflated.max(data.len()));
    let code = if message.route_compressed {
        dict.code(&message.route)
    } else {
        None
    };
    let mut body = BytesMut::new();
    encode_message(
        message.kind,
        message.id,
        Some(&message.route),
        code,
        &message.payload,
        message.error,
        false,
        &mut body,
    )
    .expect("a decoded message re-encodes");
    let again =
        decode_message(&body, &dict, message.payload.len()).expect("a re-encoded message decodes");
    assert_eq!(again, message);
});
