//! The wasmtime side: compiles components, keeps one or more long-lived instances per component,
//! runs calls into each one at a time, and swaps in new builds.
//!
//! Each instance sits behind an async mutex (its shard), so calls into it are serialized (an
//! actor without a thread of its own) and a caller waiting its turn holds no thread. A call runs
//! on the thread of the task that asked for it, with wasmtime's async API: the guest runs on a
//! fiber, and at every epoch tick a running call yields to the async runtime, so the other tasks
//! of its thread run between the slices of a component that spins, until its deadline stops it.
//! Nothing else blocks: the host functions that wait (a bind on a remote session, an RPC) are
//! async. Once started, a call runs to its end even if its caller stops
//! waiting (`to_the_end`), so an instance is never left in the middle of a call. A component
//! with several instances (shards) sends each session's calls to one of them, chosen by session
//! id, so that session's calls stay in order and meet the same memory.

mod bindings;
mod cache;
mod host_cluster;
mod host_groups;
mod host_log;
mod host_session;
mod host_timers;
mod host_users;
mod instance;
mod pace;
#[cfg(feature = "stand-in")]
mod stand_in;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use pitaya_protocol::{EncodeOptions, RouteDict};
use tokio::sync::oneshot;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::group::Groups;
use crate::session::{Registry, Session, SessionId};
use crate::striped::ReadMostly;
use bindings::Game;
pub use bindings::HandlerKind;
use cache::CompileCache;
pub use cache::default_dir as default_cache_dir;
use instance::{HostState, Instance};
pub use pace::{DEFAULT_TIMER_FIRES, MAX_TIMER_FIRES};

/// How often running guest code checks its call deadline.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The name a component goes by until its `info` has said its real one.
pub(crate) const PROVISIONAL_NAME: &str = "?";

/// Limits applied to a component's instances.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of one call into a component.
    pub call_timeout: Duration,
    /// Cap on one instance's linear memory, in bytes.
    pub max_memory: usize,
    /// Fuel (roughly, wasm instructions) one call may burn, for deterministic budgets. None
    /// leaves only the wall-clock deadline.
    pub fuel: Option<u64>,
    /// Timer fires one instance may take a second; later fires wait their turn.
    pub timer_fires: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(1),
            max_memory: 64 << 20,
            fuel: None,
            timer_fires: DEFAULT_TIMER_FIRES,
        }
    }
}

/// What a component may reach beyond the host's own interfaces. Nothing is granted unless
/// asked for: no files and no network ever, no environment, and a clock frozen at the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The real wall and monotonic clocks.
    pub clock: bool,
    /// The host's stdout and stderr (otherwise a component's prints go nowhere).
    pub stdio: bool,
    /// Environment variables the component sees.
    pub env: Vec<(String, String)>,
}

/// Most instances one component may ask for: each is a store with its own memory,
/// so a typo such as `instances = 2000` must not exhaust the machine.
pub const MAX_INSTANCES: usize = 256;

/// How one component is served: its configuration, limits, grants and number of instances.
#[derive(Debug, Clone)]
pub struct ComponentOptions {
    /// Bytes passed to the component's `init`.
    pub config: Vec<u8>,
    /// Its limits.
    pub limits: Limits,
    /// Its capabilities.
    pub grants: Grants,
    /// How many instances serve it, each called one call at a time, sessions shared out by id
    /// (1 to [`MAX_INSTANCES`]; out-of-range values are clamped).
    pub instances: usize,
}

impl Default for ComponentOptions {
    fn default() -> Self {
        Self {
            config: Vec::new(),
            limits: Limits::default(),
            grants: Grants::default(),
            instances: 1,
        }
    }
}

/// One change to a component's options, given on the command line for its name; it applies
/// on top of the component's file settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tweak {
    /// `--limit NAME=call-timeout-ms:MS`.
    CallTimeout(Duration),
    /// `--limit NAME=max-memory-mib:MIB`, in bytes.
    MaxMemory(usize),
    /// `--limit NAME=fuel:UNITS`.
    Fuel(u64),
    /// `--grant NAME=clock`.
    Clock,
    /// `--grant NAME=stdio`.
    Stdio,
    /// `--grant NAME=env:KEY=VALUE`.
    Env(String, String),
    /// `--init NAME=VALUE`.
    Init(Vec<u8>),
    /// `--limit NAME=instances:N`.
    Instances(usize),
    /// `--limit NAME=timer-fires:N`.
    TimerFires(u32),
}

impl Tweak {
    /// The command-line option that gives it.
    pub fn option(&self) -> &'static str {
        match self {
            Tweak::CallTimeout(_)
            | Tweak::MaxMemory(_)
            | Tweak::Fuel(_)
            | Tweak::Instances(_)
            | Tweak::TimerFires(_) => "--limit",
            Tweak::Clock | Tweak::Stdio | Tweak::Env(..) => "--grant",
            Tweak::Init(_) => "--init",
        }
    }
}

