//! One live instance of a component, its store, and the actor loop that feeds it jobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use wasmtime::component::{InstancePre, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

use crate::metrics::ComponentLabel;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::{ComponentInfo, Game};
use super::{
    CallFailure, CallResult, ComponentShared, ComponentSpec, Declared, HandlerError, HandlerSpec,
    Handover, HostContext, Job, PROVISIONAL_NAME, Timers,
};

/// The store data of one instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    pub(crate) context: Arc<HostContext>,
    pub(crate) shared: Arc<ComponentShared>,
    /// This instance's timers; dropping the store cancels them.
    pub(crate) timers: Timers,
    /// When the current call must end. Checked on every epoch tick, so the deadline is kept in
    /// wall-clock time even when a busy machine delays the ticker.
    call_deadline: Instant,
}

impl HostState {
    /// The component's name, for logs.
    pub(crate) fn component(&self) -> &str {
        &self.shared.name
    }

    /// Moves the current call's deadline back by time spent waiting on another server (an
    /// RPC): the call's budget is for its own work.
    pub(crate) fn extend_deadline(&mut self, by: std::time::Duration) {
        self.call_deadline += by;
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps an instance's memory and tables, and reports its memory to the metrics.
struct Limiter {
    max_memory: usize,
    /// The component's gauge, shared with the instance that replaces this one.
    memory: Gauge,
    /// What this instance added to the gauge.
    counted: i64,
}

/// More table elements than any sane component needs, but far from exhausting the host.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Refusing makes `memory.grow` fail inside the guest, whose allocator then traps.
        if desired > self.max_memory {
            return Ok(false);
        }
        let grown = i64::try_from(desired.saturating_sub(current)).unwrap_or(i64::MAX);
        self.memory.inc_by(grown);
        self.counted = self.counted.saturating_add(grown);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        // The instance's memory goes with it; a successor counts its own.
        self.memory.dec_by(self.counted);
    }
}

/// The clock a component sees when it was not granted one: always the epoch.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// One live instance of a component and what is needed to replace it after a fault.
pub(crate) struct Instance {
    pre: InstancePre<HostState>,
    context: Arc<HostContext>,
    spec: ComponentSpec,
    shared: Arc<ComponentShared>,
    store: Store<HostState>,
    game: Game,
}

impl Instance {
    pub(crate) fn start(
        pre: InstancePre<HostState>,
        context: Arc<HostContext>,
        spec: ComponentSpec,
        shared: Arc<ComponentShared>,
    ) -> Result<Self, String> {
        let (store, game) = instantiate(&pre, &context, &spec, &shared)?;
        Ok(Self {
            pre,
            context,
            spec,
            shared,
            store,
            game,
        })
    }

    /// A fresh instance of the same compiled component, with other options.
    pub(crate) fn restarted(
        self,
        spec: ComponentSpec,
        shared: Arc<ComponentShared>,
    ) -> Result<Self, String> {
        Self::start(self.pre, self.context, spec, shared)
    }

    pub(crate) fn name(&self) -> &str {
        &self.shared.name
    }

    fn arm(&mut self) {
        arm(&mut self.store, &self.spec);
    }

    pub(crate) fn info(&mut self) -> Result<Declared, String> {
        self.arm();
        let ComponentInfo {
            name,
            handlers,
            validates_handshake,
        } = self
            .game
            .pitaya_host_handler()
            .call_info(&mut self.store)
            .map_err(|e| format!("{e:#}"))?;
        Ok(Declared {
            name,
            handlers: handlers
                .into_iter()
                .map(|h| HandlerSpec {
                    name: h.name,
                    kind: h.kind,
                })
                .collect(),
            validates_handshake,
        })
    }

    pub(crate) fn init(&mut self) -> Result<(), String> {
        self.arm();
        self.game
            .pitaya_host_handler()
            .call_init(&mut self.store, &self.spec.options.config)
            .map_err(|e| format!("{e:#}"))?
            .map_err(|e| format!("init returned an error: {e}"))
    }

