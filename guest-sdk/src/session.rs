//! Sessions: `SessionId`, the value that names a client connection, and `Session`, the handle that acts on one.

use std::fmt;
use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::log::Level;
use crate::{HandlerError, Handshake, sys};

/// Most bytes of data (keys and values) the host keeps for one session.
const MAX_SESSION_DATA: usize = 64 * 1024;

/// The number the host gives a connected client. Ids are never reused while the host runs, so
/// a component can keep them in its state (a room's members) and compare, hash or sort them.
///
/// It is plain data; to act on the session, turn it into a [`Session`] with
/// [`SessionId::session`] (or [`Session::from_id`]).
///
/// ```
/// use pitaya_guest::SessionId;
///
/// let id = SessionId(7);
/// assert_eq!(id.to_string(), "7");
/// assert_eq!(serde_json::to_string(&id).unwrap(), "7");
/// assert_eq!(id.session().id(), id);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl SessionId {
    /// The handle to act on this session: push to it, kick it, read its data.
    ///
    /// ```
    /// use pitaya_guest::SessionId;
    ///
    /// fn greet(members: &[SessionId]) {
    ///     for member in members {
    ///         member.session().push("onGreeting", &"hello");
    ///     }
    /// }
    /// ```
    pub fn session(self) -> Session {
        Session { id: self }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u64> for SessionId {
    fn from(id: u64) -> Self {
        SessionId(id)
    }
}

impl From<SessionId> for u64 {
    fn from(id: SessionId) -> Self {
        id.0
    }
}

/// Lets functions that take `impl Into<SessionId>` (such as [`Group::add`](crate::Group::add))
/// take the handle a handler receives.
impl From<&Session> for SessionId {
    fn from(session: &Session) -> Self {
        session.id
    }
}

impl From<Session> for SessionId {
    fn from(session: Session) -> Self {
        session.id
    }
}

/// A client session, as a handle to act on it through the host.
///
/// A handler gets the calling session by taking a `&Session` (or `SessionId`) argument; any
/// other session is reached with [`Session::from_id`] or [`SessionId::session`]. Every method
/// is one host call and none of them blocks. A session that has closed is not an error: reads
/// answer nothing and writes do nothing.
///
/// Session data values are JSON text by convention, so other components and the host can read
/// them; [`Session::get`] and [`Session::set`] do the encoding.
///
/// ```
/// use pitaya_guest::prelude::*;
///
/// #[derive(Default)]
/// struct Profile;
///
/// #[component(name = "profile")]
/// impl Profile {
///     /// Stores the player's nickname in the session and answers with it.
///     #[request]
///     fn rename(session: &Session, nickname: String) -> Result<String> {
///         if nickname.is_empty() {
///             return Err(HandlerError::bad_request("the nickname is empty"));
///         }
///         session.set("nickname", &nickname)?;
///         session.push("onRenamed", &serde_json::json!({ "nickname": nickname }));
///         Ok(nickname)
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Session {
    id: SessionId,
}

/// Why [`Session::bind`] failed.
///
/// ```
/// use pitaya_guest::BindError;
///
/// let error = BindError::AlreadyBound("ana".into());
/// assert_eq!(error.to_string(), "the session is already bound to uid \"ana\"");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindError {
    /// The session has closed.
    SessionClosed,
    /// The session is already bound to another uid, given here.
    AlreadyBound(String),
    /// The uid is empty, or longer than 256 bytes.
    InvalidUid,
    /// Another session holds the uid, and the host is configured to refuse duplicate logins.
    /// (By default the host kicks the older session instead, and binding succeeds.)
    UidTaken,
    /// In a cluster, the frontend holding the session could not be reached or did not take
    /// the binding; the reason is given.
    Unreachable(String),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::SessionClosed => write!(f, "the session has closed"),
            BindError::AlreadyBound(uid) => {
                write!(f, "the session is already bound to uid {uid:?}")
            }
            BindError::InvalidUid => write!(f, "the uid is empty or over 256 bytes"),
            BindError::UidTaken => write!(f, "another session holds the uid"),
            BindError::Unreachable(why) => {
                write!(f, "the session's frontend did not take it: {why}")
            }
        }
    }
}

impl std::error::Error for BindError {}

/// What `?` answers: `PIT-400` when the request asked for a binding that cannot be (an empty
/// uid, a second uid for the session, a uid another session holds under
/// `--duplicate-login refuse`), so a client can tell its own mistake from a server fault;
/// `PIT-500` when the session closed or its frontend did not answer.
impl From<BindError> for HandlerError {
    fn from(error: BindError) -> Self {
        let message = format!("cannot bind the uid: {error}");
        match error {
            BindError::AlreadyBound(_) | BindError::InvalidUid | BindError::UidTaken => {
                HandlerError::bad_request(message)
            }
            BindError::SessionClosed | BindError::Unreachable(_) => HandlerError::internal(message),
        }
    }
}

impl From<SessionId> for Session {
    fn from(id: SessionId) -> Self {
        Session { id }
    }
}

