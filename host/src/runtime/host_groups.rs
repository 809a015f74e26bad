//! The `pitaya:host/groups` interface: rooms of sessions, broadcast encoded once.

use bytes::Bytes;

use super::bindings::pitaya::host::groups;
use super::instance::HostState;
use crate::session::SessionId;

impl HostState {
    /// Encodes a push once, or says why not (logged), for any number of recipients.
    pub(crate) fn encode_push(&self, route: &str, payload: &[u8]) -> Option<Bytes> {
        match self.context.encode_push(route, payload) {
            Ok(packet) => Some(packet),
            Err(error) => {
                let route = crate::clip(route, 256);
                self.shared
                    .refused(format_args!("push refused: {error} (route {route:?})"));
                None
            }
        }
    }
}

impl groups::Host for HostState {
    fn create(&mut self, group: String) -> bool {
        self.context
            .groups
            .create(&group, &self.shared.name)
            .unwrap_or_else(|error| {
                self.shared.refused(error);
                false
            })
    }

    fn delete(&mut self, group: String) -> bool {
        let Some(members) = self.context.groups.delete(&group) else {
            return false;
        };
        for member in members {
            if let Some(member) = self.context.registry.get(member) {
                member.forget_group(&group);
            }
        }
        true
    }

    fn add(&mut self, group: String, session: SessionId) -> bool {
        let Some(member) = self
            .context
            .registry
            .get(session)
            .filter(|s| !s.is_closing())
        else {
            return false;
        };
        // Noted first, so that a close racing the add still takes the session out of it.
        member.note_group(&group);
        match self.context.groups.add(&group, session, &self.shared.name) {
            Ok(_) => true,
            Err(error) => {
                // Refused only when new: the session was not in it before.
                member.forget_group(&group);
                self.shared.refused(error);
                false
            }
        }
    }

    fn remove(&mut self, group: String, session: SessionId) -> bool {
        if let Some(member) = self.context.registry.get(session) {
            member.forget_group(&group);
        }
        self.context.groups.remove(&group, session)
    }

    fn contains(&mut self, group: String, session: SessionId) -> bool {
        self.context.groups.contains(&group, session)
    }

    fn members(&mut self, group: String) -> Vec<SessionId> {
        self.context.groups.members(&group)
    }

    fn count(&mut self, group: String) -> u32 {
        u32::try_from(self.context.groups.count(&group)).unwrap_or(u32::MAX)
    }

    fn broadcast(
        &mut self,
        group: String,
        route: String,
        payload: Vec<u8>,
        except: Option<SessionId>,
    ) -> u32 {
        let Some(packet) = self.encode_push(&route, &payload) else {
            return 0;
        };
        let mut queued = 0;
        for member in self.context.groups.members(&group) {
            if Some(member) == except {
                continue;
            }
            let Some(session) = self.context.registry.get(member) else {
                continue;
            };
            // A member held by another frontend gets one push on its user subject.
            let sent = match session.remote_link() {
                Some(_) => super::host_session::push_remote(&session, &route, &payload),
                None => session.send(packet.clone()).is_ok(),
            };
            if sent {
                queued += 1;
            }
        }
        self.context.metrics.pushes.inc_by(u64::from(queued));
        queued
    }
}