    pub(crate) fn import_state(&mut self, state: Vec<u8>) -> Result<(), String> {
        self.arm();
        self.game
            .pitaya_host_handler()
            .call_import_state(&mut self.store, &state)
            .map_err(|e| format!("{e:#}"))?
    }

    fn export_state(&mut self) -> Option<Vec<u8>> {
        self.arm();
        match self
            .game
            .pitaya_host_handler()
            .call_export_state(&mut self.store)
        {
            Ok(state) => state,
            Err(error) => {
                tracing::error!(component = %self.shared.name, error = %format_args!("{error:#}"), "export-state failed; the new build starts without state");
                None
            }
        }
    }

    /// The actor loop: one job at a time until every sender is gone or a successor takes over.
    pub(crate) fn serve(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut healthy = true;
        while let Some(job) = queue.blocking_recv() {
            if !healthy && !matches!(job, Job::Retire(_)) {
                healthy = self.restart();
            }
            match job {
                Job::Handle {
                    session,
                    handler,
                    payload,
                    reply,
                } => {
                    let result = if healthy {
                        let result = self.handle(session, &handler, &payload);
                        healthy = result.is_ok();
                        result
                    } else {
                        Err(CallFailure::Unavailable)
                    };
                    // The caller may have gone (its connection closed); nothing to do then.
                    let _ = reply.send(result);
                }
                Job::SessionClosed(session) => {
                    if healthy {
                        self.arm();
                        let outcome = self
                            .game
                            .pitaya_host_handler()
                            .call_session_closed(&mut self.store, session);
                        healthy = self.survived(outcome, "session-closed", Some(session));
                    }
                }
                Job::Timer(timer) => {
                    let known = self.store.data().timers.fired(timer);
                    if healthy && known {
                        self.arm();
                        let outcome = self
                            .game
                            .pitaya_host_handler()
                            .call_on_timer(&mut self.store, timer);
                        healthy = self.survived(outcome, "on-timer", None);
                    }
                }
                Job::Validate {
                    session,
                    handshake,
                    reply,
                } => {
                    let verdict = if healthy {
                        self.arm();
                        let outcome = self.game.pitaya_host_handler().call_validate_handshake(
                            &mut self.store,
                            session,
                            &handshake,
                        );
                        match outcome {
                            Ok(verdict) => verdict,
                            Err(error) => {
                                healthy = self.survived(
                                    Err::<(), _>(error),
                                    "validate-handshake",
                                    Some(session),
                                );
                                Err("the component failed to validate the handshake".into())
                            }
                        }
                    } else {
                        Err("the component is unavailable".into())
                    };
                    let _ = reply.send(verdict);
                }
                Job::Shutdown(done) => {
                    self.store.data().timers.cancel_all();
                    if healthy {
                        self.arm();
                        let outcome = self
                            .game
                            .pitaya_host_handler()
                            .call_shutdown(&mut self.store);
                        self.survived(outcome, "shutdown", None);
                    }
                    let _ = done.send(());
                }
                Job::Retire(successor) => {
                    let state = if healthy { self.export_state() } else { None };
                    let (give_back, given_back) = tokio::sync::oneshot::channel();
                    let handover = Handover {
                        state,
                        queue,
                        give_back,
                    };
                    if let Err(handover) = successor.send(handover) {
                        queue = handover.queue;
                        continue;
                    }
                    match given_back.blocking_recv() {
                        // The successor refused the state: keep serving.
                        Ok(returned) => queue = returned,
                        Err(_) => {
                            tracing::info!(component = %self.shared.name, "old build retired");
                            return;
                        }
                    }
                }
            }
        }
    }

