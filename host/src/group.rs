//! Groups (rooms) of sessions, shared by every component of the host.
//!
//! A group holds session ids, not uids: a member is a live connection, a broadcast is encoded
//! once and queued for each member, and a closed session leaves its groups without the
//! component doing anything (see ARCHITECTURE.md for why sessions rather than uids).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::session::SessionId;

/// Longest group name, in bytes: names are the host's memory, not the component's.
pub const MAX_GROUP_NAME: usize = 256;

/// Most groups the host holds at once (empty ones included): a component that makes a group
/// per request and never deletes it cannot grow the host without end. Each component may make
/// an equal share of them (see [`Groups::new`]), so that one cannot leave the others none.
pub const MAX_GROUPS: usize = 1_000_000;

/// Why a group could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The name is over [`MAX_GROUP_NAME`] bytes.
    #[error("group refused: its name is over 256 bytes")]
    NameTooLong,
    /// The host holds [`MAX_GROUPS`] groups.
    #[error("group refused: the host holds a million groups")]
    HostFull,
    /// The component has made as many groups (that still exist) as its share allows.
    #[error("group refused: this component's groups are at its share of {share}")]
    ShareUsed {
        /// How many groups each component may have made and not deleted.
        share: usize,
    },
}

/// Every group, by name, with its members in the order they were added.
///
/// ```
/// use pitaya_host::group::Groups;
///
/// let groups = Groups::default();
/// let chat = "chat".into();
/// groups.add("lobby", 7, &chat).unwrap();
/// groups.add("lobby", 9, &chat).unwrap();
/// assert_eq!(groups.members("lobby"), [7, 9]);
/// groups.leave_all(7, &["lobby".to_owned()]);
/// assert_eq!(groups.count("lobby"), 1);
/// ```
#[derive(Debug)]
pub struct Groups {
    inner: Mutex<Inner>,
    /// How many groups one component may have made and not deleted.
    share: usize,
}

#[derive(Debug, Default)]
struct Inner {
    groups: HashMap<String, Group>,
    /// How many of the groups each component made, by component name.
    made: HashMap<Arc<str>, usize>,
}

#[derive(Debug)]
struct Group {
    /// The component that made it, whose share it counts against until it is deleted.
    maker: Arc<str>,
    members: Vec<SessionId>,
}

impl Default for Groups {
    /// Room for one component: it may make all [`MAX_GROUPS`].
    fn default() -> Self {
        Self::new(1)
    }
}

