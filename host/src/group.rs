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

/// Every group, by name, with its members in the order they were added.
///
/// ```
/// use pitaya_host::group::Groups;
///
/// let groups = Groups::default();
/// groups.add("lobby", 7);
/// groups.add("lobby", 9);
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

    /// Creates an empty group; false if it exists, or if there is no room for it (see
    /// [`Self::has_room_for`]).
    pub fn create(&self, group: &str) -> bool {
        let mut groups = self.lock();
        if groups.contains_key(group) || !room_for(&groups, group) {
            return false;
        }
        groups.insert(group.to_owned(), Vec::new());
        true
    }

    /// Whether `group` exists, or may be made: its name is at most [`MAX_GROUP_NAME`] bytes
    /// and there are fewer than [`MAX_GROUPS`] groups.
    pub fn has_room_for(&self, group: &str) -> bool {
        let groups = self.lock();
        groups.contains_key(group) || room_for(&groups, group)
    }

    /// Deletes a group; false if there was none.
    pub fn delete(&self, group: &str) -> bool {
        self.lock().remove(group).is_some()
    }

    /// Adds a member, creating the group if needed; false if it was a member already, or the
    /// group is new and there is no room for it.
    pub fn add(&self, group: &str, session: SessionId) -> bool {
        let mut groups = self.lock();
        if !groups.contains_key(group) && !room_for(&groups, group) {
            return false;
        }
        let members = groups.entry(group.to_owned()).or_default();
        if members.contains(&session) {
            return false;
        }
        members.push(session);
        true
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
fn room_for(groups: &HashMap<String, Vec<SessionId>>, group: &str) -> bool {
    group.len() <= MAX_GROUP_NAME && groups.len() < MAX_GROUPS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_the_count_of_groups_are_bounded() {
        let groups = Groups::default();
        let long = "g".repeat(MAX_GROUP_NAME + 1);
        assert!(!groups.create(&long));
        assert!(!groups.add(&long, 1));
        assert!(!groups.has_room_for(&long));
        assert!(groups.create(&long[..MAX_GROUP_NAME]));
        // Filled up to the bound (directly: a million creates would only be slower).
        groups
            .lock()
            .extend((1..MAX_GROUPS).map(|n| (n.to_string(), Vec::new())));
        assert!(!groups.create("one more"));
        assert!(!groups.add("one more", 1));
        assert!(!groups.has_room_for("one more"));
        // A group that exists still takes members.
        assert!(groups.has_room_for("7"));
        assert!(groups.add("7", 1));
        assert!(groups.delete("7"));
        assert!(groups.create("one more"));
    }

    #[test]
    fn membership_keeps_order_and_ignores_duplicates() {
        let groups = Groups::default();
        assert!(groups.create("g"));
        assert!(!groups.create("g"));
        assert!(groups.add("g", 3));
        assert!(groups.add("g", 1));
        assert!(!groups.add("g", 3));
        assert_eq!(groups.members("g"), [3, 1]);
        assert!(groups.contains("g", 1));
        assert!(groups.remove("g", 3));
        assert!(!groups.remove("g", 3));
        assert_eq!(groups.count("g"), 1);
        groups.leave_all(1, &["g".to_owned(), "absent".to_owned()]);
        assert_eq!(groups.count("g"), 0);
        assert!(groups.delete("g"));
        assert!(!groups.delete("g"));
        assert!(groups.add("new", 9), "adding creates the group");
    }
}