impl ComponentOptions {
    /// Applies one change.
    pub fn apply(&mut self, tweak: &Tweak) {
        match tweak {
            Tweak::CallTimeout(timeout) => self.limits.call_timeout = *timeout,
            Tweak::MaxMemory(bytes) => self.limits.max_memory = *bytes,
            Tweak::Fuel(fuel) => self.limits.fuel = Some(*fuel),
            Tweak::Clock => self.grants.clock = true,
            Tweak::Stdio => self.grants.stdio = true,
            Tweak::Env(key, value) => self.grants.env.push((key.clone(), value.clone())),
            Tweak::Init(config) => self.config = config.clone(),
            Tweak::Instances(count) => self.instances = *count,
            Tweak::TimerFires(fires) => self.limits.timer_fires = *fires,
        }
    }

    /// The number of instances to start, within 1 ..= [`MAX_INSTANCES`].
    pub(crate) fn instance_count(&self) -> usize {
        self.instances.clamp(1, MAX_INSTANCES)
    }
}

/// A component file and how it is served.
#[derive(Debug, Clone)]
pub(crate) struct ComponentSpec {
    pub(crate) path: PathBuf,
    pub(crate) options: ComponentOptions,
    /// Whether the engine meters fuel, so calls must be given some. Asking a store without
    /// metering to set fuel builds an error value, an allocation (and with `RUST_BACKTRACE`
    /// set, a backtrace) on every call.
    pub(crate) metered: bool,
}

impl ComponentSpec {
    /// The error of a component that failed to start (`info`, `init`, an instance), naming
    /// the limit it ran into where wasmtime names neither: a memory cap or a fuel budget too
    /// small for it.
    fn start_error(&self, reason: String) -> LoadError {
        let limits = &self.options.limits;
        let reason = if reason.contains("exceeds memory limits") {
            format!("{reason} (max-memory-mib is {})", limits.max_memory >> 20)
        } else if reason.contains("all fuel consumed") {
            format!("{reason} (fuel is {})", limits.fuel.unwrap_or(0))
        } else {
            reason
        };
        LoadError::Start {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read component {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is not a valid WebAssembly component, or does not fit the host's WIT world.
    #[error("invalid component {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        reason: String,
    },
    /// The component trapped or failed while starting (`info` or `init`).
    #[error("component {path} failed to start: {reason}")]
    Start {
        /// The file.
        path: PathBuf,
        /// The trap or the error `init` returned.
        reason: String,
    },
    /// The component declared a name or handler name that cannot form a route.
    #[error(
        "component {path} declares an invalid name {name:?}: names must be non-empty, at most 100 bytes, and contain no '.'"
    )]
    BadName {
        /// The file.
        path: PathBuf,
        /// The offending name.
        name: String,
    },
    /// The component declared more handlers than a component may have.
    #[error(
        "component {path} declares {count} handlers: at most {MAX_HANDLERS} (every client is sent the routes of all of them)"
    )]
    TooManyHandlers {
        /// The file.
        path: PathBuf,
        /// How many it declared.
        count: usize,
    },
    /// A new build declares another name than the one it replaces.
    #[error("component {path} is now named {new:?}, not {old:?}: a reload keeps the name")]
    Renamed {
        /// The file.
        path: PathBuf,
        /// The name served so far.
        old: String,
        /// The new build's name.
        new: String,
    },
    /// The new build refused the state of the old one.
    #[error("component {path} refused the state of its previous build: {reason}")]
    Handover {
        /// The file.
        path: PathBuf,
        /// What `import-state` returned.
        reason: String,
    },
    /// The engine could not be created.
    #[error("cannot configure wasmtime: {0}")]
    Engine(String),
}

/// Why a call did not produce a handler result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The component trapped (panic, unreachable, out-of-bounds access, stack overflow,
    /// memory exhausted).
    #[error("component trapped")]
    Trap,
    /// The call ran past its deadline or its fuel.
    #[error("component timed out")]
    Timeout,
    /// The component has no working instance (it failed to restart).
    #[error("component unavailable")]
    Unavailable,
    /// The running build has no such handler: the call raced a reload to a build without it.
    #[error("handler not in the running build")]
    NoHandler,
}

/// A handler's error, as the component returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// The component's code, such as `ROOM-FULL`.
    pub code: String,
    /// A message for the client.
    pub message: String,
    /// Extra key/value pairs for the client.
    pub metadata: Vec<(String, String)>,
}

/// What one call into a component produced.
pub type CallResult = Result<Result<Vec<u8>, HandlerError>, CallFailure>;

/// A handler a component serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    /// Its name, the last part of the route.
    pub name: String,
    /// Request or notify.
    pub kind: HandlerKind,
}

/// What a component declares about itself.
#[derive(Debug, Clone)]
pub(crate) struct Declared {
    pub(crate) name: String,
    pub(crate) handlers: Vec<HandlerSpec>,
    pub(crate) validates_handshake: bool,
}

/// Most handlers one component may declare: the handshake offers every route, in two forms, to
/// every client that connects.
pub const MAX_HANDLERS: usize = 1024;

/// Longest component or handler name, in bytes: a route, with a server type before it, must
/// fit the one byte that gives its length on the wire (255).
pub const MAX_NAME: usize = 100;

