//! The wasmtime side: compiles components, keeps one or more long-lived instances per component,
//! each on its own thread (an actor), runs calls into each one at a time, and swaps in new builds.
//!
//! Calls arrive as [`Job`]s on an instance's channel and answer on a oneshot, so the async
//! runtime never runs guest code: a component that spins costs its own thread until the epoch
//! deadline stops it, never a tokio worker. A component with several instances (shards) sends
//! each session's calls to one of them, chosen by session id, so that session's calls stay in
//! order and meet the same memory.

mod bindings;
mod cache;
mod host_cluster;
mod host_groups;
mod host_log;
mod host_session;
mod host_timers;
mod host_users;
mod instance;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use pitaya_protocol::{EncodeOptions, RouteDict};
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::group::Groups;
use crate::session::{Registry, SessionId};
use bindings::Game;
pub use bindings::HandlerKind;
use cache::CompileCache;
pub use cache::default_dir as default_cache_dir;
use instance::{HostState, Instance};

/// How often running guest code checks its call deadline.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The name a component goes by until its `info` has said its real one.
pub(crate) const PROVISIONAL_NAME: &str = "?";

/// Jobs that may wait for one component before callers wait for room.
const JOB_QUEUE: usize = 4096;

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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(1),
            max_memory: 64 << 20,
            fuel: None,
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

