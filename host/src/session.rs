//! Sessions: one per connected client, with its uid, its data and its bounded send queue.
//!
//! The registry is shared by the connection tasks (which create and remove sessions) and the
//! component threads (whose host functions push, bind and kick). Everything here is
//! non-blocking: a host function called from inside a component never waits on a socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use pitaya_protocol::ClientHandshake;
use tokio::sync::{mpsc, oneshot};

/// The host's number for a connection. Never reused while the process runs.
pub type SessionId = u64;

pub use crate::send_queue::{Outbound, SendQueue};

/// Why a packet could not be queued for a session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The session has closed, or is closing.
    #[error("session closed")]
    Closed,
    /// The client does not read fast enough: its send queue is full, so it is being disconnected.
    #[error("send queue full")]
    QueueFull,
    /// The session is held by a frontend elsewhere in the cluster: its packets go through
    /// [`RemoteLink`], not through a send queue here.
    #[error("session held by another server")]
    Remote,
}

/// What a backend asks of the frontend holding a remote session, in the order asked.
#[derive(Debug)]
pub enum RemoteOp {
    /// The session's data changed; the JSON object is its whole data now (`sys.pushsession`).
    Data {
        /// The bound uid, if any.
        uid: String,
        /// The data as a JSON object.
        json: Vec<u8>,
        /// The metadata of the cluster request being served when the data changed, whose
        /// keys the `sys.pushsession` carries on.
        incoming: Option<std::sync::Arc<crate::cluster::Metadata>>,
    },
    /// A push to the session's user.
    Push {
        /// The bound uid.
        uid: String,
        /// The push route.
        route: String,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A kick of the session's user.
    Kick(String),
    /// Answered once every op queued before it has been carried out.
    Flush(oneshot::Sender<()>),
}

/// How a backend reaches a session that a frontend elsewhere in the cluster holds.
#[derive(Debug)]
pub struct RemoteLink {
    /// The id of the frontend server holding the connection.
    pub frontend_id: String,
    /// Its server type, as it said in its request's metadata (`peer.service`); otherwise
    /// looked up in discovery.
    pub frontend_type: Option<String>,
    /// The frontend's id for the session.
    pub frontend_session: i64,
    /// Ops for the frontend, carried out in order by a task of the cluster module.
    pub ops: mpsc::UnboundedSender<RemoteOp>,
}

/// Why a uid could not be bound.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindError {
    /// The session has closed.
    #[error("session not found")]
    NoSession,
    /// The session is already bound to another uid.
    #[error("session already bound to uid {0}")]
    AlreadyBound(String),
    /// The uid is empty, or longer than [`MAX_UID`] bytes.
    #[error("invalid uid")]
    InvalidUid,
    /// Another session holds the uid and duplicate logins are refused.
    #[error("uid bound to another session")]
    UidTaken,
}

/// Longest uid, in bytes: a uid is kept twice per session (on it and in the registry's map),
/// written in log lines and sent to the other servers of a cluster.
pub const MAX_UID: usize = 256;

/// Most bytes of data (keys and values) one session holds: the host's memory, kept for as long
/// as the session lives, and copied to the backends of a cluster with every change.
pub const MAX_SESSION_DATA: usize = 64 * 1024;

/// One connected client.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    remote: SocketAddr,
    /// The client's handshake as components receive it, `{"sys":…,"user":…}`. Kept as text:
    /// parsed JSON values cost several times the bytes, on every idle connection.
    handshake: Box<str>,
    uid: Mutex<Option<String>>,
    /// Values are JSON text by SDK convention; the host does not look inside.
    data: Mutex<HashMap<String, String>>,
    /// Bounded in bytes too: that is the real bound on what a slow reader costs. None for a
    /// remote session.
    outbound: Option<SendQueue>,
    /// Set for a session a frontend elsewhere in the cluster holds.
    /// Boxed: only a backend's stand-ins have one, and every local session would carry its
    /// bytes otherwise.
    remote_link: Option<Box<RemoteLink>>,
    closing: AtomicBool,
    /// Set when the session was closed for not reading (its queue filled up).
    overflowed: AtomicBool,
    /// Wakes the connection task when something outside it (a kick, a full queue) closes the
    /// session.
    close_waker: AtomicWaker,
    /// Indices of the components this session has called, so each hears of its close.
    components_seen: Mutex<Vec<usize>>,
    /// Bit i set: component i (below 64) is in `components_seen`. Read on every request, so
    /// that a session calling a component it called before takes no lock.
    components_seen_bits: AtomicU64,
    /// The groups the session was added to, so it leaves them when it closes.
    groups: Mutex<Vec<String>>,
}

