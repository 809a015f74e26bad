//! Groups (rooms) of sessions, shared by every component of the host.
//!
//! A group holds session ids, not uids: a member is a live connection, a broadcast is encoded
//! once and queued for each member, and a closed session leaves its groups without the
//! component doing anything (see ARCHITECTURE.md for why sessions rather than uids).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::session::SessionId;

/// Longest group name, in bytes: names are the host's memory, not the component's.
pub const MAX_GROUP_NAME: usize = 256;

/// Most groups the host holds at once (empty ones included): a component that makes a group
/// per request and never deletes it cannot grow the host without end.
pub const MAX_GROUPS: usize = 1_000_000;

/// Why a group could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The name is over [`MAX_GROUP_NAME`] bytes, or the host holds [`MAX_GROUPS`] groups.
    #[error("group refused: its name is over 256 bytes, or the host holds a million groups")]
    NoRoom,
}

/// Every group, by name, with its members in the order they were added.
///
/// ```
/// use pitaya_host::group::Groups;
///
/// let groups = Groups::default();
/// groups.add("lobby", 7).unwrap();
/// groups.add("lobby", 9).unwrap();
/// assert_eq!(groups.members("lobby"), [7, 9]);
/// groups.leave_all(7, &["lobby".to_owned()]);
/// assert_eq!(groups.count("lobby"), 1);
/// ```
#[derive(Debug, Default)]
pub struct Groups {
    inner: Mutex<HashMap<String, Vec<SessionId>>>,
}

impl Groups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<SessionId>>> {
        // A poisoned lock only means a panic elsewhere; the map itself is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates an empty group; false if it exists, an error if it may not be made (see
    /// [`GroupError::NoRoom`]).
    pub fn create(&self, group: &str) -> Result<bool, GroupError> {
        let mut groups = self.lock();
        if groups.contains_key(group) {
            return Ok(false);
        }
        room_for(&groups, group)?;
        groups.insert(group.to_owned(), Vec::new());
        Ok(true)
    }

    /// Deletes a group; the members it had, or `None` if there was none.
    pub fn delete(&self, group: &str) -> Option<Vec<SessionId>> {
        self.lock().remove(group)
    }

    /// Adds a member, creating the group if needed; false if it was a member already, an
    /// error if the group is new and may not be made (see [`GroupError::NoRoom`]).
    pub fn add(&self, group: &str, session: SessionId) -> Result<bool, GroupError> {
        let mut groups = self.lock();
        if !groups.contains_key(group) {
            room_for(&groups, group)?;
        }
        let members = groups.entry(group.to_owned()).or_default();
        if members.contains(&session) {
            return Ok(false);
        }
        members.push(session);
        Ok(true)
    }

    /// Removes a member; false if it was not one.
    pub fn remove(&self, group: &str, session: SessionId) -> bool {
        let mut groups = self.lock();
        let Some(members) = groups.get_mut(group) else {
            return false;
        };
        let before = members.len();
        members.retain(|member| *member != session);
        before != members.len()
    }

    /// Whether `session` is a member.
    pub fn contains(&self, group: &str, session: SessionId) -> bool {
        self.lock()
            .get(group)
            .is_some_and(|members| members.contains(&session))
    }

    /// The members, in the order they were added.
    pub fn members(&self, group: &str) -> Vec<SessionId> {
        self.lock().get(group).cloned().unwrap_or_default()
    }

    /// How many members.
    pub fn count(&self, group: &str) -> usize {
        self.lock().get(group).map_or(0, Vec::len)
    }

    /// Removes a closed session from the listed groups.
    pub fn leave_all<'a>(&self, session: SessionId, groups: impl IntoIterator<Item = &'a String>) {
        let mut all = self.lock();
        for group in groups {
            if let Some(members) = all.get_mut(group) {
                members.retain(|member| *member != session);
            }
        }
    }
}

/// Whether a group named `group`, not among `groups`, may be made.
fn room_for(groups: &HashMap<String, Vec<SessionId>>, group: &str) -> Result<(), GroupError> {
    if group.len() <= MAX_GROUP_NAME && groups.len() < MAX_GROUPS {
        Ok(())
    } else {
        Err(GroupError::NoRoom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_the_count_of_groups_are_bounded() {
        let groups = Groups::default();
        let long = "g".repeat(MAX_GROUP_NAME + 1);
        assert_eq!(groups.create(&long), Err(GroupError::NoRoom));
        assert_eq!(groups.add(&long, 1), Err(GroupError::NoRoom));
        assert_eq!(groups.create(&long[..MAX_GROUP_NAME]), Ok(true));
        // Filled up to the bound (directly: a million creates would only be slower).
        groups
            .lock()
            .extend((1..MAX_GROUPS).map(|n| (n.to_string(), Vec::new())));
        assert_eq!(groups.create("one more"), Err(GroupError::NoRoom));
        assert_eq!(groups.add("one more", 1), Err(GroupError::NoRoom));
        // A group that exists still takes members.
        assert_eq!(groups.create("7"), Ok(false));
        assert_eq!(groups.add("7", 1), Ok(true));
        assert_eq!(groups.delete("7"), Some(vec![1]));
        assert_eq!(groups.create("one more"), Ok(true));
    }

    #[test]
    fn membership_keeps_order_and_ignores_duplicates() {
        let groups = Groups::default();
        assert_eq!(groups.create("g"), Ok(true));
        assert_eq!(groups.create("g"), Ok(false));
        assert_eq!(groups.add("g", 3), Ok(true));
        assert_eq!(groups.add("g", 1), Ok(true));
        assert_eq!(groups.add("g", 3), Ok(false));
        assert_eq!(groups.members("g"), [3, 1]);
        assert!(groups.contains("g", 1));
        assert!(groups.remove("g", 3));
        assert!(!groups.remove("g", 3));
        assert_eq!(groups.count("g"), 1);
        groups.leave_all(1, &["g".to_owned(), "absent".to_owned()]);
        assert_eq!(groups.count("g"), 0);
        assert_eq!(groups.delete("g"), Some(vec![]));
        assert_eq!(groups.delete("g"), None);
        assert_eq!(groups.add("new", 9), Ok(true), "adding creates the group");
    }
}
