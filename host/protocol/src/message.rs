//! Messages, the body of a Data packet (protocol.md §3): flag byte, varint id, route, payload; plus
//! the JSON error payload of §5.

use std::io::{self, Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

use crate::dict::RouteDict;
use crate::json;
use crate::packet::{HEADER_LEN, MAX_BODY_LEN, PacketType, packet_header};

/// Flag bit: the route is a 2-byte dictionary code instead of a string.
pub const FLAG_ROUTE_COMPRESSED: u8 = 0x01;
/// Flag bits holding the message type, shifted left by one.
pub const FLAG_TYPE_MASK: u8 = 0x0e;
/// Flag bit: the payload is zlib-compressed.
pub const FLAG_PAYLOAD_COMPRESSED: u8 = 0x10;
/// Flag bit: the payload is an error object.
pub const FLAG_ERROR: u8 = 0x20;
/// Longest varint a u64 can need.
pub const MAX_VARINT_LEN: usize = 10;
/// Longest uncompressed route: its length is a single byte.
pub const MAX_ROUTE_LEN: usize = u8::MAX as usize;

/// The kind of a message, from bits 1–3 of its flag byte.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Client to server, expects a Response with the same id.
    Request = 0,
    /// Client to server, no id and no answer.
    Notify = 1,
    /// Server to client, answers the Request with the same id.
    Response = 2,
    /// Server to client, unsolicited, with a route naming the event.
    Push = 3,
}

impl MessageType {
    /// Maps the 3-bit type field to a message type, or `None` for the values 4 to 7.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Request),
            1 => Some(Self::Notify),
            2 => Some(Self::Response),
            3 => Some(Self::Push),
            _ => None,
        }
    }

    /// Whether messages of this type carry an id (Request and Response).
    pub const fn has_id(self) -> bool {
        matches!(self, Self::Request | Self::Response)
    }

    /// Whether messages of this type carry a route (all but Response).
    pub const fn has_route(self) -> bool {
        !matches!(self, Self::Response)
    }
}

/// A decoded message. `route` is resolved through the dict if it was compressed ("" for Response).
/// `payload` is already inflated if the 0x10 flag was set. `id` is 0 for Notify/Push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request, Notify, Response or Push.
    pub kind: MessageType,
    /// The request id; 0 for Notify and Push.
    pub id: u64,
    /// The route, resolved through the dictionary when it was sent as a code; empty for Response.
    pub route: String,
    /// Whether the route was sent as a dictionary code.
    pub route_compressed: bool,
    /// The payload, already inflated if it was sent compressed.
    pub payload: Bytes,
    /// Whether the error flag (0x20) was set.
    pub error: bool,
}

/// Why a message cannot be decoded or encoded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// The message has no flag byte.
    #[error("empty message")]
    Empty,
    /// The type field of the flag byte is 4, 5, 6 or 7.
    #[error("unknown message type {0}")]
    BadType(u8),
    /// The flag byte has a bit set that the protocol does not define for this message.
    #[error("invalid message flag {0:#04x}")]
    BadFlag(u8),
    /// The id varint is longer than 10 bytes or does not fit in a u64.
    #[error("invalid varint")]
    BadVarint,
    /// The message ends inside its id or route.
    #[error("truncated message")]
    Truncated,
    /// The compressed route's code is not in the dictionary.
    #[error("unknown route code {0}")]
    UnknownRouteCode(u16),
    /// The route is not valid UTF-8.
    #[error("route is not valid utf-8")]
    RouteNotUtf8,
    /// A route to encode is longer than the 255 bytes its length byte can count.
    #[error("route of {0} bytes is longer than 255 bytes")]
    RouteTooLong(usize),
    /// A Request, Notify or Push to encode has neither a route nor a route code.
    #[error("message type needs a route")]
    MissingRoute,
    /// The compressed payload is not a valid zlib stream.
    #[error("payload is not valid zlib data")]
    Inflate,
    /// The compressed payload inflates to more than the limit.
    #[error("inflated payload exceeds the limit of {max} bytes")]
    InflatedTooLarge {
        /// The limit that was exceeded.
        max: usize,
    },
    /// A Request has id 0; request ids start at 1.
    #[error("request id is 0")]
    ZeroRequestId,
    /// An encoded message does not fit in a packet.
    #[error("message of {len} bytes exceeds the packet limit of {max} bytes")]
    TooLarge {
        /// Length of the encoded message.
        len: usize,
        /// The largest packet body.
        max: usize,
    },
}

