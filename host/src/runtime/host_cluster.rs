//! The `pitaya:host/cluster` interface: who this server is, and RPCs to other servers.

use super::bindings::pitaya::host::cluster::{self, ServerInfo};
use super::bindings::pitaya::host::types::HandlerError;
use super::instance::HostState;

impl cluster::Host for HostState {
    fn server(&mut self) -> Option<ServerInfo> {
        let cluster = self.context.cluster()?;
        Some(ServerInfo {
            server_type: cluster.me.server_type.clone(),
            id: cluster.me.id.clone(),
        })
    }

    async fn rpc(&mut self, route: String, payload: Vec<u8>) -> Result<Vec<u8>, HandlerError> {
        let Some(cluster) = self.context.cluster().cloned() else {
            return Err(HandlerError {
                code: "PIT-500".into(),
                message: "pitaya/remote: this host is not in a cluster".into(),
                metadata: Vec::new(),
            });
        };
        let started = std::time::Instant::now();
        // The call is suspended while it waits; the thread serves others.
        let outcome = cluster.rpc(&route, &payload).await;
        self.extend_deadline(started.elapsed());
        outcome.map_err(|error| HandlerError {
            code: error.code,
            message: error.message,
            metadata: error.metadata,
        })
    }
}
