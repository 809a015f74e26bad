//! A host in memory, so components can be unit-tested natively with `cargo test`.
//!
//! On targets other than WebAssembly the SDK's host functions (sessions, groups, users, timers,
//! log) talk to this fake host instead of the real one. [`TestHost`] drives a component through
//! the same code path the real host uses (init, handle, session-closed, timers, handshakes,
//! shutdown, hot reload) and lets a test connect sessions, send requests and notifies, move a
//! fake clock, and look at what was pushed, bound, stored, grouped, kicked and logged.
//!
//! ```
//! use pitaya_guest::prelude::*;
//! use pitaya_guest::testing::TestHost;
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! #[component(name = "echo")]
//! impl Echo {
//!     #[request]
//!     fn echo(payload: Raw) -> Result<Raw> {
//!         Ok(payload)
//!     }
//!
//!     #[notify]
//!     fn notify(session: &Session, payload: Raw) {
//!         session.push_raw("onEcho", &payload);
//!     }
//! }
//!
//! let mut host = TestHost::<Echo>::new().unwrap();
//! let client = host.connect();
//! assert_eq!(host.request(client, "echo", "hi").unwrap(), b"hi");
//! host.notify(client, "notify", "yo").unwrap();
//! let pushes = host.take_pushes(client);
//! assert_eq!(pushes[0].route, "onEcho");
//! assert_eq!(pushes[0].payload, b"yo");
//! ```
//!
//! Timers run on a fake clock that only moves when the test says so: [`TestHost::advance`]
//! fires every timer that falls due, in order, and [`TestHost::fire_timer`] fires one now.
//!
//! ```
//! use std::time::Duration;
//!
//! use pitaya_guest::prelude::*;
//! use pitaya_guest::testing::TestHost;
//! use pitaya_guest::timers;
//!
//! #[derive(Default)]
//! struct Clock {
//!     ticks: u32,
//! }
//!
//! #[component(name = "clock")]
//! impl Clock {
//!     #[request]
//!     fn start() -> Result<TimerId> {
//!         Ok(timers::every(Duration::from_millis(100)))
//!     }
//!
//!     #[request]
//!     fn ticks(&self) -> Result<u32> {
//!         Ok(self.ticks)
//!     }
//!
//!     #[timer]
//!     fn tick(&mut self) {
//!         self.ticks += 1;
//!     }
//! }
//!
//! let mut host = TestHost::<Clock>::new().unwrap();
//! let client = host.connect();
//! host.request(client, "start", "").unwrap();
//! assert_eq!(host.timers().len(), 1);
//! assert_eq!(host.advance(Duration::from_millis(350)), 3);
//! assert_eq!(host.request(client, "ticks", "").unwrap(), b"3");
//! ```
//!
//! The fake host's state, like the component's, is per thread: each `#[test]` (which runs on
//! a thread of its own) starts from nothing, and [`TestHost::new`] resets both.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use crate::log::Level;
use crate::{Component, HandlerError, HandlerKind, Handshake, SessionId, TimerId, runtime};

/// One message pushed to a session's client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The push route, e.g. `onMessage`.
    pub route: String,
    /// The payload as pushed.
    pub payload: Vec<u8>,
}

impl Push {
    /// The payload decoded as JSON.
    ///
    /// # Panics
    ///
    /// When the payload is not JSON: this is a test helper, and the panic message says which
    /// push it was.
    ///
    /// ```
    /// use pitaya_guest::testing::Push;
    ///
    /// let push = Push { route: "onScore".into(), payload: br#"{"score":3}"#.to_vec() };
    /// assert_eq!(push.json()["score"], 3);
    /// ```
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.payload) {
            Ok(value) => value,
            Err(error) => panic!("push {:?} is not JSON: {error}", self.route),
        }
    }
}

/// A timer that has not finished, as [`TestHost::timers`] lists it.
///
/// ```
/// use std::time::Duration;
/// use pitaya_guest::testing::{ActiveTimer, TestHost};
/// # use pitaya_guest::prelude::*;
/// # #[derive(Default)] struct Echo;
/// # #[component(name = "echo")] impl Echo {}
///
/// let mut host = TestHost::<Echo>::new().unwrap();
/// let id = pitaya_guest::timers::after(Duration::from_millis(30));
/// host.advance(Duration::from_millis(10));
/// let expected = ActiveTimer { id, period: None, due_in: Duration::from_millis(20) };
/// assert_eq!(host.timers(), [expected]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveTimer {
    /// The timer's id, as the component got it.
    pub id: TimerId,
    /// `Some(period)` for a timer started with [`timers::every`](crate::timers::every), `None`
    /// for a one-shot timer.
    pub period: Option<Duration>,
    /// How long until it fires next, on the fake clock.
    pub due_in: Duration,
}

