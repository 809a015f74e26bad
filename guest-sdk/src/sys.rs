//! The host functions, in the SDK's own types: the WIT imports on WebAssembly, the in-memory
//! test host (`crate::testing`) everywhere else.
//!
//! wit-bindgen's imports compile on other targets but panic when called; routing through here
//! means code that uses sessions or logs can be unit-tested natively.

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::fake::{bind, get, is_connected, kick, log, push, remove, set, uid};

#[cfg(target_arch = "wasm32")]
pub(crate) use self::wasm::{bind, get, is_connected, kick, log, push, remove, set, uid};

#[cfg(target_arch = "wasm32")]
mod wasm {
    use crate::__private::bindings::pitaya::host::{log as wit_log, session};
    use crate::BindError;
    use crate::log::Level;

    pub(crate) fn uid(session: u64) -> Option<String> {
        session::uid(session)
    }

    pub(crate) fn bind(session: u64, uid: &str) -> Result<(), BindError> {
        session::bind(session, uid).map_err(|error| match error {
            session::BindError::NoSession => BindError::SessionClosed,
            session::BindError::AlreadyBound(uid) => BindError::AlreadyBound(uid),
            session::BindError::InvalidUid => BindError::InvalidUid,
        })
    }

    pub(crate) fn get(session: u64, key: &str) -> Option<String> {
        session::get(session, key)
    }

    pub(crate) fn set(session: u64, key: &str, value: &str) {
        session::set(session, key, value)
    }

    pub(crate) fn remove(session: u64, key: &str) {
        session::remove(session, key)
    }

    pub(crate) fn push(session: u64, route: &str, payload: &[u8]) -> bool {
        session::push(session, route, payload)
    }

    pub(crate) fn kick(session: u64) {
        session::kick(session)
    }

    pub(crate) fn is_connected(session: u64) -> bool {
        session::is_connected(session)
    }

    pub(crate) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit_log::Level::Trace,
            Level::Debug => wit_log::Level::Debug,
            Level::Info => wit_log::Level::Info,
            Level::Warn => wit_log::Level::Warn,
            Level::Error => wit_log::Level::Error,
        };
        wit_log::log(level, message)
    }
}