impl Declared {
    /// Refuses what cannot be served: a name that cannot form a route, or too many handlers.
    fn check(&self, path: &std::path::Path) -> Result<(), LoadError> {
        if self.handlers.len() > MAX_HANDLERS {
            return Err(LoadError::TooManyHandlers {
                path: path.to_owned(),
                count: self.handlers.len(),
            });
        }
        match std::iter::once(&self.name)
            .chain(self.handlers.iter().map(|h| &h.name))
            .find(|name| name.is_empty() || name.len() > MAX_NAME || name.contains('.'))
        {
            Some(name) => Err(LoadError::BadName {
                path: path.to_owned(),
                name: crate::clip(name, MAX_NAME).into_owned(),
            }),
            None => Ok(()),
        }
    }
}

/// One instance of a component behind the lock that serializes calls into it. The lock is
/// fair, so calls run in the order they asked; a restart or a reload replaces the instance in
/// place, so the shard outlives the instances that serve it.
pub(crate) struct Shard {
    /// Empty only while the component is being loaded.
    slot: tokio::sync::Mutex<Option<instance::Instance>>,
    /// The instance's timer-fire budget, which outlives restarts and reloads as the shard does.
    pub(crate) timer_pace: pace::Pace,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").finish_non_exhaustive()
    }
}

impl Shard {
    /// Waits for the instance. A free lock is taken without awaiting: tokio's `lock` spends a
    /// unit of the task's cooperative budget even then, and the connection's loop, which runs
    /// many requests per poll when they come pipelined, has better uses for it. A waiting caller
    /// still queues fairly: the lock is handed to waiters in order, so `try_lock` never jumps
    /// the queue.
    async fn lock(&self) -> tokio::sync::MutexGuard<'_, Option<instance::Instance>> {
        match self.slot.try_lock() {
            Ok(slot) => slot,
            Err(_) => self.slot.lock().await,
        }
    }

    fn empty(timer_fires: u32) -> Arc<Self> {
        Arc::new(Self {
            slot: tokio::sync::Mutex::new(None),
            timer_pace: pace::Pace::new(timer_fires),
        })
    }

    /// Runs a handler in the instance, once the calls before it are done.
    async fn call(&self, session: SessionId, handler: &str, payload: &[u8]) -> CallResult {
        #[cfg(feature = "stand-in")]
        if let Some(result) = stand_in::call(self, payload).await {
            return result;
        }
        match self.lock().await.as_mut() {
            Some(instance) => instance.handle(session, handler, payload).await,
            None => Err(CallFailure::Unavailable),
        }
    }

    /// Fires timer `timer` into the instance; false if the instance does not know it.
    pub(crate) async fn fire(self: Arc<Self>, timer: u64) -> bool {
        to_the_end(async move {
            match self.lock().await.as_mut() {
                Some(instance) => instance.timer(timer).await,
                None => false,
            }
        })
        .await
    }
}

/// Runs `call` to its end even if the caller stops waiting for it: dropped before it is done
/// (its connection closed, a timeout around it fired), the rest of it is spawned on the async
/// runtime. A call into a component must not stop half-way, with the instance in the middle of
/// changing its own memory and holding its lock.
pub(crate) fn to_the_end<F>(call: F) -> ToTheEnd<F>
where
    F: Future + Send + 'static,
{
    ToTheEnd {
        call: Some(Box::pin(call)),
        running: true,
    }
}

/// The future [`to_the_end`] returns. A connection keeps one for all its calls, one at a time
/// ([`Self::start`]): each call is written into the allocation of the one before, since a box
/// per request is a measurable part of a request's cost.
pub(crate) struct ToTheEnd<F: Future + Send + 'static> {
    call: Option<Pin<Box<F>>>,
    /// Whether `call` holds a call not yet finished (else it is spent, or there is none).
    running: bool,
}

impl<F: Future + Send + 'static> ToTheEnd<F> {
    /// No call yet.
    pub(crate) fn idle() -> Self {
        Self {
            call: None,
            running: false,
        }
    }

    /// Whether a call is under way.
    pub(crate) fn is_running(&self) -> bool {
        self.running
    }

    /// Starts `call`, in the allocation of the last one when that has finished.
    pub(crate) fn start(&mut self, call: F) {
        match self.call.as_mut() {
            Some(spent) if !self.running => {
                spent.set(call);
                self.running = true;
            }
            // Nothing to reuse, or (a caller's bug) a call still running: the old value is
            // dropped, which runs such a call to its end on its own.
            _ => *self = to_the_end(call),
        }
    }

    /// Gives the allocation back while no call runs (an idle connection keeps none).
    pub(crate) fn release(&mut self) {
        if !self.running {
            self.call = None;
        }
    }
}

impl<F: Future + Send + 'static> Future for ToTheEnd<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let Some(call) = this.call.as_mut().filter(|_| this.running) else {
            // Polled with no call under way: a caller's bug, but nothing to run.
            return Poll::Pending;
        };
        let output = std::task::ready!(call.as_mut().poll(cx));
        this.running = false;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for ToTheEnd<F> {
    fn drop(&mut self) {
        if self.running
            && let Some(call) = self.call.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                call.await;
            });
        }
    }
}

