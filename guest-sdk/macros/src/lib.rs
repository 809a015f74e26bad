//! Procedural macros of `pitaya-guest`: `#[component]` and the handler markers it reads.
//!
//! Use them through `pitaya_guest` (`pitaya_guest::component`, or `pitaya_guest::prelude::*`):
//! the expansion refers to `::pitaya_guest`, so a component crate depends on that crate, not on
//! this one. Mistakes are reported as compile errors on the offending tokens.
//!
//! Layout: `model.rs` reads an `impl` block into a checked model of its handlers (this is
//! where every signature rule lives); `expand.rs` writes the `Component` implementation from
//! that model.

#![warn(missing_docs)]

use proc_macro::TokenStream;

mod expand;
mod model;

/// Turns an `impl` block of handler functions into a pitaya component: implements
/// `pitaya_guest::Component` for the type and exports it.
///
/// Arguments: `name = "room"` (the first part of the component's routes; defaults to the type's
/// name in lower case). Inside the block, `#[request]` and `#[notify]` mark handlers, and
/// `#[init]`, `#[session_closed]`, `#[timer]`, `#[validate_handshake]`, `#[shutdown]`,
/// `#[export_state]`, `#[import_state]`, `#[before]` and `#[after]` mark hooks; other functions
/// are left alone. See the `pitaya_guest` crate docs for the signatures it accepts.
///
/// ```
/// use pitaya_guest::prelude::*;
///
/// #[derive(Default)]
/// struct Room {
///     members: Vec<SessionId>,
/// }
///
/// #[derive(serde::Serialize)]
/// struct JoinResponse {
///     members: usize,
/// }
///
/// #[pitaya_guest::component(name = "room")]
/// impl Room {
///     #[request]
///     fn join(&mut self, session: &Session) -> Result<JoinResponse, HandlerError> {
///         self.members.push(session.id());
///         Ok(JoinResponse { members: self.members.len() })
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn component(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::component(attr.into(), item.into()).into()
}

/// Marks a request handler inside a `#[component]` block. Outside one it is an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// # #[derive(Default)] struct Room { members: Vec<SessionId> }
/// #[component(name = "room")]
/// impl Room {
///     /// Reached as `room.getMembers`.
///     #[request(name = "getMembers")]
///     fn get_members(&self) -> Result<Vec<SessionId>> {
///         Ok(self.members.clone())
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn request(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("request", item.into()).into()
}

/// Marks a notify handler inside a `#[component]` block. Outside one it is an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// # #[derive(Default)] struct Room { members: Vec<SessionId> }
/// #[component(name = "room")]
/// impl Room {
///     #[notify]
///     fn message(&mut self, message: Raw) {
///         for member in &self.members {
///             member.session().push_raw("onMessage", &message);
///         }
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn notify(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("notify", item.into()).into()
}

/// Marks the hook that builds the component from its configuration bytes, inside a
/// `#[component]` block. Outside one it is an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// struct Arena {
///     size: u32,
/// }
///
/// #[component(name = "arena")]
/// impl Arena {
///     /// The configuration is the arena's size, as text; without one the size is 100.
///     #[init]
///     fn init(config: Vec<u8>) -> Result<Self, String> {
///         if config.is_empty() {
///             return Ok(Arena { size: 100 });
///         }
///         let text = String::from_utf8(config).map_err(|e| e.to_string())?;
///         let size = text.trim().parse().map_err(|e| format!("bad size {text:?}: {e}"))?;
///         Ok(Arena { size })
///     }
///
///     #[request]
///     fn size(&self) -> Result<u32> {
///         Ok(self.size)
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn init(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("init", item.into()).into()
}

/// Marks the hook called when a session closes, inside a `#[component]` block. Outside one
/// it is an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// # #[derive(Default)] struct Room { members: Vec<SessionId> }
/// #[component(name = "room")]
/// impl Room {
///     #[session_closed]
///     fn left(&mut self, session: SessionId) {
///         self.members.retain(|member| *member != session);
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn session_closed(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("session_closed", item.into()).into()
}

/// Marks the hook that receives timer fires, inside a `#[component]` block. Outside one it is
/// an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// use std::time::Duration;
/// use pitaya_guest::timers;
///
/// #[derive(Default)]
/// struct Game {
///     frames: u64,
/// }
///
/// #[component(name = "game")]
/// impl Game {
///     #[request]
///     fn start(&mut self) -> Result<TimerId> {
///         Ok(timers::every(Duration::from_millis(50)))
///     }
///
///     #[timer]
///     fn tick(&mut self, timer: TimerId) {
///         self.frames += 1;
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn timer(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("timer", item.into()).into()
}

/// Marks the hook that accepts or refuses new clients by their handshake, inside a
/// `#[component]` block. Outside one it is an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// #[derive(Default)]
/// struct Gate;
///
/// #[component(name = "gate")]
/// impl Gate {
///     #[validate_handshake]
///     fn check(&mut self, session: &Session, handshake: Handshake) -> Result<(), String> {
///         if handshake.user["token"].is_string() {
///             Ok(())
///         } else {
///             Err(format!("session {} sent no token", session.id()))
///         }
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn validate_handshake(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("validate_handshake", item.into()).into()
}

/// Marks the hook called once when the host shuts down, inside a `#[component]` block.
/// Outside one it is an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// # #[derive(Default)] struct Game;
/// #[component(name = "game")]
/// impl Game {
///     #[shutdown]
///     fn stop(&mut self) {
///         pitaya_guest::log::info!("game over");
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn shutdown(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("shutdown", item.into()).into()
}

/// Marks the hook that hands the state to a new build on hot reload, inside a `#[component]`
/// block. Outside one it is an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// #[derive(Default)]
/// struct Game {
///     high_score: u64,
/// }
///
/// #[component(name = "game")]
/// impl Game {
///     #[export_state]
///     fn save(&self) -> Json<u64> {
///         Json(self.high_score)
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn export_state(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("export_state", item.into()).into()
}

/// Marks the hook that takes the state over from the old build on hot reload, inside a
/// `#[component]` block. Outside one it is an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// #[derive(Default)]
/// struct Game {
///     high_score: u64,
/// }
///
/// #[component(name = "game")]
/// impl Game {
///     #[import_state]
///     fn load(&mut self, Json(high_score): Json<u64>) -> Result<(), String> {
///         self.high_score = high_score;
///         Ok(())
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn import_state(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("import_state", item.into()).into()
}

/// Marks a hook run before every handler call, inside a `#[component]` block. Outside one it
/// is an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// # #[derive(Default)] struct Bank;
/// #[component(name = "bank")]
/// impl Bank {
///     #[before]
///     fn logged_in(&mut self, session: &Session, handler: &str) -> Result<(), HandlerError> {
///         match session.uid() {
///             Some(_) => Ok(()),
///             None => Err(HandlerError::new("BANK-AUTH", format!("log in before bank.{handler}"))),
///         }
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn before(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("before", item.into()).into()
}

/// Marks a hook run after every handler call, inside a `#[component]` block. Outside one it
/// is an error.
///
/// ```
/// # use pitaya_guest::prelude::*;
/// # #[derive(Default)] struct Bank;
/// #[component(name = "bank")]
/// impl Bank {
///     #[after]
///     fn audit(&mut self, session: SessionId, handler: &str, outcome: &Outcome) {
///         if let Err(error) = outcome {
///             pitaya_guest::log::warn!("bank.{handler} failed for session {session}: {error}");
///         }
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn after(_attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_marker("after", item.into()).into()
}
