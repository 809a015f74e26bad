//! A host in memory, so components can be unit-tested natively with `cargo test`.
//!
//! On targets other than WebAssembly the SDK's session and log functions talk to this fake
//! host instead of the real one. [`TestHost`] drives a component through the same code path
//! the real host uses (init, handle, session-closed) and lets a test connect sessions, send
//! requests and notifies, and look at what was pushed, bound, stored, kicked and logged.
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
//! The fake host's state, like the component's, is per thread: each `#[test]` (which runs on
//! a thread of its own) starts from nothing, and [`TestHost::new`] resets both.

use std::marker::PhantomData;

use crate::log::Level;
use crate::{Component, HandlerError, HandlerKind, SessionId, runtime};

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
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.payload) {
            Ok(value) => value,
            Err(error) => panic!("push {:?} is not JSON: {error}", self.route),
        }
    }
}

/// A component running on the fake host, for tests. See the [module docs](self).
///
/// It is tied to the thread that made it (the fake host lives in thread-local storage).
pub struct TestHost<C: Component> {
    /// It drives a `C` without owning one (the instance lives in the runtime's slot).
    _component: PhantomData<fn() -> C>,
    /// Not `Send`: the fake host and the instance are thread-local.
    _thread: PhantomData<*const ()>,
}

impl<C: Component> TestHost<C> {
    /// Starts the component with an empty configuration, as the host does when none is given.
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
        fake::reset();
        runtime::reset();
        runtime::init::<C>(config.into())?;
        Ok(TestHost {
            _component: PhantomData,
            _thread: PhantomData,
        })
    }

    /// Connects a new session and returns its id (ids count up from 1).
    pub fn connect(&mut self) -> SessionId {
        SessionId(fake::connect())
    }

    /// Sends a request to the handler named `handler` and returns its response.
    ///
    /// As the real host does, a request to a notify handler is refused with `PIT-400`. Sessions
    /// kicked during the call are closed after it, and the component hears of it.
    pub fn request(
        &mut self,
        session: SessionId,
        handler: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<Vec<u8>, HandlerError> {
        let is_notify = C::HANDLERS
            .iter()
            .any(|info| info.name == handler && info.kind == HandlerKind::Notify);
        if is_notify {
            return Err(HandlerError::bad_request(format!(
                "{}.{handler} is a notify handler",
                C::NAME
            )));
        }
        let result = runtime::handle::<C>(session, handler, payload.as_ref().to_vec());
        self.close_kicked();
        result
    }

    /// Sends a notify to the handler named `handler`. The real host only logs a notify's
    /// error; here it is returned so a test can check it.
    pub fn notify(
        &mut self,
        session: SessionId,
        handler: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), HandlerError> {
        let result = runtime::handle::<C>(session, handler, payload.as_ref().to_vec());
        self.close_kicked();
        result.map(drop)
    }

    /// Closes the session (the client went away) and tells the component.
    pub fn close(&mut self, session: SessionId) {
        fake::disconnect(session.0);
        runtime::session_closed::<C>(session);
    }

    /// Closes the session without telling the component yet, as when a client goes away
    /// while the component is busy: the component finds out through failed pushes and
    /// `is_connected`.
    pub fn disconnect(&mut self, session: SessionId) {
        fake::disconnect(session.0);
    }

    /// The messages pushed to the session since the last call, oldest first.
    pub fn take_pushes(&mut self, session: SessionId) -> Vec<Push> {
        fake::take_pushes(session.0)
    }

    /// The uid bound to the session.
    pub fn uid(&self, session: SessionId) -> Option<String> {
        fake::uid(session.0)
    }

    /// A session data value, as the text stored.
    pub fn data(&self, session: SessionId, key: &str) -> Option<String> {
        fake::get(session.0, key)
    }

    /// Whether the component kicked the session.
    pub fn was_kicked(&self, session: SessionId) -> bool {
        fake::was_kicked(session.0)
    }

    /// Whether the session is connected.
    pub fn is_connected(&self, session: SessionId) -> bool {
        fake::is_connected(session.0)
    }

    /// The lines logged since the last call, oldest first.
    pub fn take_logs(&mut self) -> Vec<(Level, String)> {
        fake::take_logs()
    }

    fn close_kicked(&mut self) {
        for session in fake::take_kicked() {
            runtime::session_closed::<C>(SessionId(session));
        }
    }
}

/// The fake host's state and its implementation of the host functions.
pub(crate) mod fake {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::Push;
    use crate::BindError;
    use crate::log::Level;

    #[derive(Default)]
    struct Host {
        last_session: u64,
        sessions: BTreeMap<u64, Session>,
        logs: Vec<(Level, String)>,
        // Sessions kicked during the current call: the test host closes them after it, as the
        // real host does (it never re-enters a component mid-call).
        kicked: Vec<u64>,
    }

    #[derive(Default)]
    struct Session {
        connected: bool,
        kicked: bool,
        uid: Option<String>,
        data: BTreeMap<String, String>,
        pushes: Vec<Push>,
    }

    thread_local! {
        static HOST: RefCell<Host> = RefCell::new(Host::default());
    }

    fn with_host<R>(f: impl FnOnce(&mut Host) -> R) -> R {
        HOST.with(|host| f(&mut host.borrow_mut()))
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

    pub(crate) fn connect() -> u64 {
        with_host(|host| {
            host.last_session += 1;
            let session = Session {
                connected: true,
                ..Session::default()
            };
            host.sessions.insert(host.last_session, session);
            host.last_session
        })
    }

    pub(crate) fn disconnect(session: u64) {
        with_connected(session, |session| session.connected = false);
    }

    pub(crate) fn take_pushes(session: u64) -> Vec<Push> {
        with_host(|host| {
            host.sessions
                .get_mut(&session)
                .map(|session| std::mem::take(&mut session.pushes))
                .unwrap_or_default()
        })
    }

    pub(crate) fn was_kicked(session: u64) -> bool {
        with_host(|host| host.sessions.get(&session).is_some_and(|s| s.kicked))
    }

    pub(crate) fn take_kicked() -> Vec<u64> {
        with_host(|host| std::mem::take(&mut host.kicked))
    }

    pub(crate) fn take_logs() -> Vec<(Level, String)> {
        with_host(|host| std::mem::take(&mut host.logs))
    }

    pub(crate) fn uid(session: u64) -> Option<String> {
        with_connected(session, |session| session.uid.clone()).flatten()
    }

    pub(crate) fn bind(session: u64, uid: &str) -> Result<(), BindError> {
        if uid.is_empty() {
            return Err(BindError::InvalidUid);
        }
        with_connected(session, |session| match &session.uid {
            Some(bound) if bound != uid => Err(BindError::AlreadyBound(bound.clone())),
            _ => {
                session.uid = Some(uid.to_string());
                Ok(())
            }
        })
        .unwrap_or(Err(BindError::SessionClosed))
    }

    pub(crate) fn get(session: u64, key: &str) -> Option<String> {
        with_connected(session, |session| session.data.get(key).cloned()).flatten()
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

    pub(crate) fn kick(session: u64) {
        let kicked = with_connected(session, |session| {
            session.connected = false;
            session.kicked = true;
        });
        if kicked.is_some() {
            with_host(|host| host.kicked.push(session));
        }
    }

    pub(crate) fn is_connected(session: u64) -> bool {
        with_connected(session, |_| ()).is_some()
    }

    pub(crate) fn log(level: Level, message: &str) {
        // Also on stderr, which the test harness captures and shows for failing tests.
        eprintln!("[{level}] {message}");
        with_host(|host| host.logs.push((level, message.to_string())));
    }
}