/// Timers an instance has set, by id, so they can be cancelled, and all at once when the
/// instance goes (a fresh instance sets its own in `init`).
#[derive(Debug, Default)]
pub(crate) struct Timers {
    running: Mutex<HashMap<u64, TimerEntry>>,
}

/// A running timer task.
#[derive(Debug)]
pub(crate) struct TimerEntry {
    /// Dropping it tells the task to stop.
    pub(crate) _stop: oneshot::Sender<()>,
    /// A one-shot timer is forgotten once it fires.
    pub(crate) once: bool,
}

impl Timers {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TimerEntry>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn cancel_all(&self) {
        self.lock().clear();
    }

    /// Whether a fired timer is still this instance's; a one-shot is removed as it fires.
    pub(crate) fn fired(&self, timer: u64) -> bool {
        let mut running = self.lock();
        match running.get(&timer) {
            Some(entry) if entry.once => running.remove(&timer).is_some(),
            Some(_) => true,
            None => false,
        }
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// What the instances of one component share across restarts and reloads.
#[derive(Debug)]
pub(crate) struct ComponentShared {
    pub(crate) name: Arc<str>,
    /// Timer ids stay unique across instances, so a late fire of an old timer is recognisably
    /// not one of the new instance's, and no two shards hand out the same id.
    pub(crate) next_timer: AtomicU64,
    /// What the component's own log lines may take of the host's log.
    pub(crate) logs: host_log::LogBudget,
    /// What the host's lines about the component's failures may take of it.
    pub(crate) failures: host_log::LogBudget,
}

impl ComponentShared {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: Arc::from(name),
            next_timer: AtomicU64::new(1),
            logs: host_log::LogBudget::new(host_log::LogBudget::LINES),
            failures: host_log::LogBudget::new(host_log::LogBudget::FAILURES),
        })
    }
}

/// Longest reason a kick or a handshake refusal carries to the client, in bytes; the rest is
/// cut. A component chooses it, and it must not cost the host or the client megabytes.
pub const MAX_REASON: usize = 1024;

/// What host functions reach: sessions, groups, how to encode pushes and kicks.
#[derive(Debug)]
pub struct HostContext {
    /// All connected sessions.
    pub registry: Arc<Registry>,
    /// All groups.
    pub groups: Groups,
    /// Options for encoding pushes.
    pub encode: EncodeOptions,
    /// Whether payloads are JSON (`--serializer json`): an empty push then goes out as `{}`,
    /// since libpitaya drops a push with an empty payload without a word (protocol.md §7).
    pub json_payloads: bool,
    /// The route dictionary, set once every component is loaded (coded push routes use it).
    pub dict: OnceLock<Arc<RouteDict>>,
    /// Whether kicks carry `{"reason":...}` (pomelo clients) or nothing (pitaya clients).
    pub kick_reasons: bool,
    /// Whether binding a uid held by another session fails instead of kicking that session.
    pub refuse_duplicate_login: bool,
    /// Largest payload a component may answer or push.
    pub max_payload: usize,
    /// The async runtime, where timers run.
    pub runtime: tokio::runtime::Handle,
    /// Counters and gauges.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This host's seat in a cluster, set once it has joined one.
    pub cluster: OnceLock<Arc<crate::cluster::Cluster>>,
}

impl HostContext {
    /// A context for calling instances without a server (benches, tests): an empty registry,
    /// JSON payloads, uncompressed pushes, an empty route dictionary, a 1 MiB payload limit, no
    /// cluster.
    #[doc(hidden)]
    pub fn detached(runtime: tokio::runtime::Handle) -> Self {
        Self {
            registry: Arc::new(Registry::default()),
            groups: Groups::default(),
            encode: EncodeOptions {
                compress: false,
                push_route_codes: false,
            },
            json_payloads: true,
            dict: OnceLock::from(Arc::new(RouteDict::default())),
            kick_reasons: false,
            refuse_duplicate_login: false,
            max_payload: 1 << 20,
            runtime,
            metrics: Arc::new(crate::metrics::Metrics::default()),
            cluster: OnceLock::new(),
        }
    }

    /// Encodes a push packet (with a coded route when configured and known), refusing a
    /// payload over the size limit.
    pub fn encode_push(&self, route: &str, payload: &[u8]) -> Result<Bytes, String> {
        if payload.len() > self.max_payload {
            return Err(format!(
                "payload of {} bytes is over the limit of {}",
                payload.len(),
                self.max_payload
            ));
        }
        let payload = if payload.is_empty() && self.json_payloads {
            b"{}"
        } else {
            payload
        };
        let empty = RouteDict::default();
        let dict = self.dict.get().map_or(&empty, |dict| dict);
        let mut packet = bytes::BytesMut::new();
        pitaya_protocol::encode_push(route, payload, dict, &self.encode, &mut packet)
            .map_err(|error| error.to_string())?;
        Ok(packet.freeze())
    }

    /// The cluster, when this host is in one.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// The Kick packet for `reason`, with a body only when kick reasons are on: then `{}` for a
    /// kick without one, as pomelo sends, whose web client parses every kick's body as JSON.
    pub fn kick_packet(&self, reason: Option<&str>) -> Bytes {
        if !self.kick_reasons {
            return pitaya_protocol::kick_packet(None);
        }
        match reason {
            Some(reason) => pitaya_protocol::kick_packet(Some(&crate::clip(reason, MAX_REASON))),
            None => pitaya_protocol::kick_packet_without_reason(),
        }
    }
}

