//! An independent pitaya / pomelo protocol client, written from `shared/protocol.md` alone, and a harness that
//! drives the real `pitaya-host` binary, for the integration tests in `tests/`.
//!
//! - [`codec`]: packet framing, message encoding and decoding (flags, varint ids, plain and compressed routes,
//!   zlib payloads).
//! - [`client`]: one async client over TCP or WebSocket, with waits for responses, pushes, heartbeats and close.
//! - [`checks`]: assertions shared by the tests.
//! - [`procfs`]: the server's resident memory and TCP socket states, from `/proc`.
//! - [`server`]: starts `pitaya-host serve` on ephemeral ports and runs scenarios over each transport.
//! - [`cluster`]: NATS and etcd for a test, and a fake Go pitaya peer written from `shared/cluster.md`.

pub mod checks;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod procfs;
pub mod server;
pub mod tempdir;

#[cfg(test)]
mod codec_tests;

pub use client::{Client, DEFAULT_WAIT, Event, HandshakeReply, Incoming, Transport};
pub use codec::{Message, MessageType, Route};
pub use server::{ClusterOptions, Server, ServerOptions};
pub use tempdir::TempDir;
