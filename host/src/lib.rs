//! pitaya-host: a game server that speaks the pitaya / pomelo wire protocol over TCP and
//! WebSocket and runs the game's handlers as sandboxed WebAssembly components.
//!
//! # Layout
//! - [`pitaya_protocol`] (its own crate): the sans-IO codec and connection state machine.
//! - [`transport`]: TCP and WebSocket byte pipes; nothing about wasm or sessions.
//! - [`session`]: connected clients, their uid, data and bounded send queues.
//! - [`group`]: groups (rooms) of sessions.
//! - [`runtime`]: wasmtime; one actor thread per component instance; host functions.
//! - [`router`]: client routes to component handlers, and the route dictionary.
//! - [`config`]: the TOML configuration file.
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - [`server`]: listeners and the per-connection driver that joins the pieces.
//!
//! ARCHITECTURE.md at the repository root gives the invariants.

pub mod config;
pub mod group;
pub mod metrics;
pub mod router;
pub mod runtime;
pub mod server;
pub mod session;
pub mod transport;

pub use pitaya_protocol as protocol;
pub use runtime::{ComponentOptions, Grants, Limits};
pub use server::{Reloader, Server, ServerConfig, ServerError};