impl Session {
    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The client's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// What the client sent in its handshake, as the JSON object `{"sys":…,"user":…}` that
    /// handshake validators and `session.handshake` receive.
    pub fn handshake(&self) -> &str {
        &self.handshake
    }

    /// How to reach the frontend holding this session, if another server holds it.
    pub fn remote_link(&self) -> Option<&RemoteLink> {
        self.remote_link.as_deref()
    }

    /// Whether another server of the cluster holds the connection.
    pub fn is_remote(&self) -> bool {
        self.remote_link.is_some()
    }

    /// Every session data value.
    pub fn data(&self) -> HashMap<String, String> {
        lock(&self.data).clone()
    }

    /// Replaces the whole session data (a frontend told us the session's data).
    pub fn replace_data(&self, data: HashMap<String, String>) {
        *lock(&self.data) = data;
    }

    /// The bound uid, if any.
    pub fn uid(&self) -> Option<String> {
        lock(&self.uid).clone()
    }

    /// A session data value.
    pub fn get(&self, key: &str) -> Option<String> {
        lock(&self.data).get(key).cloned()
    }

    /// Sets a session data value, unless the session's data (keys and values) would then pass
    /// [`MAX_SESSION_DATA`] bytes: false then, and nothing changes.
    pub fn set(&self, key: String, value: String) -> bool {
        let mut data = lock(&self.data);
        let others: usize = data
            .iter()
            .filter(|(other, _)| **other != key)
            .map(|(other, value)| other.len() + value.len())
            .sum();
        if others + key.len() + value.len() > MAX_SESSION_DATA {
            return false;
        }
        data.insert(key, value);
        true
    }

    /// Removes a session data value.
    pub fn remove(&self, key: &str) {
        lock(&self.data).remove(key);
    }

    /// Whether the session is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Queues an encoded packet. A full queue closes the session: a client that does not read
    /// must not make the host hold an unbounded backlog for it.
    pub fn send(&self, packet: Bytes) -> Result<(), SendError> {
        self.enqueue(Outbound::Packet(packet))
    }

    /// Queues a last packet (a kick) and closes the session once it is written.
    pub fn send_last(&self, packet: Bytes) -> Result<(), SendError> {
        let result = self.enqueue(Outbound::Last(packet));
        self.close();
        result
    }

    /// Queues a packet from the session's own connection task, which writes it before it
    /// sleeps, without waking that task (see [`SendQueue::try_push_own`]).
    pub fn send_own(&self, packet: Bytes) -> Result<(), SendError> {
        self.push(Outbound::Packet(packet), false)
    }

    fn enqueue(&self, item: Outbound) -> Result<(), SendError> {
        self.push(item, true)
    }

    fn push(&self, item: Outbound, wake: bool) -> Result<(), SendError> {
        if self.is_closing() {
            return Err(SendError::Closed);
        }
        let Some(outbound) = &self.outbound else {
            return Err(SendError::Remote);
        };
        let result = if wake {
            outbound.try_push(item)
        } else {
            outbound.try_push_own(item)
        };
        if result == Err(SendError::QueueFull) {
            self.overflowed.store(true, Ordering::Release);
            tracing::warn!(
                session = self.id,
                "send queue full, disconnecting a client that does not read"
            );
            self.close();
        }
        result
    }

    /// Records that the session joined `group`.
    pub fn note_group(&self, group: &str) {
        let mut groups = lock(&self.groups);
        if !groups.iter().any(|g| g == group) {
            groups.push(group.to_owned());
        }
    }

    /// Forgets a group the session left, or that was deleted: the list holds only the groups
    /// it is in, not every group it ever joined.
    pub fn forget_group(&self, group: &str) {
        lock(&self.groups).retain(|g| g != group);
    }

    /// The groups the session joined.
    pub fn groups(&self) -> Vec<String> {
        lock(&self.groups).clone()
    }

