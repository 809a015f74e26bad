//! The one component instance of this WebAssembly module, and the calls that reach it.
//!
//! The wit-bindgen export glue (`Export<C>`) and the test host (`crate::testing`) both go through
//! the functions here, so tests run exactly the code path that the host drives.

use std::any::Any;
use std::cell::RefCell;

use crate::{Component, HandlerError, HandlerInfo, SessionId};

thread_local! {
    // The component's state. WebAssembly here is single-threaded and the host never re-enters
    // an instance, so a thread-local `RefCell` is all the synchronisation needed. (On the host
    // target each test thread gets its own instance, which keeps tests apart.) It is `dyn Any`
    // because a static cannot be generic over the component type; there is one per module.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// The component's name and handlers.
pub(crate) fn info<C: Component>() -> (&'static str, &'static [HandlerInfo]) {
    (C::NAME, C::HANDLERS)
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
    let initialised = INSTANCE.with(|slot| slot.try_borrow().is_ok_and(|slot| slot.is_some()));
    if initialised && let Err(error) = with_instance::<C, _>(|c| c.session_closed(session)) {
        crate::log::log(
            crate::log::Level::Error,
            &format!("session-closed for session {session} failed: {error}"),
        );
    }
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

/// Sends panic messages to the host's log: a guest's stderr usually goes nowhere, and the
/// instance traps right after, so this is the one chance to say what went wrong and where.
fn install_panic_logger() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log::log(crate::log::Level::Error, &format!("component {info}"));
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
            let (name, handlers) = info::<C>();
            types::ComponentInfo {
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
            handler: String,
            payload: Vec<u8>,
        ) -> Result<Vec<u8>, types::HandlerError> {
            handle::<C>(SessionId(session), &handler, payload).map_err(|error| {
                types::HandlerError {
                    code: error.code,
                    message: error.message,
                    metadata: error.metadata,
                }
            })
        }

        fn session_closed(session: u64) {
            session_closed::<C>(SessionId(session))
        }
    }
}
