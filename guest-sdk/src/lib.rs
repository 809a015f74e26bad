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
//!   [`serde::Serialize`] type (sent as JSON), [`Raw`] (sent as is) or `Proto<M>` (a protobuf
//!   message, see below), and `E` converts into a [`HandlerError`] (the [`Result`] alias of the
//!   prelude defaults `E` to it).
//! - `#[notify]` handlers answer nothing: they return `()` or `Result<(), E>` (the host counts
//!   an error in `pitaya_requests_total{outcome="error"}` and logs it at debug level, so
//!   `RUST_LOG=pitaya_host=debug` shows it; a client cannot fill the log with them).
//! - A handler takes `&mut self`, `&self` or no receiver at all. Its other arguments, in any
//!   order and all optional: the calling session as `&Session`, `Session` or `SessionId`, and
//!   at most one payload, any [`serde::de::DeserializeOwned`] type (decoded from JSON),
//!   [`Raw`] or `Proto<M>` (decoded from protobuf). A payload that does not decode answers
//!   `PIT-400` `invalid payload: ...` without calling the handler; an empty payload reads as
//!   JSON `null` (and as the default message for `Proto<M>`). (The session arguments are
//!   recognised by their type's name, so a payload type must not be called `Session` or
//!   `SessionId`.)
//! - A handler is reached as `<component>.<fn name>`; `#[request(name = "getMembers")]` picks
//!   another name. A handler name that does not exist answers `PIT-404`.
//!
//! # Protobuf payloads
//!
//! With the `protobuf` feature (off by default, so JSON-only components stay small:
//! `pitaya-guest = { ..., features = ["protobuf"] }`), `Proto<M>` carries a protobuf message `M`
//! (a struct deriving `prost::Message`, re-exported as `pitaya_guest::prost`) as a handler's
//! payload or answer: `fn add(request: Proto<AddRequest>) -> Result<Proto<AddResponse>>`. A
//! payload that does not decode answers `PIT-400` like bad JSON; errors are still
//! [`HandlerError`]s, which the host encodes in the serializer it runs with. See `Proto` and
//! `prost` in these docs (present when the feature is on).
//!
//! # Hooks
//!
//! Besides handlers, a `#[component]` block may mark these functions (all optional; each takes
//! `&mut self`, `&self` or no receiver, and the arguments listed, by type, in any order):
//!
//! | Marker | Signature (arguments optional unless said) | Called |
//! |---|---|---|
//! | `#[init]` | `fn(config: Vec<u8>) -> Result<Self, E: Display>` | once, to build the state (else `Default`) |
//! | `#[session_closed]` | `fn(session: SessionId)` | when a session that called the component closes (not one its validator refused); its uid, data, handshake and address can still be read, it is no longer connected |
//! | `#[timer]` | `fn(timer: TimerId)`, returns `()` or `Result<(), E>` (logged) | when a [`timers`] timer fires |
//! | `#[validate_handshake]` | `fn(session: &Session, handshake: Handshake) -> Result<(), E>` | for every new client; an error refuses it |
//! | `#[before]` | `fn(session: &Session, handler: &str) -> Result<(), HandlerError>` | before every handler call; an error is the answer |
//! | `#[after]` | `fn(session: &Session, handler: &str, outcome: &Outcome)` | after every handler call, refused or not |
//! | `#[shutdown]` | `fn()`, returns `()` or `Result<(), E>` (logged) | once, when the host stops |
//! | `#[export_state]` | `fn() -> Json<T>` (or bytes, or an `Option`) | on the old instance, at hot reload |
//! | `#[import_state]` | `fn(state: Json<T>)` (or bytes; the state is required), returns `()` or `Result<(), E>` | on the new instance, at hot reload; an error keeps the old one |
//!
//! `#[before]` and `#[after]` are pitaya's handler pipelines, run inside the component: there
//! may be several of each (they run in the order written), they see the handler's name (the
//! part of the route after the component's name), and an `#[after]` hook may rewrite the
//! answer through `&mut Outcome`. They do not run for a handler name that does not exist. The
//! handshake argument of `#[validate_handshake]` may be any type that decodes from the
//! handshake JSON, like a payload; one that does not decode refuses the client.
//!
//! ```
//! use pitaya_guest::log;
//! use pitaya_guest::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Bank {
//!     vault: u64,
//! }
//!
//! #[component(name = "bank")]
//! impl Bank {
//!     #[request]
//!     fn deposit(&mut self, amount: u64) -> Result<u64> {
//!         self.vault += amount;
//!         Ok(self.vault)
//!     }
//!
//!     /// Only clients that sent a token may connect.
//!     #[validate_handshake]
//!     fn admit(&mut self, handshake: Handshake) -> Result<(), String> {
//!         match handshake.user["token"].as_str() {
//!             Some(_) => Ok(()),
//!             None => Err("no token".into()),
//!         }
//!     }
//!
//!     /// Only bound sessions may call handlers.
//!     #[before]
//!     fn logged_in(&mut self, session: &Session, handler: &str) -> Result<(), HandlerError> {
//!         match session.uid() {
//!             Some(_) => Ok(()),
//!             None => Err(HandlerError::new("BANK-AUTH", format!("log in before bank.{handler}"))),
//!         }
//!     }
//!
//!     #[after]
//!     fn audit(&mut self, handler: &str, outcome: &Outcome) {
//!         log::debug!("bank.{handler}: {}", if outcome.is_ok() { "ok" } else { "failed" });
//!     }
//!
//!     /// Hot reload keeps the vault.
//!     #[export_state]
//!     fn save(&self) -> Json<&Bank> {
//!         Json(self)
//!     }
//!
//!     #[import_state]
//!     fn load(&mut self, Json(old): Json<Bank>) {
//!         *self = old;
//!     }
//! }
//! ```
//!
//! # State
//!
//! The component value is the state. The host makes one instance, and calls it one call at a
//! time (timers included), so handlers use `&mut self` freely and never see a data race. A trap
//! (a panic) ends that instance and the host starts a fresh one with `init`; state that must
//! survive that belongs in session data (see [`Session::set`]) or in host groups. On hot reload
//! the state is handed over with `#[export_state]` and `#[import_state]`.
//!
//! # The host's services
//!
//! - [`Session`] acts on a client session: uid binding, session data (JSON), pushes, kicks
//!   (with a reason, or a plain close), its address and its [`Handshake`].
//! - [`Group`] is a room kept by the host: add and remove sessions, list them, broadcast to
//!   them (encoded once). Closed sessions leave by themselves.
//! - [`users`] reaches players by uid: their session, pushes, kicks.
//! - [`timers`] starts one-shot and fixed-rate timers, heard by the `#[timer]` hook.
//! - [`log`] writes to the host's log.
//!
//! [`testing::TestHost`] runs a component natively, against a host in memory with a fake clock,
//! so `cargo test` can check handlers, hooks, groups and timers without building WebAssembly.
//!
//! # How it fits together
//!
//! The SDK generates the WIT bindings (world `pitaya:host/game`) once, hidden in `__private`.
//! `#[component]` implements the [`Component`] trait for the type and calls [`export!`], which
//! hands `Component` to the bindings' `handler` export. The instance lives in a thread-local
//! slot (WebAssembly here is single-threaded). On other targets nothing is exported, and the
//! host functions are served by the in-memory test host.

