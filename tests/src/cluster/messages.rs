//! pitaya's cluster messages (package `protos`), written by hand from `shared/cluster.md` §3 alone, so that the
//! fake Go peer and the tests decode what the host sends with an encoder that shares nothing with the host's.

use std::collections::HashMap;

/// `Request.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum RpcType {
    Sys = 0,
    User = 1,
}

/// `Msg.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MsgType {
    Request = 0,
    Notify = 1,
    Response = 2,
    Push = 3,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(enumeration = "RpcType", tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub session: Option<Session>,
    #[prost(message, optional, tag = "3")]
    pub msg: Option<Msg>,
    #[prost(string, tag = "4")]
    pub frontend_id: String,
    /// A JSON object, never empty.
    #[prost(bytes = "vec", tag = "5")]
    pub metadata: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub route: String,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    /// Present in the schema, never sent.
    #[prost(string, tag = "4")]
    pub reply: String,
    #[prost(enumeration = "MsgType", tag = "5")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Session {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(string, tag = "2")]
    pub uid: String,
    /// A JSON object.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<Error>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub msg: String,
    #[prost(map = "string, string", tag = "3")]
    pub metadata: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Push {
    #[prost(string, tag = "1")]
    pub route: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KickMsg {
    #[prost(string, tag = "1")]
    pub user_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KickAnswer {
    #[prost(bool, tag = "1")]
    pub kicked: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BindMsg {
    #[prost(string, tag = "1")]
    pub uid: String,
    #[prost(string, tag = "2")]
    pub fid: String,
}

impl Response {
    pub fn data(data: impl Into<Vec<u8>>) -> Self {
        Self {
            data: data.into(),
            error: None,
        }
    }

    pub fn error(code: &str, msg: &str) -> Self {
        Self {
            data: Vec::new(),
            error: Some(Error {
                code: code.into(),
                msg: msg.into(),
                metadata: HashMap::new(),
            }),
        }
    }
}

#[cfg(test)]
mod golden {
    //! Every golden byte string of cluster.md §3, both ways: our encoding equals it, and decoding it gives the
    //! message back.

    use super::*;
    use prost::Message;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn check<M: Message + Default + PartialEq + std::fmt::Debug>(m: M, golden: &str) {
        assert_eq!(hex(&m.encode_to_vec()), golden, "encoding of {m:?}");
        assert_eq!(M::decode(unhex(golden).as_slice()).expect("decodes"), m);
    }

    #[test]
    fn request() {
        let m = Request {
            r#type: RpcType::Sys as i32,
            session: Some(Session {
                id: 7,
                uid: "u1".into(),
                data: br#"{"ipversion":"ipv4"}"#.to_vec(),
            }),
            msg: Some(Msg {
                id: 12,
                route: "room.room.join".into(),
                data: br#"{"a":1}"#.to_vec(),
                reply: String::new(),
                r#type: MsgType::Request as i32,
            }),
            frontend_id: "fe-1".into(),
            metadata: br#"{"peer.id":"fe-1","peer.service":"connector","reqTimeout":"5s"}"#
                .to_vec(),
        };
        check(
            m,
            "121c0807120275311a147b22697076657273696f6e223a2269707634227d1a1b080c120e726f6f6d2e726f6f6d2e6a6f696e1a077b2261223a317d220466652d312a3f7b22706565722e6964223a2266652d31222c22706565722e73657276696365223a22636f6e6e6563746f72222c2272657154696d656f7574223a223573227d",
        );
    }

    #[test]
    fn responses() {
        check(
            Response::error("PIT-404", "not found"),
            "12140a075049542d34303412096e6f7420666f756e64",
        );
        check(Response::data("ack"), "0a0361636b");
        check(
            Response::data(Response::data("ack").encode_to_vec()),
            "0a050a0361636b",
        );
    }

    #[test]
    fn bind_and_kick() {
        check(
            BindMsg {
                uid: "u1".into(),
                fid: "fe-1".into(),
            },
            "0a027531120466652d31",
        );
        check(
            KickMsg {
                user_id: "u1".into(),
            },
            "0a027531",
        );
        check(KickAnswer { kicked: true }, "0801");
    }

    #[test]
    fn error_metadata_is_a_string_map() {
        let mut e = Error {
            code: "ROOM-FULL".into(),
            msg: "full".into(),
            metadata: HashMap::new(),
        };
        e.metadata.insert("k".into(), "v".into());
        // field 3, a map entry {1: "k", 2: "v"}
        assert!(hex(&e.encode_to_vec()).ends_with("1a060a016b120176"));
    }
}
