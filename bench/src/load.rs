//! `load`: C connections, each keeping N requests in flight to one route, for a fixed time or a
//! fixed number of requests; latency from send to response, throughput, errors, and the server's
//! CPU time per request and memory from `/proc`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pitaya_protocol::{MessageType, PacketType, decode_varint};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::conn::{self, Outbox, RequestEncoder, Rx, Tx};
use crate::procfs::{self, ProcSample};
use crate::stats::{Histogram, LatencySummary};
use crate::target::{Target, Transport};

/// Time given to requests still in flight when the run ends.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// A validated load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where to connect.
    pub target: Target,
    /// Number of connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub in_flight: usize,
    /// Route of every request.
    pub route: String,
    /// Payload of every request.
    pub body: Vec<u8>,
    /// How long requests are sent.
    pub duration: Duration,
    /// Most requests sent in all, if set.
    pub requests: Option<u64>,
    /// The server's pid, to read its CPU time and memory.
    pub server_pid: Option<u32>,
    /// Timeout of one connect plus handshake.
    pub connect_timeout: Duration,
    /// Connections opened at once.
    pub batch: usize,
}

/// What one connection saw.
#[derive(Debug, Default)]
struct ConnResult {
    latency: Histogram,
    sent: u64,
    ok: u64,
    error_responses: u64,
    unexpected: u64,
    timed_out: u64,
    pushes: u64,
    closed_early: bool,
}

/// Everything a load run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// The target URL.
    pub url: String,
    /// tcp or ws.
    pub transport: Transport,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that completed the handshake.
    pub connected: usize,
    /// Requests in flight per connection.
    pub in_flight: usize,
    /// The route requested.
    pub route: String,
    /// Payload size in bytes.
    pub body_bytes: usize,
    /// Seconds from the first request to the last response (or the end of the drain).
    pub elapsed_secs: f64,
    /// Requests sent.
    pub sent: u64,
    /// Successful responses.
    pub ok: u64,
    /// Successful responses per second.
    pub requests_per_sec: f64,
    /// Latency of successful and error responses, send to response.
    pub latency: LatencySummary,
    /// Error total: error responses, unexpected responses, unanswered requests, failed
    /// connects and connections closed early.
    pub errors: u64,
    /// Responses with the error flag (0x20).
    pub error_responses: u64,
    /// Responses whose id matched no request in flight.
    pub unexpected_responses: u64,
    /// Requests still unanswered when the run ended (after a grace period).
    pub timed_out: u64,
    /// Connections that failed to connect or handshake.
    pub connect_failures: usize,
    /// Connections the server closed (or broke) before the run ended.
    pub closed_early: usize,
    /// Pushes received (ignored).
    pub pushes: u64,
    /// The server's figures, when `--server-pid` was given.
    pub server: Option<ServerFigures>,
    /// CPU time this client used during the run, in seconds.
    pub client_cpu_secs: f64,
}

/// A server's resource use over a run, from `/proc`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerFigures {
    /// The server's pid.
    pub pid: u32,
    /// User plus system CPU seconds used during the run.
    pub cpu_secs: f64,
    /// CPU microseconds per answered request: a response, success or error (an error costs
    /// the server work too, and a load of failing requests is worth measuring: a handler that
    /// traps replaces its instance). 0 when nothing was answered.
    pub cpu_us_per_request: f64,
    /// The part of `cpu_us_per_request` spent in the server's own code (user time).
    pub user_us_per_request: f64,
    /// The part of `cpu_us_per_request` spent in the kernel on the server's behalf (system
    /// time).
    pub system_us_per_request: f64,
    /// Share of one core used during the run, in percent.
    pub cpu_percent: f64,
    /// Resident memory before the connections were opened, in bytes.
    pub rss_before_bytes: u64,
    /// Resident memory at the end of the run, in bytes.
    pub rss_bytes: u64,
    /// Peak resident memory of the process's whole life (VmHWM), in bytes.
    pub hwm_bytes: u64,
    /// The server thread that used the most CPU during the run (its name).
    pub busiest_thread: String,
    /// That thread's share of one core during the run, in percent. Near 100 means that one
    /// thread is what limits the server's throughput.
    pub busiest_thread_percent: f64,
}