#![warn(missing_docs)]

pub mod cluster;
mod component;
mod error;
pub mod groups;
mod handshake;
mod hooks;
pub mod log;
mod payload;
#[cfg(feature = "protobuf")]
mod proto;
mod runtime;
mod session;
mod state;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod timers;
pub mod users;

pub use component::{Component, HandlerInfo, HandlerKind};
pub use error::HandlerError;
pub use groups::Group;
pub use handshake::Handshake;
pub use hooks::{BeforeReturn, HookReturn, Outcome, OutcomeArg};
pub use payload::{FromPayload, InitReturn, IntoResponse, NotifyReturn, Raw, RequestReturn};
#[cfg(feature = "protobuf")]
pub use proto::Proto;
pub use session::{BindError, Session, SessionId};
pub use state::{FromState, IntoState, Json};
pub use timers::TimerId;

/// The [prost](https://docs.rs/prost) crate the SDK uses for [`Proto`] payloads (the
/// `protobuf` feature), so a component derives its messages without depending on prost itself.
///
/// The derive refers to the crate as `::prost` unless told otherwise: give each message
/// `#[prost(prost_path = "::pitaya_guest::prost")]`, or add `prost = "0.14"` to the component's
/// `Cargo.toml` (then plain `#[derive(prost::Message)]` works).
///
/// ```
/// use pitaya_guest::prost::Message;
///
/// #[derive(Clone, PartialEq, pitaya_guest::prost::Message)]
/// #[prost(prost_path = "::pitaya_guest::prost")]
/// struct Ping {
///     #[prost(uint32, tag = "1")]
///     seq: u32,
/// }
///
/// let bytes = Ping { seq: 5 }.encode_to_vec();
/// assert_eq!(bytes, [0x08, 0x05]);
/// assert_eq!(Ping::decode(&bytes[..]).unwrap(), Ping { seq: 5 });
/// ```
#[cfg(feature = "protobuf")]
pub use prost;

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

