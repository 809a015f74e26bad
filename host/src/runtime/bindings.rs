//! Host-side bindings generated from `wit/pitaya.wit`, the contract with components.

wasmtime::component::bindgen!({
    world: "game",
    path: "../wit",
});

pub use exports::pitaya::host::handler::ComponentInfo;
pub use pitaya::host::log::Level as LogLevel;
pub use pitaya::host::session::BindError;
pub use pitaya::host::types::HandlerKind;
