//! Fuzzes the message decoder: whatever it accepts re-encodes to a message that decodes to the
//! same thing.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pitaya_protocol::{RouteDict, decode_message, encode_message};

fuzz_target!(|data: &[u8]| {
    let dict = RouteDict::from_routes(["room.join", "room.message", "onMessage"]);
    let Ok(message) = decode_message(data, &dict, 64 * 1024) else {
        return;
    };
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
    let again = decode_message(&body, &dict, 64 * 1024).expect("a re-encoded message decodes");
    assert_eq!(again, message);
});
