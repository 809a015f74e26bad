//! Host-side bindings generated from `wit/pitaya.wit`, the contract with components.
//!
//! Every export is called with wasmtime's async API, so guest code runs on a fiber that an epoch
//! tick can suspend (see `runtime`'s module docs). Host functions are plain synchronous code,
//! except the two that wait for another server of a cluster, which are async so that the wait
//! suspends the call instead of blocking a thread.

wasmtime::component::bindgen!({
    world: "game",
    path: "../wit",
    imports: {
        "pitaya:host/session.bind": async,
        "pitaya:host/cluster.rpc": async,
    },
    exports: { default: async },
});

pub use exports::pitaya::host::handler::ComponentInfo;
pub use pitaya::host::log::Level as LogLevel;
pub use pitaya::host::session::BindError;
pub use pitaya::host::types::HandlerKind;
