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
/// name in lower case). Inside the block, `#[request]`, `#[notify]`, `#[init]` and
/// `#[session_closed]` mark the functions the host calls; other functions are left alone.
/// See the `pitaya_guest` crate docs for the handler signatures it accepts.
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