/// A component running on the fake host, for tests. See the [module docs](self).
///
/// It is tied to the thread that made it (the fake host lives in thread-local storage).
pub struct TestHost<C: Component> {
    /// What `init` was given, which it is given again when a trap replaces the instance.
    config: Vec<u8>,
    /// It drives a `C` without owning one (the instance lives in the runtime's slot).
    _component: PhantomData<fn() -> C>,
    /// Not `Send`: the fake host and the instance are thread-local.
    _thread: PhantomData<*const ()>,
}

impl<C: Component> TestHost<C> {
    /// Starts the component with an empty configuration, as the host does when none is given.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// ```
    pub fn new() -> Result<Self, String> {
        Self::with_config(Vec::new())
    }

    /// Starts the component with the given configuration bytes. The error is the one `init`
    /// returned.
    ///
    /// ```
    /// use pitaya_guest::prelude::*;
    /// use pitaya_guest::testing::TestHost;
    ///
    /// struct Lobby {
    ///     capacity: usize,
    /// }
    ///
    /// #[component(name = "lobby")]
    /// impl Lobby {
    ///     #[init]
    ///     fn init(config: Vec<u8>) -> Result<Self, String> {
    ///         let capacity = std::str::from_utf8(&config)
    ///             .ok()
    ///             .and_then(|text| text.parse().ok())
    ///             .ok_or("the configuration is the capacity, as a number")?;
    ///         Ok(Lobby { capacity })
    ///     }
    ///
    ///     #[request]
    ///     fn capacity(&self) -> Result<usize> {
    ///         Ok(self.capacity)
    ///     }
    /// }
    ///
    /// assert!(TestHost::<Lobby>::with_config("lots").is_err());
    /// let mut host = TestHost::<Lobby>::with_config("8").unwrap();
    /// let client = host.connect();
    /// assert_eq!(host.request(client, "capacity", "").unwrap(), b"8");
    /// ```
    pub fn with_config(config: impl Into<Vec<u8>>) -> Result<Self, String> {
        let config = config.into();
        fake::reset();
        runtime::reset();
        runtime::init::<C>(config.clone())?;
        Ok(TestHost {
            config,
            _component: PhantomData,
            _thread: PhantomData,
        })
    }

    /// Connects a new client with an empty handshake and returns its session's id (ids count
    /// up from 1).
    ///
    /// # Panics
    ///
    /// When the component's `#[validate_handshake]` hook refuses the client: test refusals
    /// with [`TestHost::connect_with`].
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// assert_eq!(host.connect(), SessionId(1));
    /// assert_eq!(host.connect(), SessionId(2));
    /// ```
    pub fn connect(&mut self) -> SessionId {
        match self.connect_with(Handshake::default()) {
            Ok(session) => session,
            Err(reason) => panic!(
                "the component refused a client with an empty handshake ({reason}); use connect_with to test refusals"
            ),
        }
    }

    /// Connects a new client with the given handshake. When the component validates
    /// handshakes, its hook runs first, and its error (the client refused) is returned; a
    /// refused session is closed without the component hearing of it.
    ///
    /// Every fake client's address is `127.0.0.1`, port `40000 + id`.
    ///
    /// ```
    /// use pitaya_guest::prelude::*;
    /// use pitaya_guest::testing::TestHost;
    /// use serde_json::json;
    ///
    /// #[derive(Default)]
    /// struct Gate;
    ///
    /// #[component(name = "gate")]
    /// impl Gate {
    ///     #[validate_handshake]
    ///     fn check(&mut self, handshake: Handshake) -> Result<(), String> {
    ///         match handshake.user["token"].as_str() {
    ///             Some("open sesame") => Ok(()),
    ///             _ => Err("bad token".into()),
    ///         }
    ///     }
    /// }
    ///
    /// let mut host = TestHost::<Gate>::new().unwrap();
    /// let refused = host.connect_with(Handshake::with_user(json!({"token": "guess"})));
    /// assert_eq!(refused, Err("bad token".to_string()));
    /// let welcome = host.connect_with(Handshake::with_user(json!({"token": "open sesame"})));
    /// assert!(welcome.is_ok());
    /// ```
    pub fn connect_with(&mut self, handshake: Handshake) -> Result<SessionId, String> {
        let text = serde_json::to_string(&handshake).map_err(|error| error.to_string())?;
        let session = SessionId(fake::connect(text.clone()));
        if C::VALIDATES_HANDSHAKE {
            let verdict = self
                .call(|| runtime::validate_handshake::<C>(session, text))
                .unwrap_or_else(|| Err("the component failed to validate the handshake".into()));
            self.close_ended();
            if let Err(reason) = verdict {
                fake::end(session.0, fake::End::Refused);
                return Err(reason);
            }
        }
        Ok(session)
    }

