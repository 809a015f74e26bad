//! The handshake documents (protocol.md §2): parsing the client's JSON and writing the server's
//! reply byte for byte as pitaya does.

use serde_json::{Map, Value};

use crate::dict::RouteDict;
use crate::json;

/// The client's handshake, parsed leniently: unknown keys ignored; `sys`/`user` default to empty
/// objects when missing or null.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientHandshake {
    /// Client facts such as `platform`, `libVersion`, `clientVersion`; always a JSON object.
    pub sys: Value,
    /// Application data for handshake validators; always a JSON object.
    pub user: Value,
}

impl Default for ClientHandshake {
    /// The handshake `{}` stands for: both parts empty objects.
    fn default() -> Self {
        Self {
            sys: Value::Object(Map::new()),
            user: Value::Object(Map::new()),
        }
    }
}

/// Why a client handshake was refused. The server answers code 400 and closes.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// The body is not valid JSON (the message is the parser's).
    #[error("handshake is not valid json: {0}")]
    InvalidJson(String),
    /// The body, or its `sys` or `user` member, is valid JSON but neither an object nor `null`.
    #[error("handshake is not a json object")]
    NotAnObject,
}

/// Parses the client handshake. An empty body is not JSON, so it is refused like any other
/// invalid JSON (protocol.md section 2: 400 and close); `{}` is the smallest valid handshake.
/// A body of `null` is valid JSON and stands for `{}`, as it does for pitaya (Go's decoder
/// leaves the struct empty), so a client that sends it connects to either server.
///
/// `sys` and `user` must be objects when present and not null, because pitaya refuses any other
/// type there and validators expect to look keys up in them.
pub fn parse_client_handshake(body: &[u8]) -> Result<ClientHandshake, HandshakeError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| HandshakeError::InvalidJson(error.to_string()))?;
    let mut top = match value {
        Value::Object(top) => top,
        Value::Null => Map::new(),
        _ => return Err(HandshakeError::NotAnObject),
    };
    let mut member = |key: &str| match top.remove(key) {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(object @ Value::Object(_)) => Ok(object),
        Some(_) => Err(HandshakeError::NotAnObject),
    };
    Ok(ClientHandshake {
        sys: member("sys")?,
        user: member("user")?,
    })
}

/// The server handshake: exactly
/// `{"code":200,"sys":{"dict":{...},"heartbeat":N,"serializer":"json"}}`, with dict entries in
/// code order, which is the key order pitaya's Go JSON encoder produces.
pub fn server_handshake_json(heartbeat_secs: u64, dict: &RouteDict, serializer: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + dict.len() * 24);
    out.extend_from_slice(b"{\"code\":200,\"sys\":{\"dict\":{");
    for (index, (route, code)) in dict.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        json::push_string(&mut out, route);
        out.push(b':');
        out.extend_from_slice(code.to_string().as_bytes());
    }
    out.extend_from_slice(b"},\"heartbeat\":");
    out.extend_from_slice(heartbeat_secs.to_string().as_bytes());
    out.extend_from_slice(b",\"serializer\":");
    json::push_string(&mut out, serializer);
    out.extend_from_slice(b"}}");
    out
}

/// A handshake refusal: `{"code":<code>,"msg":"..."}`.
pub fn handshake_error_json(code: u16, msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + msg.len());
    out.extend_from_slice(b"{\"code\":");
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(b",\"msg\":");
    json::push_string(&mut out, msg);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lenient_parsing() {
        let hs = parse_client_handshake(br#"{"sys":{"platform":"mac"},"extra":1}"#).unwrap();
        assert_eq!(hs.sys, json!({"platform": "mac"}));
        assert_eq!(hs.user, json!({}));
        let hs = parse_client_handshake(br#"{"sys":null,"user":{"age":30}}"#).unwrap();
        assert_eq!(hs.sys, json!({}));
        assert_eq!(hs.user, json!({"age": 30}));
        assert_eq!(
            parse_client_handshake(b"{}").unwrap(),
            ClientHandshake::default()
        );
    }

    #[test]
    fn a_null_handshake_stands_for_an_empty_one() {
        assert_eq!(
            parse_client_handshake(b" null ").unwrap(),
            ClientHandshake::default()
        );
    }

    #[test]
    fn pomelo_handshake_is_valid() {
        let body = br#"{"sys":{"type":"js-websocket","version":"0.0.1","rsa":{}},"user":{}}"#;
        let hs = parse_client_handshake(body).unwrap();
        assert_eq!(hs.sys["type"], "js-websocket");
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            parse_client_handshake(b"{"),
            Err(HandshakeError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_client_handshake(b"\xff"),
            Err(HandshakeError::InvalidJson(_))
        ));
        for empty in [&b""[..], b" \n"] {
            assert!(matches!(
                parse_client_handshake(empty),
                Err(HandshakeError::InvalidJson(_))
            ));
        }
        for body in [
            &b"[]"[..],
            b"1",
            b"\"s\"",
            br#"{"sys":1}"#,
            br#"{"user":[]}"#,
        ] {
            assert_eq!(
                parse_client_handshake(body),
                Err(HandshakeError::NotAnObject)
            );
        }
    }

    #[test]
    fn server_handshake_with_dict_and_escaping() {
        let dict = RouteDict::from_routes(["room.join", "onMessage", "we\"ird"]);
        let json = server_handshake_json(10, &dict, "protobuf");
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            r#"{"code":200,"sys":{"dict":{"onMessage":1,"room.join":2,"we\"ird":3},"heartbeat":10,"serializer":"protobuf"}}"#
        );
        let parsed: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed["sys"]["dict"]["we\"ird"], 3);
    }

    #[test]
    fn error_reply() {
        assert_eq!(
            handshake_error_json(400, "invalid handshake"),
            br#"{"code":400,"msg":"invalid handshake"}"#
        );
    }
}