    /// Whether the session was closed because its send queue filled up.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Marks the session closing and wakes its connection task.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.close_waker.wake();
    }

    /// Ready once [`Session::close`] has been called; otherwise `cx` is woken when it is.
    /// Polled on every turn of the connection's loop, so it allocates nothing and takes no
    /// lock.
    pub fn poll_closed(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.is_closing() {
            return std::task::Poll::Ready(());
        }
        self.close_waker.register(cx.waker());
        // A close between the check and the registration woke nobody: look again.
        if self.is_closing() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Records that the session called component `index`; true the first time.
    pub fn note_component(&self, index: usize) -> bool {
        let bit = u32::try_from(index)
            .ok()
            .and_then(|index| 1u64.checked_shl(index));
        if let Some(bit) = bit
            && self.components_seen_bits.load(Ordering::Relaxed) & bit != 0
        {
            return false;
        }
        let mut seen = lock(&self.components_seen);
        if seen.contains(&index) {
            false
        } else {
            seen.push(index);
            if let Some(bit) = bit {
                self.components_seen_bits.fetch_or(bit, Ordering::Relaxed);
            }
            true
        }
    }

    /// The components this session has called.
    pub fn components_seen(&self) -> Vec<usize> {
        lock(&self.components_seen).clone()
    }
}

/// All connected sessions, by id and by bound uid.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    inner: RwLock<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    sessions: HashMap<SessionId, Arc<Session>>,
    uids: HashMap<String, SessionId>,
    /// Remote sessions by (frontend id, the frontend's session id).
    remotes: HashMap<(String, i64), SessionId>,
}

impl Registry {
    /// Creates a session for a client that has handshaken and returns it.
    pub fn create(
        &self,
        remote: SocketAddr,
        handshake: ClientHandshake,
        queue: SendQueue,
    ) -> Arc<Session> {
        let session = self.build(remote, handshake, Some(queue), None);
        write(&self.inner)
            .sessions
            .insert(session.id(), session.clone());
        session
    }

    /// Creates the local stand-in of a session a frontend elsewhere in the cluster holds.
    /// If one exists already (two messages of the session raced), that one is returned and
    /// `link` is dropped.
    pub fn create_remote(&self, link: RemoteLink) -> Arc<Session> {
        let key = (link.frontend_id.clone(), link.frontend_session);
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut inner = write(&self.inner);
        if let Some(existing) = inner
            .remotes
            .get(&key)
            .and_then(|id| inner.sessions.get(id))
        {
            return existing.clone();
        }
        let session = self.build(unknown, ClientHandshake::default(), None, Some(link));
        inner.sessions.insert(session.id(), session.clone());
        inner.remotes.insert(key, session.id());
        session
    }

    /// The stand-in of a remote session, if there is one.
    pub fn remote(&self, frontend_id: &str, frontend_session: i64) -> Option<Arc<Session>> {
        let inner = read(&self.inner);
        inner
            .remotes
            .get(&(frontend_id.to_owned(), frontend_session))
            .and_then(|id| inner.sessions.get(id))
            .cloned()
    }

    /// Every remote session stand-in (of one frontend, when given).
    pub fn remotes(&self, frontend_id: Option<&str>) -> Vec<Arc<Session>> {
        let inner = read(&self.inner);
        inner
            .remotes
            .iter()
            .filter(|((frontend, _), _)| frontend_id.is_none_or(|id| id == frontend))
            .filter_map(|(_, id)| inner.sessions.get(id))
            .cloned()
            .collect()
    }

