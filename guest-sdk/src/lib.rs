//! The guest SDK of pitaya-host: write game components as plain Rust handler functions.
//!
//! A component is a type whose `impl` block, marked [`#[component]`](component), holds its
//! handlers. The host loads the component (a WebAssembly component built for `wasm32-wasip2`)
//! and routes every client call `<component>.<handler>` to it. Bindings, exports and payload
//! encoding are the SDK's business; a component crate only depends on `pitaya-guest`, `serde`
//! and (optionally) `serde_json`, with `crate-type = ["cdylib"]`.
//!
//! ```
//! use pitaya_guest::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default)]
//! struct Room {
//!     members: Vec<SessionId>,
//! }
//!
//! #[derive(Deserialize)]
//! struct JoinRequest {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct JoinResponse {
//!     members: usize,
//! }
//!
//! #[component(name = "room")]
//! impl Room {
//!     /// `room.join`: a request, so the client gets the `Ok` value (as JSON) or the error.
//!     #[request]
//!     fn join(&mut self, session: &Session, request: JoinRequest) -> Result<JoinResponse> {
//!         session.bind(&request.name)?;
//!         for member in &self.members {
//!             member.session().push("onNewUser", &request.name);
//!         }
//!         self.members.push(session.id());
//!         Ok(JoinResponse { members: self.members.len() })
//!     }
//!
//!     /// `room.message`: a notify, so nobody gets an answer.
//!     #[notify]
//!     fn message(&mut self, message: Raw) {
//!         for member in &self.members {
//!             member.session().push_raw("onMessage", &message);
//!         }
//!     }
//!
//!     /// Runs when a session that called this component closes.
//!     #[session_closed]
//!     fn left(&mut self, session: SessionId) {
//!         self.members.retain(|member| *member != session);
//!     }
//! }
//! ```
//!
//! # Handlers
//!
//! - `#[request]` handlers answer: they return `Result<T, E>`, where `T` is any
//!   [`serde::Serialize`] type (sent as JSON) or [`Raw`] (sent as is), and `E` converts into a
//!   [`HandlerError`] (the [`Result`] alias of the prelude defaults `E` to it).
//! - `#[notify]` handlers answer nothing: they return `()` or `Result<(), E>` (the host logs
//!   errors).
//! - A handler takes `&mut self`, `&self` or no receiver at all. Its other arguments, in any
//!   order and all optional: the calling session as `&Session`, `Session` or `SessionId`, and
//!   at most one payload, any [`serde::de::DeserializeOwned`] type (decoded from JSON) or
//!   [`Raw`]. A payload that does not decode answers `PIT-400` `invalid payload: ...` without
//!   calling the handler; an empty payload reads as JSON `null`. (The session arguments are
//!   recognised by their type's name, so a payload type must not be called `Session` or
//!   `SessionId`.)
//! - A handler is reached as `<component>.<fn name>`; `#[request(name = "getMembers")]` picks
//!   another name. A handler name that does not exist answers `PIT-404`.
//! - Optional hooks: `#[init] fn init(config: Vec<u8>) -> Result<Self, E>` builds the component
//!   from its configuration (without it, `Default::default()` does), and `#[session_closed]`
//!   hears of closed sessions.
//!
//! # State
//!
//! The component value is the state. The host makes one instance, and calls it one call at a
//! time, so handlers use `&mut self` freely and never see a data race. A trap (a panic) ends
//! that instance and the host starts a fresh one with `init`; state that must survive that
//! belongs in session data (see [`Session::set`]).
//!
//! # Sessions, logs and tests
//!
//! [`Session`] acts on a client session: uid binding, session data (JSON), pushes, kicks.
//! [`log`] writes to the host's log. [`testing::TestHost`] runs a component natively, against a
//! host in memory, so `cargo test` can check handlers without building WebAssembly.
//!
//! # How it fits together
//!
//! The SDK generates the WIT bindings (world `pitaya:host/game`) once, hidden in `__private`.
//! `#[component]` implements the [`Component`] trait for the type and calls [`export!`], which
//! hands `Component` to the bindings' `handler` export. The instance lives in a thread-local
//! slot (WebAssembly here is single-threaded). On other targets nothing is exported, and the
//! host functions are served by the in-memory test host.

#![warn(missing_docs)]

mod component;
mod error;
pub mod log;
mod payload;
mod runtime;
mod session;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use component::{Component, HandlerInfo, HandlerKind};
pub use error::HandlerError;
pub use payload::{FromPayload, InitReturn, IntoResponse, NotifyReturn, Raw, RequestReturn};
pub use session::{BindError, Session, SessionId};

