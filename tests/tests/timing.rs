//! Timers (§2, §6): heartbeats at the advertised interval, the close of a silent client after about
//! 2 × heartbeat, and the close of a connection that does not finish the handshake in time.
//! Bounds are loose: the machine may be busy.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::ensure_nothing_else;
use pitaya_tests::codec::PITAYA_HANDSHAKE;
use pitaya_tests::{Server, ServerOptions, Transport};

const HEARTBEAT_WAIT: Duration = Duration::from_secs(3);

/// With `--heartbeat 1`: the reply advertises 1; heartbeats arrive between 0.5 and 2.5 s apart; a client that
/// answers them stays connected well past 2 × heartbeat.
async fn heartbeats(server: &Server, t: Transport) -> Result<()> {
    let (mut c, reply) = server.connect_ready_with_reply(t).await?;
    ensure!(
        reply.heartbeat == Some(1),
        "sys.heartbeat is not 1: {}",
        reply.json
    );
    let start = Instant::now();
    let first = c
        .wait_heartbeat(HEARTBEAT_WAIT)
        .await
        .context("first heartbeat")?;
    c.send_heartbeat().await?;
    let second = c
        .wait_heartbeat(HEARTBEAT_WAIT)
        .await
        .context("second heartbeat")?;
    c.send_heartbeat().await?;
    let gap = second.duration_since(first);
    ensure!(
        (Duration::from_millis(500)..=Duration::from_millis(2500)).contains(&gap),
        "heartbeats {gap:?} apart, expected about 1 s"
    );
    // Keep answering until more than 3 × heartbeat have passed: the connection stays open.
    while start.elapsed() < Duration::from_millis(3500) {
        c.wait_heartbeat(HEARTBEAT_WAIT)
            .await
            .context("later heartbeat")?;
        c.send_heartbeat().await?;
    }
    ensure_nothing_else(&mut c)
        .await
        .context("a client that answers heartbeats must stay connected")
}

#[tokio::test]
async fn heartbeats_arrive_at_the_advertised_interval() -> Result<()> {
    let server = Server::start(ServerOptions::default().heartbeat(1)).await?;
    server.each_transport(|t| heartbeats(&server, t)).await
}

/// With `--heartbeat 1`: a handshaken client that never sends anything is closed after about 2 s.
async fn silent_client(server: &Server, t: Transport) -> Result<()> {
    let c = server.connect_ready(t).await?;
    let acked = Instant::now();
    let mut c = c;
    let closed = c
        .wait_closed_within(Duration::from_secs(8))
        .await
        .context("a silent client must be closed after about 2 × heartbeat")?;
    let after = closed.duration_since(acked);
    ensure!(
        (Duration::from_millis(1500)..=Duration::from_secs(6)).contains(&after),
        "silent client closed {after:?} after the ack, expected about 2 s"
    );
    Ok(())
}

#[tokio::test]
async fn silent_client_is_closed_after_two_heartbeats() -> Result<()> {
    let server = Server::start(ServerOptions::default().heartbeat(1)).await?;
    server.each_transport(|t| silent_client(&server, t)).await
}

/// With `--handshake-timeout 1`: a connection that sends nothing, and one that handshakes but never acks, are
/// closed after about 1 s; one that finished its handshake before is still served afterwards.
async fn handshake_timeout(server: &Server, t: Transport) -> Result<()> {
    let mut ready = server.connect_ready(t).await?;

    let mut idle = server.connect(t).await?;
    let closed = idle
        .wait_closed_within(Duration::from_secs(6))
        .await
        .context("a connection that never handshakes must be closed")?;
    let after = closed.duration_since(idle.opened_at);
    ensure!(
        (Duration::from_millis(500)..=Duration::from_secs(5)).contains(&after),
        "never-handshaking connection closed after {after:?}, expected about 1 s"
    );

    let mut no_ack = server.connect(t).await?;
    no_ack.send_handshake(PITAYA_HANDSHAKE).await?;
    let reply = no_ack.wait_handshake().await?;
    ensure!(reply.code == 200, "handshake refused: {}", reply.json);
    let closed = no_ack
        .wait_closed_within(Duration::from_secs(6))
        .await
        .context("a connection that never acks the handshake must be closed")?;
    let after = closed.duration_since(no_ack.opened_at);
    ensure!(
        (Duration::from_millis(500)..=Duration::from_secs(5)).contains(&after),
        "never-acking connection closed after {after:?}, expected about 1 s"
    );

    // `ready` has now lived past the handshake timeout twice over.
    ensure!(ready.opened_at.elapsed() > Duration::from_secs(1));
    ensure_nothing_else(&mut ready)
        .await
        .context("a handshaken connection must outlive the handshake timeout")
}

#[tokio::test]
async fn handshake_timeout_closes_unfinished_connections() -> Result<()> {
    let server = Server::start(ServerOptions::default().handshake_timeout(1)).await?;
    server
        .each_transport(|t| handshake_timeout(&server, t))
        .await
}
