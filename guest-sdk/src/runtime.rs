//! The one component instance of this WebAssembly module, and the calls that reach it.
//!
//! The wit-bindgen export glue (`Export<C>`) and the test host (`crate::testing`) both go through
//! the functions here, so tests run exactly the code path that the host drives.

use std::any::Any;
use std::cell::RefCell;

use crate::log::Level;
use crate::{Component, HandlerError, HandlerInfo, SessionId, TimerId};

thread_local! {
    // The component's state. WebAssembly here is single-threaded and the host never re-enters
    // an instance, so a thread-local `RefCell` is all the synchronisation needed. (On the host
    // target each test thread gets its own instance, which keeps tests apart.) It is `dyn Any`
    // because a static cannot be generic over the component type; there is one per module.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// The component's name and handlers, and whether it validates handshakes.
pub(crate) fn info<C: Component>() -> (&'static str, &'static [HandlerInfo], bool) {
    (C::NAME, C::HANDLERS, C::VALIDATES_HANDSHAKE)
}

/// Builds the component from its configuration and makes it the instance, replacing any
/// previous one.
pub(crate) fn init<C: Component>(config: Vec<u8>) -> Result<(), String> {
    install_panic_logger();
    let component = C::init(config)?;
    INSTANCE.with(|slot| match slot.try_borrow_mut() {
        Ok(mut slot) => {
            *slot = Some(Box::new(component));
            Ok(())
        }
        Err(_) => Err("init was called while the component was busy".to_string()),
    })
}

/// Calls one handler. A component that was never initialised is built with an empty
/// configuration first (the host calls `init` before anything else; this only guards).
pub(crate) fn handle<C: Component>(
    session: SessionId,
    handler: &str,
    payload: Vec<u8>,
) -> Result<Vec<u8>, HandlerError> {
    with_instance::<C, _>(|component| component.handle(session, handler, payload))?
}

/// Tells the component a session closed. Nothing to tell when it was never initialised.
pub(crate) fn session_closed<C: Component>(session: SessionId) {
    if initialised()
        && let Err(error) = with_instance::<C, _>(|c| c.session_closed(session))
    {
        log_failure(&format!("session-closed for session {session}"), &error);
    }
}

/// Asks the component whether to let a new client in.
pub(crate) fn validate_handshake<C: Component>(
    session: SessionId,
    handshake: String,
) -> Result<(), String> {
    with_instance::<C, _>(|c| c.validate_handshake(session, handshake))
        .map_err(|error| error.message)?
}

/// Hands a timer's fire to the component.
pub(crate) fn on_timer<C: Component>(timer: TimerId) {
    if let Err(error) = with_instance::<C, _>(|c| c.on_timer(timer)) {
        log_failure(&format!("timer {timer}"), &error);
    }
}

/// Tells the component the host is shutting down. Nothing to tell when it was never
/// initialised.
pub(crate) fn shutdown<C: Component>() {
    if initialised()
        && let Err(error) = with_instance::<C, _>(|c| c.shutdown())
    {
        log_failure("shutdown", &error);
    }
}

/// The state the component hands to its successor. Nothing when it was never initialised.
pub(crate) fn export_state<C: Component>() -> Option<Vec<u8>> {
    if !initialised() {
        return None;
    }
    with_instance::<C, _>(|c| c.export_state()).unwrap_or_else(|error| {
        log_failure("export-state", &error);
        None
    })
}

/// Gives the (new) instance the state its predecessor exported.
pub(crate) fn import_state<C: Component>(state: Vec<u8>) -> Result<(), String> {
    with_instance::<C, _>(|c| c.import_state(state)).map_err(|error| error.message)?
}

/// Whether there is an instance (of any type).
fn initialised() -> bool {
    INSTANCE.with(|slot| slot.try_borrow().is_ok_and(|slot| slot.is_some()))
}

fn log_failure(what: &str, error: &HandlerError) {
    crate::log::log(Level::Error, &format!("{what} failed: {error}"));
}

/// Runs `f` on the instance, building it first if needed.
pub(crate) fn with_instance<C: Component, R>(
    f: impl FnOnce(&mut C) -> R,
) -> Result<R, HandlerError> {
    INSTANCE.with(|slot| {
        let mut slot = slot.try_borrow_mut().map_err(|_| {
            HandlerError::internal("the component was called while it was busy with another call")
        })?;
        // Build the instance when there is none, or when a test host switched component types
        // on this thread.
        if !slot.as_ref().is_some_and(|instance| instance.is::<C>()) {
            install_panic_logger();
            let component = C::init(Vec::new())
                .map_err(|error| HandlerError::internal(format!("init failed: {error}")))?;
            *slot = Some(Box::new(component));
        }
        match slot
            .as_mut()
            .and_then(|instance| instance.downcast_mut::<C>())
        {
            Some(component) => Ok(f(component)),
            None => Err(HandlerError::internal("the component instance is missing")),
        }
    })
}

/// Drops the instance (the test host starts each test from nothing).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn reset() {
    INSTANCE.with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = None;
        }
    });
}

