//! Routes (`component.handler`, `servertype.component.handler`) to component handlers, and the
//! route dictionary offered to clients in the handshake.

use std::sync::{Arc, PoisonError, RwLock};

use pitaya_protocol::RouteDict;
use rustc_hash::FxHashMap;

use crate::runtime::{ComponentHandle, HandlerKind};

/// Why two components cannot be served together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouterError {
    /// Two loaded components declare the same name, so their routes collide.
    #[error("duplicate route {route}: declared by both {first} and {second}")]
    DuplicateRoute {
        /// The route both would serve.
        route: String,
        /// The file loaded first.
        first: String,
        /// The file loaded second.
        second: String,
    },
}

/// Where a client route leads.
#[derive(Debug)]
pub enum Resolved<'a> {
    /// A handler of a loaded component.
    Handler {
        /// The component serving it.
        component: &'a Arc<ComponentHandle>,
        /// The handler's name within the component.
        handler: &'a str,
        /// Request or notify.
        kind: HandlerKind,
    },
    /// The route is well formed but nothing serves it here (PIT-404).
    NotFound,
    /// The route names another server type (`type.component.handler`): a cluster forwards it
    /// to a server of that type; a standalone host answers PIT-404.
    Elsewhere {
        /// The server type the route names.
        server_type: &'a str,
    },
    /// The route is not `[servertype.]component.handler` (PIT-400).
    Malformed,
}

/// Every loaded component, by name.
#[derive(Debug)]
pub struct Router {
    server_type: String,
    // Looked up for every message with a short, host-chosen key set: a fast hash, where
    // SipHash cost more than the rest of route resolution.
    components: FxHashMap<String, Arc<ComponentHandle>>,
    /// Extended by a reload that adds routes (see [`Self::extend_dict`]), never shrunk.
    dict: RwLock<Arc<RouteDict>>,
    /// Offered in the dictionary beside the handler routes.
    push_routes: Vec<String>,
}

impl Router {
    /// Builds the router for `server_type` from the loaded components. The dictionary holds
    /// every handler route and the given push routes.
    pub fn new(
        server_type: &str,
        loaded: Vec<ComponentHandle>,
        push_routes: &[String],
    ) -> Result<Self, RouterError> {
        let mut components: FxHashMap<String, Arc<ComponentHandle>> = FxHashMap::default();
        for component in loaded {
            if let Some(first) = components.get(component.name()) {
                let route = format!(
                    "{}.{}",
                    component.name(),
                    component
                        .handlers()
                        .first()
                        .map_or("*", |h| h.name.as_str())
                );
                return Err(RouterError::DuplicateRoute {
                    route,
                    first: first.path.display().to_string(),
                    second: component.path.display().to_string(),
                });
            }
            components.insert(component.name().to_owned(), Arc::new(component));
        }
        let mut router = Self {
            server_type: server_type.to_owned(),
            components,
            dict: RwLock::default(),
            push_routes: push_routes.to_vec(),
        };
        router.dict = RwLock::new(Arc::new(RouteDict::from_routes(router.routes())));
        Ok(router)
    }

