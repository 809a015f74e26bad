//! Packet and message codec of the pitaya / pomelo wire protocol, written from `shared/protocol.md` alone.
//!
//! Packets (§1): `type:1 | length:3 big-endian | body`. Messages (§3, the body of a Data packet):
//! `flag:1 | id varint (Request, Response) | route (Request, Notify, Push) | payload`.

use std::io::{Read, Write};

use anyhow::{Context, Result, bail, ensure};
use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

/// Packet type bytes (§1).
pub const HANDSHAKE: u8 = 0x01;
pub const HANDSHAKE_ACK: u8 = 0x02;
pub const HEARTBEAT: u8 = 0x03;
pub const DATA: u8 = 0x04;
pub const KICK: u8 = 0x05;

/// Largest body a 3-byte length can describe.
pub const MAX_BODY: usize = (1 << 24) - 1;

/// Flag bits of a message (§3).
pub const FLAG_ROUTE_COMPRESSED: u8 = 0x01;
pub const FLAG_TYPE_MASK: u8 = 0x0E;
pub const FLAG_ZLIB: u8 = 0x10;
pub const FLAG_ERROR: u8 = 0x20;

/// Largest payload this client inflates; anything bigger is reported as an error.
pub const MAX_INFLATED: usize = 64 << 20;

/// The pitaya-style handshake of §2, byte for byte.
pub const PITAYA_HANDSHAKE: &str = r#"{"sys":{"platform":"mac","libVersion":"0.3.5-release","clientBuildNumber":"20","clientVersion":"2.1"},"user":{"age":30}}"#;
/// The pomelo / starx-style handshake of §2, byte for byte.
pub const POMELO_HANDSHAKE: &str =
    r#"{"sys":{"type":"js-websocket","version":"0.0.1","rsa":{}},"user":{}}"#;

/// One whole packet: its type byte and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub kind: u8,
    pub body: Vec<u8>,
}

impl Packet {
    pub fn new(kind: u8, body: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            body: body.into(),
        }
    }

    /// Header and body, ready for the wire.
    pub fn encode(&self) -> Vec<u8> {
        encode_packet(self.kind, &self.body)
    }
}

/// Whether `kind` is one of the five packet types of §1.
pub fn is_known_packet_type(kind: u8) -> bool {
    (HANDSHAKE..=KICK).contains(&kind)
}

/// The name of a packet type, for messages.
pub fn packet_type_name(kind: u8) -> &'static str {
    match kind {
        HANDSHAKE => "Handshake",
        HANDSHAKE_ACK => "HandshakeAck",
        HEARTBEAT => "Heartbeat",
        DATA => "Data",
        KICK => "Kick",
        _ => "unknown",
    }
}

/// A packet header and body. The length is the body's, truncated to 24 bits when `body` is too long (a test
/// that wants a lying header writes it with [`packet_header`]).
pub fn encode_packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = packet_header(kind, body.len());
    out.extend_from_slice(body);
    out
}

/// Only the 4-byte header of a packet claiming `len` body bytes (low 24 bits of `len`).
pub fn packet_header(kind: u8, len: usize) -> Vec<u8> {
    vec![kind, (len >> 16) as u8, (len >> 8) as u8, len as u8]
}

/// Reassembles packets from a byte stream that may arrive in pieces or several at once (TCP).
#[derive(Debug, Default)]
pub struct PacketDecoder {
    buf: Vec<u8>,
}

impl PacketDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered that do not yet make a whole packet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole packet, `None` when more bytes are needed, an error on an unknown type byte.
    pub fn next_packet(&mut self) -> Result<Option<Packet>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let kind = self.buf[0];
        ensure!(
            is_known_packet_type(kind),
            "unknown packet type byte 0x{kind:02x}"
        );
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = usize::from(self.buf[1]) << 16
            | usize::from(self.buf[2]) << 8
            | usize::from(self.buf[3]);
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(Packet { kind, body }))
    }
}

