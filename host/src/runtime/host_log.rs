//! The `pitaya:host/log` interface: component logs go to the host's log, tagged with the component.

use super::bindings::LogLevel;
use super::bindings::pitaya::host::log;
use super::instance::HostState;

impl log::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        let component = self.component();
        match level {
            LogLevel::Trace => tracing::trace!(component, "{message}"),
            LogLevel::Debug => tracing::debug!(component, "{message}"),
            LogLevel::Info => tracing::info!(component, "{message}"),
            LogLevel::Warn => tracing::warn!(component, "{message}"),
            LogLevel::Error => tracing::error!(component, "{message}"),
        }
    }
}