/// Most instances one component may ask for: each is a thread and a store with its own memory,
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
    /// How many instances serve it, each on its own thread, sessions shared out by id
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
        "component {path} declares an invalid name {name:?}: names must be non-empty and contain no '.'"
    )]
    BadName {
        /// The file.
        path: PathBuf,
        /// The offending name.
        name: String,
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
    /// The component has no working instance (it failed to restart) or its thread has gone.
    #[error("component unavailable")]
    Unavailable,
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

/// Work for a component's thread.
pub(crate) enum Job {
    Handle {
        session: SessionId,
        handler: String,
        payload: Bytes,
        reply: oneshot::Sender<CallResult>,
    },
    SessionClosed(SessionId),
    Timer(u64),
    Validate {
        session: SessionId,
        handshake: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Shutdown(oneshot::Sender<()>),
    /// Hand the job queue and exported state to a successor build.
    Retire(oneshot::Sender<Handover>),
}

/// What a retiring instance hands to its successor.
pub(crate) struct Handover {
    state: Option<Vec<u8>>,
    queue: mpsc::Receiver<Job>,
    /// Sending the queue back keeps the old build serving (the successor refused the state).
    give_back: oneshot::Sender<mpsc::Receiver<Job>>,
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
    pub(crate) task: tokio::task::AbortHandle,
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
        for (_, timer) in self.lock().drain() {
            timer.task.abort();
        }
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
    /// One job queue per instance (shard). A queue outlives the instances that serve it: a
    /// restart or a reload hands it to the next one.
    pub(crate) shards: Vec<mpsc::Sender<Job>>,
    /// Timer ids stay unique across instances, so a late fire of an old timer is recognisably
    /// not one of the new instance's, and no two shards hand out the same id.
    pub(crate) next_timer: AtomicU64,
}

impl ComponentShared {
    /// The queue of the instance that serves `session`. Ids are handed out in sequence, so
    /// the remainder spreads sessions evenly, and it never changes while the session lives.
    fn shard(&self, session: SessionId) -> &mpsc::Sender<Job> {
        let count = self.shards.len() as u64;
        // `shards` is never empty and its length fits in usize, so the index does too.
        &self.shards[(session % count.max(1)) as usize]
    }
}

/// What host functions reach: sessions, groups, how to encode pushes and kicks.
#[derive(Debug)]
pub struct HostContext {
    /// All connected sessions.
    pub registry: Arc<Registry>,
    /// All groups.
    pub groups: Groups,
    /// Options for encoding pushes.
    pub encode: EncodeOptions,
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

    /// The Kick packet for `reason`, with a body only when kick reasons are on.
    pub fn kick_packet(&self, reason: Option<&str>) -> Bytes {
        pitaya_protocol::kick_packet(reason.filter(|_| self.kick_reasons))
    }
}

/// A loaded component: what it serves and the channel to its instance.
#[derive(Debug)]
pub struct ComponentHandle {
    shared: Arc<ComponentShared>,
    /// Replaced by a reload.
    declared: RwLock<Declared>,
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
        read(&self.declared).handlers.clone()
    }

    /// The kind of handler `name`, if the component serves it.
    pub fn handler_kind(&self, name: &str) -> Option<HandlerKind> {
        read(&self.declared)
            .handlers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.kind)
    }

    /// Whether the component wants to validate handshakes.
    pub fn validates_handshake(&self) -> bool {
        read(&self.declared).validates_handshake
    }

    /// Calls `handler` for `session` and waits for the result.
    pub async fn call(&self, session: SessionId, handler: String, payload: Bytes) -> CallResult {
        let (reply, answer) = oneshot::channel();
        let job = Job::Handle {
            session,
            handler,
            payload,
            reply,
        };
        if self.shared.shard(session).send(job).await.is_err() {
            return Err(CallFailure::Unavailable);
        }
        answer.await.unwrap_or(Err(CallFailure::Unavailable))
    }

    /// Asks the component whether to accept a client's handshake (JSON).
    pub async fn validate(&self, session: SessionId, handshake: String) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Validate {
            session,
            handshake,
            reply,
        };
        if self.shared.shard(session).send(job).await.is_err() {
            return Err("component unavailable".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("component unavailable".into()))
    }

    /// Tells the component that a session it has seen has closed: the one instance that
    /// served the session hears of it.
    pub async fn session_closed(&self, session: SessionId) {
        // If the thread has gone there is nobody left to tell.
        let _ = self
            .shared
            .shard(session)
            .send(Job::SessionClosed(session))
            .await;
    }

    /// How many instances serve the component.
    pub fn instances(&self) -> usize {
        self.shared.shards.len()
    }

    /// Cancels the component's timers and runs its shutdown hook after the calls already
    /// queued, in every instance at once.
    pub async fn shutdown(&self) {
        let mut finishing = Vec::with_capacity(self.shared.shards.len());
        for jobs in &self.shared.shards {
            let (done, finished) = oneshot::channel();
            if jobs.send(Job::Shutdown(done)).await.is_ok() {
                finishing.push(finished);
            }
        }
        for finished in finishing {
            let _ = finished.await;
        }
    }
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
    pub fn new(context: Arc<HostContext>, fuel: bool) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
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

    /// Compiles a component and starts its first instance (shard 0), up to (not including)
    /// `init`.
    fn prepare(
        &self,
        spec: &ComponentSpec,
        shared: Arc<ComponentShared>,
    ) -> Result<(Instance, Declared), LoadError> {
        let path = &spec.path;
        let bytes = std::fs::read(path).map_err(|cause| LoadError::Read {
            path: path.to_owned(),
            cause,
        })?;
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let component = match &self.cache {
            Some(cache) => cache.component(&self.engine, &bytes, path),
            None => Component::new(&self.engine, &bytes),
        }
        .map_err(invalid)?;
        let pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let start_error = |reason| LoadError::Start {
            path: path.to_owned(),
            reason,
        };
        let mut instance = Instance::start(pre, self.context.clone(), spec.clone(), shared, 0)
            .map_err(start_error)?;
        let declared = instance.info().map_err(start_error)?;
        if let Some(name) = std::iter::once(&declared.name)
            .chain(declared.handlers.iter().map(|h| &h.name))
            .find(|name| name.is_empty() || name.contains('.'))
        {
            return Err(LoadError::BadName {
                path: path.to_owned(),
                name: name.clone(),
            });
        }
        Ok((instance, declared))
    }

    /// Starts the other shards' instances next to `first` and runs `init` in every one.
    fn start_all(
        first: Instance,
        count: usize,
        path: &std::path::Path,
    ) -> Result<Vec<Instance>, LoadError> {
        let start_error = |reason| LoadError::Start {
            path: path.to_owned(),
            reason,
        };
        let mut instances = Vec::with_capacity(count);
        for shard in 1..count {
            instances.push(first.sibling(shard).map_err(start_error)?);
        }
        instances.insert(0, first);
        for instance in &mut instances {
            instance.init().map_err(start_error)?;
        }
        Ok(instances)
    }

    /// Compiles `path`, starts its instances, each on a thread of its own, runs `init` in each,
    /// and returns the handle through which it is called. `options` gives the configuration,
    /// limits, grants and instance count for the component's file and declared name.
    pub fn load(
        &self,
        path: PathBuf,
        index: usize,
        options: &dyn Fn(&std::path::Path, &str) -> ComponentOptions,
    ) -> Result<ComponentHandle, LoadError> {
        let provisional = ComponentSpec {
            path: path.clone(),
            options: ComponentOptions::default(),
            metered: self.metered,
        };
        // The name is known only after `info`, so a first instance asks it; the instances
        // that serve are then started with the options for that name. It never serves, so its
        // queue has no reader.
        let placeholder = Arc::new(ComponentShared {
            name: Arc::from(PROVISIONAL_NAME),
            shards: vec![mpsc::channel(1).0],
            next_timer: AtomicU64::new(1),
        });
        let (instance, declared) = self.prepare(&provisional, placeholder)?;
        let spec = ComponentSpec {
            path: path.clone(),
            options: options(&path, &declared.name),
            metered: self.metered,
        };
        let (shards, queues): (Vec<_>, Vec<_>) = (0..spec.options.instance_count())
            .map(|_| mpsc::channel(JOB_QUEUE))
            .unzip();
        let shared = Arc::new(ComponentShared {
            name: Arc::from(declared.name.as_str()),
            shards,
            next_timer: AtomicU64::new(1),
        });
        let start_error = |reason| LoadError::Start {
            path: path.clone(),
            reason,
        };
        let first = instance
            .restarted(spec.clone(), shared.clone())
            .map_err(start_error)?;
        let instances = Self::start_all(first, queues.len(), &path)?;
        for (instance, queue) in instances.into_iter().zip(queues) {
            spawn_actor(instance, queue).map_err(start_error)?;
        }
        Ok(ComponentHandle {
            shared,
            declared: RwLock::new(declared),
            path,
            index,
            spec,
        })
    }

    /// Replaces every instance of a component with a fresh build of its file. Calls already
    /// queued finish on the old build, later ones go to the new one, and each old instance's
    /// exported state is handed to the new instance of the same shard. On any failure the old
    /// build keeps serving, in every shard.
    ///
    /// Blocks while compiling: call it off the async runtime's threads.
    pub fn reload(&self, handle: &ComponentHandle) -> Result<(), LoadError> {
        let path = handle.spec.path.clone();
        let (first, declared) = self.prepare(&handle.spec, handle.shared.clone())?;
        if declared.name != handle.name() {
            return Err(LoadError::Renamed {
                path,
                old: handle.name().to_owned(),
                new: declared.name,
            });
        }
        let instances = Self::start_all(first, handle.shared.shards.len(), &path)?;
        let stopped = |reason: &str| LoadError::Start {
            path: path.clone(),
            reason: reason.into(),
        };
        // Every shard is asked at once, so they drain their queues in parallel; each old
        // instance then waits, holding its state, until all have answered.
        let mut asked = Vec::with_capacity(instances.len());
        for jobs in &handle.shared.shards {
            let (handover_tx, handover_rx) = oneshot::channel();
            jobs.blocking_send(Job::Retire(handover_tx))
                .map_err(|_| stopped("the running build has stopped"))?;
            asked.push(handover_rx);
        }
        // Dropping a handover gives nothing back and ends its old instance; on failure every
        // queue must go back, so they are collected before anything is decided.
        let mut handovers = Vec::with_capacity(asked.len());
        let mut missing = false;
        for answer in asked {
            match answer.blocking_recv() {
                Ok(handover) => handovers.push(handover),
                Err(_) => missing = true,
            }
        }
        let give_all_back = |handovers: Vec<Handover>| {
            for Handover {
                queue, give_back, ..
            } in handovers
            {
                let _ = give_back.send(queue);
            }
        };
        if missing {
            give_all_back(handovers);
            return Err(stopped("the running build did not hand over"));
        }
        let mut instances = instances;
        let mut refusal = None;
        for (instance, handover) in instances.iter_mut().zip(&mut handovers) {
            if let Some(state) = handover.state.take()
                && let Err(reason) = instance.import_state(state)
            {
                refusal = Some(reason);
                break;
            }
        }
        if let Some(reason) = refusal {
            give_all_back(handovers);
            return Err(LoadError::Handover { path, reason });
        }
        *write(&handle.declared) = declared;
        for (instance, handover) in instances.into_iter().zip(handovers) {
            let Handover {
                queue, give_back, ..
            } = handover;
            // Dropping `give_back` tells the old thread to end (its timers end with its
            // instance).
            drop(give_back);
            spawn_actor(instance, queue).map_err(|reason| LoadError::Start {
                path: path.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

/// An instance served on the caller's own thread, with no job queue and no actor: what one call
/// costs inside an actor, without the hand-offs between threads. For benchmarks
/// (`host/benches/dispatch.rs`); the host never serves clients this way.
#[doc(hidden)]
pub struct DirectInstance(Instance);

impl DirectInstance {
    /// Calls `handler` as the actor would for a `Handle` job.
    pub fn call(&mut self, session: SessionId, handler: &str, payload: &[u8]) -> CallResult {
        self.0.handle(session, handler, payload)
    }
}

impl Runtime {
    /// Compiles `path` and starts one instance of it, `init` included, for the caller's thread.
    /// Timers it sets fire nowhere.
    #[doc(hidden)]
    pub fn direct(
        &self,
        path: PathBuf,
        options: ComponentOptions,
    ) -> Result<DirectInstance, LoadError> {
        let spec = ComponentSpec {
            path,
            options,
            metered: self.metered,
        };
        let start_error = |reason| LoadError::Start {
            path: spec.path.clone(),
            reason,
        };
        let placeholder = Arc::new(ComponentShared {
            name: Arc::from(PROVISIONAL_NAME),
            shards: vec![mpsc::channel(1).0],
            next_timer: AtomicU64::new(1),
        });
        let (instance, declared) = self.prepare(&spec, placeholder)?;
        let shared = Arc::new(ComponentShared {
            name: Arc::from(declared.name.as_str()),
            shards: vec![mpsc::channel(1).0],
            next_timer: AtomicU64::new(1),
        });
        let mut instance = instance
            .restarted(spec.clone(), shared)
            .map_err(start_error)?;
        instance.init().map_err(start_error)?;
        Ok(DirectInstance(instance))
    }
}

fn spawn_actor(instance: Instance, queue: mpsc::Receiver<Job>) -> Result<(), String> {
    let name = match instance.shard() {
        0 => format!("component-{}", instance.name()),
        shard => format!("component-{}#{shard}", instance.name()),
    };
    std::thread::Builder::new()
        .name(name)
        .spawn(move || instance.serve(queue))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