/// Marks the hook that hears of closed sessions, inside a [`#[component]`](component) block:
/// `fn left(&mut self, session: SessionId)`. While it runs, the closed session's uid, data,
/// handshake and address can still be read (`session.session().uid()`), so the hook knows who
/// left; the session is no longer connected, so pushes to it fail and changes to it are lost.
///
/// ```
/// use pitaya_guest::prelude::*;
///
/// #[derive(Default)]
/// struct Lobby;
///
/// #[component(name = "lobby")]
/// impl Lobby {
///     #[session_closed]
///     fn left(&mut self, session: SessionId) {
///         let player = session.session();
///         let who = player.uid().unwrap_or_default();
///         pitaya_guest::log::info!("{who} left, connected: {}", player.is_connected());
///     }
/// }
///
/// let mut host = pitaya_guest::testing::TestHost::<Lobby>::new().unwrap();
/// let client = host.connect();
/// client.session().bind("ana").unwrap();
/// host.close(client);
/// assert_eq!(
///     host.take_logs(),
///     [(pitaya_guest::log::Level::Info, "ana left, connected: false".to_string())]
/// );
/// // Once the hook has run, the session is gone.
/// assert_eq!(client.session().uid(), None);
/// ```
pub use pitaya_guest_macros::session_closed;

/// Marks the hook that receives timer fires, inside a [`#[component]`](component) block:
/// `fn fired(&mut self, timer: TimerId)`. See [`timers`].
pub use pitaya_guest_macros::timer;

/// Marks the hook that accepts or refuses new clients by their handshake, inside a
/// [`#[component]`](component) block:
/// `fn check(&mut self, session: &Session, handshake: Handshake) -> Result<(), String>`.
pub use pitaya_guest_macros::validate_handshake;

/// Marks the hook called once when the host shuts down, inside a [`#[component]`](component)
/// block: `fn stop(&mut self)`.
pub use pitaya_guest_macros::shutdown;

/// Marks the hook that hands the state to a new build on hot reload, inside a
/// [`#[component]`](component) block: `fn save(&mut self) -> Json<State>` (or bytes, or an
/// `Option` of either).
pub use pitaya_guest_macros::export_state;

/// Marks the hook that takes the state over from the old build on hot reload, inside a
/// [`#[component]`](component) block: `fn load(&mut self, state: Json<State>) -> Result<(), String>`.
pub use pitaya_guest_macros::import_state;

/// Marks a hook run before every handler call, inside a [`#[component]`](component) block:
/// `fn check(&mut self, session: &Session, handler: &str) -> Result<(), HandlerError>`. An
/// error is the call's answer and the handler does not run.
pub use pitaya_guest_macros::before;

/// Marks a hook run after every handler call, inside a [`#[component]`](component) block:
/// `fn log(&mut self, session: &Session, handler: &str, outcome: &Outcome)`.
pub use pitaya_guest_macros::after;

/// `Result` with [`HandlerError`] as the default error type.
///
/// ```
/// fn find(id: u64) -> pitaya_guest::Result<String> {
///     Err(pitaya_guest::HandlerError::not_found(format!("no player {id}")))
/// }
/// ```
pub type Result<T, E = HandlerError> = std::result::Result<T, E>;

/// What most components need: `use pitaya_guest::prelude::*;`.
///
/// It holds the types handlers use (sessions, groups, errors, payloads, and `Proto` with the
/// `protobuf` feature), `#[component]` and its markers. The [`log`], [`timers`] and [`users`]
/// functions are used through their modules: `log::info!(...)`, `timers::every(...)`,
/// `users::push(...)`.
///
/// ```
/// use pitaya_guest::log;
/// use pitaya_guest::prelude::*;
///
/// fn greet(session: &Session) -> Result<()> {
///     log::info!("greeting session {}", session.id());
///     Group::new("lobby").broadcast("onGreeting", &session.id());
///     Ok(())
/// }
/// ```
pub mod prelude {
    pub use crate::{
        Component, Group, HandlerError, Handshake, Json, Outcome, Raw, Result, Session, SessionId,
        TimerId, after, before, component, export_state, import_state, init, notify, request,
        session_closed, shutdown, timer, validate_handshake,
    };

    #[cfg(feature = "protobuf")]
    pub use crate::Proto;
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
            let _ = <$component as $crate::Component>::validate_handshake;
            let _ = <$component as $crate::Component>::on_timer;
            let _ = <$component as $crate::Component>::shutdown;
            let _ = <$component as $crate::Component>::export_state;
            let _ = <$component as $crate::Component>::import_state;
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

    /// Decodes a handshake for a `#[validate_handshake]` hook; the error refuses the client.
    pub fn decode_handshake<T: crate::FromPayload>(handshake: String) -> Result<T, String> {
        T::from_payload(handshake.into_bytes()).map_err(|error| {
            let reason = error.message;
            let reason = reason.strip_prefix("invalid payload: ").unwrap_or(&reason);
            format!("invalid handshake: {reason}")
        })
    }

    /// Logs the error a hook returned (for hooks whose errors go nowhere else).
    pub fn log_hook_error(hook: &str, function: &str, error: &str) {
        crate::log::log(
            crate::log::Level::Error,
            &format!("the {hook} hook `{function}` failed: {error}"),
        );
    }
}
