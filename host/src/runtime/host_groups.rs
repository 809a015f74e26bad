//! The `pitaya:host/groups` interface: rooms of sessions, broadcast encoded once.

use bytes::{Bytes, BytesMut};
use pitaya_protocol::{RouteDict, encode_push};

use super::bindings::pitaya::host::groups;
use super::instance::HostState;
use crate::session::SessionId;

impl HostState {
    /// Encodes a push once, or says why not (logged), for any number of recipients.
    pub(crate) fn encode_push(&self, route: &str, payload: &[u8]) -> Option<Bytes> {
        if payload.len() > self.context.max_payload {
            tracing::warn!(
                component = self.component(),
                route,
                len = payload.len(),
                max = self.context.max_payload,
                "push refused: payload too large"
            );
            return None;
        }
        let empty = RouteDict::default();
        let dict = self.context.dict.get().map_or(&empty, |dict| dict);
        let mut packet = BytesMut::new();
        match encode_push(route, payload, dict, &self.context.encode, &mut packet) {
            Ok(()) => Some(packet.freeze()),
            Err(error) => {
                tracing::warn!(component = self.component(), route, %error, "push refused");
                None
            }
        }
    }
}

impl groups::Host for HostState {
    fn create(&mut self, group: String) -> bool {
        self.context.groups.create(&group)
    }

    fn delete(&mut self, group: String) -> bool {
        self.context.groups.delete(&group)
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
        member.note_group(&group);
        self.context.groups.add(&group, session);
        true
    }

    fn remove(&mut self, group: String, session: SessionId) -> bool {
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
            if let Some(session) = self.context.registry.get(member)
                && session.send(packet.clone()).is_ok()
            {
                queued += 1;
            }
        }
        self.context.metrics.pushes.inc_by(u64::from(queued));
        queued
    }
}