impl Session {
    /// The handle for the session with this id (which may be another client than the caller).
    ///
    /// ```
    /// use pitaya_guest::{Session, SessionId};
    ///
    /// let session = Session::from_id(SessionId(42));
    /// assert_eq!(session.id(), SessionId(42));
    /// ```
    pub fn from_id(id: SessionId) -> Session {
        Session { id }
    }

    /// The session's id.
    ///
    /// ```
    /// use pitaya_guest::{Session, SessionId};
    ///
    /// assert_eq!(SessionId(3).session().id(), SessionId(3));
    /// ```
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The uid bound to the session, if any (and `None` once it has closed, but for the
    /// [`#[session_closed]`](crate::session_closed) hook that hears of the close).
    ///
    /// ```
    /// fn name(session: &pitaya_guest::Session) -> String {
    ///     session.uid().unwrap_or_else(|| format!("guest-{}", session.id()))
    /// }
    /// ```
    pub fn uid(&self) -> Option<String> {
        sys::uid(self.id.0)
    }

    /// Binds a uid to the session (pitaya's user id: pushes and kicks by uid, one session per
    /// uid). Binding the uid it already has succeeds. When another session holds the uid, the
    /// host kicks that older session by default (or, configured to, refuses with
    /// [`BindError::UidTaken`]).
    ///
    /// ```
    /// fn login(session: &pitaya_guest::Session, user: &str) -> Result<(), pitaya_guest::HandlerError> {
    ///     session.bind(user)?;
    ///     Ok(())
    /// }
    /// ```
    pub fn bind(&self, uid: &str) -> Result<(), BindError> {
        sys::bind(self.id.0, uid)
    }

    /// Reads a session data value and decodes it from JSON. `None` when the key is absent, and
    /// also when the value does not decode as `T` (that case is logged as a warning).
    ///
    /// ```
    /// fn score(session: &pitaya_guest::Session) -> u64 {
    ///     session.get("score").unwrap_or(0)
    /// }
    /// ```
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let text = self.get_raw(key)?;
        match serde_json::from_str(&text) {
            Ok(value) => Some(value),
            Err(error) => {
                crate::log::log(
                    Level::Warn,
                    &format!(
                        "session {} data {key:?} does not decode as {}: {error}",
                        self.id,
                        std::any::type_name::<T>()
                    ),
                );
                None
            }
        }
    }

    /// Reads a session data value as the text it is stored as.
    ///
    /// ```
    /// fn is_logged_in(session: &pitaya_guest::Session) -> bool {
    ///     session.get_raw("token").is_some()
    /// }
    /// ```
    pub fn get_raw(&self, key: &str) -> Option<String> {
        sys::get(self.id.0, key)
    }

