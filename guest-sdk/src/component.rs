//! The `Component` trait: what `#[component]` writes for an `impl` block, and what the export glue calls.

use crate::{HandlerError, SessionId, TimerId};

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

/// A game component: its name, its handlers, how it is built and how it answers calls, and the
/// hooks the host calls besides (closed sessions, timers, handshakes, shutdown, hot reload).
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
///
///     // The hooks below are optional; these are what `#[validate_handshake]`,
///     // `#[export_state]` and `#[import_state]` would write.
///
///     const VALIDATES_HANDSHAKE: bool = true;
///
///     fn validate_handshake(&mut self, _session: SessionId, handshake: String) -> Result<(), String> {
///         if handshake.contains("\"banned\"") { Err("banned".into()) } else { Ok(()) }
///     }
///
///     fn export_state(&mut self) -> Option<Vec<u8>> {
///         Some(self.0.to_le_bytes().to_vec())
///     }
///
///     fn import_state(&mut self, state: Vec<u8>) -> Result<(), String> {
///         let bytes: [u8; 8] = state.try_into().map_err(|_| "the state is not 8 bytes")?;
///         self.0 = u64::from_le_bytes(bytes);
///         Ok(())
///     }
/// }
///
/// pitaya_guest::export!(Counter);
///
/// let mut old = Counter(41);
/// let mut new = Counter::init(Vec::new()).unwrap();
/// new.import_state(old.export_state().unwrap()).unwrap();
/// assert_eq!(new.0, 41);
/// assert!(new.validate_handshake(SessionId(1), r#"{"user":"banned"}"#.into()).is_err());
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

    /// Whether the host should call [`Component::validate_handshake`] for every new client.
    const VALIDATES_HANDSHAKE: bool = false;

    /// Called for every new client when [`Component::VALIDATES_HANDSHAKE`] is set, with the
    /// client's handshake as JSON text; an error refuses the client. Accepts everyone by
    /// default.
    fn validate_handshake(&mut self, session: SessionId, handshake: String) -> Result<(), String> {
        let _ = (session, handshake);
        Ok(())
    }

    /// A timer set with [`timers`](crate::timers) fired. Logs a warning by default: a component
    /// that sets timers wants a `#[timer]` hook.
    fn on_timer(&mut self, timer: TimerId) {
        crate::log::log(
            crate::log::Level::Warn,
            &format!(
                "timer {timer} fired, but component {:?} has no #[timer] hook",
                Self::NAME
            ),
        );
    }

    /// Called once when the host shuts down, after the last other call. Does nothing by
    /// default.
    fn shutdown(&mut self) {}

    /// Called on the old instance when a new build replaces it (hot reload): the state to hand
    /// to the new instance, if any. Hands over nothing by default.
    fn export_state(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// Called on the new instance, after `init` and before any other call, with what the old
    /// one exported. An error keeps the old build serving. Ignores the state by default.
    fn import_state(&mut self, state: Vec<u8>) -> Result<(), String> {
        let _ = state;
        Ok(())
    }
}
