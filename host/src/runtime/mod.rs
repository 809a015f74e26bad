//! The wasmtime side: compiles components, keeps one long-lived instance per component on its
//! own thread (an actor), and runs calls into it one at a time.
//!
//! Calls arrive as [`Job`]s on a channel and answer on a oneshot, so the async runtime never
//! runs guest code: a component that spins costs its own thread until the epoch deadline
//! stops it, never a tokio worker.

mod bindings;
mod host_log;
mod host_session;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use pitaya_protocol::{EncodeOptions, RouteDict};
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::session::{Registry, SessionId};
use bindings::Game;
pub use bindings::HandlerKind;

/// How long an epoch tick lasts; call deadlines are counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits applied to every component instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of one call into a component.
    pub call_timeout: Duration,
    /// Cap on one instance's linear memory, in bytes.
    pub max_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(1),
            max_memory: 64 << 20,
        }
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read component {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
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
    /// The engine could not be created.
    #[error("cannot configure wasmtime: {0}")]
    Engine(String),
}

/// Why a call did not produce a handler result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The component trapped (panic, unreachable, out-of-bounds access, stack overflow).
    #[error("component trapped")]
    Trap,
    /// The call ran past its deadline.
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

/// A loaded component: what it serves and the channel to its instance.
#[derive(Debug)]
pub struct ComponentHandle {
    /// The component's name, the component part of its routes.
    pub name: String,
    /// Its handlers, as declared by `info`.
    pub handlers: Vec<HandlerSpec>,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Its position in load order.
    pub index: usize,
    jobs: mpsc::Sender<Job>,
}

impl ComponentHandle {
    /// Calls `handler` for `session` and waits for the result.
    pub async fn call(&self, session: SessionId, handler: &str, payload: Bytes) -> CallResult {
        let (reply, answer) = oneshot::channel();
        let job = Job::Handle {
            session,
            handler: handler.to_owned(),
            payload,
            reply,
        };
        if self.jobs.send(job).await.is_err() {
            return Err(CallFailure::Unavailable);
        }
        answer.await.unwrap_or(Err(CallFailure::Unavailable))
    }

    /// Tells the component that a session it has seen has closed.
    pub async fn session_closed(&self, session: SessionId) {
        // If the thread has gone there is nobody left to tell.
        let _ = self.jobs.send(Job::SessionClosed(session)).await;
    }
}

/// Work for a component's thread.
enum Job {
    Handle {
        session: SessionId,
        handler: String,
        payload: Bytes,
        reply: oneshot::Sender<CallResult>,
    },
    SessionClosed(SessionId),
}

/// What host functions reach: the sessions, and how to encode pushes.
#[derive(Debug)]
pub struct HostContext {
    /// All connected sessions.
    pub registry: Arc<Registry>,
    /// Options for encoding pushes.
    pub encode: EncodeOptions,
    /// The route dictionary, set once every component is loaded (coded push routes use it).
    pub dict: OnceLock<Arc<RouteDict>>,
}

/// The store data of one instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    context: Arc<HostContext>,
    component: Arc<str>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The wasmtime engine and linker shared by every component.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    context: Arc<HostContext>,
    limits: Limits,
}

impl Runtime {
    /// Creates the engine, links the host functions and starts the epoch ticker.
    pub fn new(context: Arc<HostContext>, limits: Limits) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
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
            limits,
        })
    }

    /// Compiles `path`, starts its instance on a thread of its own, runs `init` with `config`,
    /// and returns the handle through which it is called.
    pub fn load(
        &self,
        path: &Path,
        index: usize,
        config: Vec<u8>,
    ) -> Result<ComponentHandle, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let component = Component::new(&self.engine, &bytes).map_err(invalid)?;
        let pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let mut instance = Instance::start(
            pre,
            self.context.clone(),
            self.limits.clone(),
            Arc::from("?"),
        )
        .map_err(|reason| LoadError::Start {
            path: path.to_owned(),
            reason,
        })?;
        let info = instance.info().map_err(|reason| LoadError::Start {
            path: path.to_owned(),
            reason,
        })?;
        let bad_name = |name: &str| name.is_empty() || name.contains('.');
        if let Some(name) = std::iter::once(&info.name)
            .chain(info.handlers.iter().map(|h| &h.name))
            .find(|name| bad_name(name))
        {
            return Err(LoadError::BadName {
                path: path.to_owned(),
                name: name.clone(),
            });
        }
        instance.component = Arc::from(info.name.as_str());
        instance.store.data_mut().component = instance.component.clone();
        instance.init(&config).map_err(|reason| LoadError::Start {
            path: path.to_owned(),
            reason,
        })?;

        let (jobs, queue) = mpsc::channel(1024);
        let thread_name = format!("component-{}", info.name);
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || instance.serve(queue, config))
            .map_err(|e| LoadError::Start {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(ComponentHandle {
            name: info.name,
            handlers: info
                .handlers
                .into_iter()
                .map(|h| HandlerSpec {
                    name: h.name,
                    kind: h.kind,
                })
                .collect(),
            path: path.to_owned(),
            index,
            jobs,
        })
    }
}

