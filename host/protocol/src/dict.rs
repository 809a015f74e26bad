//! The route compression dictionary (protocol.md §2, §3): route strings and the 16-bit codes that
//! may stand for them in messages.

use std::collections::{BTreeSet, HashMap};

/// Route compression dictionary: route string <-> u16 code.
///
/// Codes are assigned from the sorted route names, so the same set of routes always gives the same
/// codes, whatever order they were registered in. Code 0 is never assigned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDict {
    /// `routes[i]` has code `i + 1`: a code lookup is an index, and iteration is in code order.
    routes: Vec<String>,
    codes: HashMap<String, u16>,
}

impl RouteDict {
    /// The most routes a dictionary can hold: codes are 16 bits and 0 is never used.
    pub const MAX_ROUTES: usize = u16::MAX as usize;

    /// Assigns codes 1, 2, 3... to the given routes in sorted order (deduplicated), deterministic.
    ///
    /// Routes past the first [`RouteDict::MAX_ROUTES`] in sorted order get no code; they can still
    /// be sent as plain strings.
    pub fn from_routes<I: IntoIterator<Item = S>, S: Into<String>>(routes: I) -> Self {
        let sorted: BTreeSet<String> = routes.into_iter().map(Into::into).collect();
        let routes: Vec<String> = sorted.into_iter().take(Self::MAX_ROUTES).collect();
        let codes = routes
            .iter()
            .zip(1..=u16::MAX)
            .map(|(route, code)| (route.clone(), code))
            .collect();
        Self { routes, codes }
    }

    /// This dictionary with the given routes it lacks added after its own, in sorted order,
    /// with the next codes: every route keeps its code, so a client told this dictionary
    /// before is not misled by the new one. Routes past [`RouteDict::MAX_ROUTES`] get no code.
    #[must_use]
    pub fn extended<I: IntoIterator<Item = S>, S: Into<String>>(&self, routes: I) -> Self {
        let new: BTreeSet<String> = routes
            .into_iter()
            .map(Into::into)
            .filter(|route| !self.codes.contains_key(route))
            .collect();
        let mut extended = self.clone();
        for route in new {
            let Ok(code) = u16::try_from(extended.routes.len() + 1) else {
                break;
            };
            extended.codes.insert(route.clone(), code);
            extended.routes.push(route);
        }
        extended
    }

    /// The code for `route`, if it has one.
    pub fn code(&self, route: &str) -> Option<u16> {
        self.codes.get(route).copied()
    }

    /// The route that `code` stands for, if any.
    pub fn route(&self, code: u16) -> Option<&str> {
        let index = usize::from(code).checked_sub(1)?;
        self.routes.get(index).map(String::as_str)
    }

    /// How many routes have a code.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no route has a code.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every route with its code, in code order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> {
        self.routes
            .iter()
            .zip(1..=u16::MAX)
            .map(|(route, code)| (route.as_str(), code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_sorted_order_and_ignore_duplicates() {
        let dict = RouteDict::from_routes(["room.join", "onMessage", "room.join", "chat.say"]);
        assert_eq!(dict.len(), 3);
        assert_eq!(
            dict.iter().collect::<Vec<_>>(),
            [("chat.say", 1), ("onMessage", 2), ("room.join", 3)]
        );
        assert_eq!(dict.code("onMessage"), Some(2));
        assert_eq!(dict.route(3), Some("room.join"));
        assert_eq!(dict.route(0), None);
        assert_eq!(dict.route(4), None);
        assert_eq!(dict.code("missing"), None);
    }

    #[test]
    fn registration_order_does_not_matter() {
        let a = RouteDict::from_routes(["b", "a", "c"]);
        let b = RouteDict::from_routes(vec![String::from("c"), "a".into(), "b".into()]);
        assert_eq!(a, b);
    }

    #[test]
    fn extending_keeps_every_code_and_adds_the_new_routes_after() {
        let old = RouteDict::from_routes(["room.join", "room.leave"]);
        let new = old.extended(["room.say", "room.join", "a.first", "room.say"]);
        assert_eq!(
            new.iter().collect::<Vec<_>>(),
            [
                ("room.join", 1),
                ("room.leave", 2),
                ("a.first", 3),
                ("room.say", 4)
            ]
        );
        assert_eq!(new.extended(["room.say"]), new);
        let full = RouteDict::from_routes((0..65_534).map(|i| format!("r{i:06}")));
        let over = full.extended(["x.last", "x.more"]);
        assert_eq!(over.code("x.last"), Some(u16::MAX));
        assert_eq!(over.code("x.more"), None);
    }

    #[test]
    fn empty_dict() {
        let dict = RouteDict::default();
        assert!(dict.is_empty());
        assert_eq!(dict.route(1), None);
        assert_eq!(dict.iter().count(), 0);
    }

    #[test]
    fn codes_stop_at_u16_max() {
        let dict = RouteDict::from_routes((0..70_000).map(|i| format!("r{i:06}")));
        assert_eq!(dict.len(), RouteDict::MAX_ROUTES);
        assert_eq!(dict.route(u16::MAX), Some("r065534"));
        assert_eq!(dict.code("r065535"), None);
    }
}