    /// Sends a request to the handler named `handler` and returns its response.
    ///
    /// As the real host does, a request to a notify handler is refused with `PIT-400`. Sessions
    /// kicked or closed during the call are closed after it, and the component hears of it.
    ///
    /// A handler that panics (a trap, on the real host) answers `PIT-503`, and the instance is
    /// replaced as the host replaces it: a fresh one, whose `#[init]` runs again with the same
    /// configuration, so the component's memory is lost and its timers stop, while the host's
    /// sessions, uids, session data and groups stay. The panic's message is logged
    /// ([`TestHost::take_logs`]). Every other hook that panics replaces the instance the same way.
    ///
    /// ```
    /// use pitaya_guest::prelude::*;
    /// use pitaya_guest::testing::TestHost;
    ///
    /// #[derive(Default)]
    /// struct Fragile {
    ///     calls: u32,
    /// }
    ///
    /// #[component(name = "fragile")]
    /// impl Fragile {
    ///     #[request]
    ///     fn count(&mut self) -> Result<u32> {
    ///         self.calls += 1;
    ///         Ok(self.calls)
    ///     }
    ///
    ///     #[request]
    ///     fn boom(&mut self) -> Result<()> {
    ///         panic!("boom")
    ///     }
    /// }
    ///
    /// let mut host = TestHost::<Fragile>::new().unwrap();
    /// let client = host.connect();
    /// host.request(client, "count", "").unwrap();
    /// assert_eq!(host.request(client, "boom", "").unwrap_err().code, "PIT-503");
    /// assert!(host.is_connected(client));
    /// assert_eq!(host.request(client, "count", "").unwrap(), b"1");
    /// ```
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {
    /// #     #[request] fn echo(payload: Raw) -> Result<Raw> { Ok(payload) }
    /// # }
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// assert_eq!(host.request(client, "echo", "hi").unwrap(), b"hi");
    /// assert_eq!(host.request(client, "nope", "").unwrap_err().code, "PIT-404");
    /// ```
    pub fn request(
        &mut self,
        session: SessionId,
        handler: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<Vec<u8>, HandlerError> {
        let Some(info) = C::HANDLERS.iter().find(|info| info.name == handler) else {
            // The real host's router answers before the component hears of it.
            return Err(HandlerError::not_found(format!(
                "pitaya/handler: {} not found",
                Self::route(handler)
            )));
        };
        if info.kind == HandlerKind::Notify {
            // The real host's words, so that a test may compare the message too.
            return Err(HandlerError::bad_request(format!(
                "pitaya/handler: {} is a notify handler and gives no response",
                Self::route(handler)
            )));
        }
        let result = self
            .call(|| runtime::handle::<C>(session, handler, payload.as_ref().to_vec()))
            .unwrap_or_else(|| Err(Self::trapped(handler)));
        self.close_ended();
        result
    }

    /// Sends a notify to the handler named `handler`. The real host only counts a notify's
    /// error and logs it at debug level; here it is returned so a test can check it.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {
    /// #     #[notify] fn notify(session: &Session, payload: Raw) { session.push_raw("onEcho", &payload); }
    /// # }
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// host.notify(client, "notify", "yo").unwrap();
    /// assert_eq!(host.take_pushes(client)[0].payload, b"yo");
    /// ```
    pub fn notify(
        &mut self,
        session: SessionId,
        handler: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), HandlerError> {
        let result = self
            .call(|| runtime::handle::<C>(session, handler, payload.as_ref().to_vec()))
            .unwrap_or_else(|| Err(Self::trapped(handler)));
        self.close_ended();
        result.map(drop)
    }

    /// Closes the session (the client went away) and tells the component. It leaves every
    /// group.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// host.close(client);
    /// assert!(!host.is_connected(client));
    /// ```
    pub fn close(&mut self, session: SessionId) {
        fake::end(session.0, fake::End::Disconnected);
        self.hear_closed(session);
    }

    /// Closes the session without telling the component yet, as when a client goes away
    /// while the component is busy: the component finds out through failed pushes and
    /// `is_connected`. It leaves every group at once, as on the real host.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// host.disconnect(client);
    /// assert!(!client.session().push("onX", &1));
    /// ```
    pub fn disconnect(&mut self, session: SessionId) {
        fake::end(session.0, fake::End::Disconnected);
    }

    /// The messages pushed to the session since the last call, oldest first (broadcasts and
    /// pushes by uid included).
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// client.session().push("onHello", "there");
    /// assert_eq!(host.take_pushes(client).len(), 1);
    /// assert!(host.take_pushes(client).is_empty());
    /// ```
    pub fn take_pushes(&mut self, session: SessionId) -> Vec<Push> {
        fake::take_pushes(session.0)
    }

    /// The uid bound to the session.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// client.session().bind("ana").unwrap();
    /// assert_eq!(host.uid(client).as_deref(), Some("ana"));
    /// ```
    pub fn uid(&self, session: SessionId) -> Option<String> {
        fake::uid(session.0)
    }

    /// A session data value, as the text stored.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// client.session().set("level", &3).unwrap();
    /// assert_eq!(host.data(client, "level").as_deref(), Some("3"));
    /// ```
    pub fn data(&self, session: SessionId, key: &str) -> Option<String> {
        fake::get(session.0, key)
    }

    /// Sets a session data value (text, JSON by convention), as another component or the
    /// host could.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// host.set_data(client, "auth", "true");
    /// assert_eq!(client.session().get::<bool>("auth"), Some(true));
    /// ```
    pub fn set_data(&mut self, session: SessionId, key: &str, value: &str) {
        fake::set(session.0, key, value)
    }

    /// Whether the session was kicked (by [`Session::kick`](crate::Session::kick) or by uid).
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// client.session().kick();
    /// assert!(host.was_kicked(client));
    /// ```
    pub fn was_kicked(&self, session: SessionId) -> bool {
        matches!(fake::ended(session.0), Some(fake::End::Kicked(_)))
    }

    /// The reason the session was kicked with, if it was kicked with one.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// client.session().kick_with_reason("afk");
    /// assert_eq!(host.kick_reason(client).as_deref(), Some("afk"));
    /// ```
    pub fn kick_reason(&self, session: SessionId) -> Option<String> {
        match fake::ended(session.0) {
            Some(fake::End::Kicked(reason)) => reason,
            _ => None,
        }
    }

    /// Whether the component closed the session with [`Session::close`](crate::Session::close)
    /// (without a kick).
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// client.session().close();
    /// assert!(host.was_closed(client));
    /// assert!(!host.was_kicked(client));
    /// ```
    pub fn was_closed(&self, session: SessionId) -> bool {
        matches!(fake::ended(session.0), Some(fake::End::Closed))
    }

    /// Whether the session is connected.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// assert!(host.is_connected(client));
    /// assert!(!host.is_connected(SessionId(99)));
    /// ```
    pub fn is_connected(&self, session: SessionId) -> bool {
        fake::is_connected(session.0)
    }

    /// The fake client's address: `127.0.0.1`, port `40000 + id`.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// assert_eq!(host.remote_address(client).to_string(), "127.0.0.1:40001");
    /// ```
    pub fn remote_address(&self, session: SessionId) -> SocketAddr {
        fake::address_of(session.0)
    }

    /// The members of a group, in the order they were added.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let client = host.connect();
    /// Group::new("lobby").add(client);
    /// assert_eq!(host.group_members("lobby"), [client]);
    /// host.close(client);
    /// assert!(host.group_members("lobby").is_empty());
    /// ```
    pub fn group_members(&self, group: &str) -> Vec<SessionId> {
        fake::group_members(group)
            .into_iter()
            .map(SessionId)
            .collect()
    }

    /// The names of the groups that exist, in order.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// Group::new("b").create();
    /// Group::new("a").create();
    /// assert_eq!(host.groups(), ["a", "b"]);
    /// ```
    pub fn groups(&self) -> Vec<String> {
        fake::group_names()
    }

    /// The timers that have not finished, in id order.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pitaya_guest::testing::ActiveTimer;
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let id = pitaya_guest::timers::every(Duration::from_millis(50));
    /// let expected = ActiveTimer { id, period: Some(Duration::from_millis(50)), due_in: Duration::from_millis(50) };
    /// assert_eq!(host.timers(), [expected]);
    /// ```
    pub fn timers(&self) -> Vec<ActiveTimer> {
        fake::active_timers()
    }

    /// Fires a timer now, whenever it was due: a one-shot timer finishes, a repeating one is
    /// next due one period from now. Returns `false` (and fires nothing) if the timer is not
    /// active.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// let id = pitaya_guest::timers::after(Duration::from_secs(60));
    /// assert!(host.fire_timer(id));
    /// assert!(!host.fire_timer(id));
    /// ```
    pub fn fire_timer(&mut self, timer: TimerId) -> bool {
        if !fake::take_fire(timer.0) {
            return false;
        }
        self.call(|| runtime::on_timer::<C>(timer));
        self.close_ended();
        true
    }

    /// Moves the fake clock forward, firing every timer that falls due on the way, in the
    /// order they fall due (repeating timers at a fixed rate). Timers started or cancelled by
    /// a fire count from then on. Returns how many fires there were.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// pitaya_guest::timers::every(Duration::from_millis(10));
    /// pitaya_guest::timers::after(Duration::from_millis(25));
    /// assert_eq!(host.advance(Duration::from_millis(30)), 4);
    /// ```
    pub fn advance(&mut self, by: Duration) -> usize {
        let until = fake::now().saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        let mut fires = 0;
        while let Some(timer) = fake::next_due(until) {
            self.call(|| runtime::on_timer::<C>(TimerId(timer)));
            self.close_ended();
            fires += 1;
        }
        fake::set_now(until);
        fires
    }

    /// Tells the component the host is shutting down (its `#[shutdown]` hook runs).
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// host.shutdown();
    /// ```
    pub fn shutdown(&mut self) {
        self.call(runtime::shutdown::<C>);
    }

    /// What the component's `#[export_state]` hook hands over, without replacing it.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// assert_eq!(host.export_state(), None);
    /// ```
    pub fn export_state(&mut self) -> Option<Vec<u8>> {
        self.call(runtime::export_state::<C>).flatten()
    }

    /// Hot reload, as the host does it: the instance exports its state, a new instance is built
    /// with `config` and imports the state. The error is `init`'s or the import's (a panic in
    /// either is an error too), and then the old instance keeps serving, with its timers.
    /// Sessions, session data and groups stay as they are; the old instance's timers stop, as
    /// on the real host, so a component restarts its own in `#[import_state]`.
    ///
    /// ```
    /// use pitaya_guest::prelude::*;
    /// use pitaya_guest::testing::TestHost;
    ///
    /// #[derive(Default)]
    /// struct Counter {
    ///     count: u64,
    /// }
    ///
    /// #[component(name = "counter")]
    /// impl Counter {
    ///     #[request]
    ///     fn next(&mut self) -> Result<u64> {
    ///         self.count += 1;
    ///         Ok(self.count)
    ///     }
    ///
    ///     #[export_state]
    ///     fn save(&self) -> Json<u64> {
    ///         Json(self.count)
    ///     }
    ///
    ///     #[import_state]
    ///     fn load(&mut self, Json(count): Json<u64>) {
    ///         self.count = count;
    ///     }
    /// }
    ///
    /// let mut host = TestHost::<Counter>::new().unwrap();
    /// let client = host.connect();
    /// host.request(client, "next", "").unwrap();
    /// host.reload("").unwrap();
    /// assert_eq!(host.request(client, "next", "").unwrap(), b"2");
    /// ```
    pub fn reload(&mut self, config: impl Into<Vec<u8>>) -> Result<(), String> {
        let config = config.into();
        let old = fake::timer_ids();
        let outcome = runtime::reload::<C>(config.clone());
        // The timers of the instance that lost (the old one, or the new one that failed) stop.
        fake::cancel_timers(|timer| old.contains(&timer) == outcome.is_ok());
        if outcome.is_ok() {
            self.config = config;
        }
        outcome
    }

    /// Makes the fake host a server of `server_type` in a cluster, so
    /// [`cluster::server`](crate::cluster::server) answers and RPCs get scripted answers.
    pub fn join_cluster(&mut self, server_type: &str, id: &str) {
        fake::join_cluster(server_type, id);
    }

    /// Scripts the answer of every later RPC to `route` (in a joined cluster; other routes
    /// answer `PIT-404`).
    ///
    /// ```
    /// use pitaya_guest::testing::TestHost;
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Shop;
    /// # #[component(name = "shop")] impl Shop {
    /// #     #[request] fn price() -> Result<u32> {
    /// #         pitaya_guest::cluster::rpc("bank.account.price", &())
    /// #     }
    /// # }
    /// let mut host = TestHost::<Shop>::new().unwrap();
    /// host.join_cluster("shop", "shop-1");
    /// host.answer_rpc("bank.account.price", Ok(b"42".to_vec()));
    /// let player = host.connect();
    /// assert_eq!(host.request(player, "price", b"null").unwrap(), b"42");
    /// assert_eq!(host.take_rpc_calls(), [("bank.account.price".to_string(), b"null".to_vec())]);
    /// ```
    pub fn answer_rpc(&mut self, route: &str, answer: Result<Vec<u8>, HandlerError>) {
        fake::answer_rpc(route, answer);
    }

    /// The RPCs made since the last call of this, as (route, payload).
    pub fn take_rpc_calls(&mut self) -> Vec<(String, Vec<u8>)> {
        fake::take_rpc_calls()
    }

    /// The lines logged since the last call, oldest first.
    ///
    /// ```
    /// # use pitaya_guest::prelude::*;
    /// # #[derive(Default)] struct Echo;
    /// # #[component(name = "echo")] impl Echo {}
    /// let mut host = pitaya_guest::testing::TestHost::<Echo>::new().unwrap();
    /// pitaya_guest::log::info!("hello");
    /// assert_eq!(host.take_logs(), [(pitaya_guest::log::Level::Info, "hello".to_string())]);
    /// ```
    pub fn take_logs(&mut self) -> Vec<(Level, String)> {
        fake::take_logs()
    }

    /// Tells the component of the sessions it kicked or closed during the last call, as the
    /// real host does once the call is over (it never re-enters a component mid-call).
    fn close_ended(&mut self) {
        for session in fake::take_ended() {
            self.hear_closed(SessionId(session));
        }
    }

    /// Runs the component's `#[session_closed]` hook, with the session readable meanwhile.
    fn hear_closed(&mut self, session: SessionId) {
        fake::set_closing(Some(session.0));
        self.call(|| runtime::session_closed::<C>(session));
        fake::set_closing(None);
    }

    /// Runs one call into the component; `None` when it panicked, and then the instance has
    /// been replaced as the real host replaces one that trapped.
    fn call<R>(&mut self, call: impl FnOnce() -> R) -> Option<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
            Ok(result) => Some(result),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|message| message.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                crate::log::log(Level::Error, &format!("component panicked: {message}"));
                fake::cancel_timers(|_| true);
                runtime::reset();
                if let Err(error) = runtime::init::<C>(self.config.clone()) {
                    crate::log::log(
                        Level::Error,
                        &format!("init failed in the instance that replaced it: {error}"),
                    );
                }
                None
            }
        }
    }

    /// A request's answer when its handler trapped: the real host's.
    fn trapped(handler: &str) -> HandlerError {
        HandlerError::new(
            "PIT-503",
            format!(
                "pitaya/handler: {} unavailable: the component trapped",
                Self::route(handler)
            ),
        )
    }

    /// A handler's route as the real host names it in its messages: with the server type in
    /// front, the cluster's when the fake host joined one, else the host's default, `connector`.
    fn route(handler: &str) -> String {
        let server_type = fake::cluster_server().map_or_else(|| "connector".into(), |(t, _)| t);
        format!("{server_type}.{}.{handler}", C::NAME)
    }
}

