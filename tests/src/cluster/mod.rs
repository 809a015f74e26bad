//! The cluster test kit: real NATS and etcd per test ([`services`]), pitaya's cluster messages written from the
//! contract ([`messages`]), and a fake Go pitaya peer that plays a frontend or a backend ([`peer`]).

pub mod messages;
pub mod peer;
pub mod services;

pub use peer::{FakeBackend, FakeFrontend, ServerEntry};
pub use services::Services;

use crate::server::ClusterOptions;

impl Services {
    /// Options for a host of `server_type` in this cluster (default prefix and timeouts).
    pub fn host(&self, server_type: &str, frontend: bool) -> ClusterOptions {
        ClusterOptions::new(server_type, frontend, &self.nats.url, &self.etcd.url)
    }
}