    fn build(
        &self,
        remote: SocketAddr,
        handshake: ClientHandshake,
        queue: Option<SendQueue>,
        remote_link: Option<RemoteLink>,
    ) -> Arc<Session> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        Arc::new(Session {
            id,
            remote,
            handshake: handshake_json(handshake),
            uid: Mutex::new(None),
            data: Mutex::new(HashMap::new()),
            outbound: queue,
            remote_link: remote_link.map(Box::new),
            closing: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            close_waker: AtomicWaker::new(),
            components_seen: Mutex::new(Vec::new()),
            components_seen_bits: AtomicU64::new(0),
            groups: Mutex::new(Vec::new()),
        })
    }

    /// The session with this id, if it is still connected.
    pub fn get(&self, id: SessionId) -> Option<Arc<Session>> {
        read(&self.inner).sessions.get(&id).cloned()
    }

    /// The session bound to `uid`, if any.
    pub fn by_uid(&self, uid: &str) -> Option<Arc<Session>> {
        let inner = read(&self.inner);
        inner
            .uids
            .get(uid)
            .and_then(|id| inner.sessions.get(id))
            .cloned()
    }

    /// Every connected session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        read(&self.inner).sessions.values().cloned().collect()
    }

    /// Number of connected sessions.
    pub fn len(&self) -> usize {
        read(&self.inner).sessions.len()
    }

    /// Whether no session is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Binds `uid` to session `id`. A uid already bound to another session is taken over:
    /// the older session is returned so the caller can kick it (a duplicate login), unless
    /// `refuse_taken`, which fails with [`BindError::UidTaken`] instead.
    pub fn bind(
        &self,
        id: SessionId,
        uid: &str,
        refuse_taken: bool,
    ) -> Result<Option<Arc<Session>>, BindError> {
        if uid.is_empty() || uid.len() > MAX_UID {
            return Err(BindError::InvalidUid);
        }
        let mut inner = write(&self.inner);
        let session = inner
            .sessions
            .get(&id)
            .cloned()
            .ok_or(BindError::NoSession)?;
        let mut bound = lock(&session.uid);
        match bound.as_deref() {
            Some(current) if current == uid => return Ok(None),
            Some(current) => return Err(BindError::AlreadyBound(current.to_owned())),
            None => {}
        }
        if refuse_taken
            && inner
                .uids
                .get(uid)
                .is_some_and(|holder| inner.sessions.contains_key(holder))
        {
            return Err(BindError::UidTaken);
        }
        *bound = Some(uid.to_owned());
        drop(bound);
        let older = inner
            .uids
            .insert(uid.to_owned(), id)
            .and_then(|old| inner.sessions.get(&old).cloned());
        Ok(older)
    }

    /// Undoes a binding of `uid` to session `id` (a cluster frontend refused it).
    pub fn unbind(&self, id: SessionId, uid: &str) {
        let mut inner = write(&self.inner);
        if let Some(session) = inner.sessions.get(&id) {
            let mut bound = lock(&session.uid);
            if bound.as_deref() == Some(uid) {
                *bound = None;
            }
        }
        if inner.uids.get(uid) == Some(&id) {
            inner.uids.remove(uid);
        }
    }

    /// Removes a closed session (and its uid binding, if the uid still points at it).
    pub fn remove(&self, id: SessionId) -> Option<Arc<Session>> {
        let mut inner = write(&self.inner);
        let session = inner.sessions.remove(&id)?;
        if let Some(link) = &session.remote_link {
            inner
                .remotes
                .remove(&(link.frontend_id.clone(), link.frontend_session));
        }
        if let Some(uid) = lock(&session.uid).as_deref()
            && inner.uids.get(uid) == Some(&id)
        {
            inner.uids.remove(uid);
        }
        Some(session)
    }
}

/// The handshake as the JSON text components receive: an object of `sys` and `user`.
fn handshake_json(handshake: ClientHandshake) -> Box<str> {
    serde_json::json!({ "sys": handshake.sys, "user": handshake.user })
        .to_string()
        .into_boxed_str()
}

