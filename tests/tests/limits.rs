//! Open files (issue 5): the host raises its soft open-file limit to the hard one, caps its
//! connections below it (keeping descriptors for everything else), and refuses connections past
//! the cap, or when descriptors run out all the same, by closing them at once: counted in
//! `pitaya_connections_refused_total{reason}`, logged, and harmless to the sessions it serves.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::ensure_nothing_else;
use pitaya_tests::codec::PITAYA_HANDSHAKE;
use pitaya_tests::{Client, Incoming, Server, ServerOptions, Transport};
use tokio::net::TcpStream;

/// Hard open-file limit the servers here start with; the soft one starts lower.
const HARD: u64 = 100;
/// What the host keeps for itself out of [`HARD`]: 32 + 1 %.
const CAP: usize = 67;

fn options() -> ServerOptions {
    ServerOptions::default()
        .components(&["echo.wasm"])
        .tcp_only()
        .with_metrics()
        .open_files(64, HARD)
}

/// A connection the host must close before any handshake reply.
async fn ensure_refused(server: &Server) -> Result<()> {
    let mut extra = server.connect(Transport::Tcp).await?;
    extra.send_handshake(PITAYA_HANDSHAKE).await.ok();
    extra
        .wait_closed_within(Duration::from_secs(5))
        .await
        .context("a connection past the limit must be closed")?;
    ensure!(
        !extra
            .backlog()
            .iter()
            .any(|e| matches!(e.what, Incoming::Handshake(_))),
        "the refused connection was handshaken"
    );
    Ok(())
}

async fn refused(server: &Server, reason: &str) -> Result<f64> {
    let series = format!("pitaya_connections_refused_total{{reason=\"{reason}\"}}");
    Ok(server.metric(&series).await?.unwrap_or(0.0))
}

#[tokio::test]
async fn connections_past_the_open_file_cap_are_refused_and_counted() -> Result<()> {
    let server = Server::start(options()).await?;
    server
        .wait_log("open-file soft limit raised", Duration::from_secs(5))
        .await?;
    server
        .wait_log(
            &format!("open-file limit {HARD}: at most {CAP} connections"),
            Duration::from_secs(5),
        )
        .await?;

    let mut sessions: Vec<Client> = Vec::new();
    for i in 0..CAP {
        let c = server
            .connect_ready(Transport::Tcp)
            .await
            .with_context(|| format!("session {i} of {CAP}"))?;
        sessions.push(c);
    }
    ensure_refused(&server).await?;
    server
        .wait_log("connection limit reached", Duration::from_secs(5))
        .await?;
    ensure!(
        refused(&server, "connection_limit").await? == 1.0,
        "one refusal counted:\n{}",
        server.metrics_text().await?
    );
    let last = sessions.len() - 1;
    for i in [0, last] {
        ensure_nothing_else(&mut sessions[i])
            .await
            .with_context(|| format!("session {i} after the refusal"))?;
    }

    // A closed session makes room for a new one.
    let mut first = sessions.remove(0);
    first.close().await?;
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut fresh = loop {
        match server.connect_ready(Transport::Tcp).await {
            Ok(c) => break c,
            Err(e) => ensure!(
                Instant::now() < deadline,
                "5 s after a session closed, a new one is still refused: {e:#}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure_nothing_else(&mut fresh).await
}

/// Descriptors can run out below the cap (here the metrics endpoint's clients take them): the
/// accept fails with EMFILE, and the host still takes the waiting connection and closes it
/// instead of leaving it in the backlog (where it would keep the listener ready, and the accept
/// loop busy).
#[tokio::test]
async fn running_out_of_descriptors_refuses_cleanly() -> Result<()> {
    let server = Server::start(options()).await?;
    let mut session = server.connect_ready(Transport::Tcp).await?;
    let metrics = server.metrics.context("metrics address")?;

    // Connections to the metrics endpoint that send nothing hold a descriptor each (for 5 s).
    let free = usize::try_from(HARD)? - server.open_files()?;
    let mut hogs = Vec::new();
    for _ in 0..free {
        hogs.push(TcpStream::connect(metrics).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.open_files()? < usize::try_from(HARD)? {
        ensure!(
            Instant::now() < deadline,
            "the host holds {} of {HARD} descriptors after {free} idle metrics connections",
            server.open_files()?
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The host may hold a descriptor for a moment (the count above can include it): a
    // connection that still gets through is kept, which takes that descriptor too.
    let mut through = Vec::new();
    loop {
        let mut extra = server.connect(Transport::Tcp).await?;
        extra.send_handshake(PITAYA_HANDSHAKE).await.ok();
        // The first of the two to arrive: a handshake reply (served) or the close (refused).
        let (served, _) = extra
            .wait_for(
                "a handshake reply or the close",
                Duration::from_secs(5),
                |e| match e {
                    Incoming::Handshake(_) => Some(true),
                    Incoming::Closed(_) => Some(false),
                    _ => None,
                },
            )
            .await?;
        if !served {
            break;
        }
        through.push(extra);
        ensure!(
            through.len() <= 5,
            "5 connections were served with every descriptor taken"
        );
    }
    server
        .wait_log("out of file descriptors", Duration::from_secs(5))
        .await?;
    ensure_nothing_else(&mut session)
        .await
        .context("the session while descriptors ran out")?;

    drop(hogs);
    // The host closes its ends of the metrics connections when it reads their end.
    let deadline = Instant::now() + Duration::from_secs(5);
    let count = loop {
        match refused(&server, "out_of_files").await {
            Ok(count) => break count,
            Err(e) => ensure!(Instant::now() < deadline, "no metrics: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(count >= 1.0, "the refusal was not counted");
    ensure_nothing_else(&mut session).await?;
    ensure_nothing_else(&mut server.connect_ready(Transport::Tcp).await?).await
}
