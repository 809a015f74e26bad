//! The `pitaya:host/session` interface: what a component may do to sessions.
//!
//! A session may be local (this host holds the connection) or remote (a backend's stand-in
//! for a session a frontend elsewhere in the cluster holds): a remote session's bind, data
//! changes, pushes and kicks become ops that travel to its frontend, in order.

use std::sync::Arc;

use super::bindings::BindError;
use super::bindings::pitaya::host::{session, types};
use super::instance::HostState;
use crate::session::{self as sessions, RemoteOp, Session, SessionId};

impl types::Host for HostState {}

/// Queues a push to a remote session's user; false when it has no uid to be reached by.
pub(crate) fn push_remote(session: &Session, route: &str, payload: &[u8]) -> bool {
    match (session.remote_link(), session.uid()) {
        (Some(link), Some(uid)) => link
            .ops
            .send(RemoteOp::Push {
                uid,
                route: route.to_owned(),
                payload: payload.to_vec(),
            })
            .is_ok(),
        _ => false,
    }
}

/// Tells a remote session's frontend its whole data, after a change.
fn sync_remote_data(session: &Session) {
    if let Some(link) = session.remote_link() {
        let _ = link.ops.send(RemoteOp::Data {
            uid: session.uid().unwrap_or_default(),
            json: crate::cluster::data_to_json(&session.data()),
            incoming: crate::cluster::incoming(),
        });
    }
}

impl HostState {
    /// What binding `uid` to a session means beyond the registry: the older holder of the
    /// uid goes, and the cluster hears of it.
    async fn after_bind(
        &mut self,
        session: &Arc<Session>,
        uid: String,
        older: Option<Arc<Session>>,
    ) -> Result<(), BindError> {
        let mut replaced_local = false;
        if let Some(older) = older {
            if older.is_remote() {
                // A stand-in is not a connection: its frontend enforces unique sessions.
                self.context.registry.remove(older.id());
            } else {
                // A duplicate login: the newest session wins the uid, the older one is kicked.
                tracing::info!(
                    uid,
                    old = older.id(),
                    new = session.id(),
                    "uid bound again, kicking the older session"
                );
                let _ = older.send_last(self.context.kick_packet(Some("logged in elsewhere")));
                replaced_local = true;
            }
        }
        if let Some(link) = session.remote_link() {
            // The frontend must take the binding, or the player is not reachable by uid: the
            // handler's call is suspended until its answer, and hears of a refusal.
            let Some(cluster) = self.context.cluster().cloned() else {
                return Ok(());
            };
            let started = std::time::Instant::now();
            let outcome = cluster.bind_remote(link, &uid).await;
            self.extend_deadline(started.elapsed());
            if let Err(error) = outcome {
                tracing::info!(
                    uid,
                    code = error.code,
                    error = error.message,
                    "the frontend refused the binding"
                );
                self.context.registry.unbind(session.id(), &uid);
                return Err(if error.message.contains("uid bound to another session") {
                    BindError::UidTaken
                } else if error.message == "session not found" {
                    BindError::NoSession
                } else {
                    BindError::Unreachable(format!("{}: {}", error.code, error.message))
                });
            }
        } else if let Some(cluster) = self.context.cluster().cloned() {
            // Waits for NATS to have the uid's subscriptions; not the call's own work.
            let started = std::time::Instant::now();
            cluster.bound(uid, session.id(), replaced_local).await;
            self.extend_deadline(started.elapsed());
        }
        Ok(())
    }

    /// A session to read from: a connected one, or the one whose `session-closed` hook is
    /// running. Changes go only to connected sessions (`registry.get`).
    fn readable(&self, session: SessionId) -> Option<Arc<Session>> {
        self.context.registry.get(session).or_else(|| {
            self.closing
                .as_ref()
                .filter(|closing| closing.id() == session)
                .cloned()
        })
    }
}

impl session::Host for HostState {
    fn uid(&mut self, session: SessionId) -> Option<String> {
        self.readable(session)?.uid()
    }

    async fn bind(&mut self, session: SessionId, uid: String) -> Result<(), BindError> {
        let refuse = self.context.refuse_duplicate_login;
        let Some(target) = self.context.registry.get(session) else {
            return Err(BindError::NoSession);
        };
        if target.uid().as_deref() == Some(uid.as_str()) {
            return Ok(());
        }
        match self.context.registry.bind(session, &uid, refuse) {
            Ok(older) => self.after_bind(&target, uid, older).await,
            Err(sessions::BindError::NoSession) => Err(BindError::NoSession),
            Err(sessions::BindError::AlreadyBound(uid)) => Err(BindError::AlreadyBound(uid)),
            Err(sessions::BindError::InvalidUid) => Err(BindError::InvalidUid),
            Err(sessions::BindError::UidTaken) => Err(BindError::UidTaken),
        }
    }

    fn get(&mut self, session: SessionId, key: String) -> Option<String> {
        self.readable(session)?.get(&key)
    }

    fn set(&mut self, session: SessionId, key: String, value: String) {
        if let Some(session) = self.context.registry.get(session) {
            if session.set(key, value) {
                sync_remote_data(&session);
            } else {
                self.shared
                    .refused("session data refused: the session's data would pass 64 KiB");
            }
        }
    }

    fn remove(&mut self, session: SessionId, key: String) {
        if let Some(session) = self.context.registry.get(session) {
            session.remove(&key);
            sync_remote_data(&session);
        }
    }

    fn push(&mut self, session: SessionId, route: String, payload: Vec<u8>) -> bool {
        let Some(target) = self.context.registry.get(session) else {
            return false;
        };
        let sent = if target.is_remote() {
            self.encode_push(&route, &payload).is_some() && push_remote(&target, &route, &payload)
        } else {
            self.encode_push(&route, &payload)
                .is_some_and(|packet| target.send(packet).is_ok())
        };
        if sent {
            self.context.metrics.pushes.inc();
        }
        sent
    }

    fn kick(&mut self, session: SessionId, reason: Option<String>) {
        if let Some(session) = self.context.registry.get(session) {
            kick(self, &session, reason.as_deref());
        }
    }

    fn close(&mut self, session: SessionId) {
        if let Some(session) = self.context.registry.get(session) {
            if session.is_remote() {
                // A frontend can only be asked to kick; there is no quiet close by uid.
                kick(self, &session, None);
            } else {
                session.close();
            }
        }
    }

    fn is_connected(&mut self, session: SessionId) -> bool {
        self.context
            .registry
            .get(session)
            .is_some_and(|session| !session.is_closing())
    }

    fn remote_address(&mut self, session: SessionId) -> Option<String> {
        let session = self.readable(session)?;
        (!session.is_remote()).then(|| session.remote().to_string())
    }

    fn handshake(&mut self, session: SessionId) -> Option<String> {
        let session = self.readable(session)?;
        if session.is_remote() {
            return None;
        }
        Some(session.handshake().to_owned())
    }
}

fn kick(state: &HostState, session: &Session, reason: Option<&str>) {
    match (session.remote_link(), session.uid()) {
        (Some(link), Some(uid)) => {
            let _ = link.ops.send(RemoteOp::Kick(uid));
        }
        (Some(_), None) => tracing::warn!(
            component = state.component(),
            session = session.id(),
            "a remote session without a uid cannot be kicked (its frontend knows it by uid)"
        ),
        (None, _) => {
            let _ = session.send_last(state.context.kick_packet(reason));
        }
    }
}
