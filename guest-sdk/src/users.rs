//! Players by uid: find a player's session, push to players, kick a player.
//!
//! A uid is bound to a session with [`Session::bind`](crate::Session::bind); from then on the
//! player can be reached by uid from any component, wherever the call comes from.
//!
//! ```
//! use pitaya_guest::prelude::*;
//! use pitaya_guest::users;
//!
//! #[derive(Default)]
//! struct Mail;
//!
//! #[derive(serde::Deserialize)]
//! struct Letter {
//!     to: Vec<String>,
//!     text: String,
//! }
//!
//! #[component(name = "mail")]
//! impl Mail {
//!     /// Answers with the recipients who are not online.
//!     #[request]
//!     fn send(letter: Letter) -> Result<Vec<String>> {
//!         Ok(users::push(&letter.to, "onMail", &letter.text))
//!     }
//! }
//! ```

use serde::Serialize;

use crate::log::Level;
use crate::{Session, SessionId, sys};

/// The session bound to a uid, if the player is connected.
///
/// ```
/// use pitaya_guest::users;
///
/// fn whisper(uid: &str, text: &str) -> bool {
///     match users::session(uid) {
///         Some(session) => session.push("onWhisper", text),
///         None => false,
///     }
/// }
/// assert!(!whisper("nobody", "hi"));
/// ```
pub fn session(uid: &str) -> Option<Session> {
    sys::user_session(uid).map(|id| SessionId(id).session())
}

/// Pushes a message, encoded as JSON once, to every listed uid on `route`. Returns the uids
/// that are not connected (all of them, logged as an error, when the message cannot be
/// encoded).
///
/// `uids` is anything that iterates over strings: `&["ana", "bob"]`, `&Vec<String>`, ...
///
/// ```
/// use pitaya_guest::users;
///
/// let offline = users::push(["ana", "bob"], "onInvite", &serde_json::json!({ "table": 7 }));
/// assert_eq!(offline, ["ana", "bob"]); // no one is connected in a doc test
/// ```
pub fn push<T, I>(uids: I, route: &str, message: &T) -> Vec<String>
where
    T: Serialize + ?Sized,
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let uids = owned(uids);
    match serde_json::to_vec(message) {
        Ok(payload) => sys::user_push(&uids, route, &payload),
        Err(error) => {
            crate::log::log(
                Level::Error,
                &format!("cannot encode the push {route:?} to uids {uids:?}: {error}"),
            );
            uids
        }
    }
}

/// Pushes bytes, as they are, to every listed uid. Returns the uids that are not connected.
///
/// ```
/// use pitaya_guest::users;
///
/// let offline = users::push_raw(&["ana".to_string()], "onPing", b"{}");
/// assert_eq!(offline, ["ana"]);
/// ```
pub fn push_raw<I>(uids: I, route: &str, payload: &[u8]) -> Vec<String>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    sys::user_push(&owned(uids), route, payload)
}

/// Kicks the player bound to `uid` (a Kick packet, then the connection closes). Returns
/// `false` if no session is bound to it.
///
/// ```
/// assert!(!pitaya_guest::users::kick("nobody"));
/// ```
pub fn kick(uid: &str) -> bool {
    sys::user_kick(uid, None)
}

/// Kicks the player bound to `uid` and says why; see
/// [`Session::kick_with_reason`](crate::Session::kick_with_reason) for when the client sees
/// the reason. Returns `false` if no session is bound to the uid.
///
/// ```
/// assert!(!pitaya_guest::users::kick_with_reason("nobody", "banned"));
/// ```
pub fn kick_with_reason(uid: &str, reason: &str) -> bool {
    sys::user_kick(uid, Some(reason))
}

fn owned<I>(uids: I) -> Vec<String>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    uids.into_iter()
        .map(|uid| uid.as_ref().to_string())
        .collect()
}