    fn handle(&mut self, session: u64, handler: &str, payload: &[u8]) -> CallResult {
        self.arm();
        let outcome =
            self.game
                .pitaya_host_handler()
                .call_handle(&mut self.store, session, handler, payload);
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
                    component = %self.shared.name,
                    route = %format_args!("{}.{}", self.shared.name, handler),
                    session,
                    %failure,
                    error = %format_args!("{error:#}"),
                    "component call failed; its instance will be replaced"
                );
                Err(failure)
            }
        }
    }

    /// Logs a failed hook call; false when the instance must be replaced.
    fn survived<T>(&self, outcome: wasmtime::Result<T>, hook: &str, session: Option<u64>) -> bool {
        match outcome {
            Ok(_) => true,
            Err(error) => {
                tracing::error!(
                    component = %self.shared.name,
                    hook,
                    session,
                    error = %format_args!("{error:#}"),
                    "component hook failed; its instance will be replaced"
                );
                false
            }
        }
    }

    /// Replaces a broken instance with a fresh one whose `init` runs again.
    fn restart(&mut self) -> bool {
        match instantiate(&self.pre, &self.context, &self.spec, &self.shared) {
            Ok((store, game)) => {
                self.context
                    .metrics
                    .restarts
                    .get_or_create(&ComponentLabel {
                        component: self.shared.name.to_string(),
                    })
                    .inc();
                // Dropping the old store cancels the old instance's timers.
                self.store = store;
                self.game = game;
                match self.init() {
                    Ok(()) => {
                        tracing::info!(component = %self.shared.name, "instance restarted");
                        true
                    }
                    Err(reason) => {
                        tracing::error!(component = %self.shared.name, %reason, "restarted instance failed to init");
                        false
                    }
                }
            }
            Err(reason) => {
                tracing::error!(component = %self.shared.name, %reason, "cannot restart instance");
                false
            }
        }
    }
}

fn instantiate(
    pre: &InstancePre<HostState>,
    context: &Arc<HostContext>,
    spec: &ComponentSpec,
    shared: &Arc<ComponentShared>,
) -> Result<(Store<HostState>, Game), String> {
    let mut wasi = WasiCtx::builder();
    // Nothing inherited unless granted: no files, no network, no environment, no clock.
    if !spec.options.grants.clock {
        wasi.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
    }
    if spec.options.grants.stdio {
        wasi.inherit_stdout().inherit_stderr();
    }
    wasi.envs(&spec.options.grants.env);
    let state = HostState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limits: Limiter {
            max_memory: spec.options.limits.max_memory,
            // The first instance only says who the component is; it gets no series of its own.
            memory: if shared.name.as_ref() == PROVISIONAL_NAME {
                Gauge::default()
            } else {
                context
                    .metrics
                    .memory
                    .get_or_create(&ComponentLabel {
                        component: shared.name.to_string(),
                    })
                    .clone()
            },
            counted: 0,
        },
        context: context.clone(),
        shared: shared.clone(),
        timers: Timers::default(),
        call_deadline: Instant::now(),
    };
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|state| &mut state.limits);
    store.epoch_deadline_callback(|store| {
        Ok(if Instant::now() >= store.data().call_deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(1)
        })
    });
    arm(&mut store, spec);
    let instance = pre.instantiate(&mut store).map_err(|e| format!("{e:#}"))?;
    let game = Game::new(&mut store, &instance).map_err(|e| format!("{e:#}"))?;
    Ok((store, game))
}

/// Gives the next call its full budget: a wall-clock deadline and, when configured, fuel.
fn arm(store: &mut Store<HostState>, spec: &ComponentSpec) {
    let limits = &spec.options.limits;
    store.data_mut().call_deadline = Instant::now() + limits.call_timeout;
    // The callback above checks the clock at every tick and extends tick by tick until then.
    store.set_epoch_deadline(1);
    // When another component turned fuel metering on, one without a budget gets all the fuel
    // there is. Only fails when metering is off, and then there is nothing to arm.
    let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
}

fn classify(error: &wasmtime::Error) -> CallFailure {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) | Some(Trap::OutOfFuel) => CallFailure::Timeout,
        _ => CallFailure::Trap,
    }
}
