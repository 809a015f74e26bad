//! A NATS outage under a running cluster: the frontend says so in its log, forwards fail at once
//! (no hang until the request timeout), client connections stay up, and once NATS is back the
//! hosts reconnect by themselves and forwards are served again.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::{call, call_error};
use pitaya_tests::cluster::Services;
use pitaya_tests::{Server, ServerOptions, Transport};
use serde_json::json;

/// The bound on the whole test.
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// How long the hosts get to notice the outage, and to reconnect after it.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_fail_fast_while_nats_is_down_and_recover_after() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut services = Services::start().await?;
        let backend = Server::start(
            ServerOptions::default()
                .components(&["lab.wasm"])
                .label("be")
                .cluster(services.host("room", false)),
        )
        .await?;
        let frontend = Server::start(
            ServerOptions::default()
                .components(&["lab.wasm"])
                // Long, so that a forward that waited for the timeout would show.
                .label("fe")
                .cluster(services.host("connector", true).request_timeout_ms(10_000)),
        )
        .await?;
        let mut client = frontend.connect_ready(Transport::Tcp).await?;
        call(&mut client, "room.lab.whoami", &json!({})).await?;

        services.nats.stop();
        frontend
            .wait_log("NATS disconnected", WAIT)
            .await
            .context("the frontend did not log the outage")?;
        let started = Instant::now();
        let refused = call_error(&mut client, "room.lab.whoami", &json!({}), "PIT-500").await?;
        ensure!(
            started.elapsed() < Duration::from_secs(2),
            "a forward during the outage took {:?}: {refused}",
            started.elapsed()
        );
        // The frontend's own handlers do not need NATS.
        call(&mut client, "lab.whoami", &json!({})).await?;

        services.nats.restart().await?;
        let deadline = Instant::now() + WAIT;
        loop {
            let id = client.next_id();
            client.send_request(id, "room.lab.whoami", b"{}").await?;
            let answer = client.wait_response(id).await?;
            if !answer.error {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "forwards still fail {WAIT:?} after NATS came back: {:?}\n{}",
                answer.json(),
                frontend.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(backend.is_running(), "the backend exited during the outage");
        client
            .ensure_open()
            .context("the client's connection dropped")?;
        Ok(())
    })
    .await
    .context("the test took too long")?
}