/// Hot reload, as the host does it: the old instance exports its state, a new one is built
/// with `config` and imports it. When `init` or the import fails, the old instance stays.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn reload<C: Component>(config: Vec<u8>) -> Result<(), String> {
    // A panic in the new instance's init or import fails the reload, as a trap does on the
    // real host; the old instance keeps serving.
    fn caught<R>(hook: &str, call: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
            .unwrap_or_else(|_| Err(format!("{hook} panicked")))
    }
    let state = export_state::<C>();
    let fresh = caught("init", || C::init(config))?;
    let swap = |instance: Option<Box<dyn Any>>| {
        INSTANCE.with(|slot| match slot.try_borrow_mut() {
            Ok(mut slot) => Ok(std::mem::replace(&mut *slot, instance)),
            Err(_) => Err("reload was called while the component was busy".to_string()),
        })
    };
    let old = swap(Some(Box::new(fresh)))?;
    if let Some(state) = state
        && let Err(error) = caught("import-state", || import_state::<C>(state))
    {
        swap(old)?;
        return Err(error);
    }
    Ok(())
}

/// Sends panic messages to the host's log: a guest's stderr usually goes nowhere, and the
/// instance traps right after, so this is the one chance to say what went wrong and where.
fn install_panic_logger() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                // One line, where `{info}` puts the message on a line of its own.
                let location = info
                    .location()
                    .map(|at| format!(" at {}:{}:{}", at.file(), at.line(), at.column()))
                    .unwrap_or_default();
                let message = info.payload_as_str().unwrap_or("(no message)");
                crate::log::log(
                    Level::Error,
                    &format!("component panicked{location}: {message}"),
                );
            }));
        });
    }
}

/// The wit-bindgen side: the generated bindings and the `Guest` implementation that
/// `export!` hands to them.
pub mod glue {
    use std::marker::PhantomData;

    use super::*;
    use crate::__private::bindings::exports::pitaya::host::handler::Guest;
    use crate::__private::bindings::pitaya::host::types;
    use crate::HandlerKind;

    /// The type `export!` names in the generated export functions: it implements the WIT
    /// `handler` interface for the component `C`.
    pub struct Export<C>(PhantomData<C>);

    impl<C: Component> Guest for Export<C> {
        fn info() -> types::ComponentInfo {
            let (name, handlers, validates_handshake) = info::<C>();
            types::ComponentInfo {
                validates_handshake,
                name: name.to_string(),
                handlers: handlers
                    .iter()
                    .map(|handler| types::HandlerInfo {
                        name: handler.name.to_string(),
                        kind: match handler.kind {
                            HandlerKind::Request => types::HandlerKind::Request,
                            HandlerKind::Notify => types::HandlerKind::Notify,
                        },
                    })
                    .collect(),
            }
        }

        fn init(config: Vec<u8>) -> Result<(), String> {
            init::<C>(config)
        }

        fn handle(
            session: u64,
            handler: u32,
            payload: Vec<u8>,
        ) -> Result<Vec<u8>, types::HandlerError> {
            // The host numbers handlers by their position in what `info` declared.
            let outcome = match usize::try_from(handler)
                .ok()
                .and_then(|index| C::HANDLERS.get(index))
            {
                Some(info) => handle::<C>(SessionId(session), info.name, payload),
                None => Err(HandlerError::unknown_handler(
                    C::NAME,
                    &format!("#{handler}"),
                )),
            };
            outcome.map_err(|error| types::HandlerError {
                code: error.code,
                message: error.message,
                metadata: error.metadata,
            })
        }

        fn session_closed(session: u64) {
            session_closed::<C>(SessionId(session))
        }

        fn on_timer(timer: u64) {
            on_timer::<C>(TimerId(timer))
        }

        fn validate_handshake(session: u64, handshake: String) -> Result<(), String> {
            validate_handshake::<C>(SessionId(session), handshake)
        }

        fn shutdown() {
            shutdown::<C>()
        }

        fn export_state() -> Option<Vec<u8>> {
            export_state::<C>()
        }

        fn import_state(state: Vec<u8>) -> Result<(), String> {
            import_state::<C>(state)
        }
    }
}
