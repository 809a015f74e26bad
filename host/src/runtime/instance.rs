//! One live instance of a component and its store: every call into it, and its replacement
//! after a fault.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use wasmtime::component::{InstancePre, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

use crate::metrics::ComponentLabel;
use crate::session::Session;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::{ComponentInfo, Game};
use super::{
    CallFailure, CallResult, ComponentShared, ComponentSpec, Declared, HandlerError, HandlerSpec,
    HostContext, MAX_REASON, PROVISIONAL_NAME, Shard, Timers,
};

/// The store data of one instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    pub(crate) context: Arc<HostContext>,
    pub(crate) shared: Arc<ComponentShared>,
    /// The shard this instance serves, where its timers fire: a timer belongs to the shard
    /// that set it, whose memory knows what it is for.
    pub(crate) shard: Weak<Shard>,
    /// This instance's timers; dropping the store cancels them.
    pub(crate) timers: Timers,
    /// When the current call must end. Checked on every epoch tick, so the deadline is kept in
    /// wall-clock time even when a busy machine delays the ticker.
    call_deadline: Instant,
    /// The session whose `session-closed` hook is running: gone from the registry, but its uid,
    /// data, handshake and address can still be read, so the hook knows who left.
    pub(crate) closing: Option<Arc<Session>>,
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
    /// The shard this instance serves, where its timers fire.
    shard: Weak<Shard>,
    /// Which of the component's shards that is.
    index: usize,
    store: Store<HostState>,
    game: Game,
    /// False after a trap or a timeout: the instance is replaced before its next call.
    healthy: bool,
    /// The names of the handlers its build declared, in order: a call names its handler by
    /// position. Its own build's, not the component's latest, so a call that raced a reload
    /// still reaches the handler it named.
    handlers: Arc<[String]>,
}

impl Instance {
    pub(crate) async fn start(
        pre: InstancePre<HostState>,
        context: Arc<HostContext>,
        spec: ComponentSpec,
        shared: Arc<ComponentShared>,
        shard: Weak<Shard>,
        index: usize,
        handlers: Arc<[String]>,
    ) -> Result<Self, String> {
        let (store, game) = instantiate(&pre, &context, &spec, &shared, &shard).await?;
        Ok(Self {
            pre,
            context,
            spec,
            shared,
            shard,
            index,
            store,
            game,
            healthy: true,
            handlers,
        })
    }

    /// A fresh instance of the same compiled component, with other options, for shard 0.
    pub(crate) async fn restarted(
        self,
        spec: ComponentSpec,
        shared: Arc<ComponentShared>,
        shard: Weak<Shard>,
    ) -> Result<Self, String> {
        Self::start(
            self.pre,
            self.context,
            spec,
            shared,
            shard,
            0,
            self.handlers,
        )
        .await
    }

    /// A fresh instance of the same compiled component and options, for another shard.
    pub(crate) async fn sibling(&self, shard: Weak<Shard>, index: usize) -> Result<Self, String> {
        Self::start(
            self.pre.clone(),
            self.context.clone(),
            self.spec.clone(),
            self.shared.clone(),
            shard,
            index,
            self.handlers.clone(),
        )
        .await
    }

    fn arm(&mut self) {
        arm(&mut self.store, &self.spec);
    }

