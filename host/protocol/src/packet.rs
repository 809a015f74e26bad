//! Packet framing (protocol.md §1): a 1-byte type, a 3-byte big-endian body length, then the body.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of the packet header: one type byte and a 24-bit body length.
pub const HEADER_LEN: usize = 4;

/// The largest body the 24-bit length field can describe.
pub const MAX_BODY_LEN: usize = (1 << 24) - 1;

/// The kind of a packet, from its first byte.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Client handshake (JSON) or the server's reply to it.
    Handshake = 1,
    /// The client acknowledges the server handshake; the body is empty.
    HandshakeAck = 2,
    /// Keep-alive, sent by both sides; the body is empty.
    Heartbeat = 3,
    /// Carries one message (protocol.md §3).
    Data = 4,
    /// The server closes the session; the body is empty or `{"reason":"..."}`.
    Kick = 5,
}

impl PacketType {
    /// Maps a type byte to a packet type, or `None` for a byte the protocol does not define.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Handshake),
            2 => Some(Self::HandshakeAck),
            3 => Some(Self::Heartbeat),
            4 => Some(Self::Data),
            5 => Some(Self::Kick),
            _ => None,
        }
    }
}

impl TryFrom<u8> for PacketType {
    type Error = PacketError;

    fn try_from(byte: u8) -> Result<Self, Self::Error> {
        Self::from_u8(byte).ok_or(PacketError::UnknownType(byte))
    }
}

impl From<PacketType> for u8 {
    fn from(kind: PacketType) -> Self {
        kind as u8
    }
}

/// One decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// What the body holds.
    pub kind: PacketType,
    /// The body, without the header.
    pub body: Bytes,
}

impl Packet {
    /// Builds a packet from its parts.
    pub fn new(kind: PacketType, body: impl Into<Bytes>) -> Self {
        Self {
            kind,
            body: body.into(),
        }
    }

    /// Appends this packet, header and body, to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), PacketError> {
        encode_packet(self.kind, &self.body, out)
    }
}

/// Why a byte stream cannot be split into packets. Either one means the stream is corrupt and the
/// connection must be closed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    /// The type byte is not one the protocol defines.
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    /// The body is longer than the limit in force.
    #[error("packet body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Length of the offending body.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
}

/// Splits a byte stream into packets, tokio-util `Decoder` style.
///
/// The decoder holds no buffer of its own: the caller owns the `BytesMut` that receives bytes, so
/// the same decoder works for a TCP stream and for the contents of WebSocket frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketDecoder {
    max_body: usize,
}

impl Default for PacketDecoder {
    /// A decoder that accepts any body the length field can describe.
    fn default() -> Self {
        Self::new(MAX_BODY_LEN)
    }
}

impl PacketDecoder {
    /// A decoder that rejects bodies longer than `max_body`, which is clamped to [`MAX_BODY_LEN`].
    pub fn new(max_body: usize) -> Self {
        Self {
            max_body: max_body.min(MAX_BODY_LEN),
        }
    }

    /// The largest body this decoder accepts.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Takes the next complete packet off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed; `buf` is then left as it was, possibly with extra
    /// capacity reserved for the body. `Err` means the stream is corrupt; `buf` is left as it was.
    /// The type byte is checked as soon as it is present and the length as soon as the header is
    /// complete, so a hostile header fails before anything is reserved for its body.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>, PacketError> {
        let Some(&type_byte) = buf.first() else {
            return Ok(None);
        };
        let kind = PacketType::try_from(type_byte)?;
        let Some(&[_, high, mid, low]) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = usize::from(high) << 16 | usize::from(mid) << 8 | usize::from(low);
        if len > self.max_body {
            return Err(PacketError::TooLarge {
                len,
                max: self.max_body,
            });
        }
        let total = HEADER_LEN + len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(HEADER_LEN);
        Ok(Some(Packet {
            kind,
            body: frame.freeze(),
        }))
    }
}

/// Appends a packet, header and body, to `out`.
///
/// Fails with [`PacketError::TooLarge`] only if `body` is longer than [`MAX_BODY_LEN`]; `out` is then
/// left unchanged.
pub fn encode_packet(kind: PacketType, body: &[u8], out: &mut BytesMut) -> Result<(), PacketError> {
    let header = packet_header(kind, body.len())?;
    out.reserve(HEADER_LEN + body.len());
    out.put_slice(&header);
    out.put_slice(body);
    Ok(())
}

/// The header for a body of `len` bytes.
pub(crate) fn packet_header(kind: PacketType, len: usize) -> Result<[u8; HEADER_LEN], PacketError> {
    if len > MAX_BODY_LEN {
        return Err(PacketError::TooLarge {
            len,
            max: MAX_BODY_LEN,
        });
    }
    let [_, high, mid, low] = (len as u32).to_be_bytes();
    Ok([kind as u8, high, mid, low])
}

/// Encodes a packet into a buffer of its own, for callers that send one packet per write or frame.
pub fn packet_bytes(kind: PacketType, body: &[u8]) -> Result<Bytes, PacketError> {
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    encode_packet(kind, body, &mut out)?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_packets() {
        for (kind, expected) in [
            (PacketType::HandshakeAck, [2, 0, 0, 0]),
            (PacketType::Heartbeat, [3, 0, 0, 0]),
            (PacketType::Kick, [5, 0, 0, 0]),
        ] {
            assert_eq!(packet_bytes(kind, &[]).unwrap().as_ref(), expected);
        }
    }

    #[test]
    fn length_is_big_endian_24_bit() {
        let body = vec![0xaa; 0x01_02_03];
        let encoded = packet_bytes(PacketType::Data, &body).unwrap();
        assert_eq!(encoded[..4], [4, 0x01, 0x02, 0x03]);
        let mut buf = BytesMut::from(encoded.as_ref());
        let packet = PacketDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(packet.body.len(), 0x01_02_03);
        assert!(buf.is_empty());
    }

    #[test]
    fn largest_body_is_accepted_and_one_more_is_refused() {
        let mut out = BytesMut::new();
        assert_eq!(
            encode_packet(PacketType::Data, &vec![0; MAX_BODY_LEN + 1], &mut out),
            Err(PacketError::TooLarge {
                len: MAX_BODY_LEN + 1,
                max: MAX_BODY_LEN
            })
        );
        assert!(out.is_empty());
        encode_packet(PacketType::Data, &vec![0; MAX_BODY_LEN], &mut out).unwrap();
        assert_eq!(out[..4], [4, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn decoder_limit_is_clamped() {
        assert_eq!(PacketDecoder::new(usize::MAX).max_body(), MAX_BODY_LEN);
        assert_eq!(PacketDecoder::new(10).max_body(), 10);
    }

    #[test]
    fn unknown_type_fails_on_first_byte() {
        let mut buf = BytesMut::from(&[0x06][..]);
        assert_eq!(
            PacketDecoder::default().decode(&mut buf),
            Err(PacketError::UnknownType(6))
        );
        assert_eq!(buf.as_ref(), [0x06]);
    }

    #[test]
    fn incomplete_body_reserves_without_consuming() {
        let mut buf = BytesMut::from(&[4, 0, 0, 10, 1, 2][..]);
        assert_eq!(PacketDecoder::new(10).decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 6);
        assert!(buf.capacity() >= 14);
    }
}