    /// Encodes a value as JSON and stores it in the session's data. Fails (`PIT-500`) when the
    /// value cannot be encoded, or is over 64 KiB with its key, which the host would refuse;
    /// on a closed session it does nothing, and nor does it when the session's data (keys and
    /// values) would pass 64 KiB with the others (the host logs a warning).
    ///
    /// ```
    /// fn add_point(session: &pitaya_guest::Session) -> Result<(), pitaya_guest::HandlerError> {
    ///     let score: u64 = session.get("score").unwrap_or(0);
    ///     session.set("score", &(score + 1))
    /// }
    /// ```
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), HandlerError> {
        let text = serde_json::to_string(value).map_err(|error| {
            HandlerError::internal(format!("cannot encode session data {key:?}: {error}"))
        })?;
        // The host would refuse it without a word; said here, the handler hears of it.
        if key.len() + text.len() > MAX_SESSION_DATA {
            return Err(HandlerError::internal(format!(
                "session data {key:?} is {} bytes encoded: a session holds at most 64 KiB",
                text.len()
            )));
        }
        self.set_raw(key, &text);
        Ok(())
    }

    /// Stores text in the session's data as it is.
    ///
    /// ```
    /// fn remember_team(session: &pitaya_guest::Session) {
    ///     session.set_raw("team", "\"red\"");
    /// }
    /// ```
    pub fn set_raw(&self, key: &str, value: &str) {
        sys::set(self.id.0, key, value)
    }

    /// Removes a session data value.
    ///
    /// ```
    /// fn logout(session: &pitaya_guest::Session) {
    ///     session.remove("token");
    /// }
    /// ```
    pub fn remove(&self, key: &str) {
        sys::remove(self.id.0, key)
    }

    /// Pushes a message, encoded as JSON, to the session's client on `route` (an event name
    /// such as `onMessage`).
    ///
    /// Returns `false` when the push was not queued: the session has closed, its send queue is
    /// full, or the message could not be encoded (logged as an error).
    ///
    /// ```
    /// use pitaya_guest::Session;
    ///
    /// fn announce(session: &Session, text: &str) {
    ///     session.push("onNotice", &serde_json::json!({ "content": text }));
    /// }
    /// ```
    pub fn push<T: Serialize + ?Sized>(&self, route: &str, message: &T) -> bool {
        match serde_json::to_vec(message) {
            Ok(payload) => self.push_raw(route, &payload),
            Err(error) => {
                crate::log::log(
                    Level::Error,
                    &format!(
                        "cannot encode the push {route:?} to session {}: {error}",
                        self.id
                    ),
                );
                false
            }
        }
    }

    /// Pushes bytes, as they are, to the session's client on `route`. Returns `false` when the
    /// session has closed or its send queue is full.
    ///
    /// ```
    /// use pitaya_guest::{Raw, Session};
    ///
    /// fn forward(session: &Session, message: &Raw) -> bool {
    ///     session.push_raw("onMessage", message)
    /// }
    /// ```
    pub fn push_raw(&self, route: &str, payload: &[u8]) -> bool {
        sys::push(self.id.0, route, payload)
    }

    /// Kicks the session: its client gets a Kick packet and is disconnected. The component's
    /// `#[session_closed]` hook runs later, after the current call.
    ///
    /// ```
    /// fn on_cheat(session: &pitaya_guest::Session) {
    ///     session.kick();
    /// }
    /// ```
    pub fn kick(&self) {
        sys::kick(self.id.0, None)
    }

    /// Kicks the session and says why. The host sends the reason to the client (as
    /// `{"reason": ...}` in the Kick packet) only when it is configured to: pomelo clients read
    /// it, pitaya clients expect an empty kick.
    ///
    /// ```
    /// fn on_idle(session: &pitaya_guest::Session) {
    ///     session.kick_with_reason("idle for too long");
    /// }
    /// ```
    pub fn kick_with_reason(&self, reason: &str) {
        sys::kick(self.id.0, Some(reason))
    }

    /// Closes the connection without a Kick packet, as if the client had gone away. The
    /// component's `#[session_closed]` hook runs later, after the current call.
    ///
    /// ```
    /// fn drop_silently(session: &pitaya_guest::Session) {
    ///     session.close();
    /// }
    /// ```
    pub fn close(&self) {
        sys::close(self.id.0)
    }

    /// Whether the session is still connected.
    ///
    /// ```
    /// fn still_there(session: &pitaya_guest::Session) -> bool {
    ///     session.is_connected()
    /// }
    /// ```
    pub fn is_connected(&self) -> bool {
        sys::is_connected(self.id.0)
    }

    /// The client's address (`IP:PORT`), or `None` once the session has closed (but in its
    /// [`#[session_closed]`](crate::session_closed) hook). An address the host gives in another
    /// form is logged as a warning and reads as `None`.
    ///
    /// ```
    /// fn where_from(session: &pitaya_guest::Session) -> String {
    ///     match session.remote_address() {
    ///         Some(address) => address.ip().to_string(),
    ///         None => "gone".to_string(),
    ///     }
    /// }
    /// ```
    pub fn remote_address(&self) -> Option<SocketAddr> {
        let text = sys::remote_address(self.id.0)?;
        match text.parse() {
            Ok(address) => Some(address),
            Err(error) => {
                crate::log::log(
                    Level::Warn,
                    &format!(
                        "session {} has the remote address {text:?}, which is not IP:PORT: {error}",
                        self.id
                    ),
                );
                None
            }
        }
    }

    /// What the client sent in its handshake: the `sys` part (client type and version) and the
    /// `user` part (anything the game's client put there). `None` once the session has closed
    /// (but in its [`#[session_closed]`](crate::session_closed) hook).
    ///
    /// ```
    /// fn client_version(session: &pitaya_guest::Session) -> Option<String> {
    ///     let handshake = session.handshake()?;
    ///     handshake.sys["clientVersion"].as_str().map(str::to_string)
    /// }
    /// ```
    pub fn handshake(&self) -> Option<Handshake> {
        let text = sys::handshake(self.id.0)?;
        match serde_json::from_str(&text) {
            Ok(handshake) => Some(handshake),
            Err(error) => {
                crate::log::log(
                    Level::Warn,
                    &format!(
                        "session {} has a handshake that is not a JSON object: {error}",
                        self.id
                    ),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_is_transparent_in_json() {
        let ids = vec![SessionId(1), SessionId(u64::MAX)];
        let text = serde_json::to_string(&ids).unwrap();
        assert_eq!(text, "[1,18446744073709551615]");
        assert_eq!(serde_json::from_str::<Vec<SessionId>>(&text).unwrap(), ids);
    }

    #[test]
    fn a_session_handle_converts_to_its_id() {
        let session = Session::from_id(SessionId(9));
        assert_eq!(SessionId::from(&session), SessionId(9));
        assert_eq!(SessionId::from(session), SessionId(9));
    }

    #[test]
    fn a_binding_the_request_asked_wrongly_is_a_bad_request_and_the_rest_internal() {
        let error = HandlerError::from(BindError::AlreadyBound("ana".into()));
        assert_eq!(error.code, "PIT-400");
        assert_eq!(
            error.message,
            "cannot bind the uid: the session is already bound to uid \"ana\""
        );
        for asked in [BindError::InvalidUid, BindError::UidTaken] {
            assert_eq!(HandlerError::from(asked).code, "PIT-400");
        }
        for failed in [
            BindError::SessionClosed,
            BindError::Unreachable("gone".into()),
        ] {
            assert_eq!(HandlerError::from(failed).code, "PIT-500");
        }
    }
}
