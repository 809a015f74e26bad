//! pitaya's cluster messages (protobuf package `protos`), as cluster.md §3 lists them.
//!
//! Written by hand with prost's derive so the build needs no `protoc` for them. Field numbers
//! and types are the contract with Go pitaya peers: do not renumber.

use prost::Message;

/// Whether a [`Request`] carries a client message (`Sys`) or a server-to-server call (`User`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum RpcType {
    /// A client's message forwarded by a frontend, or a `sys.*` call.
    Sys = 0,
    /// A call from one server's code to another's.
    User = 1,
}

/// The kind of a [`Msg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MsgType {
    /// Wants a response.
    Request = 0,
    /// Fire and forget.
    Notify = 1,
    /// A response.
    Response = 2,
    /// A push.
    Push = 3,
}

/// A call on `pitaya/servers/<type>/<id>`.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    /// Sys or User.
    #[prost(enumeration = "RpcType", tag = "1")]
    pub r#type: i32,
    /// The client session the call is for (Sys calls).
    #[prost(message, optional, tag = "2")]
    pub session: Option<SessionMsg>,
    /// The message itself; Go peers crash on a request without one.
    #[prost(message, optional, tag = "3")]
    pub msg: Option<Msg>,
    /// The id of the frontend that holds the session.
    #[prost(string, tag = "4")]
    pub frontend_id: String,
    /// A JSON object, never empty.
    #[prost(bytes = "vec", tag = "5")]
    pub metadata: Vec<u8>,
}

/// A message inside a [`Request`].
#[derive(Clone, PartialEq, Message)]
pub struct Msg {
    /// The client's message id (0 for a notify).
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The full route.
    #[prost(string, tag = "2")]
    pub route: String,
    /// The payload, as the client sent it.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    /// Not sent by pitaya; kept so the numbering stays whole.
    #[prost(string, tag = "4")]
    pub reply: String,
    /// Request or Notify.
    #[prost(enumeration = "MsgType", tag = "5")]
    pub r#type: i32,
}

/// A client session as the frontend knows it (pitaya's `protos.Session`).
#[derive(Clone, PartialEq, Message)]
pub struct SessionMsg {
    /// The frontend's session id.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// The bound uid, or empty.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// The session data, a JSON object.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// The reply to a [`Request`].
#[derive(Clone, PartialEq, Message)]
pub struct Response {
    /// The answer's payload.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    /// Set when the call failed.
    #[prost(message, optional, tag = "2")]
    pub error: Option<ErrorMsg>,
}

/// A failure inside a [`Response`].
#[derive(Clone, PartialEq, Message)]
pub struct ErrorMsg {
    /// A code such as `PIT-404`.
    #[prost(string, tag = "1")]
    pub code: String,
    /// A readable message.
    #[prost(string, tag = "2")]
    pub msg: String,
    /// Extra details.
    #[prost(map = "string, string", tag = "3")]
    pub metadata: std::collections::HashMap<String, String>,
}

/// A push to a bound user, published on `pitaya/<frontendType>/user/<uid>/push`.
#[derive(Clone, PartialEq, Message)]
pub struct Push {
    /// The push route the client sees.
    #[prost(string, tag = "1")]
    pub route: String,
    /// The user it is for.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// The payload.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// A kick of a bound user, published on `pitaya/<frontendType>/user/<uid>/kick` or sent as
/// `sys.kick`.
#[derive(Clone, PartialEq, Message)]
pub struct KickMsg {
    /// The user to kick.
    #[prost(string, tag = "1")]
    pub user_id: String,
}

/// The answer to `sys.kick`.
#[derive(Clone, PartialEq, Message)]
pub struct KickAnswer {
    /// Whether a session was kicked.
    #[prost(bool, tag = "1")]
    pub kicked: bool,
}

/// Published on `pitaya/<type>/bindings` when a frontend binds a uid, so other frontends of
/// that type drop their session of the same uid.
#[derive(Clone, PartialEq, Message)]
pub struct BindMsg {
    /// The uid bound.
    #[prost(string, tag = "1")]
    pub uid: String,
    /// The frontend that bound it.
    #[prost(string, tag = "2")]
    pub fid: String,
}

impl Response {
    /// A successful reply carrying `data`.
    pub fn data(data: Vec<u8>) -> Self {
        Self { data, error: None }
    }

    /// A failed reply.
    pub fn error(code: &str, msg: impl Into<String>) -> Self {
        Self {
            data: Vec::new(),
            error: Some(ErrorMsg {
                code: code.to_owned(),
                msg: msg.into(),
                metadata: Default::default(),
            }),
        }
    }

    /// The reply to a `sys.*` call: the sys answer encoded inside a Response's data.
    ///
    /// ```
    /// use pitaya_host::cluster::messages::Response;
    /// use prost::Message;
    ///
    /// let ack = Response::sys(Response::data(b"ack".to_vec()));
    /// assert_eq!(ack.encode_to_vec(), [0x0a, 0x05, 0x0a, 0x03, b'a', b'c', b'k']);
    /// ```
    pub fn sys(answer: impl Message) -> Self {
        Self::data(answer.encode_to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // The golden bytes of cluster.md §3, checked there with two independent encoders.
    #[test]
    fn request_matches_the_golden_bytes() {
        let request = Request {
            r#type: RpcType::Sys as i32,
            session: Some(SessionMsg {
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
        assert_eq!(
            hex(&request.encode_to_vec()),
            "121c0807120275311a147b22697076657273696f6e223a2269707634227d1a1b080c120e726f6f6d2e726f6f6d2e6a6f696e1a077b2261223a317d220466652d312a3f7b22706565722e6964223a2266652d31222c22706565722e73657276696365223a22636f6e6e6563746f72222c2272657154696d656f7574223a223573227d"
        );
    }

    #[test]
    fn small_messages_match_the_golden_bytes() {
        let cases: [(Vec<u8>, &str); 6] = [
            (
                Response::error("PIT-404", "not found").encode_to_vec(),
                "12140a075049542d34303412096e6f7420666f756e64",
            ),
            (
                Response::data(b"ack".to_vec()).encode_to_vec(),
                "0a0361636b",
            ),
            (
                Response::sys(Response::data(b"ack".to_vec())).encode_to_vec(),
                "0a050a0361636b",
            ),
            (
                BindMsg {
                    uid: "u1".into(),
                    fid: "fe-1".into(),
                }
                .encode_to_vec(),
                "0a027531120466652d31",
            ),
            (
                KickMsg {
                    user_id: "u1".into(),
                }
                .encode_to_vec(),
                "0a027531",
            ),
            (KickAnswer { kicked: true }.encode_to_vec(), "0801"),
        ];
        for (encoded, golden) in cases {
            assert_eq!(hex(&encoded), golden);
        }
    }
}