/// A loaded component: what it serves and its instances.
#[derive(Debug)]
pub struct ComponentHandle {
    shared: Arc<ComponentShared>,
    /// One per instance, never empty.
    shards: Vec<Arc<Shard>>,
    /// Replaced by a reload. Read for every request (the handler's kind): a copy per thread.
    declared: ReadMostly<Declared>,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Its position in load order.
    pub index: usize,
    spec: ComponentSpec,
}

impl ComponentHandle {
    /// The component's name, the component part of its routes.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its handlers, as declared by `info`.
    pub fn handlers(&self) -> Vec<HandlerSpec> {
        self.declared.read().handlers.clone()
    }

    /// The kind of handler `name`, if the component serves it.
    pub fn handler_kind(&self, name: &str) -> Option<HandlerKind> {
        self.declared
            .read()
            .handlers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.kind)
    }

    /// Whether the component wants to validate handshakes.
    pub fn validates_handshake(&self) -> bool {
        self.declared.read().validates_handshake
    }

    /// The shard that serves `session`. Ids are handed out in sequence, so the remainder
    /// spreads sessions evenly, and it never changes while the session lives.
    fn shard(&self, session: SessionId) -> Arc<Shard> {
        self.shards[self.shard_index(session)].clone()
    }

    fn shard_index(&self, session: SessionId) -> usize {
        let count = self.shards.len() as u64;
        // `shards` is never empty and its length fits in usize, so the index does too.
        (session % count.max(1)) as usize
    }

    /// Calls `handler` for `session` and waits for the result.
    pub async fn call(&self, session: SessionId, handler: String, payload: Bytes) -> CallResult {
        let shard = self.shard(session);
        to_the_end(async move { shard.call(session, &handler, &payload).await }).await
    }

    /// [`Self::call`] without its own [`to_the_end`]: the caller runs the returned future to
    /// its end, inside a `to_the_end` of its own or in a task that nothing aborts. A
    /// connection's dispatch does, and saves a copy of the handler name and an allocation
    /// per request.
    pub(crate) async fn call_in_place(
        &self,
        session: SessionId,
        handler: &str,
        payload: &[u8],
    ) -> CallResult {
        self.shards[self.shard_index(session)]
            .call(session, handler, payload)
            .await
    }

    /// Asks the component whether to accept a client's handshake (JSON).
    pub async fn validate(&self, session: SessionId, handshake: String) -> Result<(), String> {
        let shard = self.shard(session);
        to_the_end(async move {
            match shard.lock().await.as_mut() {
                Some(instance) => instance.validate(session, &handshake).await,
                None => Err("component unavailable".into()),
            }
        })
        .await
    }

    /// Tells the component that a session it has seen has closed: the one instance that
    /// served the session hears of it, and may still read the session's uid and data while it
    /// does (the session is gone from the registry by then).
    pub async fn session_closed(&self, session: &Arc<Session>) {
        let shard = self.shard(session.id());
        let session = session.clone();
        to_the_end(async move {
            if let Some(instance) = shard.lock().await.as_mut() {
                instance.session_closed(&session).await;
            }
        })
        .await;
    }

    /// How many instances serve the component.
    pub fn instances(&self) -> usize {
        self.shards.len()
    }

    /// Cancels the component's timers and runs its shutdown hook after the calls already
    /// waiting, in every instance at once; then drops the instances, so that nothing runs in
    /// them after the hook (the WIT's promise): a later call finds the component unavailable.
    pub async fn shutdown(&self) {
        let hooks = self.shards.iter().cloned().map(|shard| {
            to_the_end(async move {
                let mut slot = shard.lock().await;
                if let Some(instance) = slot.as_mut() {
                    instance.shutdown().await;
                }
                *slot = None;
            })
        });
        futures_util::future::join_all(hooks).await;
    }
}

/// Why `bytes` cannot be a component, for the two mistakes wasmtime's parser words least
/// helpfully: a file that is not WebAssembly at all, and a core module (what `cargo build`
/// makes for `wasm32-unknown-unknown`, or a build without `--target wasm32-wasip2`).
fn not_a_component(bytes: &[u8]) -> Option<&'static str> {
    // A binary's preamble: the magic, then a version and a layer (0 for a core module).
    let Some(preamble) = bytes.strip_prefix(b"\0asm") else {
        return Some("not a WebAssembly file: a .wasm file begins with the bytes \\0asm");
    };
    (preamble.get(2..4) == Some(&[0, 0])).then_some(
        "a core WebAssembly module, not a component: build it for the wasm32-wasip2 target \
         (cargo build --release --target wasm32-wasip2)",
    )
}

/// The version of the `pitaya:host` WIT package (`wit/pitaya.wit`) this host implements.
const CONTRACT_VERSION: &str = "0.2.0";

