//! The `pitaya:host/users` interface: players by bound uid, on this host or, in a cluster,
//! on any frontend.

use super::bindings::pitaya::host::users;
use super::host_session::push_remote;
use super::instance::HostState;
use crate::session::{RemoteOp, SessionId};

impl users::Host for HostState {
    fn session(&mut self, uid: String) -> Option<SessionId> {
        self.context
            .registry
            .by_uid(&uid)
            .map(|session| session.id())
    }

    fn push(&mut self, uids: Vec<String>, route: String, payload: Vec<u8>) -> Vec<String> {
        let packet = self.encode_push(&route, &payload);
        let Some(packet) = packet else {
            return uids;
        };
        let cluster = self.context.cluster().cloned();
        uids.into_iter()
            .filter(|uid| {
                let delivered = match self.context.registry.by_uid(uid) {
                    Some(session) if session.is_remote() => push_remote(&session, &route, &payload),
                    Some(session) => session.send(packet.clone()).is_ok(),
                    // Somewhere in the cluster, perhaps: published to every frontend type,
                    // fire and forget, as pitaya does.
                    None => cluster
                        .as_ref()
                        .is_some_and(|cluster| cluster.push_to_user(uid, &route, &payload, None)),
                };
                if delivered {
                    self.context.metrics.pushes.inc();
                }
                !delivered
            })
            .collect()
    }

    fn kick(&mut self, uid: String, reason: Option<String>) -> bool {
        match self.context.registry.by_uid(&uid) {
            Some(session) => match session.remote_link() {
                Some(link) => link.ops.send(RemoteOp::Kick(uid)).is_ok(),
                None => {
                    let _ = session.send_last(self.context.kick_packet(reason.as_deref()));
                    true
                }
            },
            None => self
                .context
                .cluster()
                .is_some_and(|cluster| cluster.kick_user(&uid, None)),
        }
    }
}