/// State shared by every connection task.
struct Shared {
    encoder: RequestEncoder,
    in_flight: usize,
    /// Requests that may still be started, when the run is bounded in count.
    budget: Option<AtomicU64>,
}

impl Shared {
    /// Takes up to `want` requests from the budget; returns how many may be sent.
    fn take(&self, want: u64) -> u64 {
        let Some(budget) = &self.budget else {
            return want;
        };
        match budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            (left > 0).then(|| left - left.min(want))
        }) {
            Ok(left) => left.min(want),
            Err(_) => 0,
        }
    }
}

/// Runs a load test and reports what it measured.
pub async fn run(config: LoadConfig) -> Result<LoadReport> {
    let encoder = RequestEncoder::new(&config.route, &config.body)?;
    let before = config.server_pid.map(procfs::sample).transpose()?;
    let shared = Arc::new(Shared {
        encoder,
        in_flight: config.in_flight,
        budget: config.requests.map(AtomicU64::new),
    });

    // Connect and handshake in batches; each task then waits for the start signal.
    let (start_tx, start_rx) = watch::channel::<Option<Instant>>(None);
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<()>>(config.batch.max(1));
    let mut tasks = JoinSet::new();
    let mut connected = 0usize;
    let mut first_failure: Option<anyhow::Error> = None;
    let mut opened = 0usize;
    while opened < config.connections {
        let batch = config.batch.min(config.connections - opened);
        for _ in 0..batch {
            let target = config.target.clone();
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let start = start_rx.clone();
            let timeout = config.connect_timeout;
            tasks.spawn(async move {
                let (mut tx, mut rx) = match open(&target, timeout).await {
                    Ok(halves) => halves,
                    Err(error) => {
                        let _ = ready.send(Err(error)).await;
                        return None;
                    }
                };
                let _ = ready.send(Ok(())).await;
                drop(ready);
                let deadline = wait_for_start(start).await?;
                let result = drive(&mut tx, &mut rx, &shared, deadline).await;
                tx.close().await;
                Some(result)
            });
        }
        for _ in 0..batch {
            // Every task reports within its connect timeout; the margin covers a task that died.
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
    }
    drop(ready_tx);
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

    let server_start = config.server_pid.map(procfs::sample).transpose()?;
    let threads_start = config
        .server_pid
        .and_then(|pid| procfs::thread_ticks(pid).ok());
    let client_start = procfs::sample(std::process::id()).ok();
    let start = Instant::now();
    let deadline = start + config.duration;
    start_tx
        .send(Some(deadline))
        .context("starting the connections")?;

    let mut total = ConnResult::default();
    let mut latency = Histogram::default();
    let mut closed_early = 0usize;
    while let Some(joined) = tasks.join_next().await {
        let Some(result) = joined.context("a connection task failed")? else {
            continue;
        };
        latency.merge(&result.latency);
        total.sent += result.sent;
        total.ok += result.ok;
        total.error_responses += result.error_responses;
        total.unexpected += result.unexpected;
        total.timed_out += result.timed_out;
        total.pushes += result.pushes;
        closed_early += usize::from(result.closed_early);
    }
    let elapsed = start.elapsed();
    let server_end = config.server_pid.map(procfs::sample).transpose()?;
    let threads_end = config
        .server_pid
        .and_then(|pid| procfs::thread_ticks(pid).ok());
    let busiest = match (&threads_start, &threads_end) {
        (Some(start), Some(end)) => procfs::busiest_thread(start, end),
        _ => None,
    };
    let client_end = procfs::sample(std::process::id()).ok();
    let ticks = procfs::clock_ticks_per_sec() as f64;
    let elapsed_secs = elapsed.as_secs_f64();

    let server = match (config.server_pid, before, server_start, server_end) {
        (Some(pid), Some(before), Some(s), Some(e)) => {
            let mut figures = server_figures(
                pid,
                &before,
                &s,
                &e,
                ticks,
                total.ok + total.error_responses,
                elapsed_secs,
            );
            if let Some((name, thread_ticks)) = busiest
                && elapsed_secs > 0.0
            {
                figures.busiest_thread = name;
                figures.busiest_thread_percent = thread_ticks as f64 / ticks * 100.0 / elapsed_secs;
            }
            Some(figures)
        }
        _ => None,
    };
    let client_cpu_secs = match (client_start, client_end) {
        (Some(s), Some(e)) => e.cpu_ticks.saturating_sub(s.cpu_ticks) as f64 / ticks,
        _ => 0.0,
    };
    let connect_failures = config.connections - connected;
    Ok(LoadReport {
        url: config.target.to_string(),
        transport: config.target.transport,
        connections: config.connections,
        connected,
        in_flight: config.in_flight,
        route: config.route.clone(),
        body_bytes: config.body.len(),
        elapsed_secs,
        sent: total.sent,
        ok: total.ok,
        requests_per_sec: if elapsed_secs > 0.0 {
            total.ok as f64 / elapsed_secs
        } else {
            0.0
        },
        latency: latency.summary(),
        errors: total.error_responses
            + total.unexpected
            + total.timed_out
            + connect_failures as u64
            + closed_early as u64,
        error_responses: total.error_responses,
        unexpected_responses: total.unexpected,
        timed_out: total.timed_out,
        connect_failures,
        closed_early,
        pushes: total.pushes,
        server,
        client_cpu_secs,
    })
}

fn server_figures(
    pid: u32,
    before: &ProcSample,
    start: &ProcSample,
    end: &ProcSample,
    ticks_per_sec: f64,
    answered: u64,
    elapsed_secs: f64,
) -> ServerFigures {
    let cpu_secs = end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / ticks_per_sec;
    let system_secs = end.system_ticks.saturating_sub(start.system_ticks) as f64 / ticks_per_sec;
    let per_request = |secs: f64| {
        if answered > 0 {
            secs * 1e6 / answered as f64
        } else {
            0.0
        }
    };
    ServerFigures {
        pid,
        cpu_secs,
        cpu_us_per_request: per_request(cpu_secs),
        user_us_per_request: per_request(cpu_secs - system_secs),
        system_us_per_request: per_request(system_secs),
        cpu_percent: if elapsed_secs > 0.0 {
            cpu_secs * 100.0 / elapsed_secs
        } else {
            0.0
        },
        rss_before_bytes: before.rss_bytes,
        rss_bytes: end.rss_bytes,
        hwm_bytes: end.hwm_bytes,
        busiest_thread: String::new(),
        busiest_thread_percent: 0.0,
    }
}

/// Connects and handshakes within `timeout` in all.
pub async fn open(target: &Target, timeout: Duration) -> Result<(Tx, Rx)> {
    let started = Instant::now();
    let (mut tx, mut rx) = conn::connect(target, timeout).await?;
    let left = timeout.saturating_sub(started.elapsed());
    conn::handshake(&mut tx, &mut rx, left).await?;
    Ok((tx, rx))
}

/// Waits until the run starts and returns its deadline; `None` if it never will (the run was
/// abandoned).
async fn wait_for_start(mut start: watch::Receiver<Option<Instant>>) -> Option<Instant> {
    loop {
        if let Some(times) = *start.borrow_and_update() {
            return Some(times);
        }
        start.changed().await.ok()?;
    }
}

/// A message from the server, as far as a client counting responses cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A Response: its id and whether it carries the error flag.
    Response {
        /// The request id it answers.
        id: u64,
        /// Flag 0x20.
        error: bool,
    },
    /// A Push (ignored).
    Push,
}

