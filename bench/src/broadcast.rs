//! `broadcast`: M member sessions join one group (`lab.join`), and one more session asks the
//! host to push to the whole group (`lab.broadcast` with `exceptMe`) as fast as the members
//! take the pushes in: push throughput, push latency, and the server's CPU time per push.
//!
//! The sender stays at most `--lag` broadcasts ahead of the slowest delivery, so that no
//! member's send queue (1024 packets by default) can fill up and the figure is what the host
//! delivers, not what it drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pitaya_protocol::PacketType;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::conn::{Outbox, RequestEncoder, Rx, Tx};
use crate::load::{Incoming, classify, open};
use crate::procfs::{self, ProcSample};
use crate::stats::{Histogram, LatencySummary};
use crate::target::{Target, Transport};

/// Most broadcasts in one run (the send times are kept in a table of this size).
pub const MAX_BROADCASTS: usize = 1 << 20;
/// Time allowed for the pushes still on their way when sending stops.
const DRAIN: Duration = Duration::from_secs(5);

/// A validated broadcast run.
#[derive(Debug, Clone)]
pub struct BroadcastConfig {
    /// Where to connect.
    pub target: Target,
    /// Member sessions in the group.
    pub members: usize,
    /// How long broadcasts are sent.
    pub duration: Duration,
    /// Most broadcasts the sender may be ahead of the slowest member.
    pub lag: u64,
    /// The group's name.
    pub group: String,
    /// Bytes of filler in each push's payload.
    pub filler: usize,
    /// The server's pid, to read its CPU time and memory.
    pub server_pid: Option<u32>,
    /// Timeout of one connect plus handshake plus join.
    pub connect_timeout: Duration,
    /// Members opened at once.
    pub batch: usize,
}

/// What a broadcast run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BroadcastReport {
    /// The target URL.
    pub url: String,
    /// tcp or ws.
    pub transport: Transport,
    /// Members asked for.
    pub members: usize,
    /// Members that joined the group.
    pub joined: usize,
    /// Broadcasts sent.
    pub broadcasts: u64,
    /// Broadcasts the host answered without an error, and the members it said it queued for.
    pub broadcasts_ok: u64,
    /// Pushes the host reported queued (sum of the `queued` answers is not parsed; this is
    /// broadcasts_ok × joined).
    pub pushes_expected: u64,
    /// Pushes the members received.
    pub pushes_delivered: u64,
    /// Seconds from the first broadcast to the last push received.
    pub elapsed_secs: f64,
    /// Pushes delivered per second.
    pub pushes_per_sec: f64,
    /// Broadcasts per second.
    pub broadcasts_per_sec: f64,
    /// Latency from sending a broadcast to each member's receipt of its push.
    pub latency: LatencySummary,
    /// Members the server closed during the run.
    pub members_closed: u64,
    /// Payload bytes of each push.
    pub push_payload_bytes: usize,
    /// The server's figures, when `--server-pid` was given.
    pub server: Option<BroadcastServerFigures>,
}

/// The server's CPU and memory over a broadcast run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BroadcastServerFigures {
    /// The server's pid.
    pub pid: u32,
    /// CPU seconds during the run.
    pub cpu_secs: f64,
    /// CPU microseconds per push delivered.
    pub cpu_us_per_push: f64,
    /// VmRSS at the end, in bytes.
    pub rss_bytes: u64,
}

/// What the members share.
struct Shared {
    base: Instant,
    /// Send time of each broadcast, in nanoseconds after `base` (0: not sent).
    sent_at: Vec<AtomicU64>,
    delivered: AtomicU64,
    closed: AtomicU64,
    stop: AtomicBool,
}