/// One live instance of a component and what is needed to replace it.
struct Instance {
    pre: InstancePre<HostState>,
    context: Arc<HostContext>,
    limits: Limits,
    component: Arc<str>,
    store: Store<HostState>,
    game: Game,
}

impl Instance {
    fn start(
        pre: InstancePre<HostState>,
        context: Arc<HostContext>,
        limits: Limits,
        component: Arc<str>,
    ) -> Result<Self, String> {
        let (store, game) = Self::instantiate(&pre, &context, &limits, &component)?;
        Ok(Self {
            pre,
            context,
            limits,
            component,
            store,
            game,
        })
    }

    fn instantiate(
        pre: &InstancePre<HostState>,
        context: &Arc<HostContext>,
        limits: &Limits,
        component: &Arc<str>,
    ) -> Result<(Store<HostState>, Game), String> {
        let state = HostState {
            // Nothing inherited: no files, no environment, no network.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.max_memory)
                .build(),
            context: context.clone(),
            component: component.clone(),
        };
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(deadline_ticks(limits.call_timeout));
        let instance = pre.instantiate(&mut store).map_err(|e| format!("{e:#}"))?;
        let game = Game::new(&mut store, &instance).map_err(|e| format!("{e:#}"))?;
        Ok((store, game))
    }

    fn info(&mut self) -> Result<bindings::ComponentInfo, String> {
        self.arm_deadline();
        self.game
            .pitaya_host_handler()
            .call_info(&mut self.store)
            .map_err(|e| format!("{e:#}"))
    }

    fn init(&mut self, config: &[u8]) -> Result<(), String> {
        self.arm_deadline();
        self.game
            .pitaya_host_handler()
            .call_init(&mut self.store, config)
            .map_err(|e| format!("{e:#}"))?
            .map_err(|e| format!("init returned an error: {e}"))
    }

    fn arm_deadline(&mut self) {
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.call_timeout));
    }

    /// The actor loop: one job at a time until every handle is dropped.
    fn serve(mut self, mut queue: mpsc::Receiver<Job>, config: Vec<u8>) {
        let mut healthy = true;
        while let Some(job) = queue.blocking_recv() {
            if !healthy {
                healthy = self.restart(&config);
            }
            match job {
                Job::Handle {
                    session,
                    handler,
                    payload,
                    reply,
                } => {
                    let result = if healthy {
                        self.arm_deadline();
                        let outcome = self.game.pitaya_host_handler().call_handle(
                            &mut self.store,
                            session,
                            &handler,
                            &payload,
                        );
                        match outcome {
                            Ok(Ok(bytes)) => Ok(Ok(bytes)),
                            Ok(Err(e)) => Ok(Err(HandlerError {
                                code: e.code,
                                message: e.message,
                                metadata: e.metadata,
                            })),
                            Err(error) => {
                                let failure = classify(&error);
                                tracing::error!(
                                    component = %self.component,
                                    route = %format_args!("{}.{}", self.component, handler),
                                    session,
                                    error = %format_args!("{error:#}"),
                                    "component call failed; its instance will be replaced"
                                );
                                healthy = false;
                                Err(failure)
                            }
                        }
                    } else {
                        Err(CallFailure::Unavailable)
                    };
                    // The caller may have gone (its connection closed); nothing to do then.
                    let _ = reply.send(result);
                }
                Job::SessionClosed(session) => {
                    if healthy {
                        self.arm_deadline();
                        let outcome = self
                            .game
                            .pitaya_host_handler()
                            .call_session_closed(&mut self.store, session);
                        if let Err(error) = outcome {
                            tracing::error!(
                                component = %self.component,
                                session,
                                error = %format_args!("{error:#}"),
                                "session-closed hook failed; its instance will be replaced"
                            );
                            healthy = false;
                        }
                    }
                }
            }
        }
    }

    /// Replaces a broken instance with a fresh one whose `init` runs again.
    fn restart(&mut self, config: &[u8]) -> bool {
        match Self::instantiate(&self.pre, &self.context, &self.limits, &self.component) {
            Ok((store, game)) => {
                self.store = store;
                self.game = game;
                match self.init(config) {
                    Ok(()) => {
                        tracing::info!(component = %self.component, "instance restarted");
                        true
                    }
                    Err(reason) => {
                        tracing::error!(component = %self.component, %reason, "restarted instance failed to init");
                        false
                    }
                }
            }
            Err(reason) => {
                tracing::error!(component = %self.component, %reason, "cannot restart instance");
                false
            }
        }
    }
}

fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

fn classify(error: &wasmtime::Error) -> CallFailure {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) | Some(Trap::OutOfFuel) => CallFailure::Timeout,
        _ => CallFailure::Trap,
    }
}