/// Appends `v` as a protobuf varint: 7 bits a byte, least significant group first.
pub fn encode_varint(mut v: u64, out: &mut BytesMut) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Reads a protobuf varint from the start of `buf`; returns the value and how many bytes it took.
///
/// Non-minimal encodings are accepted, as protobuf does, but never more than
/// [`MAX_VARINT_LEN`] bytes nor a value past `u64::MAX`.
pub fn decode_varint(buf: &[u8]) -> Result<(u64, usize), MessageError> {
    let mut value = 0u64;
    for (index, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        // The tenth byte holds bit 63 only; anything more overflows, and a continuation bit
        // would make the varint longer than a u64 can need.
        if index == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(MessageError::BadVarint);
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok((value, index + 1));
        }
    }
    Err(MessageError::Truncated)
}

/// Decodes the body of a Data packet.
///
/// The type is `(flag >> 1) & 7`; 4 to 7 are [`MessageError::BadType`]. Flag bits 0x40 and 0x80,
/// and 0x01 on a Response (which has no route), are [`MessageError::BadFlag`]. A Request with id 0
/// is [`MessageError::ZeroRequestId`]. A compressed route's code must be in `dict`. A payload with
/// flag 0x10 is inflated, and fails with [`MessageError::InflatedTooLarge`] as soon as it passes
/// `max_inflated` bytes, so a zlib bomb costs at most that much memory. The error flag is reported,
/// not judged: the connection layer decides what a client may send.
pub fn decode_message(
    body: &[u8],
    dict: &RouteDict,
    max_inflated: usize,
) -> Result<Message, MessageError> {
    let (header, payload) = decode_header(body, dict)?;
    let payload = payload_bytes(header.flag, payload, max_inflated, Bytes::copy_from_slice)?;
    Ok(header.into_message(payload))
}

/// Like [`decode_message`], but an uncompressed payload shares `body`'s memory instead of being
/// copied.
pub fn decode_message_bytes(
    body: &Bytes,
    dict: &RouteDict,
    max_inflated: usize,
) -> Result<Message, MessageError> {
    let (header, payload) = decode_header(body, dict)?;
    let payload = payload_bytes(header.flag, payload, max_inflated, |p| body.slice_ref(p))?;
    Ok(header.into_message(payload))
}

/// Everything in a message but its payload.
struct Header {
    flag: u8,
    kind: MessageType,
    id: u64,
    route: String,
    route_compressed: bool,
}

impl Header {
    fn into_message(self, payload: Bytes) -> Message {
        Message {
            kind: self.kind,
            id: self.id,
            route: self.route,
            route_compressed: self.route_compressed,
            payload,
            error: self.flag & FLAG_ERROR != 0,
        }
    }
}

/// Decodes the flag, id and route; returns them with the (still compressed) payload bytes.
fn decode_header<'a>(body: &'a [u8], dict: &RouteDict) -> Result<(Header, &'a [u8]), MessageError> {
    let (&flag, mut rest) = body.split_first().ok_or(MessageError::Empty)?;
    if flag & 0xc0 != 0 {
        return Err(MessageError::BadFlag(flag));
    }
    let type_bits = (flag & FLAG_TYPE_MASK) >> 1;
    let kind = MessageType::from_u8(type_bits).ok_or(MessageError::BadType(type_bits))?;
    let route_compressed = flag & FLAG_ROUTE_COMPRESSED != 0;
    if route_compressed && !kind.has_route() {
        return Err(MessageError::BadFlag(flag));
    }

    let mut id = 0;
    if kind.has_id() {
        let (value, used) = decode_varint(rest)?;
        if kind == MessageType::Request && value == 0 {
            return Err(MessageError::ZeroRequestId);
        }
        id = value;
        rest = rest.get(used..).ok_or(MessageError::Truncated)?;
    }

    let mut route = String::new();
    if kind.has_route() {
        if route_compressed {
            let (code, tail) = rest
                .split_first_chunk::<2>()
                .ok_or(MessageError::Truncated)?;
            let code = u16::from_be_bytes(*code);
            route = dict
                .route(code)
                .ok_or(MessageError::UnknownRouteCode(code))?
                .to_owned();
            rest = tail;
        } else {
            let (&len, tail) = rest.split_first().ok_or(MessageError::Truncated)?;
            let len = usize::from(len);
            let bytes = tail.get(..len).ok_or(MessageError::Truncated)?;
            route = std::str::from_utf8(bytes)
                .map_err(|_| MessageError::RouteNotUtf8)?
                .to_owned();
            rest = tail.get(len..).ok_or(MessageError::Truncated)?;
        }
    }

    let header = Header {
        flag,
        kind,
        id,
        route,
        route_compressed,
    };
    Ok((header, rest))
}

