//! Groups (rooms) of sessions, shared by every component of the host.
//!
//! A group holds session ids, not uids: a member is a live connection, a broadcast is encoded
//! once and queued for each member, and a closed session leaves its groups without the
//! component doing anything (see ARCHITECTURE.md for why sessions rather than uids).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::session::SessionId;

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

    /// Creates an empty group; false if it exists.
    pub fn create(&self, group: &str) -> bool {
        let mut groups = self.lock();
        if groups.contains_key(group) {
            return false;
        }
        groups.insert(group.to_owned(), Vec::new());
        true
    }

    /// Deletes a group; false if there was none.
    pub fn delete(&self, group: &str) -> bool {
        self.lock().remove(group).is_some()
    }

    /// Adds a member, creating the group if needed; false if it was a member already.
    pub fn add(&self, group: &str, session: SessionId) -> bool {
        let mut groups = self.lock();
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

#[cfg(test)]
mod tests {
    use super::*;

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