    pub(crate) async fn info(&mut self) -> Result<Declared, String> {
        self.arm();
        let ComponentInfo {
            name,
            handlers,
            validates_handshake,
        } = self
            .game
            .pitaya_host_handler()
            .call_info(&mut self.store)
            .await
            .map_err(|e| format!("{e:#}"))?;
        self.handlers = handlers.iter().map(|h| h.name.clone()).collect();
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

    pub(crate) async fn init(&mut self) -> Result<(), String> {
        self.arm();
        self.game
            .pitaya_host_handler()
            .call_init(&mut self.store, &self.spec.options.config)
            .await
            .map_err(|e| format!("{e:#}"))?
            .map_err(|e| format!("init returned an error: {e}"))
    }

    pub(crate) async fn import_state(&mut self, state: Vec<u8>) -> Result<(), String> {
        self.arm();
        self.game
            .pitaya_host_handler()
            .call_import_state(&mut self.store, &state)
            .await
            .map_err(|e| format!("{e:#}"))?
    }

    /// The state to hand to a new build; none from an instance that has failed.
    pub(crate) async fn export_state(&mut self) -> Option<Vec<u8>> {
        if !self.healthy {
            return None;
        }
        self.arm();
        match self
            .game
            .pitaya_host_handler()
            .call_export_state(&mut self.store)
            .await
        {
            Ok(state) => state,
            Err(error) => {
                tracing::error!(component = %self.shared.name, instance = self.index, error = %one_line(&error), "export-state failed; the new build starts without state");
                None
            }
        }
    }

    /// Whether the instance can take a call, replacing it first if it failed.
    async fn ready(&mut self) -> bool {
        if !self.healthy {
            // Boxed: instantiating is a large future, and inline it would make every call's
            // future (allocated and copied per request) that much larger.
            self.healthy = Box::pin(self.restart()).await;
        }
        self.healthy
    }

    /// Runs a handler; a trap or a timeout marks the instance for replacement.
    pub(crate) async fn handle(
        &mut self,
        session: u64,
        handler: &str,
        payload: &[u8],
    ) -> CallResult {
        if !self.ready().await {
            return Err(CallFailure::Unavailable);
        }
        let Some(position) = self.handlers.iter().position(|name| name == handler) else {
            // Only a call that raced a reload to a build without the handler lands here; the
            // caller answers it as it answers any unknown route.
            return Err(CallFailure::NoHandler);
        };
        // A component declares far fewer than 2^32 handlers; an index past them is answered
        // by the component as unknown.
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        self.arm();
        let outcome = self
            .game
            .pitaya_host_handler()
            .call_handle(&mut self.store, session, position, payload)
            .await;
        match outcome {
            Ok(Ok(bytes)) => Ok(Ok(bytes)),
            Ok(Err(e)) => Ok(Err(HandlerError {
                code: e.code,
                message: e.message,
                metadata: e.metadata,
            })),
            Err(error) => {
                let failure = classify(&error);
                if let Some(unlogged) = self.shared.failures.admit_line() {
                    tracing::error!(
                        component = %self.shared.name, instance = self.index,
                        route = %format_args!("{}.{}", self.shared.name, handler),
                        session,
                        %failure,
                        unlogged,
                        error = %one_line(&error),
                        "component call failed; its instance will be replaced"
                    );
                }
                self.healthy = false;
                Err(failure)
            }
        }
    }

    pub(crate) async fn session_closed(&mut self, session: &Arc<Session>) {
        if self.ready().await {
            self.arm();
            self.store.data_mut().closing = Some(session.clone());
            let outcome = self
                .game
                .pitaya_host_handler()
                .call_session_closed(&mut self.store, session.id())
                .await;
            self.store.data_mut().closing = None;
            self.survived(outcome, "session-closed", Some(session.id()));
        }
    }

    /// Fires timer `timer` if it is one of this instance's; false when it is not (it was
    /// cancelled, it belongs to an instance since replaced, or to a reload's new build that is
    /// not in place yet).
    pub(crate) async fn timer(&mut self, timer: u64) -> bool {
        // A replaced instance's timers are not the new one's: restart first, then ask.
        if !self.ready().await || !self.store.data().timers.fired(timer) {
            return false;
        }
        self.arm();
        let outcome = self
            .game
            .pitaya_host_handler()
            .call_on_timer(&mut self.store, timer)
            .await;
        self.survived(outcome, "on-timer", None);
        true
    }

    pub(crate) async fn validate(&mut self, session: u64, handshake: &str) -> Result<(), String> {
        if !self.ready().await {
            return Err("the component is unavailable".into());
        }
        self.arm();
        let outcome = self
            .game
            .pitaya_host_handler()
            .call_validate_handshake(&mut self.store, session, handshake)
            .await;
        match outcome {
            Ok(verdict) => verdict,
            Err(error) => {
                self.survived(Err::<(), _>(error), "validate-handshake", Some(session));
                Err("the component failed to validate the handshake".into())
            }
        }
    }

    /// Cancels the instance's timers and runs its shutdown hook.
    pub(crate) async fn shutdown(&mut self) {
        let ready = self.ready().await;
        self.store.data().timers.cancel_all();
        if ready {
            self.arm();
            let outcome = self
                .game
                .pitaya_host_handler()
                .call_shutdown(&mut self.store)
                .await;
            self.survived(outcome, "shutdown", None);
        }
    }

    /// Logs a failed hook call and marks the instance for replacement.
    fn survived<T>(&mut self, outcome: wasmtime::Result<T>, hook: &str, session: Option<u64>) {
        if let Err(error) = outcome {
            if let Some(unlogged) = self.shared.failures.admit_line() {
                tracing::error!(
                    component = %self.shared.name, instance = self.index,
                    hook,
                    session,
                    failure = %classify(&error),
                    unlogged,
                    error = %one_line(&error),
                    "component hook failed; its instance will be replaced"
                );
            }
            self.healthy = false;
        }
    }

    /// Replaces a broken instance with a fresh one whose `init` runs again.
    async fn restart(&mut self) -> bool {
        match instantiate(
            &self.pre,
            &self.context,
            &self.spec,
            &self.shared,
            &self.shard,
        )
        .await
        {
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
                match self.init().await {
                    Ok(()) => {
                        // At debug: the failure that led here was logged (or counted, when
                        // failures come faster than the log takes them).
                        tracing::debug!(component = %self.shared.name, instance = self.index, "instance restarted");
                        true
                    }
                    Err(reason) => {
                        if let Some(unlogged) = self.shared.failures.admit_line() {
                            let reason = crate::clip(&reason, MAX_REASON);
                            tracing::error!(component = %self.shared.name, instance = self.index, unlogged, %reason, "restarted instance failed to init");
                        }
                        false
                    }
                }
            }
            Err(reason) => {
                if let Some(unlogged) = self.shared.failures.admit_line() {
                    let reason = crate::clip(&reason, MAX_REASON);
                    tracing::error!(component = %self.shared.name, instance = self.index, unlogged, %reason, "cannot restart instance");
                }
                false
            }
        }
    }
}

