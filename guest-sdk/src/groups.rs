//! Groups (rooms) of sessions kept by the host: [`Group`].
//!
//! A group holds live sessions, not uids, and is shared by every component of the host. A
//! session that closes leaves every group by itself, so a component never has to clean up after
//! a client that went away; and a broadcast is encoded once, by the SDK, and queued by the host
//! for every member.
//!
//! ```
//! use pitaya_guest::prelude::*;
//!
//! const LOBBY: Group = Group::new("lobby");
//!
//! #[derive(Default)]
//! struct Lobby;
//!
//! #[component(name = "lobby")]
//! impl Lobby {
//!     #[request]
//!     fn enter(session: &Session) -> Result<usize> {
//!         LOBBY.add(session);
//!         LOBBY.broadcast_except("onEnter", &session.id(), session);
//!         Ok(LOBBY.count())
//!     }
//! }
//! ```

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use crate::log::Level;
use crate::{SessionId, sys};

/// A group of sessions, by name. The value is only the name: every method is one host call,
/// and two `Group`s with the same name are the same group.
///
/// A fixed group is best a constant (`const ROOM: Group = Group::new("room");`); a group whose
/// name is made at run time (one per match) comes from [`Group::named`].
///
/// Methods that take a session take anything that converts into a [`SessionId`]: a
/// `&Session`, a `Session` or a `SessionId`.
///
/// ```
/// use pitaya_guest::{Group, SessionId};
///
/// let table = Group::named(format!("table-{}", 7));
/// assert_eq!(table.name(), "table-7");
/// // Outside a host (here, a doc test) no session is connected, so none can be added.
/// assert!(!table.add(SessionId(1)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    name: Cow<'static, str>,
}

impl Group {
    /// The group with a name known when the code is written; usable in a `const`.
    ///
    /// ```
    /// use pitaya_guest::Group;
    ///
    /// const ROOM: Group = Group::new("room");
    /// assert_eq!(ROOM.name(), "room");
    /// ```
    pub const fn new(name: &'static str) -> Group {
        Group {
            name: Cow::Borrowed(name),
        }
    }

    /// The group with a name made at run time.
    ///
    /// ```
    /// use pitaya_guest::Group;
    ///
    /// fn match_group(match_id: u64) -> Group {
    ///     Group::named(format!("match-{match_id}"))
    /// }
    /// assert_eq!(match_group(3).name(), "match-3");
    /// ```
    pub fn named(name: impl Into<String>) -> Group {
        Group {
            name: Cow::Owned(name.into()),
        }
    }

    /// The group's name.
    ///
    /// ```
    /// assert_eq!(pitaya_guest::Group::new("lobby").name(), "lobby");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the group, empty. Returns `false` if it exists already, or the host cannot make
    /// it (a name over 256 bytes, a million groups already, or this component has made its
    /// share of them: a million divided by the components the host runs). There is seldom a need:
    /// [`Group::add`] creates the group when it does not exist.
    ///
    /// ```
    /// let arena = pitaya_guest::Group::new("arena");
    /// assert!(arena.create());
    /// assert!(!arena.create());
    /// ```
    pub fn create(&self) -> bool {
        sys::group_create(&self.name)
    }

    /// Deletes the group and its membership list. Returns `false` if there was no such group.
    ///
    /// ```
    /// let arena = pitaya_guest::Group::new("arena");
    /// arena.create();
    /// assert!(arena.delete());
    /// assert!(!arena.delete());
    /// ```
    pub fn delete(&self) -> bool {
        sys::group_delete(&self.name)
    }

    /// Adds a session, creating the group if needed. Returns `false` if the session has closed,
    /// or the group is new and the host cannot make it (as for [`Group::create`]).
    /// Adding a member again changes nothing (and returns `true`).
    ///
    /// ```
    /// use pitaya_guest::{Group, Session};
    ///
    /// fn enter(session: &Session) -> bool {
    ///     Group::new("lobby").add(session)
    /// }
    /// ```
    pub fn add(&self, session: impl Into<SessionId>) -> bool {
        sys::group_add(&self.name, session.into().0)
    }

    /// Removes a session. Returns `false` if it was not a member.
    ///
    /// ```
    /// use pitaya_guest::{Group, Session};
    ///
    /// fn leave(session: &Session) -> bool {
    ///     Group::new("lobby").remove(session)
    /// }
    /// ```
    pub fn remove(&self, session: impl Into<SessionId>) -> bool {
        sys::group_remove(&self.name, session.into().0)
    }