/// The `pitaya:host` version a component was built against, read from the names of its
/// imports and exports (`pitaya:host/session@0.1.0`), if it names one.
fn contract_version(component: &Component, engine: &Engine) -> Option<String> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name));
    names
        .filter(|name| name.starts_with("pitaya:host/"))
        .find_map(|name| name.split_once('@').map(|(_, version)| version.to_owned()))
}

/// Most linear memories the pool reserves address space for: each takes a few GiB of it (never
/// of memory), and a process has 128 TiB.
const MAX_POOLED_MEMORIES: usize = 4096;

/// The pooling allocator's slots for `instances` component instances alive at a time, or
/// `None` when that would reserve too much address space.
///
/// Why a pool: an instance that traps is replaced, and a fresh allocation maps its memory and
/// unmaps the old one, which is most of what a trapping request costs (docs/performance.md);
/// a pooled slot is only reset. The per-module bounds are far above what compilers emit
/// (several memories and tables, tables of a million entries, large instance state), so that
/// a component that loads without a pool loads with one; the totals allow a few memories and
/// tables, and many core instances, per component instance.
fn pool_config(instances: usize) -> Option<PoolingAllocationConfig> {
    let instances = instances.max(1);
    let memories = instances.checked_mul(8)?;
    if memories > MAX_POOLED_MEMORIES {
        return None;
    }
    let count = |n: usize| u32::try_from(n).ok();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(count(instances)?)
        .total_core_instances(count(instances * 32)?)
        .total_memories(count(memories)?)
        .total_tables(count(instances * 16)?)
        .total_stacks(count(instances * 2)?)
        .max_memories_per_module(8)
        .max_tables_per_module(16)
        .table_elements(1 << 20)
        .max_core_instance_size(64 << 20)
        .max_component_instance_size(256 << 20);
    Some(pool)
}

/// The wasmtime engine and linker shared by every component.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    context: Arc<HostContext>,
    /// Where compiled components are kept across starts, if anywhere.
    cache: Option<CompileCache>,
    /// Whether the engine meters fuel.
    metered: bool,
}