// A poisoned lock only means another thread panicked while holding it; the maps stay usable,
// and a host that keeps serving is worth more than one that cascades the panic.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_with_session(capacity: usize) -> (Registry, Arc<Session>) {
        let registry = Registry::default();
        let session = registry.create(
            "127.0.0.1:1".parse().unwrap(),
            ClientHandshake::default(),
            SendQueue::new(capacity, usize::MAX),
        );
        (registry, session)
    }

    #[test]
    fn the_handshake_is_kept_as_the_json_components_receive() {
        let (_registry, empty) = registry_with_session(4);
        assert_eq!(empty.handshake(), r#"{"sys":{},"user":{}}"#);
        let sent = br#"{"user":{"token":"t","n":[1,2]},"sys":{"platform":"unity","libVersion":"0.3.5"},"extra":1}"#;
        let handshake = pitaya_protocol::parse_client_handshake(sent).unwrap();
        let session = Registry::default().create(
            "127.0.0.1:1".parse().unwrap(),
            handshake,
            SendQueue::new(4, usize::MAX),
        );
        assert_eq!(
            session.handshake(),
            r#"{"sys":{"libVersion":"0.3.5","platform":"unity"},"user":{"n":[1,2],"token":"t"}}"#
        );
    }

    #[test]
    fn a_uid_is_at_most_max_uid_bytes() {
        let (registry, session) = registry_with_session(4);
        let long = "u".repeat(MAX_UID + 1);
        assert_eq!(
            registry.bind(session.id(), &long, false).map(|_| ()),
            Err(BindError::InvalidUid)
        );
        assert!(registry.bind(session.id(), &long[1..], false).is_ok());
    }

    #[test]
    fn a_session_forgets_the_groups_it_left() {
        let (_registry, session) = registry_with_session(4);
        for round in 0..3 {
            session.note_group("a");
            session.note_group(&format!("b{round}"));
            session.forget_group(&format!("b{round}"));
        }
        assert_eq!(session.groups(), ["a"]);
    }

    #[test]
    fn session_data_is_bounded_in_bytes() {
        let (_registry, session) = registry_with_session(4);
        let half = "v".repeat(MAX_SESSION_DATA / 2);
        assert!(session.set("a".into(), half.clone()));
        // "a" and "b" with their values: two bytes over.
        assert!(!session.set("b".into(), half.clone()));
        assert_eq!(session.get("b"), None);
        // Replacing a value counts the new one, not both: up to the bound exactly.
        assert!(session.set("a".into(), "v".repeat(MAX_SESSION_DATA - 1)));
        assert!(!session.set("a".into(), "v".repeat(MAX_SESSION_DATA)));
        session.remove("a");
        assert!(session.set("b".into(), half));
    }

    #[test]
    fn each_component_called_is_noted_once_whatever_its_index() {
        let (_registry, session) = registry_with_session(4);
        for index in [3, 0, 63, 64, 200] {
            assert!(session.note_component(index), "first call of {index}");
            assert!(!session.note_component(index), "second call of {index}");
        }
        assert_eq!(session.components_seen(), [3, 0, 63, 64, 200]);
    }

    #[test]
    fn binding_a_uid_twice_returns_the_older_session() {
        let (registry, first) = registry_with_session(4);
        let second = registry.create(
            "127.0.0.1:2".parse().unwrap(),
            ClientHandshake::default(),
            SendQueue::new(4, usize::MAX),
        );
        assert_eq!(
            registry
                .bind(first.id(), "u1", false)
                .unwrap()
                .map(|s| s.id()),
            None
        );
        assert_eq!(
            registry.bind(second.id(), "u1", true).map(|_| ()),
            Err(BindError::UidTaken)
        );
        let older = registry.bind(second.id(), "u1", false).unwrap();
        assert_eq!(older.map(|s| s.id()), Some(first.id()));
        assert_eq!(registry.by_uid("u1").map(|s| s.id()), Some(second.id()));
        // Removing the older session must not unbind the uid from the newer one.
        registry.remove(first.id());
        assert_eq!(registry.by_uid("u1").map(|s| s.id()), Some(second.id()));
    }

    #[test]
    fn a_remote_session_has_one_stand_in() {
        let registry = Registry::default();
        let link = || RemoteLink {
            frontend_id: "fe".into(),
            frontend_type: None,
            frontend_session: 7,
            ops: mpsc::unbounded_channel().0,
        };
        let first = registry.create_remote(link());
        let second = registry.create_remote(link());
        assert_eq!(first.id(), second.id());
        assert!(first.is_remote());
        assert_eq!(first.send(Bytes::from_static(b"x")), Err(SendError::Remote));
        assert_eq!(registry.remote("fe", 7).map(|s| s.id()), Some(first.id()));
        assert_eq!(registry.remotes(Some("fe")).len(), 1);
        assert!(registry.remotes(Some("other")).is_empty());
        registry.remove(first.id());
        assert!(registry.remote("fe", 7).is_none());
    }

    #[test]
    fn a_session_cannot_change_its_uid() {
        let (registry, session) = registry_with_session(4);
        registry.bind(session.id(), "a", false).unwrap();
        assert!(matches!(registry.bind(session.id(), "a", false), Ok(None)));
        assert_eq!(
            registry.bind(session.id(), "b", false).map(|_| ()),
            Err(BindError::AlreadyBound("a".into()))
        );
        assert_eq!(
            registry.bind(session.id(), "", false).map(|_| ()),
            Err(BindError::InvalidUid)
        );
    }

    #[test]
    fn a_queue_over_its_byte_bound_closes_the_session() {
        let registry = Registry::default();
        let session = registry.create(
            "127.0.0.1:1".parse().unwrap(),
            ClientHandshake::default(),
            SendQueue::new(100, 10),
        );
        session.send(Bytes::from_static(b"123456")).unwrap();
        assert_eq!(
            session.send(Bytes::from_static(b"123456")),
            Err(SendError::QueueFull)
        );
        assert!(session.is_closing());
    }

    #[test]
    fn a_full_queue_closes_the_session() {
        let (_registry, session) = registry_with_session(2);
        session.send(Bytes::from_static(b"1")).unwrap();
        session.send(Bytes::from_static(b"2")).unwrap();
        assert_eq!(
            session.send(Bytes::from_static(b"3")),
            Err(SendError::QueueFull)
        );
        assert!(session.is_closing());
        assert_eq!(
            session.send(Bytes::from_static(b"4")),
            Err(SendError::Closed)
        );
    }
}
