//! A call into one instance, without a connection: what the runtime answers for a handler the
//! running build does not have (the case of a request that raced a reload to such a build).

#[allow(dead_code)] // this binary needs only `component`
mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use pitaya_host::ComponentOptions;
use pitaya_host::protocol::ClientHandshake;
use pitaya_host::runtime::{CallFailure, HostContext, Runtime};
use pitaya_host::session::SendQueue;

#[test]
fn a_handler_missing_from_the_build_is_no_handler_not_a_trap() -> Result<()> {
    let wasm = common::component("echo.wasm")?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let context = Arc::new(HostContext::detached(tokio.handle().clone()));
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let session = context.registry.create(
        peer,
        ClientHandshake::default(),
        SendQueue::new(16, 1 << 20),
    );
    // A pool of 4 instances: `direct` starts one to read the component's declarations and
    // keeps another, as the dispatch bench does.
    let runtime = Runtime::new(context, false, Some(4)).context("the engine")?;
    let mut echo = runtime
        .direct(wasm, ComponentOptions::default())
        .context("echo starts")?;

    let answer = tokio.block_on(echo.call(session.id(), "echo", b"{}"));
    ensure!(
        matches!(&answer, Ok(Ok(out)) if out == b"{}"),
        "echo.echo: {answer:?}"
    );
    // The connection answers this with the PIT-404 it gives any unknown route (`not_found` in
    // server/connection.rs); the runtime must not word a message of its own, nor count a trap.
    let missing = tokio.block_on(echo.call(session.id(), "nosuch", b"{}"));
    ensure!(
        matches!(missing, Err(CallFailure::NoHandler)),
        "echo.nosuch: {missing:?}"
    );
    // And the instance is unharmed.
    let again = tokio.block_on(echo.call(session.id(), "echo", b"[1]"));
    ensure!(
        matches!(&again, Ok(Ok(out)) if out == b"[1]"),
        "echo.echo after: {again:?}"
    );
    Ok(())
}
