//! Fuzzes the handshake parser: what it accepts has object `sys` and `user`, and accepting is
//! stable: the parsed handshake, written back as JSON, parses to the same handshake.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitaya_protocol::parse_client_handshake;

fuzz_target!(|data: &[u8]| {
    let Ok(handshake) = parse_client_handshake(data) else {
        return;
    };
    assert!(handshake.sys.is_object(), "sys is always an object");
    assert!(handshake.user.is_object(), "user is always an object");
    let again = serde_json::json!({ "sys": handshake.sys, "user": handshake.user }).to_string();
    let reparsed = parse_client_handshake(again.as_bytes()).expect("a written handshake parses");
    assert_eq!(reparsed, handshake);
});
