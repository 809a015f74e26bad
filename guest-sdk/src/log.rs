//! Logging through the host's log, where lines are tagged with the component's name.
//!
//! Use the macros, which take `format!` arguments:
//!
//! ```
//! use pitaya_guest::log;
//!
//! let uid = "ana";
//! log::info!("{uid} joined the room");
//! log::warn!("the room is nearly full ({} of {})", 7, 8);
//! ```
//!
//! A component's panic is logged at error level (with its message and place) before the
//! instance traps, so it shows up in the host's log.

use std::fmt;

use crate::sys;

/// How important a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the component copes with.
    Warn,
    /// A failure.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// Writes one line to the host's log. The host cuts a line at 16 KiB and lets a component log
/// 1 MiB a second (4 MiB at once); past that, lines are dropped and the host warns how many.
///
/// ```
/// pitaya_guest::log::log(pitaya_guest::log::Level::Info, "the room opened");
/// ```
pub fn log(level: Level, message: &str) {
    sys::log(level, message)
}

/// Logs at trace level, with `format!` arguments: `log::trace!("tick {n}")`.
#[doc(hidden)]
#[macro_export]
macro_rules! __pitaya_guest_trace {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Trace, &::std::format!($($arg)+))
    };
}

/// Logs at debug level, with `format!` arguments: `log::debug!("state {state:?}")`.
#[doc(hidden)]
#[macro_export]
macro_rules! __pitaya_guest_debug {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Debug, &::std::format!($($arg)+))
    };
}

/// Logs at info level, with `format!` arguments: `log::info!("{uid} joined")`.
#[doc(hidden)]
#[macro_export]
macro_rules! __pitaya_guest_info {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Info, &::std::format!($($arg)+))
    };
}

/// Logs at warn level, with `format!` arguments: `log::warn!("slow tick: {ms} ms")`.
#[doc(hidden)]
#[macro_export]
macro_rules! __pitaya_guest_warn {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Warn, &::std::format!($($arg)+))
    };
}

/// Logs at error level, with `format!` arguments: `log::error!("lost the score: {e}")`.
#[doc(hidden)]
#[macro_export]
macro_rules! __pitaya_guest_error {
    ($($arg:tt)+) => {
        $crate::log::log($crate::log::Level::Error, &::std::format!($($arg)+))
    };
}

// The macros are defined at the crate root (where `#[macro_export]` puts them) under hidden
// names and re-exported here, so users write `log::info!` and nothing collides with the `log`
// crate's macros at the root.
#[doc(inline)]
pub use crate::__pitaya_guest_debug as debug;
#[doc(inline)]
pub use crate::__pitaya_guest_error as error;
#[doc(inline)]
pub use crate::__pitaya_guest_info as info;
#[doc(inline)]
pub use crate::__pitaya_guest_trace as trace;
#[doc(inline)]
pub use crate::__pitaya_guest_warn as warn;