fn payload_bytes(
    flag: u8,
    payload: &[u8],
    max_inflated: usize,
    keep: impl FnOnce(&[u8]) -> Bytes,
) -> Result<Bytes, MessageError> {
    if flag & FLAG_PAYLOAD_COMPRESSED != 0 {
        inflate(payload, max_inflated).map(Bytes::from)
    } else {
        Ok(keep(payload))
    }
}

/// Inflates a zlib stream, failing as soon as the output passes `max` bytes.
///
/// The output buffer grows by hand, never past `max`, because `Vec`'s own doubling could
/// allocate nearly twice the cap before the check fires.
pub fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, MessageError> {
    let mut decoder = ZlibDecoder::new(data);
    let mut out = Vec::new();
    let mut chunk = [0u8; 8 * 1024];
    loop {
        let read = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(MessageError::Inflate),
        };
        let piece = chunk.get(..read).ok_or(MessageError::Inflate)?;
        let new_len = out.len().saturating_add(piece.len());
        if new_len > max {
            return Err(MessageError::InflatedTooLarge { max });
        }
        if new_len > out.capacity() {
            let target = new_len.max(out.capacity().saturating_mul(2)).min(max);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(piece);
    }
}

/// Compresses `data` as a zlib stream.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(
        Vec::with_capacity(data.len() / 2 + 16),
        Compression::default(),
    );
    // Writing into a Vec cannot fail; if it somehow did, the empty result makes callers send the
    // payload uncompressed rather than panic.
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .unwrap_or_default()
}

/// The zlib form of `payload` if compression is wanted and makes it strictly smaller.
fn compressed_if_smaller(payload: &[u8], compress: bool) -> Option<Vec<u8>> {
    if !compress || payload.is_empty() {
        return None;
    }
    let compressed = deflate(payload);
    (!compressed.is_empty() && compressed.len() < payload.len()).then_some(compressed)
}

/// Options for encoding server->client messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// zlib payloads (flag 0x10) when that makes them strictly smaller.
    pub compress: bool,
    /// Send push routes found in the dictionary as codes. Off by default: libpitaya crashes on a
    /// coded push route (protocol.md §7).
    pub push_route_codes: bool,
}

/// Encodes a whole Data packet (4-byte header + message) for a Response. `error` sets flag 0x20.
///
/// On error `out` is left unchanged.
pub fn encode_response(
    id: u64,
    payload: &[u8],
    error: bool,
    opts: &EncodeOptions,
    out: &mut BytesMut,
) -> Result<(), MessageError> {
    encode_data_packet(out, 1 + MAX_VARINT_LEN + payload.len(), |out| {
        encode_message(
            MessageType::Response,
            id,
            None,
            None,
            payload,
            error,
            opts.compress,
            out,
        )
    })
}

/// Encodes a whole Data packet for a Push: a plain string route unless `opts.push_route_codes` is
/// set and the route is in `dict`.
///
/// A plain route over 255 bytes is [`MessageError::RouteTooLong`]; a message over
/// [`MAX_BODY_LEN`] is [`MessageError::TooLarge`]. On error `out` is left unchanged.
pub fn encode_push(
    route: &str,
    payload: &[u8],
    dict: &RouteDict,
    opts: &EncodeOptions,
    out: &mut BytesMut,
) -> Result<(), MessageError> {
    let code = if opts.push_route_codes {
        dict.code(route)
    } else {
        None
    };
    let route_room = if code.is_some() { 2 } else { 1 + route.len() };
    encode_data_packet(out, 1 + route_room + payload.len(), |out| {
        encode_message(
            MessageType::Push,
            0,
            Some(route),
            code,
            payload,
            false,
            opts.compress,
            out,
        )
    })
}