/// Runs a broadcast test.
pub async fn run(config: BroadcastConfig) -> Result<BroadcastReport> {
    let shared = Arc::new(Shared {
        base: Instant::now(),
        sent_at: (0..MAX_BROADCASTS).map(|_| AtomicU64::new(0)).collect(),
        delivered: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let join = RequestEncoder::new(
        "lab.join",
        format!(r#"{{"group":"{}"}}"#, config.group).as_bytes(),
    )?;
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<()>>(config.batch.max(1));
    let mut members = JoinSet::new();
    let mut joined = 0usize;
    let mut first_failure = None;
    let mut opened = 0;
    while opened < config.members {
        let batch = config.batch.min(config.members - opened);
        for _ in 0..batch {
            let target = config.target.clone();
            let ready = ready_tx.clone();
            let shared = shared.clone();
            let join = join.clone();
            let timeout = config.connect_timeout;
            members.spawn(async move {
                let joined = tokio::time::timeout(timeout, async {
                    let (mut tx, mut rx) = open(&target, timeout).await?;
                    request(&mut tx, &mut rx, &join, 1).await?;
                    anyhow::Ok((tx, rx))
                })
                .await
                .context("joining timed out")
                .and_then(|r| r);
                let (tx, mut rx) = match joined {
                    Ok(halves) => halves,
                    Err(error) => {
                        let _ = ready.send(Err(error)).await;
                        return Histogram::default();
                    }
                };
                let _ = ready.send(Ok(())).await;
                drop(ready);
                let latency = member(&mut rx, &shared).await;
                drop(tx);
                latency
            });
        }
        for _ in 0..batch {
            match tokio::time::timeout(config.connect_timeout * 2, ready_rx.recv()).await {
                Ok(Some(Ok(()))) => joined += 1,
                Ok(Some(Err(error))) => {
                    first_failure.get_or_insert(error);
                }
                Ok(None) => break,
                Err(_) => {
                    first_failure.get_or_insert_with(|| anyhow::anyhow!("a member never reported"));
                }
            }
        }
        opened += batch;
    }
    drop(ready_tx);
    if joined == 0 {
        let error = first_failure.unwrap_or_else(|| anyhow::anyhow!("no member joined"));
        return Err(error.context(format!("no member of {} joined", config.target)));
    }
    if let Some(error) = &first_failure {
        eprintln!(
            "pitaya-bench: {} of {} members failed; first: {error:#}",
            config.members - joined,
            config.members
        );
    }

    let (mut tx, mut rx) = open(&config.target, config.connect_timeout)
        .await
        .context("opening the sender")?;
    let filler = "x".repeat(config.filler);
    let server_start = config.server_pid.map(procfs::sample).transpose()?;
    let started = Instant::now();
    let deadline = started + config.duration;
    let answered = AtomicU64::new(0);
    let answered_ok = AtomicU64::new(0);
    let sender_done = AtomicBool::new(false);
    let expected_per = joined as u64;
    let mut sent = 0u64;
    let send = async {
        let mut outbox = Outbox::default();
        while Instant::now() < deadline && (sent as usize) < MAX_BROADCASTS {
            // Stay within `lag` broadcasts of the slowest delivery.
            let allowed = (shared.delivered.load(Ordering::Acquire) / expected_per) + config.lag;
            if sent >= allowed {
                if shared.closed.load(Ordering::Relaxed) > 0 {
                    break; // a member is gone: its pushes will never arrive
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
                continue;
            }
            let seq = sent;
            let body = format!(
                r#"{{"group":"{}","route":"onBench","body":{{"seq":{seq},"f":"{filler}"}},"exceptMe":true}}"#,
                config.group
            );
            let encoder = RequestEncoder::new("lab.broadcast", body.as_bytes())?;
            let nanos = u64::try_from(shared.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            shared.sent_at[seq as usize].store(nanos.max(1), Ordering::Release);
            encoder.encode(u32::try_from(seq + 1).unwrap_or(u32::MAX), outbox.buf());
            outbox.end_packet();
            tx.send(&mut outbox).await?;
            sent += 1;
        }
        sender_done.store(true, Ordering::Release);
        anyhow::Ok(())
    };
    let read = async {
        loop {
            let packet = tokio::select! {
                p = rx.next_packet() => p?,
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    if sender_done.load(Ordering::Acquire) { return anyhow::Ok(()); }
                    continue;
                }
            };
            let Some(packet) = packet else {
                bail!("the server closed the sender's connection");
            };
            if packet.kind == PacketType::Data
                && let Incoming::Response { error, .. } = classify(&packet.body)?
            {
                answered.fetch_add(1, Ordering::Relaxed);
                if !error {
                    answered_ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    let (sent_result, read_result) = tokio::join!(send, read);
    sent_result?;
    read_result?;
    // Let the pushes on their way arrive.
    let drain_until = Instant::now() + DRAIN;
    let target_total = sent * expected_per;
    while shared.delivered.load(Ordering::Acquire) < target_total && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let server_end = config.server_pid.map(procfs::sample).transpose()?;
    shared.stop.store(true, Ordering::Release);
    tx.close().await;
    let mut latency = Histogram::default();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(joined) = members.join_next().await {
            if let Ok(histogram) = joined {
                latency.merge(&histogram);
            }
        }
    })
    .await;
    let delivered = shared.delivered.load(Ordering::Acquire);
    let elapsed_secs = elapsed.as_secs_f64();
    let server = match (config.server_pid, server_start, server_end) {
        (Some(pid), Some(s), Some(e)) => Some(server_figures(pid, &s, &e, delivered)),
        _ => None,
    };
    Ok(BroadcastReport {
        url: config.target.to_string(),
        transport: config.target.transport,
        members: config.members,
        joined,
        broadcasts: sent,
        broadcasts_ok: answered_ok.load(Ordering::Relaxed),
        pushes_expected: answered_ok.load(Ordering::Relaxed) * expected_per,
        pushes_delivered: delivered,
        elapsed_secs,
        pushes_per_sec: if elapsed_secs > 0.0 {
            delivered as f64 / elapsed_secs
        } else {
            0.0
        },
        broadcasts_per_sec: if elapsed_secs > 0.0 {
            sent as f64 / elapsed_secs
        } else {
            0.0
        },
        latency: latency.summary(),
        members_closed: shared.closed.load(Ordering::Relaxed),
        push_payload_bytes: format!(r#"{{"seq":{},"f":"{filler}"}}"#, sent.max(1)).len(),
        server,
    })
}

fn server_figures(
    pid: u32,
    start: &ProcSample,
    end: &ProcSample,
    pushes: u64,
) -> BroadcastServerFigures {
    let ticks = procfs::clock_ticks_per_sec() as f64;
    let cpu_secs = end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / ticks;
    BroadcastServerFigures {
        pid,
        cpu_secs,
        cpu_us_per_push: if pushes > 0 {
            cpu_secs * 1e6 / pushes as f64
        } else {
            0.0
        },
        rss_bytes: end.rss_bytes,
    }
}

/// Sends one request and waits for its response (pushes before it are skipped).
async fn request(tx: &mut Tx, rx: &mut Rx, encoder: &RequestEncoder, id: u32) -> Result<()> {
    let mut outbox = Outbox::default();
    encoder.encode(id, outbox.buf());
    outbox.end_packet();
    tx.send(&mut outbox).await?;
    loop {
        let Some(packet) = rx.next_packet().await? else {
            bail!("the server closed the connection before answering");
        };
        if packet.kind != PacketType::Data {
            continue;
        }
        if let Incoming::Response { id: got, error } = classify(&packet.body)?
            && got == u64::from(id)
        {
            if error {
                bail!(
                    "error response: {} (is the lab component loaded?)",
                    String::from_utf8_lossy(&packet.body)
                );
            }
            return Ok(());
        }
    }
}

/// Reads pushes until told to stop; counts them and records their latency.
async fn member(rx: &mut Rx, shared: &Shared) -> Histogram {
    let mut latency = Histogram::default();
    loop {
        let packet = tokio::select! {
            p = rx.next_packet() => p,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if shared.stop.load(Ordering::Acquire) { return latency; }
                continue;
            }
        };
        match packet {
            Ok(Some(p)) if p.kind == PacketType::Data => {
                if let Some(seq) = push_seq(&p.body) {
                    let now = u64::try_from(shared.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    if let Some(sent) = shared.sent_at.get(seq as usize) {
                        let sent = sent.load(Ordering::Acquire);
                        if sent > 0 {
                            latency.record(now.saturating_sub(sent));
                        }
                    }
                    shared.delivered.fetch_add(1, Ordering::AcqRel);
                }
            }
            Ok(Some(p)) if p.kind == PacketType::Kick => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                return latency;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                if !shared.stop.load(Ordering::Acquire) {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                }
                return latency;
            }
        }
    }
}

/// The `seq` of an `onBench` push: a Push message whose payload holds `"seq":N` (the lab
/// component re-serializes the body, so the keys may come in any order).
fn push_seq(body: &[u8]) -> Option<u64> {
    let (&flag, rest) = body.split_first()?;
    if (flag >> 1) & 7 != 3 {
        return None; // not a push
    }
    let payload = if flag & 1 != 0 {
        // A coded route: a two-byte code.
        rest.get(2..)?
    } else {
        let (&len, rest) = rest.split_first()?;
        rest.get(usize::from(len)..)?
    };
    let key = br#""seq":"#;
    let at = payload.windows(key.len()).position(|w| w == key)?;
    let digits = &payload[at + key.len()..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use pitaya_protocol::{EncodeOptions, RouteDict, encode_push};

    #[test]
    fn reads_the_seq_of_a_push() {
        let mut out = BytesMut::new();
        encode_push(
            "onBench",
            br#"{"f":"xx","seq":4711}"#,
            &RouteDict::default(),
            &EncodeOptions::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!(push_seq(&out[pitaya_protocol::HEADER_LEN..]), Some(4711));
        assert_eq!(push_seq(&[0x04, 1]), None); // a response
    }
}
