//! Sessions: `SessionId`, the value that names a client connection, and `Session`, the handle that acts on one.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::log::Level;
use crate::{HandlerError, sys};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindError {
    /// The session has closed.
    SessionClosed,
    /// The session is already bound to another uid, given here.
    AlreadyBound(String),
    /// The uid is empty.
    InvalidUid,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::SessionClosed => write!(f, "the session has closed"),
            BindError::AlreadyBound(uid) => {
                write!(f, "the session is already bound to uid {uid:?}")
            }
            BindError::InvalidUid => write!(f, "the uid is empty"),
        }
    }
}

impl std::error::Error for BindError {}

impl From<BindError> for HandlerError {
    fn from(error: BindError) -> Self {
        HandlerError::internal(format!("cannot bind the uid: {error}"))
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
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The uid bound to the session, if any (and `None` once it has closed).
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
    /// uid). Binding the uid it already has succeeds.
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
    pub fn get_raw(&self, key: &str) -> Option<String> {
        sys::get(self.id.0, key)
    }

    /// Encodes a value as JSON and stores it in the session's data. Fails (`PIT-500`) only when
    /// the value cannot be encoded; on a closed session it does nothing.
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
        self.set_raw(key, &text);
        Ok(())
    }

    /// Stores text in the session's data as it is.
    pub fn set_raw(&self, key: &str, value: &str) {
        sys::set(self.id.0, key, value)
    }

    /// Removes a session data value.
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
    pub fn kick(&self) {
        sys::kick(self.id.0)
    }

    /// Whether the session is still connected.
    pub fn is_connected(&self) -> bool {
        sys::is_connected(self.id.0)
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
    fn bind_error_becomes_internal_error() {
        let error = HandlerError::from(BindError::AlreadyBound("ana".into()));
        assert_eq!(error.code, "PIT-500");
        assert_eq!(
            error.message,
            "cannot bind the uid: the session is already bound to uid \"ana\""
        );
    }
}
