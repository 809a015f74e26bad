//! pitaya-host: a game server that speaks the pitaya / pomelo wire protocol over TCP and
//! WebSocket and runs the game's handlers as sandboxed WebAssembly components.
//!
//! # Layout
//! - [`pitaya_protocol`] (its own crate): the sans-IO codec and connection state machine.
//! - [`transport`]: TCP and WebSocket byte pipes; nothing about wasm or sessions.
//! - [`session`]: connected clients, their uid and data.
//! - [`send_queue`]: a session's bounded queue of packets for its connection to write.
//! - [`group`]: groups (rooms) of sessions.
//! - [`runtime`]: wasmtime; each component instance behind its own lock (an actor); host functions.
//! - [`router`]: client routes to component handlers, and the route dictionary.
//! - [`config`]: the TOML configuration file.
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - [`server`]: listeners and the per-connection driver that joins the pieces.
//! - [`cluster`]: pitaya's cluster contract: etcd discovery, NATS requests, protobuf messages.
//!
//! ARCHITECTURE.md at the repository root gives the invariants.
//!
//! # In a cluster
//!
//! A host joins a pitaya cluster (with other hosts or Go pitaya servers) through
//! [`ServerConfig::cluster`]; a backend binds no listener:
//!
//! ```no_run
//! use pitaya_host::cluster::ClusterConfig;
//! use pitaya_host::{Server, ServerConfig};
//!
//! # async fn run() -> Result<(), pitaya_host::ServerError> {
//! let config = ServerConfig {
//!     tcp: None,
//!     ws: None,
//!     server_type: "room".into(),
//!     components: vec!["target/wasm32-wasip2/release/chat.wasm".into()],
//!     cluster: Some(ClusterConfig {
//!         nats: "nats://127.0.0.1:4222".into(),
//!         etcd: "http://127.0.0.1:2379".into(),
//!         ..ClusterConfig::default()
//!     }),
//!     ..ServerConfig::default()
//! };
//! let server = Server::bind(config).await?;
//! println!("joined as {:?}", server.cluster_id());
//! server.run(std::future::pending()).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Embedding
//!
//! The `pitaya-host` binary is a thin layer over [`Server`]; a program can run one itself:
//!
//! ```no_run
//! use pitaya_host::{Server, ServerConfig};
//!
//! # async fn run() -> Result<(), pitaya_host::ServerError> {
//! let config = ServerConfig {
//!     components: vec!["target/wasm32-wasip2/release/chat.wasm".into()],
//!     ..ServerConfig::default()
//! };
//! let server = Server::bind(config).await?;
//! println!("listening on {:?} and {:?}", server.tcp_addr(), server.ws_addr());
//! server
//!     .run(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await;
//! # Ok(())
//! # }
//! ```

pub mod cluster;
pub mod config;
pub mod group;
pub mod metrics;
pub mod router;
pub mod runtime;
pub mod send_queue;
pub mod server;
pub mod session;
mod striped;
pub mod transport;

pub use pitaya_protocol as protocol;
pub use runtime::{ComponentOptions, Grants, Limits, Tweak};
pub use server::{Reloader, Server, ServerConfig, ServerError};

/// `text` cut to at most `max` bytes, on a character boundary, saying how much was cut: for
/// strings a component or a client chose that the host writes to its log or sends on, so that
/// their length is the host's to bound.
pub(crate) fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes cut)", &text[..end], text.len() - end).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn clipping_cuts_on_a_character_boundary_and_says_how_much() {
        assert_eq!(super::clip("short", 5), "short");
        // Byte 4 falls inside the second "é": the cut comes one byte earlier.
        assert_eq!(super::clip("aééé", 4), "aé… (4 more bytes cut)");
    }
}