/// Splits a buffer that must hold only whole packets (a WebSocket frame) into them.
pub fn decode_packets(bytes: &[u8]) -> Result<Vec<Packet>> {
    let mut dec = PacketDecoder::default();
    dec.push(bytes);
    let mut out = Vec::new();
    while let Some(p) = dec.next_packet()? {
        out.push(p);
    }
    ensure!(
        dec.pending() == 0,
        "{} trailing bytes do not make a whole packet",
        dec.pending()
    );
    Ok(out)
}

/// Appends `value` as a protobuf varint (7 bits a byte, least significant group first).
pub fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a varint from the start of `bytes`: its value and how many bytes it took. More than 10 bytes, or a
/// value that overflows u64, is an error.
pub fn decode_varint(bytes: &[u8]) -> Result<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        ensure!(i < 10, "varint longer than 10 bytes");
        let group = u64::from(b & 0x7f);
        if i == 9 {
            ensure!(group <= 1, "varint overflows u64");
        }
        value |= group << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    bail!("truncated varint")
}

/// zlib-deflates `data`.
pub fn zlib_compress(data: &[u8]) -> Vec<u8> {
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// zlib-inflates `data`, refusing to produce more than `limit` bytes.
pub fn zlib_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    ZlibDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .context("invalid zlib data")?;
    ensure!(
        out.len() <= limit,
        "zlib data inflates to more than {limit} bytes"
    );
    Ok(out)
}

/// The four message types of §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Request = 0,
    Notify = 1,
    Response = 2,
    Push = 3,
}

impl MessageType {
    pub fn from_bits(bits: u8) -> Result<Self> {
        Ok(match bits {
            0 => Self::Request,
            1 => Self::Notify,
            2 => Self::Response,
            3 => Self::Push,
            other => bail!("invalid message type {other}"),
        })
    }

    /// Request and Response carry an id.
    pub fn has_id(self) -> bool {
        matches!(self, Self::Request | Self::Response)
    }

    /// Request, Notify and Push carry a route.
    pub fn has_route(self) -> bool {
        !matches!(self, Self::Response)
    }
}

/// A message route: a string, or a 16-bit dictionary code (flag 0x01).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    Plain(String),
    Code(u16),
}

impl From<&str> for Route {
    fn from(s: &str) -> Self {
        Self::Plain(s.to_owned())
    }
}

impl From<String> for Route {
    fn from(s: String) -> Self {
        Self::Plain(s)
    }
}

impl From<u16> for Route {
    fn from(c: u16) -> Self {
        Self::Code(c)
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(s) => write!(f, "{s:?}"),
            Self::Code(c) => write!(f, "code {c}"),
        }
    }
}

/// A decoded (or to-be-encoded) message.
///
/// `payload` is always the plain payload. `zlib` says whether it travels deflated (flag 0x10): when encoding,
/// the payload is deflated; when decoding, it was inflated and `wire_payload_len` is its deflated size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageType,
    /// Message id; 0 for Notify and Push.
    pub id: u64,
    pub route: Option<Route>,
    pub payload: Vec<u8>,
    pub zlib: bool,
    pub error: bool,
    /// Bytes the payload took on the wire.
    pub wire_payload_len: usize,
}

impl Message {
    fn new(kind: MessageType, id: u64, route: Option<Route>, payload: &[u8]) -> Self {
        Self {
            kind,
            id,
            route,
            payload: payload.to_vec(),
            zlib: false,
            error: false,
            wire_payload_len: payload.len(),
        }
    }

    pub fn request(id: u64, route: impl Into<Route>, payload: &[u8]) -> Self {
        Self::new(MessageType::Request, id, Some(route.into()), payload)
    }

    pub fn notify(route: impl Into<Route>, payload: &[u8]) -> Self {
        Self::new(MessageType::Notify, 0, Some(route.into()), payload)
    }

    pub fn response(id: u64, payload: &[u8]) -> Self {
        Self::new(MessageType::Response, id, None, payload)
    }

    pub fn push(route: impl Into<Route>, payload: &[u8]) -> Self {
        Self::new(MessageType::Push, 0, Some(route.into()), payload)
    }

    /// Sends the payload zlib-deflated with flag 0x10.
    pub fn with_zlib(mut self) -> Self {
        self.zlib = true;
        self
    }