impl Groups {
    /// No groups yet, for a host of `components` components: each may make
    /// [`MAX_GROUPS`] / `components` of them. Any component may add to, and delete, any group.
    pub fn new(components: usize) -> Self {
        Self {
            inner: Mutex::default(),
            share: (MAX_GROUPS / components.max(1)).max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the map itself is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates an empty group, made by the component `maker`; false if it exists, an error if it
    /// may not be made (see [`GroupError`]).
    pub fn create(&self, group: &str, maker: &Arc<str>) -> Result<bool, GroupError> {
        let mut inner = self.lock();
        if inner.groups.contains_key(group) {
            return Ok(false);
        }
        inner.make(group, maker, self.share)?;
        Ok(true)
    }

    /// Deletes a group; the members it had, or `None` if there was none.
    pub fn delete(&self, group: &str) -> Option<Vec<SessionId>> {
        let mut inner = self.lock();
        let deleted = inner.groups.remove(group)?;
        if let Some(made) = inner.made.get_mut(&deleted.maker) {
            *made -= 1;
            if *made == 0 {
                inner.made.remove(&deleted.maker);
            }
        }
        Some(deleted.members)
    }

    /// Adds a member, creating the group (made by `maker`) if needed; false if it was a member
    /// already, an error if the group is new and may not be made (see [`GroupError`]).
    pub fn add(
        &self,
        group: &str,
        session: SessionId,
        maker: &Arc<str>,
    ) -> Result<bool, GroupError> {
        let mut inner = self.lock();
        let members = match inner.groups.get_mut(group) {
            Some(existing) => &mut existing.members,
            None => inner.make(group, maker, self.share)?,
        };
        if members.contains(&session) {
            return Ok(false);
        }
        members.push(session);
        Ok(true)
    }

    /// Removes a member; false if it was not one.
    pub fn remove(&self, group: &str, session: SessionId) -> bool {
        let mut inner = self.lock();
        let Some(existing) = inner.groups.get_mut(group) else {
            return false;
        };
        let before = existing.members.len();
        existing.members.retain(|member| *member != session);
        before != existing.members.len()
    }

    /// Whether `session` is a member.
    pub fn contains(&self, group: &str, session: SessionId) -> bool {
        self.lock()
            .groups
            .get(group)
            .is_some_and(|existing| existing.members.contains(&session))
    }

    /// The members, in the order they were added.
    pub fn members(&self, group: &str) -> Vec<SessionId> {
        self.lock()
            .groups
            .get(group)
            .map(|existing| existing.members.clone())
            .unwrap_or_default()
    }

    /// How many members.
    pub fn count(&self, group: &str) -> usize {
        self.lock()
            .groups
            .get(group)
            .map_or(0, |existing| existing.members.len())
    }

    /// Removes a closed session from the listed groups.
    pub fn leave_all<'a>(&self, session: SessionId, groups: impl IntoIterator<Item = &'a String>) {
        let mut inner = self.lock();
        for group in groups {
            if let Some(existing) = inner.groups.get_mut(group) {
                existing.members.retain(|member| *member != session);
            }
        }
    }
}

impl Inner {
    /// Makes the group `group`, not among the groups, for `maker`, if the bounds allow; its
    /// (empty) member list.
    fn make(
        &mut self,
        group: &str,
        maker: &Arc<str>,
        share: usize,
    ) -> Result<&mut Vec<SessionId>, GroupError> {
        if group.len() > MAX_GROUP_NAME {
            return Err(GroupError::NameTooLong);
        }
        if self.groups.len() >= MAX_GROUPS {
            return Err(GroupError::HostFull);
        }
        let made = self.made.entry(maker.clone()).or_default();
        if *made >= share {
            return Err(GroupError::ShareUsed { share });
        }
        *made += 1;
        let group = self.groups.entry(group.to_owned()).or_insert(Group {
            maker: maker.clone(),
            members: Vec::new(),
        });
        Ok(&mut group.members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_the_count_of_groups_are_bounded() {
        let groups = Groups::default();
        let game: Arc<str> = "game".into();
        let long = "g".repeat(MAX_GROUP_NAME + 1);
        assert_eq!(groups.create(&long, &game), Err(GroupError::NameTooLong));
        assert_eq!(groups.add(&long, 1, &game), Err(GroupError::NameTooLong));
        assert_eq!(groups.create(&long[..MAX_GROUP_NAME], &game), Ok(true));
        // Filled up to the bound (directly: a million creates would only be slower), made by
        // some other component, so that the host's bound is met before the share.
        {
            let mut inner = groups.lock();
            let other: Arc<str> = "other".into();
            for n in 1..MAX_GROUPS {
                let group = Group {
                    maker: other.clone(),
                    members: Vec::new(),
                };
                inner.groups.insert(n.to_string(), group);
            }
            inner.made.insert(other, MAX_GROUPS - 1);
        }
        assert_eq!(groups.create("one more", &game), Err(GroupError::HostFull));
        assert_eq!(groups.add("one more", 1, &game), Err(GroupError::HostFull));
        // A group that exists still takes members.
        assert_eq!(groups.create("7", &game), Ok(false));
        assert_eq!(groups.add("7", 1, &game), Ok(true));
        assert_eq!(groups.delete("7"), Some(vec![1]));
        assert_eq!(groups.create("one more", &game), Ok(true));
    }

    #[test]
    fn a_component_makes_at_most_its_share_and_a_delete_gives_one_back() {
        let groups = Groups::new(400_000); // a share of 2
        let (greedy, other): (Arc<str>, Arc<str>) = ("greedy".into(), "other".into());
        assert_eq!(groups.create("a", &greedy), Ok(true));
        assert_eq!(groups.add("b", 1, &greedy), Ok(true));
        let used = Err(GroupError::ShareUsed { share: 2 });
        assert_eq!(groups.create("c", &greedy), used);
        assert_eq!(groups.add("c", 1, &greedy), used);
        // What exists is still the greedy one's to fill, and another component still has room.
        assert_eq!(groups.add("a", 1, &greedy), Ok(true));
        assert_eq!(groups.create("c", &other), Ok(true));
        assert_eq!(groups.add("a", 2, &other), Ok(true));
        // Whoever deletes a group, it gives its maker's share back.
        assert_eq!(groups.delete("b"), Some(vec![1]));
        assert_eq!(groups.create("d", &greedy), Ok(true));
        assert_eq!(groups.create("e", &greedy), used);
        assert_eq!(
            Groups::new(5_000_000).share,
            1,
            "every component may make one"
        );
    }

    #[test]
    fn membership_keeps_order_and_ignores_duplicates() {
        let groups = Groups::default();
        let game: Arc<str> = "game".into();
        assert_eq!(groups.create("g", &game), Ok(true));
        assert_eq!(groups.create("g", &game), Ok(false));
        assert_eq!(groups.add("g", 3, &game), Ok(true));
        assert_eq!(groups.add("g", 1, &game), Ok(true));
        assert_eq!(groups.add("g", 3, &game), Ok(false));
        assert_eq!(groups.members("g"), [3, 1]);
        assert!(groups.contains("g", 1));
        assert!(groups.remove("g", 3));
        assert!(!groups.remove("g", 3));
        assert_eq!(groups.count("g"), 1);
        groups.leave_all(1, &["g".to_owned(), "absent".to_owned()]);
        assert_eq!(groups.count("g"), 0);
        assert_eq!(groups.delete("g"), Some(vec![]));
        assert_eq!(groups.delete("g"), None);
        assert_eq!(
            groups.add("new", 9, &game),
            Ok(true),
            "adding creates the group"
        );
    }
}
