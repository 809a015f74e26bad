//! Sans-IO codec and connection state machine for the pitaya/pomelo wire protocol.
//!
//! This crate has no networking code and reads no clock. Received bytes and the current time are
//! passed in; decoded events and the packets to send are handed out. That keeps every rule of
//! `protocol.md` testable byte for byte without sockets, and lets the same code serve TCP, TLS and
//! WebSocket transports.
//!
//! # Layout
//!
//! - [`packet`]: packet framing, the 4-byte header, and a decoder that checks the header against a
//!   size limit before buffering the body.
//! - [`dict`]: the route compression dictionary.
//! - [`message`]: the message inside a Data packet (flag, varint id, route, payload), zlib
//!   payloads with a hard inflate cap, and the JSON error payload.
//! - [`handshake`]: the client handshake parser and the server's reply documents.
//! - [`serializer`]: error payloads in JSON or protobuf, the negotiated serializer.
//! - [`connection`]: the per-connection state machine: handshake order, heartbeats, timeouts.
//!
//! Tests: `tests/vectors.rs` holds protocol.md's worked examples byte for byte, `tests/codec.rs`
//! and `tests/connection.rs` the edge cases and ordering rules, `tests/properties.rs` proptest
//! round trips and arbitrary input. `fuzz/` has cargo-fuzz targets (nightly) for each decoder.
//!
//! # Invariants
//!
//! No input makes this crate panic: every length and code read from the wire is checked. Nothing
//! here allocates more than the configured limits on behalf of a peer.

#![warn(missing_docs)]

pub mod connection;
pub mod dict;
pub mod handshake;
mod json;
pub mod message;
pub mod packet;
pub mod serializer;

pub use connection::{
    Connection, ConnectionConfig, Event, ProtocolError, State, heartbeat_packet, kick_packet,
    kick_packet_without_reason,
};
pub use dict::RouteDict;
pub use handshake::{
    ClientHandshake, HandshakeError, handshake_error_json, parse_client_handshake,
    server_handshake_json,
};
pub use message::{
    EncodeOptions, FLAG_ERROR, FLAG_PAYLOAD_COMPRESSED, FLAG_ROUTE_COMPRESSED, FLAG_TYPE_MASK,
    MAX_ROUTE_LEN, MAX_VARINT_LEN, Message, MessageError, MessageType, decode_message,
    decode_message_bytes, decode_varint, deflate, encode_message, encode_push, encode_response,
    encode_varint, error_payload_json, inflate,
};
pub use packet::{
    HEADER_LEN, MAX_BODY_LEN, Packet, PacketDecoder, PacketError, PacketType, encode_packet,
    packet_bytes,
};
pub use serializer::{ErrorPayload, Serializer};
