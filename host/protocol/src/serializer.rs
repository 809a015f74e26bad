//! The serializer a connection negotiates (`json` or `protobuf`), and the error payload in each.
//!
//! The host treats request and response payloads as bytes; only the error payloads it writes
//! itself depend on the serializer. In protobuf they are pitaya's
//! `Error{code = 1 string, msg = 2 string, metadata = 3 map<string,string>}`.

use std::collections::BTreeMap;

use crate::message::error_payload_json;

/// The payload serializer advertised in the handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Serializer {
    /// JSON payloads (the default).
    #[default]
    Json,
    /// Protobuf payloads.
    Protobuf,
}

impl Serializer {
    /// The name in the handshake's `sys.serializer`.
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::Protobuf => "protobuf",
        }
    }

    /// Parses a name from the command line or configuration.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Serializer::Json),
            "protobuf" => Some(Serializer::Protobuf),
            _ => None,
        }
    }

    /// An error payload (sent with the 0x20 flag) in this serializer.
    ///
    /// ```
    /// use pitaya_protocol::Serializer;
    /// let json = Serializer::Json.error_payload("PIT-404", "not found", &[]);
    /// assert_eq!(json, br#"{"code":"PIT-404","msg":"not found"}"#);
    /// let protobuf = Serializer::Protobuf.error_payload("PIT-404", "not found", &[]);
    /// assert_eq!(protobuf, b"\x0a\x07PIT-404\x12\x09not found");
    /// ```
    pub fn error_payload(self, code: &str, msg: &str, metadata: &[(String, String)]) -> Vec<u8> {
        match self {
            Serializer::Json => error_payload_json(code, msg, metadata),
            Serializer::Protobuf => prost::Message::encode_to_vec(&ErrorPayload {
                code: code.to_owned(),
                msg: msg.to_owned(),
                metadata: metadata.iter().cloned().collect(),
            }),
        }
    }
}

/// pitaya's protobuf `Error` message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorPayload {
    /// The error code, such as `PIT-404`.
    #[prost(string, tag = "1")]
    pub code: String,
    /// The message.
    #[prost(string, tag = "2")]
    pub msg: String,
    /// Extra key/value pairs, in key order so the bytes are stable.
    #[prost(btree_map = "string, string", tag = "3")]
    pub metadata: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_errors_decode_back_with_metadata() {
        let metadata = vec![("k".to_owned(), "v".to_owned())];
        let bytes = Serializer::Protobuf.error_payload("ROOM-FULL", "full", &metadata);
        let decoded: ErrorPayload = prost::Message::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.code, "ROOM-FULL");
        assert_eq!(decoded.msg, "full");
        assert_eq!(decoded.metadata.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn names_round_trip() {
        for serializer in [Serializer::Json, Serializer::Protobuf] {
            assert_eq!(Serializer::from_name(serializer.name()), Some(serializer));
        }
        assert_eq!(Serializer::from_name("xml"), None);
    }
}