/// The fake host's state and its implementation of the host functions.
pub(crate) mod fake {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use super::{ActiveTimer, Push};
    use crate::log::Level;
    use crate::{BindError, TimerId};

    #[derive(Default)]
    struct Host {
        last_session: u64,
        /// The session whose `#[session_closed]` hook is running: it can still be read.
        closing: Option<u64>,
        sessions: BTreeMap<u64, Session>,
        /// Members in the order they were added.
        groups: BTreeMap<String, Vec<u64>>,
        last_timer: u64,
        timers: BTreeMap<u64, Timer>,
        /// The fake clock, in milliseconds: it only moves in `TestHost::advance`.
        now: u64,
        logs: Vec<(Level, String)>,
        /// Sessions kicked or closed during the current call: the test host tells the
        /// component after it, as the real host does (it never re-enters a component mid-call).
        ended: Vec<u64>,
        /// This server in its fake cluster, if the test joined one.
        cluster: Option<(String, String)>,
        /// Scripted RPC answers by route.
        rpc_answers: BTreeMap<String, Result<Vec<u8>, crate::HandlerError>>,
        /// RPCs made, in order.
        rpc_calls: Vec<(String, Vec<u8>)>,
    }

    struct Session {
        connected: bool,
        end: Option<End>,
        uid: Option<String>,
        data: BTreeMap<String, String>,
        pushes: Vec<Push>,
        handshake: String,
    }