/// Writes a packet header placeholder, lets `write` append the message, then fills the header in,
/// so the message is encoded once, straight into `out`. `body_room` is the most the message can
/// take (compression only makes it smaller).
fn encode_data_packet(
    out: &mut BytesMut,
    body_room: usize,
    write: impl FnOnce(&mut BytesMut) -> Result<(), MessageError>,
) -> Result<(), MessageError> {
    let start = out.len();
    // The whole packet's room at once: an empty buffer is allocated once, not grown for the
    // header and again for the message.
    out.reserve(HEADER_LEN + body_room);
    out.put_slice(&[0; HEADER_LEN]);
    let body_start = out.len();
    let result = write(out).and_then(|()| {
        let len = out.len() - body_start;
        let header = packet_header(PacketType::Data, len).map_err(|_| MessageError::TooLarge {
            len,
            max: MAX_BODY_LEN,
        })?;
        if let Some(slot) = out.get_mut(start..body_start) {
            slot.copy_from_slice(&header);
        }
        Ok(())
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// General encoder for any message (clients and tests use it): writes the message body only, no
/// packet header.
///
/// `id` is written for Request and Response and ignored for Notify and Push; a Request needs an
/// id of at least 1. Request, Notify and Push need a route: `route_code` is used when given,
/// otherwise `route` (at most 255 bytes). Both are ignored for a Response. With `compress`, the
/// payload is zlib-compressed (flag 0x10) when that makes it strictly smaller. On error `out` is
/// left unchanged.
#[allow(clippy::too_many_arguments)]
pub fn encode_message(
    kind: MessageType,
    id: u64,
    route: Option<&str>,
    route_code: Option<u16>,
    payload: &[u8],
    error: bool,
    compress: bool,
    out: &mut BytesMut,
) -> Result<(), MessageError> {
    enum Route<'a> {
        None,
        Code(u16),
        Plain(&'a str),
    }

    if kind == MessageType::Request && id == 0 {
        return Err(MessageError::ZeroRequestId);
    }
    let route = match (kind.has_route(), route_code, route) {
        (false, _, _) => Route::None,
        (true, Some(code), _) => Route::Code(code),
        (true, None, Some(route)) if route.len() > MAX_ROUTE_LEN => {
            return Err(MessageError::RouteTooLong(route.len()));
        }
        (true, None, Some(route)) => Route::Plain(route),
        (true, None, None) => return Err(MessageError::MissingRoute),
    };

    let mut flag = (kind as u8) << 1;
    if error {
        flag |= FLAG_ERROR;
    }
    if matches!(route, Route::Code(_)) {
        flag |= FLAG_ROUTE_COMPRESSED;
    }
    let compressed = compressed_if_smaller(payload, compress);
    if compressed.is_some() {
        flag |= FLAG_PAYLOAD_COMPRESSED;
    }
    let payload = compressed.as_deref().unwrap_or(payload);

    let route_len = match route {
        Route::None => 0,
        Route::Code(_) => 2,
        Route::Plain(route) => 1 + route.len(),
    };
    // Exactly what this message can take, so that a buffer sized by the caller (or by
    // `encode_data_packet`) is not grown and copied a second time.
    let id_len = if kind.has_id() { MAX_VARINT_LEN } else { 0 };
    out.reserve(1 + id_len + route_len + payload.len());
    out.put_u8(flag);
    if kind.has_id() {
        encode_varint(id, out);
    }
    match route {
        Route::None => {}
        Route::Code(code) => out.put_u16(code),
        Route::Plain(route) => {
            out.put_u8(route.len() as u8);
            out.put_slice(route.as_bytes());
        }
    }
    out.put_slice(payload);
    Ok(())
}

/// JSON error payload: `{"code":"PIT-404","msg":"..."}` plus `"metadata":{...}` only when non-empty.
/// Keys in the order code, msg, metadata; metadata entries in the order given.
pub fn error_payload_json(code: &str, msg: &str, metadata: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + code.len() + msg.len());
    out.extend_from_slice(b"{\"code\":");
    json::push_string(&mut out, code);
    out.extend_from_slice(b",\"msg\":");
    json::push_string(&mut out, msg);
    if !metadata.is_empty() {
        out.extend_from_slice(b",\"metadata\":{");
        for (index, (key, value)) in metadata.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            json::push_string(&mut out, key);
            out.push(b':');
            json::push_string(&mut out, value);
        }
        out.push(b'}');
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_varint(v, &mut out);
        out.to_vec()
    }

    #[test]
    fn varint_vectors() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x01]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(129), [0x81, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(u64::from(u32::MAX)), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            varint(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn varint_decode_reports_length_and_ignores_what_follows() {
        assert_eq!(decode_varint(&[0xac, 0x02, 0x7b]), Ok((300, 2)));
        assert_eq!(decode_varint(&[0x80, 0x00]), Ok((0, 2)));
    }

    #[test]
    fn varint_errors() {
        assert_eq!(decode_varint(&[]), Err(MessageError::Truncated));
        assert_eq!(decode_varint(&[0x80]), Err(MessageError::Truncated));
        assert_eq!(decode_varint(&[0xff; 9]), Err(MessageError::Truncated));
        // Tenth byte 2 would set bit 64.
        let mut overflow = vec![0xff; 9];
        overflow.push(0x02);
        assert_eq!(decode_varint(&overflow), Err(MessageError::BadVarint));
        // Ten bytes that still continue: at least eleven in all.
        let mut eleven = vec![0x80; 10];
        eleven.push(0x00);
        assert_eq!(decode_varint(&eleven), Err(MessageError::BadVarint));
        assert_eq!(decode_varint(&eleven[..10]), Err(MessageError::BadVarint));
    }

    #[test]
    fn response_with_route_flag_is_bad() {
        assert_eq!(
            decode_message(&[0x05, 0x01], &RouteDict::default(), 1024),
            Err(MessageError::BadFlag(0x05))
        );
    }

    #[test]
    fn inflate_never_reserves_past_the_cap() {
        let data = deflate(&[7u8; 100_000]);
        let out = inflate(&data, 100_000).unwrap();
        assert_eq!(out.len(), 100_000);
        assert!(out.capacity() <= 100_000);
        assert_eq!(
            inflate(&data, 99_999),
            Err(MessageError::InflatedTooLarge { max: 99_999 })
        );
    }

    #[test]
    fn encode_leaves_out_unchanged_on_error() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let long = "x".repeat(256);
        let opts = EncodeOptions::default();
        assert_eq!(
            encode_push(&long, b"{}", &RouteDict::default(), &opts, &mut out),
            Err(MessageError::RouteTooLong(256))
        );
        assert_eq!(
            encode_message(
                MessageType::Request,
                0,
                Some("a"),
                None,
                b"",
                false,
                false,
                &mut out
            ),
            Err(MessageError::ZeroRequestId)
        );
        assert_eq!(
            encode_message(
                MessageType::Notify,
                0,
                None,
                None,
                b"",
                false,
                false,
                &mut out
            ),
            Err(MessageError::MissingRoute)
        );
        assert_eq!(out.as_ref(), b"keep");
    }

    #[test]
    fn oversized_message_is_refused_and_out_restored() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let payload = vec![0u8; MAX_BODY_LEN];
        assert_eq!(
            encode_response(1, &payload, false, &EncodeOptions::default(), &mut out),
            Err(MessageError::TooLarge {
                len: MAX_BODY_LEN + 2,
                max: MAX_BODY_LEN
            })
        );
        assert_eq!(out.as_ref(), b"keep");
        // The same payload compressed fits easily.
        let opts = EncodeOptions {
            compress: true,
            ..EncodeOptions::default()
        };
        encode_response(1, &payload, false, &opts, &mut out).unwrap();
        assert_eq!(out[..4], *b"keep");
        assert_eq!(out[4], PacketType::Data as u8);
        assert_eq!(out[8], 0x04 | FLAG_PAYLOAD_COMPRESSED);
    }

    #[test]
    fn error_payload_shapes() {
        assert_eq!(
            error_payload_json("PIT-404", "not found", &[]),
            br#"{"code":"PIT-404","msg":"not found"}"#
        );
        let meta = [
            ("k".to_owned(), "v".to_owned()),
            ("a".to_owned(), "\"q\"".to_owned()),
        ];
        assert_eq!(
            error_payload_json("ROOM-FULL", "full", &meta),
            br#"{"code":"ROOM-FULL","msg":"full","metadata":{"k":"v","a":"\"q\""}}"#
        );
    }
}
