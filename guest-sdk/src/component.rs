//! The `Component` trait: what `#[component]` writes for an `impl` block, and what the export glue calls.

use crate::{HandlerError, SessionId};

/// Whether a handler answers (request) or not (notify).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    /// The client waits for the handler's response.
    Request,
    /// Fire and forget: the handler's result goes to nobody, errors are only logged.
    Notify,
}

/// One handler a component serves, reached by clients as `<component>.<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HandlerInfo {
    /// The handler part of the route, e.g. `join` in `room.join`.
    pub name: &'static str,
    /// Request or notify.
    pub kind: HandlerKind,
}

/// A game component: its name, its handlers, how it is built and how it answers calls.
///
/// You normally do not implement this by hand: [`#[component]`](crate::component) implements it
/// for an `impl` block of handler functions and exports it. The host calls a component's
/// handlers one at a time, on a single instance of the type, so `&mut self` is all the
/// synchronisation state needs.
///
/// Written by hand it looks like this (and then needs [`export!`](crate::export)):
///
/// ```
/// use pitaya_guest::{Component, HandlerError, HandlerInfo, HandlerKind, SessionId};
///
/// struct Counter(u64);
///
/// impl Component for Counter {
///     const NAME: &'static str = "counter";
///     const HANDLERS: &'static [HandlerInfo] =
///         &[HandlerInfo { name: "next", kind: HandlerKind::Request }];
///
///     fn init(_config: Vec<u8>) -> Result<Self, String> {
///         Ok(Counter(0))
///     }
///
///     fn handle(&mut self, _session: SessionId, handler: &str, _payload: Vec<u8>) -> Result<Vec<u8>, HandlerError> {
///         match handler {
///             "next" => {
///                 self.0 += 1;
///                 Ok(self.0.to_string().into_bytes())
///             }
///             _ => Err(HandlerError::unknown_handler(Self::NAME, handler)),
///         }
///     }
/// }
///
/// pitaya_guest::export!(Counter);
/// ```
pub trait Component: Sized + 'static {
    /// The component part of routes, e.g. `room` for `room.join`.
    const NAME: &'static str;
    /// The handlers the component serves.
    const HANDLERS: &'static [HandlerInfo];

    /// Builds the component from its configuration bytes (empty when none is given). An error
    /// stops the component loading.
    fn init(config: Vec<u8>) -> Result<Self, String>;

    /// Answers one call of the handler named `handler` for `session`. For a notify handler
    /// the `Ok` bytes are ignored.
    fn handle(
        &mut self,
        session: SessionId,
        handler: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, HandlerError>;

    /// Called when a session that has called this component closes. Does nothing by default.
    fn session_closed(&mut self, session: SessionId) {
        let _ = session;
    }
}