impl Runtime {
    /// Creates the engine, links the host functions and starts the epoch ticker. `fuel` turns
    /// on fuel metering, which costs every component some speed, so only when one asks for it.
    /// With `pool`, the engine keeps slots for that many component instances at a time (see
    /// `pool_config`) and reuses them; without, or when the slots cannot be reserved, each
    /// instance is allocated when it starts.
    pub fn new(
        context: Arc<HostContext>,
        fuel: bool,
        pool: Option<usize>,
    ) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        let slots = pool.and_then(pool_config);
        if slots.is_none() && pool.is_some() {
            tracing::info!(
                instances = pool,
                "too many instances to pool; they are allocated one by one"
            );
        }
        let pooled = slots.and_then(|slots| {
            let mut pooled = config.clone();
            pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(slots));
            Engine::new(&pooled)
                .inspect_err(|error| {
                    tracing::warn!(
                        %error,
                        "cannot reserve the instance pool; instances are allocated one by one"
                    )
                })
                .ok()
        });
        let engine = match pooled {
            Some(engine) => {
                tracing::info!(
                    instances = pool,
                    "instances come from a pool of reused slots"
                );
                engine
            }
            None => Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?,
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        Game::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Self {
            engine,
            linker,
            context,
            cache: None,
            metered: fuel,
        })
    }

    /// Keeps compiled components in `dir` (created when first written), so that a later start
    /// or a reload of an unchanged file loads machine code instead of compiling.
    pub fn with_cache(mut self, dir: PathBuf) -> Self {
        self.cache = Some(CompileCache::new(dir, &self.engine));
        self
    }

    /// Runs the async side of loading on the runtime, from a thread that may block.
    fn block_on<F: Future>(&self, work: F) -> F::Output {
        self.context.runtime.block_on(work)
    }

    /// Compiles a component and starts its first instance (for `shard`, index 0), up to (not
    /// including) `init`.
    async fn prepare(
        &self,
        spec: &ComponentSpec,
        shared: Arc<ComponentShared>,
        shard: Weak<Shard>,
    ) -> Result<(Instance, Declared), LoadError> {
        let path = &spec.path;
        let bytes = std::fs::read(path).map_err(|cause| LoadError::Read {
            path: path.to_owned(),
            cause,
        })?;
        if let Some(reason) = not_a_component(&bytes) {
            return Err(LoadError::Invalid {
                path: path.to_owned(),
                reason: reason.into(),
            });
        }
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            path: path.to_owned(),
            // One line: wasmtime's parser writes some of its reasons over several.
            reason: format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        };
        let component = match &self.cache {
            Some(cache) => cache.component(&self.engine, &bytes, path),
            None => Component::new(&self.engine, &bytes),
        }
        .map_err(invalid)?;
        // Checked first: wasmtime would fail on whichever import or export it meets first
        // that changed, with a message about that one function, or not until instantiation.
        if let Some(built_for) = contract_version(&component, &self.engine)
            && built_for != CONTRACT_VERSION
        {
            return Err(LoadError::Invalid {
                path: path.to_owned(),
                reason: format!(
                    "built for pitaya:host@{built_for}, and this host speaks \
                     pitaya:host@{CONTRACT_VERSION}: rebuild it with this version's guest SDK"
                ),
            });
        }
        let pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let start_error = |reason| spec.start_error(reason);
        // The handler names come from `info`, just below.
        let mut instance = Instance::start(
            pre,
            self.context.clone(),
            spec.clone(),
            shared,
            shard,
            0,
            Arc::from([]),
        )
        .await
        .map_err(start_error)?;
        let declared = instance.info().await.map_err(start_error)?;
        declared.check(path)?;
        Ok((instance, declared))
    }

    /// Starts the other shards' instances next to `first` (which serves `shards[0]`) and runs
    /// `init` in every one.
    async fn start_all(
        first: Instance,
        shards: &[Arc<Shard>],
        spec: &ComponentSpec,
    ) -> Result<Vec<Instance>, LoadError> {
        let start_error = |reason| spec.start_error(reason);
        let mut instances = Vec::with_capacity(shards.len());
        for (index, shard) in shards.iter().enumerate().skip(1) {
            instances.push(
                first
                    .sibling(Arc::downgrade(shard), index)
                    .await
                    .map_err(start_error)?,
            );
        }
        instances.insert(0, first);
        for instance in &mut instances {
            instance.init().await.map_err(start_error)?;
        }
        Ok(instances)
    }

    /// Compiles `path`, starts its instances, runs `init` in each, and returns the handle
    /// through which it is called. `options` gives the configuration, limits, grants and
    /// instance count for the component's file and declared name.
    ///
    /// Blocks while compiling and starting: call it off the async runtime's threads.
    pub fn load(
        &self,
        path: PathBuf,
        index: usize,
        options: &dyn Fn(&std::path::Path, &str) -> ComponentOptions,
    ) -> Result<ComponentHandle, LoadError> {
        self.block_on(async {
            let provisional = ComponentSpec {
                path: path.clone(),
                options: ComponentOptions::default(),
                metered: self.metered,
            };
            // The name is known only after `info`, so a first instance asks it; the instances
            // that serve are then started with the options for that name. It never serves,
            // so its timers have no shard to fire into.
            let placeholder = ComponentShared::new(PROVISIONAL_NAME);
            let (instance, declared) = self.prepare(&provisional, placeholder, Weak::new()).await?;
            let spec = ComponentSpec {
                path: path.clone(),
                options: options(&path, &declared.name),
                metered: self.metered,
            };
            let shards: Vec<_> = (0..spec.options.instance_count())
                .map(|_| Shard::empty(spec.options.limits.timer_fires))
                .collect();
            let shared = ComponentShared::new(&declared.name);
            let first = instance
                .restarted(spec.clone(), shared.clone(), Arc::downgrade(&shards[0]))
                .await
                .map_err(|reason| spec.start_error(reason))?;
            let instances = Self::start_all(first, &shards, &spec).await?;
            for (instance, shard) in instances.into_iter().zip(&shards) {
                *shard.lock().await = Some(instance);
            }
            Ok(ComponentHandle {
                shared,
                shards,
                declared: ReadMostly::new(declared),
                path,
                index,
                spec,
            })
        })
    }

    /// Replaces every instance of a component with a fresh build of its file. Calls already
    /// waiting finish on the old build, later ones go to the new one, and each old instance's
    /// exported state is handed to the new instance of the same shard. On any failure the old
    /// build keeps serving, in every shard.
    ///
    /// Blocks while compiling: call it off the async runtime's threads.
    pub fn reload(&self, handle: &ComponentHandle) -> Result<(), LoadError> {
        self.block_on(self.reload_async(handle))
    }

    async fn reload_async(&self, handle: &ComponentHandle) -> Result<(), LoadError> {
        let path = handle.spec.path.clone();
        let (first, declared) = self
            .prepare(
                &handle.spec,
                handle.shared.clone(),
                Arc::downgrade(&handle.shards[0]),
            )
            .await?;
        if declared.name != handle.name() {
            return Err(LoadError::Renamed {
                path,
                old: handle.name().to_owned(),
                new: declared.name,
            });
        }
        let mut instances = Self::start_all(first, &handle.shards, &handle.spec).await?;
        // Every shard is taken, in order, once the calls waiting for it have run; no call
        // holds one shard while waiting for another, so this cannot deadlock. Until the end,
        // nothing runs on the old build but its exports.
        let mut slots = Vec::with_capacity(handle.shards.len());
        for shard in &handle.shards {
            slots.push(shard.lock().await);
        }
        let mut states = Vec::with_capacity(slots.len());
        for slot in &mut slots {
            states.push(match slot.as_mut() {
                Some(old) => old.export_state().await,
                None => None,
            });
        }
        for (instance, state) in instances.iter_mut().zip(states) {
            if let Some(state) = state
                && let Err(reason) = instance.import_state(state).await
            {
                // Dropping the guards lets the old build carry on in every shard.
                return Err(LoadError::Handover { path, reason });
            }
        }
        handle.declared.update(|copy| *copy = declared.clone());
        for (slot, instance) in slots.iter_mut().zip(instances) {
            // The old instance goes, and its timers with it.
            **slot = Some(instance);
        }
        tracing::info!(component = %handle.name(), "old build retired");
        Ok(())
    }
}

