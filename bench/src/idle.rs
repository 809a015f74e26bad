//! `idle`: opens C connections, handshakes each, and holds them idle for a while, measuring the
//! server's memory per connection and, with a probe session that sends one request every
//! 100 ms, what so many idle connections do to a live player's latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pitaya_protocol::PacketType;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::conn::{self, Outbox, RequestEncoder, Rx, Tx};
use crate::load::{Incoming, classify, open};
use crate::procfs::{self, ProcSample};
use crate::stats::{Histogram, LatencySummary};
use crate::target::{Target, Transport};

/// Time the probe waits for one response.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Interval between probe requests.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Pause between the last connection and the memory reading, so the server settles.
const SETTLE: Duration = Duration::from_secs(1);

/// A validated idle run.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// Where to connect.
    pub target: Target,
    /// Idle connections to hold.
    pub connections: usize,
    /// How long to hold them once all are open.
    pub hold: Duration,
    /// The server's pid, to read its memory.
    pub server_pid: Option<u32>,
    /// Answer server heartbeats with heartbeats.
    pub heartbeat: bool,
    /// Route of the probe's requests.
    pub route: String,
    /// Payload of the probe's requests.
    pub body: Vec<u8>,
    /// Timeout of one connect plus handshake.
    pub connect_timeout: Duration,
    /// Connections opened at once.
    pub batch: usize,
}

/// What an idle run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleReport {
    /// The target URL.
    pub url: String,
    /// tcp or ws.
    pub transport: Transport,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that completed the handshake.
    pub connected: usize,
    /// Connections that failed to connect or handshake.
    pub connect_failures: usize,
    /// Seconds spent opening the connections.
    pub connect_secs: f64,
    /// Seconds the connections were held.
    pub hold_secs: f64,
    /// Whether server heartbeats were answered.
    pub heartbeat: bool,
    /// Heartbeat interval the server advertised (from the probe's handshake).
    pub server_heartbeat_secs: u64,
    /// Connections the server closed during the hold.
    pub closed_during_hold: usize,
    /// Heartbeats received from the server during the hold, over all connections.
    pub heartbeats_received: usize,
    /// The server's memory, when `--server-pid` was given.
    pub server: Option<IdleServerFigures>,
    /// The probe session's latency.
    pub probe: LatencySummary,
    /// Probe requests that failed (error response, timeout, closed).
    pub probe_errors: u64,
}

/// A server's memory over an idle run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct IdleServerFigures {
    /// The server's pid.
    pub pid: u32,
    /// VmRSS before any connection, in bytes.
    pub rss_before_bytes: u64,
    /// VmRSS once every connection was open (after a 1 s settle), in bytes.
    pub rss_connected_bytes: u64,
    /// VmRSS at the end of the hold, in bytes.
    pub rss_end_bytes: u64,
    /// VmHWM at the end of the hold, in bytes.
    pub hwm_bytes: u64,
    /// (rss_connected - rss_before) / connected, in bytes.
    pub bytes_per_connection: f64,
    /// CPU seconds the server used during the hold (heartbeats, the probe, timers).
    pub hold_cpu_secs: f64,
}

/// Counters shared by the idle connections.
#[derive(Default)]
struct Counters {
    closed: AtomicUsize,
    heartbeats: AtomicUsize,
}

/// Runs an idle test.
pub async fn run(config: IdleConfig) -> Result<IdleReport> {
    let before = config.server_pid.map(procfs::sample).transpose()?;
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<()>>(config.batch.max(1));
    let mut tasks = JoinSet::new();
    let mut connected = 0usize;
    let mut first_failure: Option<anyhow::Error> = None;
    let connect_started = Instant::now();
    let mut opened = 0usize;
    while opened < config.connections {
        let batch = config.batch.min(config.connections - opened);
        for _ in 0..batch {
            let target = config.target.clone();
            let ready = ready_tx.clone();
            let stop = stop_rx.clone();
            let counters = counters.clone();
            let timeout = config.connect_timeout;
            let heartbeat = config.heartbeat;
            tasks.spawn(async move {
                let (mut tx, mut rx) = match open(&target, timeout).await {
                    Ok(halves) => halves,
                    Err(error) => {
                        let _ = ready.send(Err(error)).await;
                        return;
                    }
                };
                let _ = ready.send(Ok(())).await;
                drop(ready);
                hold(&mut tx, &mut rx, stop, heartbeat, &counters).await;
                tx.close().await;
            });
        }
        for _ in 0..batch {
            let wait = config.connect_timeout + Duration::from_secs(1);
            match tokio::time::timeout(wait, ready_rx.recv()).await {
                Ok(Some(Ok(()))) => connected += 1,
                Ok(Some(Err(error))) => {
                    first_failure.get_or_insert(error);
                }
                Ok(None) => break,
                Err(_) => {
                    first_failure
                        .get_or_insert_with(|| anyhow::anyhow!("a connection never reported"));
                }
            }
        }
        opened += batch;
        if connected == 0 {
            break; // the first batch failed whole: the server is not there
        }
    }
    drop(ready_tx);
    let connect_secs = connect_started.elapsed().as_secs_f64();
    if connected == 0 {
        let error = first_failure.unwrap_or_else(|| anyhow::anyhow!("no connection opened"));
        return Err(error.context(format!("no connection to {} succeeded", config.target)));
    }
    if let Some(error) = &first_failure {
        eprintln!(
            "pitaya-bench: {} of {} connections failed; first: {error:#}",
            config.connections - connected,
            config.connections
        );
    }

    tokio::time::sleep(SETTLE).await;
    let connected_sample = config.server_pid.map(procfs::sample).transpose()?;
    let closed_before_hold = counters.closed.load(Ordering::Relaxed);
    let heartbeats_before_hold = counters.heartbeats.load(Ordering::Relaxed);

    let hold_started = Instant::now();
    let probe = probe(&config, hold_started + config.hold).await;
    let hold_secs = hold_started.elapsed().as_secs_f64();
    let end_sample = config.server_pid.map(procfs::sample).transpose()?;
    let closed_during_hold = counters.closed.load(Ordering::Relaxed) - closed_before_hold;
    let heartbeats_received = counters.heartbeats.load(Ordering::Relaxed) - heartbeats_before_hold;

    let _ = stop_tx.send(true);
    // Closing is quick; the bound keeps a stuck socket from holding the report back.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;

    let (probe_latency, probe_errors, server_heartbeat_secs) = probe?;
    let server = match (config.server_pid, before, connected_sample, end_sample) {
        (Some(pid), Some(b), Some(c), Some(e)) => Some(idle_figures(pid, &b, &c, &e, connected)),
        _ => None,
    };
    Ok(IdleReport {
        url: config.target.to_string(),
        transport: config.target.transport,
        connections: config.connections,
        connected,
        connect_failures: config.connections - connected,
        connect_secs,
        hold_secs,
        heartbeat: config.heartbeat,
        server_heartbeat_secs,
        closed_during_hold,
        heartbeats_received,
        server,
        probe: probe_latency.summary(),
        probe_errors,
    })
}

