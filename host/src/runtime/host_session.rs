//! The `pitaya:host/session` interface: what a component may do to sessions.

use super::bindings::BindError;
use super::bindings::pitaya::host::{session, types};
use super::instance::HostState;
use crate::session::{self as sessions, SessionId};

impl types::Host for HostState {}

impl session::Host for HostState {
    fn uid(&mut self, session: SessionId) -> Option<String> {
        self.context.registry.get(session)?.uid()
    }

    fn bind(&mut self, session: SessionId, uid: String) -> Result<(), BindError> {
        let refuse = self.context.refuse_duplicate_login;
        match self.context.registry.bind(session, &uid, refuse) {
            Ok(older) => {
                if let Some(older) = older {
                    // A duplicate login: the newest session wins the uid, the older one is kicked.
                    tracing::info!(
                        uid,
                        old = older.id(),
                        new = session,
                        "uid bound again, kicking the older session"
                    );
                    let _ = older.send_last(self.context.kick_packet(Some("logged in elsewhere")));
                }
                Ok(())
            }
            Err(sessions::BindError::NoSession) => Err(BindError::NoSession),
            Err(sessions::BindError::AlreadyBound(uid)) => Err(BindError::AlreadyBound(uid)),
            Err(sessions::BindError::InvalidUid) => Err(BindError::InvalidUid),
            Err(sessions::BindError::UidTaken) => Err(BindError::UidTaken),
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
        let sent = self
            .encode_push(&route, &payload)
            .is_some_and(|packet| target.send(packet).is_ok());
        if sent {
            self.context.metrics.pushes.inc();
        }
        sent
    }

    fn kick(&mut self, session: SessionId, reason: Option<String>) {
        if let Some(session) = self.context.registry.get(session) {
            let _ = session.send_last(self.context.kick_packet(reason.as_deref()));
        }
    }

    fn close(&mut self, session: SessionId) {
        if let Some(session) = self.context.registry.get(session) {
            session.close();
        }
    }

    fn is_connected(&mut self, session: SessionId) -> bool {
        self.context
            .registry
            .get(session)
            .is_some_and(|session| !session.is_closing())
    }

    fn remote_address(&mut self, session: SessionId) -> Option<String> {
        Some(self.context.registry.get(session)?.remote().to_string())
    }

    fn handshake(&mut self, session: SessionId) -> Option<String> {
        let session = self.context.registry.get(session)?;
        let handshake = session.handshake();
        Some(serde_json::json!({ "sys": handshake.sys, "user": handshake.user }).to_string())
    }
}