async fn instantiate(
    pre: &InstancePre<HostState>,
    context: &Arc<HostContext>,
    spec: &ComponentSpec,
    shared: &Arc<ComponentShared>,
    shard: &Weak<Shard>,
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
        shard: shard.clone(),
        timers: Timers::default(),
        call_deadline: Instant::now(),
        closing: None,
    };
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|state| &mut state.limits);
    // At every tick a running call gives its thread back to the async runtime, until its
    // deadline ends it. Through tokio's `yield_now`, which resumes it only once the thread has
    // run the other tasks ready and looked at the sockets and timers: a plain wake-up would put
    // it back in the run queue at once, and two spinning calls taking turns on a thread would
    // keep that thread from polling its sockets for dozens of ticks.
    store.epoch_deadline_callback(|store| {
        Ok(if Instant::now() >= store.data().call_deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
        })
    });
    arm(&mut store, spec);
    let instance = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| format!("{e:#}"))?;
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
    // there is. Only fails when metering is off, which `metered` rules out.
    if spec.metered {
        let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
    }
}

/// An error with its wasm backtrace on one line (frames joined by ` | `), so that a text log
/// keeps one failure to one line for grep.
fn one_line(error: &wasmtime::Error) -> String {
    format!("{error:#}")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn classify(error: &wasmtime::Error) -> CallFailure {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) | Some(Trap::OutOfFuel) => CallFailure::Timeout,
        _ => CallFailure::Trap,
    }
}