/// Memory figures from three samples; the per-connection cost may be negative if the server
/// returned memory to the system meanwhile.
pub fn idle_figures(
    pid: u32,
    before: &ProcSample,
    connected_sample: &ProcSample,
    end: &ProcSample,
    connected: usize,
) -> IdleServerFigures {
    let delta = connected_sample.rss_bytes as f64 - before.rss_bytes as f64;
    IdleServerFigures {
        pid,
        rss_before_bytes: before.rss_bytes,
        rss_connected_bytes: connected_sample.rss_bytes,
        rss_end_bytes: end.rss_bytes,
        hwm_bytes: end.hwm_bytes,
        bytes_per_connection: if connected > 0 {
            delta / connected as f64
        } else {
            0.0
        },
        hold_cpu_secs: end.cpu_ticks.saturating_sub(connected_sample.cpu_ticks) as f64
            / procfs::clock_ticks_per_sec() as f64,
    }
}

/// Holds one connection until told to stop, answering heartbeats if asked.
async fn hold(
    tx: &mut Tx,
    rx: &mut Rx,
    mut stop: watch::Receiver<bool>,
    heartbeat: bool,
    counters: &Counters,
) {
    let Ok(beat) = conn::packet(PacketType::Heartbeat, &[]) else {
        return;
    };
    loop {
        tokio::select! {
            packet = rx.next_packet() => match packet {
                Ok(Some(p)) if p.kind == PacketType::Heartbeat => {
                    counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                    if heartbeat && tx.send_packet(&beat).await.is_err() {
                        counters.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                Ok(Some(p)) if p.kind == PacketType::Kick => {
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// One session that sends a request every 100 ms until `until`; returns its latency, its
/// failures and the server's heartbeat interval.
async fn probe(config: &IdleConfig, until: Instant) -> Result<(Histogram, u64, u64)> {
    let encoder = RequestEncoder::new(&config.route, &config.body)?;
    let (mut tx, mut rx) = conn::connect(&config.target, config.connect_timeout)
        .await
        .context("opening the probe connection")?;
    let info = conn::handshake(&mut tx, &mut rx, config.connect_timeout)
        .await
        .context("the probe's handshake")?;
    let mut latency = Histogram::default();
    let mut errors = 0u64;
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut id: u32 = 0;
    let mut outbox = Outbox::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(until.into()) => break,
        }
        if Instant::now() >= until {
            break;
        }
        id = id.checked_add(1).unwrap_or(1);
        encoder.encode(id, outbox.buf());
        outbox.end_packet();
        let sent_at = Instant::now();
        tx.send(&mut outbox).await.context("the probe's send")?;
        let answered = tokio::time::timeout(PROBE_TIMEOUT, async {
            loop {
                match rx.next_packet().await? {
                    None => anyhow::bail!("the server closed the probe connection"),
                    Some(p) if p.kind == PacketType::Data => {
                        if let Incoming::Response { id: got, error } = classify(&p.body)?
                            && got == u64::from(id)
                        {
                            return Ok(error);
                        }
                    }
                    Some(_) => {}
                }
            }
        })
        .await;
        match answered {
            Ok(Ok(error)) => {
                let nanos = u64::try_from(sent_at.elapsed().as_nanos()).unwrap_or(u64::MAX);
                latency.record(nanos);
                errors += u64::from(error);
            }
            Ok(Err(error)) => return Err(error.context("the probe session failed")),
            Err(_) => errors += 1,
        }
    }
    tx.close().await;
    Ok((latency, errors, info.heartbeat_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_cost() {
        let mib = |n: u64| ProcSample {
            cpu_ticks: 0,
            system_ticks: 0,
            rss_bytes: n << 20,
            hwm_bytes: n << 20,
        };
        let f = idle_figures(1, &mib(10), &mib(20), &mib(21), 1024);
        assert_eq!(f.bytes_per_connection, 10_240.0);
        assert_eq!(f.rss_end_bytes, 21 << 20);
        let shrunk = idle_figures(1, &mib(20), &mib(10), &mib(10), 1024);
        assert_eq!(shrunk.bytes_per_connection, -10_240.0);
        assert_eq!(
            idle_figures(1, &mib(1), &mib(2), &mib(2), 0).bytes_per_connection,
            0.0
        );
    }
}