/// Reads the flag and id of a Data packet's body; the route and payload are not looked at.
pub fn classify(body: &[u8]) -> Result<Incoming> {
    let Some((&flag, rest)) = body.split_first() else {
        bail!("empty message");
    };
    match MessageType::from_u8((flag >> 1) & 7) {
        Some(MessageType::Response) => {
            let (id, _) = decode_varint(rest).map_err(|e| anyhow::anyhow!("response id: {e}"))?;
            Ok(Incoming::Response {
                id,
                error: flag & pitaya_protocol::FLAG_ERROR != 0,
            })
        }
        Some(MessageType::Push) => Ok(Incoming::Push),
        other => bail!("unexpected message type {other:?} (flag {flag:#04x}) from the server"),
    }
}

/// Sends requests and reads responses on one connection until the deadline or the budget.
async fn drive(tx: &mut Tx, rx: &mut Rx, shared: &Shared, deadline: Instant) -> ConnResult {
    let window = Semaphore::new(shared.in_flight);
    let pending: Mutex<VecDeque<(u32, Instant)>> =
        Mutex::new(VecDeque::with_capacity(shared.in_flight));
    let writer_done = AtomicBool::new(false);
    let wake_reader = Notify::new();
    let sent = AtomicU64::new(0);

    let writer = async {
        let mut outbox = Outbox::default();
        let mut next_id: u32 = 1;
        let mut failed = false;
        loop {
            let Ok(Ok(permit)) = tokio::time::timeout_at(deadline.into(), window.acquire()).await
            else {
                break; // deadline, or the reader closed the window
            };
            permit.forget();
            let mut want = 1u64;
            while let Ok(permit) = window.try_acquire() {
                permit.forget();
                want += 1;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let granted = shared.take(want);
            if granted == 0 {
                break;
            }
            if granted < want {
                window.add_permits((want - granted) as usize);
            }
            {
                let mut queue = pending.lock().unwrap_or_else(|p| p.into_inner());
                for _ in 0..granted {
                    shared.encoder.encode(next_id, outbox.buf());
                    outbox.end_packet();
                    queue.push_back((next_id, now));
                    // Ids stay in 1..=u32::MAX: pitaya clients and servers use 32-bit ids.
                    next_id = next_id.checked_add(1).unwrap_or(1);
                }
            }
            sent.fetch_add(granted, Ordering::Relaxed);
            if tx.send(&mut outbox).await.is_err() {
                failed = true;
                break;
            }
        }
        writer_done.store(true, Ordering::Release);
        wake_reader.notify_one();
        failed
    };

    let reader = async {
        let mut result = ConnResult::default();
        let hard_stop = deadline + DRAIN_GRACE;
        loop {
            if writer_done.load(Ordering::Acquire)
                && pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
            {
                break;
            }
            tokio::select! {
                packet = rx.next_packet() => {
                    let packet = match packet {
                        Ok(Some(packet)) => packet,
                        Ok(None) | Err(_) => {
                            result.closed_early = true;
                            break;
                        }
                    };
                    match packet.kind {
                        PacketType::Data => {}
                        PacketType::Heartbeat => continue,
                        _ => {
                            result.closed_early = true;
                            break;
                        }
                    }
                    match classify(&packet.body) {
                        Ok(Incoming::Push) => result.pushes += 1,
                        Ok(Incoming::Response { id, error }) => {
                            let now = Instant::now();
                            let sent_at = {
                                let mut queue = pending.lock().unwrap_or_else(|p| p.into_inner());
                                take_pending(&mut queue, id)
                            };
                            let Some(sent_at) = sent_at else {
                                result.unexpected += 1;
                                continue;
                            };
                            let nanos = u64::try_from(now.duration_since(sent_at).as_nanos())
                                .unwrap_or(u64::MAX);
                            result.latency.record(nanos);
                            if error {
                                result.error_responses += 1;
                            } else {
                                result.ok += 1;
                            }
                            window.add_permits(1);
                        }
                        Err(_) => {
                            result.closed_early = true;
                            break;
                        }
                    }
                }
                () = wake_reader.notified() => {}
                () = tokio::time::sleep_until(hard_stop.into()) => break,
            }
        }
        // Unblock a writer still waiting for room in the window.
        window.close();
        result
    };

    let (writer_failed, mut result) = tokio::join!(writer, reader);
    result.sent = sent.load(Ordering::Relaxed);
    result.closed_early |= writer_failed;
    result.timed_out = pending.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
    result
}

/// Removes request `id` from the in-flight queue and returns its send time. Responses normally
/// come in order, so the front is checked first.
fn take_pending(queue: &mut VecDeque<(u32, Instant)>, id: u64) -> Option<Instant> {
    if queue
        .front()
        .is_some_and(|&(front, _)| u64::from(front) == id)
    {
        return queue.pop_front().map(|(_, at)| at);
    }
    let index = queue
        .iter()
        .position(|&(queued, _)| u64::from(queued) == id)?;
    queue.remove(index).map(|(_, at)| at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_messages() {
        assert_eq!(
            classify(&[0x04, 0x81, 0x01]).unwrap(),
            Incoming::Response {
                id: 129,
                error: false
            }
        );
        assert_eq!(
            classify(&[0x24, 0x02, b'{', b'}']).unwrap(),
            Incoming::Response { id: 2, error: true }
        );
        assert_eq!(classify(&[0x06, 0x01, b'a']).unwrap(), Incoming::Push);
        assert!(classify(&[]).is_err());
        assert!(classify(&[0x00, 0x01]).is_err()); // a Request from the server
        assert!(classify(&[0x04]).is_err()); // no id
        assert!(classify(&[0x0e]).is_err()); // type 7
    }

    #[test]
    fn server_cpu_splits_into_user_and_system() {
        let sample = |cpu_ticks, system_ticks| ProcSample {
            cpu_ticks,
            system_ticks,
            rss_bytes: 1 << 20,
            hwm_bytes: 1 << 20,
        };
        let figures = |end, answered| {
            server_figures(
                7,
                &sample(0, 0),
                &sample(1000, 400),
                &end,
                100.0,
                answered,
                2.0,
            )
        };
        // 300 ticks at 100 a second over 2 s and 100,000 requests: 3 s of CPU, a third of it
        // in the kernel.
        let f = figures(sample(1300, 500), 100_000);
        assert!((f.cpu_us_per_request - 30.0).abs() < 1e-9);
        assert!((f.user_us_per_request - 20.0).abs() < 1e-9);
        assert!((f.system_us_per_request - 10.0).abs() < 1e-9);
        assert!((f.cpu_percent - 150.0).abs() < 1e-9);
        let none = figures(sample(1005, 405), 0);
        assert_eq!(none.user_us_per_request, 0.0);
        assert_eq!(none.system_us_per_request, 0.0);
    }

    #[test]
    fn pending_out_of_order() {
        let t0 = Instant::now();
        let mut queue: VecDeque<(u32, Instant)> = (1..=3).map(|id| (id, t0)).collect();
        assert!(take_pending(&mut queue, 2).is_some());
        assert!(take_pending(&mut queue, 2).is_none());
        assert!(take_pending(&mut queue, 1).is_some());
        assert!(take_pending(&mut queue, 3).is_some());
        assert!(queue.is_empty());
    }

    #[test]
    fn budget_is_shared_exactly() {
        let shared = Shared {
            encoder: RequestEncoder::new("a.b", b"{}").unwrap(),
            in_flight: 4,
            budget: Some(AtomicU64::new(5)),
        };
        assert_eq!(shared.take(4), 4);
        assert_eq!(shared.take(4), 1);
        assert_eq!(shared.take(4), 0);
        let unbounded = Shared {
            budget: None,
            ..shared
        };
        assert_eq!(unbounded.take(7), 7);
    }
}