/// Turns an `impl` block of handler functions into the component's export. See the
/// [crate docs](crate) for what handlers may look like.
///
/// `#[component(name = "room")]` names the component (the first part of its routes); without a
/// name, the type's name in lower case is used (`Room` → `room`). A crate holds one component.
///
/// ```
/// use pitaya_guest::prelude::*;
///
/// #[derive(Default)]
/// struct Counter {
///     count: u64,
/// }
///
/// #[component]
/// impl Counter {
///     #[request]
///     fn next(&mut self) -> Result<u64> {
///         self.count += 1;
///         Ok(self.count)
///     }
/// }
///
/// assert_eq!(<Counter as Component>::NAME, "counter");
/// ```
pub use pitaya_guest_macros::component;

/// Marks a request handler inside a [`#[component]`](component) block; `#[request(name = "...")]`
/// sets the handler's name in routes.
pub use pitaya_guest_macros::request;

/// Marks a notify handler inside a [`#[component]`](component) block; `#[notify(name = "...")]`
/// sets the handler's name in routes.
pub use pitaya_guest_macros::notify;

/// Marks the hook that builds the component from its configuration, inside a
/// [`#[component]`](component) block.
pub use pitaya_guest_macros::init;

/// Marks the hook that hears of closed sessions, inside a [`#[component]`](component) block.
pub use pitaya_guest_macros::session_closed;

/// `Result` with [`HandlerError`] as the default error type.
///
/// ```
/// fn find(id: u64) -> pitaya_guest::Result<String> {
///     Err(pitaya_guest::HandlerError::not_found(format!("no player {id}")))
/// }
/// ```
pub type Result<T, E = HandlerError> = std::result::Result<T, E>;

/// What most components need: `use pitaya_guest::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Component, HandlerError, Raw, Result, Session, SessionId, component, init, notify, request,
        session_closed,
    };
}

/// Exports a [`Component`] as this WebAssembly component's `handler` interface.
///
/// [`#[component]`](component) calls it for you; write it yourself only for a hand-written
/// `Component` implementation. Use it once per crate. It exports nothing on targets other than
/// WebAssembly, where tests run.
///
/// ```
/// # use pitaya_guest::{Component, HandlerError, HandlerInfo, SessionId};
/// struct Nothing;
/// # impl Component for Nothing {
/// #     const NAME: &'static str = "nothing";
/// #     const HANDLERS: &'static [HandlerInfo] = &[];
/// #     fn init(_: Vec<u8>) -> Result<Self, String> { Ok(Nothing) }
/// #     fn handle(&mut self, _: SessionId, h: &str, _: Vec<u8>) -> Result<Vec<u8>, HandlerError> {
/// #         Err(HandlerError::unknown_handler(Self::NAME, h))
/// #     }
/// # }
/// pitaya_guest::export!(Nothing);
/// ```
#[macro_export]
macro_rules! export {
    ($component:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            // The generated export macro wants a plain identifier for the type.
            type __PitayaGuestExport = $crate::__private::Export<$component>;
            $crate::__private::bindings::__export_game!(
                __PitayaGuestExport with_types_in $crate::__private::bindings
            );
        };
        // Nothing is exported elsewhere; naming the entry points keeps the component's code
        // from being reported as dead when it is checked or tested natively.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$component as $crate::Component>::init;
            let _ = <$component as $crate::Component>::handle;
            let _ = <$component as $crate::Component>::session_closed;
        };
    };
}

/// Not public API: what the macros' expansions refer to.
#[doc(hidden)]
pub mod __private {
    pub use crate::runtime::glue::Export;

    /// The WIT bindings, generated once for every component built with the SDK.
    #[allow(missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "game",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "__export_game",
            default_bindings_module: "::pitaya_guest::__private::bindings",
        });
    }

    /// Builds the component with `Default` when it has no `#[init]` hook.
    #[diagnostic::on_unimplemented(
        message = "component `{Self}` has no #[init] hook and does not implement `Default`",
        label = "the component's state is built with `Default::default()`",
        note = "derive or implement `Default`, or add an #[init] hook: `#[init] fn init(config: Vec<u8>) -> Result<Self, String>`"
    )]
    pub trait DefaultComponent: Sized {
        /// `Default::default()`.
        fn default_component() -> Self;
    }

    impl<T: Default> DefaultComponent for T {
        fn default_component() -> Self {
            T::default()
        }
    }
}