    /// Every route the dictionary offers: both forms of each handler route (clients compress
    /// whichever they send), and the push routes.
    fn routes(&self) -> impl Iterator<Item = String> + '_ {
        let server_type = &self.server_type;
        let handlers = self.components.values().flat_map(move |component| {
            let name = component.name();
            component.handlers().into_iter().flat_map(move |handler| {
                [
                    format!("{name}.{}", handler.name),
                    format!("{server_type}.{name}.{}", handler.name),
                ]
            })
        });
        handlers.chain(self.push_routes.iter().cloned())
    }

    /// The route dictionary sent in the handshake of a client that connects now.
    pub fn dict(&self) -> Arc<RouteDict> {
        self.dict
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Gives codes to the routes a reload added, after the codes already handed out, which
    /// stay as they are: clients connected before keep a dictionary that is still true, and
    /// clients that connect after get the new routes coded too. Returns how many were added.
    pub fn extend_dict(&self) -> usize {
        let mut dict = self.dict.write().unwrap_or_else(PoisonError::into_inner);
        let extended = dict.extended(self.routes());
        let added = extended.len() - dict.len();
        if added > 0 {
            *dict = Arc::new(extended);
        }
        added
    }

    /// The loaded components.
    pub fn components(&self) -> impl Iterator<Item = &Arc<ComponentHandle>> {
        self.components.values()
    }

    /// The component loaded at position `index`.
    pub fn component_by_index(&self, index: usize) -> Option<&Arc<ComponentHandle>> {
        self.components.values().find(|c| c.index == index)
    }

    /// A route as pitaya names it in error messages: with this server's type in front when the
    /// client left it out (`room.join` is `connector.room.join`, protocol.md §5).
    pub fn full_route<'a>(&self, route: &'a str) -> std::borrow::Cow<'a, str> {
        if route.bytes().filter(|&b| b == b'.').count() == 1 {
            format!("{}.{route}", self.server_type).into()
        } else {
            route.into()
        }
    }

    /// Resolves a client route. Lookup is exact and case-sensitive.
    pub fn resolve<'a>(&'a self, route: &'a str) -> Resolved<'a> {
        // No allocation, and a plain byte scan rather than `split`: this runs for every
        // message, and routes are short.
        let mut dots = [0; 2];
        let mut count = 0;
        for (at, &byte) in route.as_bytes().iter().enumerate() {
            if byte == b'.' {
                if count == dots.len() {
                    return Resolved::Malformed;
                }
                dots[count] = at;
                count += 1;
            }
        }
        // '.' is ASCII, so every slice below ends on a character boundary.
        let (component, handler) = match count {
            1 => (&route[..dots[0]], &route[dots[0] + 1..]),
            2 => {
                let server_type = &route[..dots[0]];
                let component = &route[dots[0] + 1..dots[1]];
                let handler = &route[dots[1] + 1..];
                if server_type.is_empty() {
                    return Resolved::Malformed;
                }
                if server_type != self.server_type && !component.is_empty() && !handler.is_empty() {
                    return Resolved::Elsewhere { server_type };
                }
                (component, handler)
            }
            _ => return Resolved::Malformed,
        };
        if component.is_empty() || handler.is_empty() {
            return Resolved::Malformed;
        }
        let Some(found) = self.components.get(component) else {
            return Resolved::NotFound;
        };
        match found.handler_kind(handler) {
            Some(kind) => Resolved::Handler {
                component: found,
                handler,
                kind,
            },
            None => Resolved::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new("room", Vec::new(), &[]).expect("no components, no clash")
    }

    #[test]
    fn malformed_routes_are_told_apart_from_unknown_ones() {
        let router = router();
        for route in [
            "", "echo", ".", "echo.", ".echo", "a..b", ".a.b", "a.b.c.d", "a.b.", "..",
        ] {
            assert!(
                matches!(router.resolve(route), Resolved::Malformed),
                "{route:?} should be malformed"
            );
        }
        for route in ["echo.echo", "room.echo.echo", "é.ü", "room.a.b"] {
            assert!(
                matches!(router.resolve(route), Resolved::NotFound),
                "{route:?} should be well formed and not found"
            );
        }
    }

    #[test]
    fn another_server_type_is_elsewhere() {
        let router = router();
        match router.resolve("chat.room.join") {
            Resolved::Elsewhere { server_type } => assert_eq!(server_type, "chat"),
            _ => panic!("chat.room.join should go to a chat server"),
        }
        // An empty component or handler is malformed whatever the server type.
        assert!(matches!(router.resolve("chat..join"), Resolved::Malformed));
        assert!(matches!(router.resolve("chat.room."), Resolved::Malformed));
    }
}
