//! The `pitaya:host/users` interface: players by bound uid.

use super::bindings::pitaya::host::users;
use super::instance::HostState;
use crate::session::SessionId;

impl users::Host for HostState {
    fn session(&mut self, uid: String) -> Option<SessionId> {
        self.context
            .registry
            .by_uid(&uid)
            .map(|session| session.id())
    }

    fn push(&mut self, uids: Vec<String>, route: String, payload: Vec<u8>) -> Vec<String> {
        let packet = self.encode_push(&route, &payload);
        uids.into_iter()
            .filter(|uid| {
                let delivered = match (&packet, self.context.registry.by_uid(uid)) {
                    (Some(packet), Some(session)) => session.send(packet.clone()).is_ok(),
                    _ => false,
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
            Some(session) => {
                let _ = session.send_last(self.context.kick_packet(reason.as_deref()));
                true
            }
            None => false,
        }
    }
}
