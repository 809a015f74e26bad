//! The `pitaya:host/session` interface: what a component may do to sessions.

use bytes::BytesMut;
use pitaya_protocol::{RouteDict, encode_push, kick_packet};

use super::HostState;
use super::bindings::BindError;
use super::bindings::pitaya::host::{session, types};
use crate::session::{self as sessions, SessionId};

impl types::Host for HostState {}

impl session::Host for HostState {
    fn uid(&mut self, session: SessionId) -> Option<String> {
        self.context.registry.get(session)?.uid()
    }

    fn bind(&mut self, session: SessionId, uid: String) -> Result<(), BindError> {
        match self.context.registry.bind(session, &uid) {
            Ok(older) => {
                if let Some(older) = older {
                    // A duplicate login: the newest session wins the uid, the older one is kicked.
                    tracing::info!(
                        uid,
                        old = older.id(),
                        new = session,
                        "uid bound again, kicking the older session"
                    );
                    let _ = older.send_last(kick_packet(None));
                }
                Ok(())
            }
            Err(sessions::BindError::NoSession) => Err(BindError::NoSession),
            Err(sessions::BindError::AlreadyBound(uid)) => Err(BindError::AlreadyBound(uid)),
            Err(sessions::BindError::InvalidUid) => Err(BindError::InvalidUid),
        }
    }

    fn get(&mut self, session: SessionId, key: String) -> Option<String> {
        self.context.registry.get(session)?.get(&key)
    }

    fn set(&mut self, session: SessionId, key: String, value: String) {
        if let Some(session) = self.context.registry.get(session) {
            session.set(key, value);
        }
    }

    fn remove(&mut self, session: SessionId, key: String) {
        if let Some(session) = self.context.registry.get(session) {
            session.remove(&key);
        }
    }

    fn push(&mut self, session: SessionId, route: String, payload: Vec<u8>) -> bool {
        let Some(target) = self.context.registry.get(session) else {
            return false;
        };
        let empty = RouteDict::default();
        let dict = self.context.dict.get().map_or(&empty, |dict| dict);
        let mut packet = BytesMut::new();
        if let Err(error) = encode_push(&route, &payload, dict, &self.context.encode, &mut packet) {
            tracing::warn!(component = %self.component, session, route, %error, "push refused");
            return false;
        }
        target.send(packet.freeze()).is_ok()
    }

    fn kick(&mut self, session: SessionId) {
        if let Some(session) = self.context.registry.get(session) {
            let _ = session.send_last(kick_packet(None));
        }
    }

    fn is_connected(&mut self, session: SessionId) -> bool {
        self.context
            .registry
            .get(session)
            .is_some_and(|session| !session.is_closing())
    }
}