    /// Marks the message as an error (flag 0x20).
    pub fn with_error(mut self) -> Self {
        self.error = true;
        self
    }

    /// The flag byte this message is sent with.
    pub fn flag(&self) -> u8 {
        let mut flag = (self.kind as u8) << 1;
        if matches!(self.route, Some(Route::Code(_))) {
            flag |= FLAG_ROUTE_COMPRESSED;
        }
        if self.zlib {
            flag |= FLAG_ZLIB;
        }
        if self.error {
            flag |= FLAG_ERROR;
        }
        flag
    }

    /// The message bytes (the body of a Data packet).
    pub fn encode(&self) -> Result<Vec<u8>> {
        ensure!(
            self.route.is_some() == self.kind.has_route(),
            "a {:?} {} a route",
            self.kind,
            if self.kind.has_route() {
                "needs"
            } else {
                "has no"
            }
        );
        let payload = if self.zlib {
            zlib_compress(&self.payload)
        } else {
            self.payload.clone()
        };
        encode_message_raw(
            self.flag(),
            self.kind.has_id().then_some(self.id),
            self.route.as_ref(),
            &payload,
        )
    }

    /// The whole Data packet carrying this message.
    pub fn to_packet(&self) -> Result<Vec<u8>> {
        let body = self.encode()?;
        ensure!(
            body.len() <= MAX_BODY,
            "message of {} bytes does not fit a packet",
            body.len()
        );
        Ok(encode_packet(DATA, &body))
    }

    /// Decodes a message (the body of a Data packet), strictly: unknown flag bits, a type of 4..7, a route flag
    /// on a Response or a truncated field are errors. A deflated payload is inflated.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (&flag, mut rest) = bytes.split_first().context("empty message")?;
        ensure!(flag & 0xC0 == 0, "unknown flag bits in 0x{flag:02x}");
        let kind = MessageType::from_bits((flag & FLAG_TYPE_MASK) >> 1)?;
        let mut id = 0;
        if kind.has_id() {
            let (v, n) = decode_varint(rest).context("bad message id")?;
            id = v;
            rest = &rest[n..];
        }
        let mut route = None;
        if kind.has_route() {
            if flag & FLAG_ROUTE_COMPRESSED != 0 {
                ensure!(rest.len() >= 2, "truncated route code");
                route = Some(Route::Code(u16::from_be_bytes([rest[0], rest[1]])));
                rest = &rest[2..];
            } else {
                let (&len, tail) = rest.split_first().context("missing route length")?;
                let len = usize::from(len);
                ensure!(tail.len() >= len, "truncated route");
                let s = std::str::from_utf8(&tail[..len]).context("route is not UTF-8")?;
                route = Some(Route::Plain(s.to_owned()));
                rest = &tail[len..];
            }
        } else {
            ensure!(
                flag & FLAG_ROUTE_COMPRESSED == 0,
                "route-compressed flag on a {kind:?}"
            );
        }
        let zlib = flag & FLAG_ZLIB != 0;
        let payload = if zlib {
            zlib_decompress(rest, MAX_INFLATED).context("bad zlib payload")?
        } else {
            rest.to_vec()
        };
        Ok(Self {
            kind,
            id,
            route,
            payload,
            zlib,
            error: flag & FLAG_ERROR != 0,
            wire_payload_len: rest.len(),
        })
    }

    /// The payload parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.payload).with_context(|| {
            format!(
                "payload is not JSON: {:?}",
                String::from_utf8_lossy(&self.payload)
            )
        })
    }

    /// The payload as (lossy) text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Builds a message body from raw parts, with any flag (also invalid ones, for malformed-input tests).
/// `payload` is sent as is.
pub fn encode_message_raw(
    flag: u8,
    id: Option<u64>,
    route: Option<&Route>,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let mut out = vec![flag];
    if let Some(id) = id {
        encode_varint(id, &mut out);
    }
    match route {
        Some(Route::Plain(s)) => {
            ensure!(s.len() <= 255, "route {s:?} longer than 255 bytes");
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        Some(Route::Code(c)) => out.extend_from_slice(&c.to_be_bytes()),
        None => {}
    }
    out.extend_from_slice(payload);
    Ok(out)
}