    /// Whether the session is a member.
    ///
    /// ```
    /// use pitaya_guest::{Group, SessionId};
    ///
    /// assert!(!Group::new("lobby").contains(SessionId(1)));
    /// ```
    pub fn contains(&self, session: impl Into<SessionId>) -> bool {
        sys::group_contains(&self.name, session.into().0)
    }

    /// The members, in the order they were added. Empty for a group that does not exist.
    ///
    /// ```
    /// use pitaya_guest::Group;
    ///
    /// fn uids(group: &Group) -> Vec<String> {
    ///     group.members().into_iter().filter_map(|id| id.session().uid()).collect()
    /// }
    /// assert!(uids(&Group::new("nobody")).is_empty());
    /// ```
    pub fn members(&self) -> Vec<SessionId> {
        sys::group_members(&self.name)
            .into_iter()
            .map(SessionId)
            .collect()
    }

    /// How many members the group has (0 for a group that does not exist).
    ///
    /// ```
    /// assert_eq!(pitaya_guest::Group::new("empty").count(), 0);
    /// ```
    pub fn count(&self) -> usize {
        sys::group_count(&self.name) as usize
    }

    /// Whether the group has no members (or does not exist).
    ///
    /// ```
    /// assert!(pitaya_guest::Group::new("empty").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Pushes a message, encoded as JSON once, to every member on `route`. Returns how many
    /// sessions it was queued for (0, logged as an error, when the message cannot be encoded).
    ///
    /// ```
    /// use pitaya_guest::Group;
    /// use serde_json::json;
    ///
    /// fn announce(text: &str) -> usize {
    ///     Group::new("lobby").broadcast("onNotice", &json!({ "content": text }))
    /// }
    /// ```
    pub fn broadcast<T: Serialize + ?Sized>(&self, route: &str, message: &T) -> usize {
        self.encoded(route, message)
            .map_or(0, |payload| self.send(route, &payload, None))
    }

    /// Pushes a message to every member but one (usually the sender). See
    /// [`Group::broadcast`].
    ///
    /// ```
    /// use pitaya_guest::{Group, Session};
    ///
    /// fn tell_the_others(session: &Session, text: &str) -> usize {
    ///     Group::new("lobby").broadcast_except("onSay", text, session)
    /// }
    /// ```
    pub fn broadcast_except<T: Serialize + ?Sized>(
        &self,
        route: &str,
        message: &T,
        except: impl Into<SessionId>,
    ) -> usize {
        let except = except.into();
        self.encoded(route, message)
            .map_or(0, |payload| self.send(route, &payload, Some(except)))
    }

    /// Pushes bytes, as they are, to every member. Returns how many sessions it was queued for.
    ///
    /// ```
    /// use pitaya_guest::{Group, Raw};
    ///
    /// fn relay(message: &Raw) -> usize {
    ///     Group::new("lobby").broadcast_raw("onMessage", message)
    /// }
    /// ```
    pub fn broadcast_raw(&self, route: &str, payload: &[u8]) -> usize {
        self.send(route, payload, None)
    }

    /// Pushes bytes, as they are, to every member but one.
    ///
    /// ```
    /// use pitaya_guest::{Group, Raw, SessionId};
    ///
    /// fn relay_from(sender: SessionId, message: &Raw) -> usize {
    ///     Group::new("lobby").broadcast_raw_except("onMessage", message, sender)
    /// }
    /// ```
    pub fn broadcast_raw_except(
        &self,
        route: &str,
        payload: &[u8],
        except: impl Into<SessionId>,
    ) -> usize {
        self.send(route, payload, Some(except.into()))
    }

    fn send(&self, route: &str, payload: &[u8], except: Option<SessionId>) -> usize {
        sys::group_broadcast(&self.name, route, payload, except.map(|id| id.0)) as usize
    }

    fn encoded<T: Serialize + ?Sized>(&self, route: &str, message: &T) -> Option<Vec<u8>> {
        match serde_json::to_vec(message) {
            Ok(payload) => Some(payload),
            Err(error) => {
                crate::log::log(
                    Level::Error,
                    &format!(
                        "cannot encode the broadcast {route:?} to group {:?}: {error}",
                        self.name
                    ),
                );
                None
            }
        }
    }
}

impl fmt::Display for Group {
    /// The group's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}