/// An instance called directly, with no shard lock: what one call costs inside the host without
/// the lock. For benchmarks (`host/benches/dispatch.rs`); the host never serves clients this way.
#[doc(hidden)]
pub struct DirectInstance(Instance);

impl DirectInstance {
    /// Calls `handler` as a connection's call would.
    pub async fn call(&mut self, session: SessionId, handler: &str, payload: &[u8]) -> CallResult {
        self.0.handle(session, handler, payload).await
    }
}

impl Runtime {
    /// Compiles `path` and starts one instance of it, `init` included, to be called directly.
    /// Timers it sets fire nowhere.
    #[doc(hidden)]
    pub fn direct(
        &self,
        path: PathBuf,
        options: ComponentOptions,
    ) -> Result<DirectInstance, LoadError> {
        self.block_on(async {
            let spec = ComponentSpec {
                path,
                options,
                metered: self.metered,
            };
            let start_error = |reason| spec.start_error(reason);
            let placeholder = ComponentShared::new(PROVISIONAL_NAME);
            let (instance, declared) = self.prepare(&spec, placeholder, Weak::new()).await?;
            let shared = ComponentShared::new(&declared.name);
            let mut instance = instance
                .restarted(spec.clone(), shared, Weak::new())
                .await
                .map_err(start_error)?;
            instance.init().await.map_err(start_error)?;
            Ok(DirectInstance(instance))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_cannot_be_components_are_named_for_what_they_are() {
        let not_wasm = not_a_component(b"garbage").unwrap();
        assert!(not_wasm.starts_with("not a WebAssembly file"), "{not_wasm}");
        let core = not_a_component(b"\0asm\x01\0\0\0").unwrap();
        assert!(core.contains("wasm32-wasip2"), "{core}");
        // A component's preamble: version 0x0d, layer 1.
        assert_eq!(not_a_component(b"\0asm\x0d\0\x01\0"), None);
        assert_eq!(not_a_component(b""), not_a_component(b"x"));
    }

    #[test]
    fn a_component_declares_routable_names_and_not_too_many_handlers() {
        let declared = |name: &str, handlers: usize, handler: &str| Declared {
            name: name.into(),
            handlers: (0..handlers)
                .map(|n| HandlerSpec {
                    name: format!("{handler}{n}"),
                    kind: HandlerKind::Request,
                })
                .collect(),
            validates_handshake: false,
        };
        let path = std::path::Path::new("c.wasm");
        assert!(declared("room", MAX_HANDLERS, "h").check(path).is_ok());
        assert!(matches!(
            declared("room", MAX_HANDLERS + 1, "h").check(path),
            Err(LoadError::TooManyHandlers { count, .. }) if count == MAX_HANDLERS + 1
        ));
        assert!(declared(&"r".repeat(MAX_NAME), 1, "h").check(path).is_ok());
        for (name, handler) in [
            ("r".repeat(MAX_NAME + 1), "h".to_owned()),
            ("room".into(), "h".repeat(MAX_NAME)),
            ("".into(), "h".into()),
            ("a.b".into(), "h".into()),
            ("room".into(), "h.".into()),
        ] {
            assert!(
                matches!(
                    declared(&name, 1, &handler).check(path),
                    Err(LoadError::BadName { .. })
                ),
                "{name:?} / {handler:?}"
            );
        }
    }

    #[test]
    fn the_pool_stays_within_its_address_space_budget() {
        assert!(pool_config(0).is_some());
        assert!(pool_config(MAX_POOLED_MEMORIES / 8).is_some());
        assert!(pool_config(MAX_POOLED_MEMORIES / 8 + 1).is_none());
        assert!(pool_config(usize::MAX).is_none());
    }

    #[test]
    fn the_contract_version_is_the_wit_packages() {
        let wit = include_str!("../../../wit/pitaya.wit");
        assert!(wit.contains(&format!("package pitaya:host@{CONTRACT_VERSION};")));
    }

    /// The binary of a component that imports one empty instance named `name` (the `wat`
    /// text format is not compiled into this host's wasmtime).
    fn component_importing(name: &str) -> Vec<u8> {
        let name = name.as_bytes();
        let mut import = vec![0x01, 0x00, u8::try_from(name.len()).expect("short name")];
        import.extend_from_slice(name);
        import.extend_from_slice(&[0x05, 0x00]);
        let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
        bytes.extend_from_slice(&[0x07, 0x03, 0x01, 0x42, 0x00]);
        bytes.extend_from_slice(&[0x0a, u8::try_from(import.len()).expect("short section")]);
        bytes.extend_from_slice(&import);
        bytes
    }

    #[test]
    fn a_components_contract_version_is_read_from_its_imports() {
        let engine = Engine::default();
        let old = Component::new(&engine, component_importing("pitaya:host/log@0.1.0"))
            .expect("a valid component");
        assert_eq!(contract_version(&old, &engine).as_deref(), Some("0.1.0"));
        let unrelated = Component::new(&engine, component_importing("other:pkg/x@9.9.9"))
            .expect("a valid component");
        assert_eq!(contract_version(&unrelated, &engine), None);
    }
}
