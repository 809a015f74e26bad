//! The host functions, in the SDK's own types: the WIT imports on WebAssembly, the in-memory
//! test host (`crate::testing`) everywhere else.
//!
//! wit-bindgen's imports compile on other targets but panic when called; routing through here
//! means code that uses sessions, groups, users, timers or logs can be unit-tested natively.
//! Both sides offer the same functions with the same signatures, named after their WIT
//! interface (`group_add` is `groups.add`); the plain names are the `session` interface's.

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::fake::{
    bind, close, cluster_rpc, cluster_server, get, group_add, group_broadcast, group_contains,
    group_count, group_create, group_delete, group_members, group_remove, handshake, is_connected,
    kick, log, push, remote_address, remove, set, timer_after, timer_cancel, timer_every, uid,
    user_kick, user_push, user_session,
};

#[cfg(target_arch = "wasm32")]
pub(crate) use self::wasm::{
    bind, close, cluster_rpc, cluster_server, get, group_add, group_broadcast, group_contains,
    group_count, group_create, group_delete, group_members, group_remove, handshake, is_connected,
    kick, log, push, remote_address, remove, set, timer_after, timer_cancel, timer_every, uid,
    user_kick, user_push, user_session,
};

#[cfg(target_arch = "wasm32")]
mod wasm {
    use crate::__private::bindings::pitaya::host::{
        cluster, groups, log as wit_log, session, timers, users,
    };
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
            session::BindError::UidTaken => BindError::UidTaken,
            session::BindError::Unreachable(why) => BindError::Unreachable(why),
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

    pub(crate) fn kick(session: u64, reason: Option<&str>) {
        session::kick(session, reason)
    }

    pub(crate) fn close(session: u64) {
        session::close(session)
    }

    pub(crate) fn is_connected(session: u64) -> bool {
        session::is_connected(session)
    }

    pub(crate) fn remote_address(session: u64) -> Option<String> {
        session::remote_address(session)
    }

    pub(crate) fn handshake(session: u64) -> Option<String> {
        session::handshake(session)
    }

    pub(crate) fn group_create(group: &str) -> bool {
        groups::create(group)
    }

    pub(crate) fn group_delete(group: &str) -> bool {
        groups::delete(group)
    }

    pub(crate) fn group_add(group: &str, session: u64) -> bool {
        groups::add(group, session)
    }

    pub(crate) fn group_remove(group: &str, session: u64) -> bool {
        groups::remove(group, session)
    }

    pub(crate) fn group_contains(group: &str, session: u64) -> bool {
        groups::contains(group, session)
    }

    pub(crate) fn group_members(group: &str) -> Vec<u64> {
        groups::members(group)
    }

    pub(crate) fn group_count(group: &str) -> u32 {
        groups::count(group)
    }

    pub(crate) fn group_broadcast(
        group: &str,
        route: &str,
        payload: &[u8],
        except: Option<u64>,
    ) -> u32 {
        groups::broadcast(group, route, payload, except)
    }

    pub(crate) fn user_session(uid: &str) -> Option<u64> {
        users::session(uid)
    }

    pub(crate) fn user_push(uids: &[String], route: &str, payload: &[u8]) -> Vec<String> {
        users::push(uids, route, payload)
    }

    pub(crate) fn user_kick(uid: &str, reason: Option<&str>) -> bool {
        users::kick(uid, reason)
    }

    pub(crate) fn cluster_server() -> Option<(String, String)> {
        cluster::server().map(|server| (server.server_type, server.id))
    }

    pub(crate) fn cluster_rpc(route: &str, payload: &[u8]) -> Result<Vec<u8>, crate::HandlerError> {
        cluster::rpc(route, payload).map_err(|error| crate::HandlerError {
            code: error.code,
            message: error.message,
            metadata: error.metadata,
        })
    }

    pub(crate) fn timer_after(ms: u32) -> u64 {
        timers::after(ms)
    }

    pub(crate) fn timer_every(ms: u32) -> u64 {
        timers::every(ms)
    }

    pub(crate) fn timer_cancel(timer: u64) -> bool {
        timers::cancel(timer)
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