    /// How a session ended.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) enum End {
        Kicked(Option<String>),
        Closed,
        Disconnected,
        Refused,
    }

    struct Timer {
        period: Option<u64>,
        due: u64,
    }

    thread_local! {
        static HOST: RefCell<Host> = RefCell::new(Host::default());
    }

    fn with_host<R>(f: impl FnOnce(&mut Host) -> R) -> R {
        HOST.with(|host| f(&mut host.borrow_mut()))
    }

    /// Runs `f` on the session if it can be read: connected, or closed with its
    /// `#[session_closed]` hook running (as on the real host).
    fn with_readable<R>(session: u64, f: impl FnOnce(&Session) -> R) -> Option<R> {
        with_host(|host| {
            let closing = host.closing == Some(session);
            host.sessions
                .get(&session)
                .filter(|s| s.connected || closing)
                .map(f)
        })
    }

    /// Marks the session whose `#[session_closed]` hook runs, or none once it has.
    pub(crate) fn set_closing(session: Option<u64>) {
        with_host(|host| host.closing = session);
    }

    /// Runs `f` on the session if it is connected.
    fn with_connected<R>(session: u64, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        with_host(|host| {
            host.sessions
                .get_mut(&session)
                .filter(|s| s.connected)
                .map(f)
        })
    }

    pub(crate) fn reset() {
        with_host(|host| *host = Host::default());
    }

    pub(crate) fn connect(handshake: String) -> u64 {
        with_host(|host| {
            host.last_session += 1;
            let session = Session {
                connected: true,
                end: None,
                uid: None,
                data: BTreeMap::new(),
                pushes: Vec::new(),
                handshake,
            };
            host.sessions.insert(host.last_session, session);
            host.last_session
        })
    }

    /// Ends a connected session: it leaves every group. Returns whether it was connected.
    pub(crate) fn end(session: u64, end: End) -> bool {
        with_host(|host| {
            let Some(state) = host.sessions.get_mut(&session).filter(|s| s.connected) else {
                return false;
            };
            state.connected = false;
            state.end = Some(end);
            for members in host.groups.values_mut() {
                members.retain(|member| *member != session);
            }
            true
        })
    }

    pub(crate) fn ended(session: u64) -> Option<End> {
        with_host(|host| host.sessions.get(&session).and_then(|s| s.end.clone()))
    }

    pub(crate) fn take_pushes(session: u64) -> Vec<Push> {
        with_host(|host| {
            host.sessions
                .get_mut(&session)
                .map(|session| std::mem::take(&mut session.pushes))
                .unwrap_or_default()
        })
    }

    pub(crate) fn take_ended() -> Vec<u64> {
        with_host(|host| std::mem::take(&mut host.ended))
    }

    pub(crate) fn take_logs() -> Vec<(Level, String)> {
        with_host(|host| std::mem::take(&mut host.logs))
    }

    pub(crate) fn address_of(session: u64) -> SocketAddr {
        let port = u16::try_from(40_000 + session).unwrap_or(u16::MAX);
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    // The `session` interface.

    pub(crate) fn uid(session: u64) -> Option<String> {
        with_readable(session, |session| session.uid.clone()).flatten()
    }

    /// Binds as the host does by default: another session holding the uid is kicked.
    pub(crate) fn bind(session: u64, uid: &str) -> Result<(), BindError> {
        if uid.is_empty() {
            return Err(BindError::InvalidUid);
        }
        let bound = with_connected(session, |session| match &session.uid {
            Some(bound) if bound != uid => Err(BindError::AlreadyBound(bound.clone())),
            _ => {
                session.uid = Some(uid.to_string());
                Ok(())
            }
        })
        .unwrap_or(Err(BindError::SessionClosed));
        if bound.is_ok() {
            let older = with_host(|host| {
                host.sessions
                    .iter()
                    .filter(|(id, s)| **id != session && s.connected)
                    .filter(|(_, s)| s.uid.as_deref() == Some(uid))
                    .map(|(id, _)| *id)
                    .collect::<Vec<u64>>()
            });
            for older in older {
                kick(older, None);
            }
        }
        bound
    }

    pub(crate) fn get(session: u64, key: &str) -> Option<String> {
        with_readable(session, |session| session.data.get(key).cloned()).flatten()
    }

    pub(crate) fn set(session: u64, key: &str, value: &str) {
        with_connected(session, |session| {
            session.data.insert(key.to_string(), value.to_string())
        });
    }

    pub(crate) fn remove(session: u64, key: &str) {
        with_connected(session, |session| session.data.remove(key));
    }

    pub(crate) fn push(session: u64, route: &str, payload: &[u8]) -> bool {
        with_connected(session, |session| {
            session.pushes.push(Push {
                route: route.to_string(),
                payload: payload.to_vec(),
            })
        })
        .is_some()
    }

    pub(crate) fn kick(session: u64, reason: Option<&str>) {
        if end(session, End::Kicked(reason.map(str::to_string))) {
            with_host(|host| host.ended.push(session));
        }
    }

    pub(crate) fn close(session: u64) {
        if end(session, End::Closed) {
            with_host(|host| host.ended.push(session));
        }
    }

    pub(crate) fn is_connected(session: u64) -> bool {
        with_connected(session, |_| ()).is_some()
    }

    pub(crate) fn remote_address(session: u64) -> Option<String> {
        with_readable(session, |_| ())?;
        Some(address_of(session).to_string())
    }

    pub(crate) fn handshake(session: u64) -> Option<String> {
        with_readable(session, |session| session.handshake.clone())
    }

    // The `groups` interface.

    pub(crate) fn group_create(group: &str) -> bool {
        with_host(|host| {
            if host.groups.contains_key(group) {
                return false;
            }
            host.groups.insert(group.to_string(), Vec::new());
            true
        })
    }

    pub(crate) fn group_delete(group: &str) -> bool {
        with_host(|host| host.groups.remove(group).is_some())
    }

    pub(crate) fn group_add(group: &str, session: u64) -> bool {
        if !is_connected(session) {
            return false;
        }
        with_host(|host| {
            let members = host.groups.entry(group.to_string()).or_default();
            if !members.contains(&session) {
                members.push(session);
            }
            true
        })
    }

    pub(crate) fn group_remove(group: &str, session: u64) -> bool {
        with_host(|host| {
            let Some(members) = host.groups.get_mut(group) else {
                return false;
            };
            let before = members.len();
            members.retain(|member| *member != session);
            members.len() != before
        })
    }

    pub(crate) fn group_contains(group: &str, session: u64) -> bool {
        with_host(|host| host.groups.get(group).is_some_and(|m| m.contains(&session)))
    }

    pub(crate) fn group_members(group: &str) -> Vec<u64> {
        with_host(|host| host.groups.get(group).cloned().unwrap_or_default())
    }

    pub(crate) fn group_count(group: &str) -> u32 {
        let count = with_host(|host| host.groups.get(group).map_or(0, Vec::len));
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    pub(crate) fn group_names() -> Vec<String> {
        with_host(|host| host.groups.keys().cloned().collect())
    }

    pub(crate) fn group_broadcast(
        group: &str,
        route: &str,
        payload: &[u8],
        except: Option<u64>,
    ) -> u32 {
        let queued = group_members(group)
            .into_iter()
            .filter(|member| Some(*member) != except)
            .filter(|member| push(*member, route, payload))
            .count();
        u32::try_from(queued).unwrap_or(u32::MAX)
    }

    // The `users` interface.

    pub(crate) fn user_session(uid: &str) -> Option<u64> {
        with_host(|host| {
            host.sessions
                .iter()
                .rev()
                .find(|(_, s)| s.connected && s.uid.as_deref() == Some(uid))
                .map(|(id, _)| *id)
        })
    }

    pub(crate) fn user_push(uids: &[String], route: &str, payload: &[u8]) -> Vec<String> {
        uids.iter()
            .filter(|uid| !user_session(uid).is_some_and(|session| push(session, route, payload)))
            .cloned()
            .collect()
    }

    pub(crate) fn user_kick(uid: &str, reason: Option<&str>) -> bool {
        match user_session(uid) {
            Some(session) => {
                kick(session, reason);
                true
            }
            None => false,
        }
    }

    // The `cluster` interface.

    pub(crate) fn cluster_server() -> Option<(String, String)> {
        with_host(|host| host.cluster.clone())
    }

    pub(crate) fn cluster_rpc(route: &str, payload: &[u8]) -> Result<Vec<u8>, crate::HandlerError> {
        with_host(|host| {
            host.rpc_calls.push((route.to_owned(), payload.to_vec()));
            match (&host.cluster, host.rpc_answers.get(route)) {
                (Some(_), Some(answer)) => answer.clone(),
                (Some(_), None) => Err(crate::HandlerError::new(
                    "PIT-404",
                    format!("pitaya/handler: {route} not found"),
                )),
                (None, _) => Err(crate::HandlerError::new(
                    "PIT-500",
                    "pitaya/remote: this host is not in a cluster",
                )),
            }
        })
    }

    pub(crate) fn join_cluster(server_type: &str, id: &str) {
        with_host(|host| host.cluster = Some((server_type.to_owned(), id.to_owned())));
    }

    pub(crate) fn answer_rpc(route: &str, answer: Result<Vec<u8>, crate::HandlerError>) {
        with_host(|host| {
            host.rpc_answers.insert(route.to_owned(), answer);
        });
    }

    pub(crate) fn take_rpc_calls() -> Vec<(String, Vec<u8>)> {
        with_host(|host| std::mem::take(&mut host.rpc_calls))
    }

    // The `timers` interface.

    fn start_timer(delay: u64, period: Option<u64>) -> u64 {
        with_host(|host| {
            host.last_timer += 1;
            let due = host.now.saturating_add(delay);
            host.timers.insert(host.last_timer, Timer { period, due });
            host.last_timer
        })
    }

    pub(crate) fn timer_after(ms: u32) -> u64 {
        start_timer(u64::from(ms), None)
    }

    pub(crate) fn timer_every(ms: u32) -> u64 {
        let period = u64::from(ms.max(1));
        start_timer(period, Some(period))
    }

    pub(crate) fn timer_cancel(timer: u64) -> bool {
        with_host(|host| host.timers.remove(&timer).is_some())
    }

    pub(crate) fn timer_ids() -> Vec<u64> {
        with_host(|host| host.timers.keys().copied().collect())
    }

    /// Stops the timers `which` picks (those of an instance that was replaced).
    pub(crate) fn cancel_timers(which: impl Fn(u64) -> bool) {
        with_host(|host| host.timers.retain(|timer, _| !which(*timer)));
    }

    pub(crate) fn active_timers() -> Vec<ActiveTimer> {
        with_host(|host| {
            host.timers
                .iter()
                .map(|(id, timer)| ActiveTimer {
                    id: TimerId(*id),
                    period: timer.period.map(Duration::from_millis),
                    due_in: Duration::from_millis(timer.due.saturating_sub(host.now)),
                })
                .collect()
        })
    }

    /// Takes a fire of the timer now: a one-shot timer finishes, a repeating one is due a
    /// period from now. `false` if it is not active.
    pub(crate) fn take_fire(timer: u64) -> bool {
        with_host(|host| {
            let now = host.now;
            match host.timers.get_mut(&timer) {
                None => false,
                Some(Timer {
                    period: Some(period),
                    due,
                }) => {
                    *due = now.saturating_add(*period);
                    true
                }
                Some(Timer { period: None, .. }) => {
                    host.timers.remove(&timer);
                    true
                }
            }
        })
    }

    /// The next timer due at or before `until` (the earliest; the lowest id among equals):
    /// the clock moves to its due time and its fire is taken, at a fixed rate.
    pub(crate) fn next_due(until: u64) -> Option<u64> {
        with_host(|host| {
            let (id, due) = host
                .timers
                .iter()
                .map(|(id, timer)| (*id, timer.due))
                .filter(|(_, due)| *due <= until)
                .min_by_key(|(id, due)| (*due, *id))?;
            host.now = host.now.max(due);
            match host.timers.get_mut(&id) {
                Some(Timer {
                    period: Some(period),
                    due,
                }) => *due = due.saturating_add(*period),
                _ => {
                    host.timers.remove(&id);
                }
            }
            Some(id)
        })
    }

    pub(crate) fn now() -> u64 {
        with_host(|host| host.now)
    }

    pub(crate) fn set_now(now: u64) {
        with_host(|host| host.now = host.now.max(now));
    }

    // The `log` interface.

    pub(crate) fn log(level: Level, message: &str) {
        // Also on stderr, which the test harness captures and shows for failing tests.
        eprintln!("[{level}] {message}");
        with_host(|host| host.logs.push((level, message.to_string())));
    }
}
