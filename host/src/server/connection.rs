//! One connection from accept to close, in one task.
//!
//! The task reads bytes, feeds [`pitaya_protocol::Connection`], dispatches the session's
//! messages one at a time in arrival order, and writes what the session's send queue holds,
//! everything queued going out in one write. One task rather than a reader and a writer: a
//! response is written by the task that produced it, without waking another, and an idle
//! connection costs one task, not two plus a channel.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use pitaya_protocol::{
    Connection, Event, Message, MessageType, PacketError, ProtocolError, State, encode_response,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use super::Shared;
use crate::metrics::Metrics;
use crate::router::Resolved;
use crate::runtime::{CallFailure, HandlerKind, ToTheEnd};
use crate::send_queue::Taken;
use crate::session::{Outbound, SendError, SendQueue, Session};
use crate::transport::{
    BoxedIo, Farewell, Link, Outgoing, RefusedFrame, TransportKind, Writer, accept_websocket,
};

/// Seconds between two log lines about refused connections; the ones between are counted.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Logs refused connections at most once per [`REFUSAL_LOG_INTERVAL`]: a flood of refusals
/// must not become a flood of log lines.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

impl RefusalLog {
    /// Whether to log now, and how many refusals went unlogged since the last line.
    fn note(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < REFUSAL_LOG_INTERVAL => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// A descriptor held in reserve: when accept fails for lack of descriptors, closing it lets
/// the host take the waiting connection and close it at once. Otherwise the connection would
/// wait in the backlog and keep the listener readable, and the accept loop would spin.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn open() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }
}

fn out_of_files(error: &io::Error) -> bool {
    // EMFILE: this process's limit; ENFILE: the system's.
    matches!(error.raw_os_error(), Some(24 | 23))
}

pub(super) async fn accept_loop(listener: TcpListener, kind: TransportKind, shared: Arc<Shared>) {
    let mut spare = Spare::open();
    let mut refusals = RefusalLog::default();
    let metrics = shared.context.metrics.clone();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) if out_of_files(&error) => {
                // accept checks for a free descriptor before it looks for a connection, so
                // this may be a readiness left over from an earlier connection; it is only
                // cleared by an accept that finds nothing. Closing the spare frees one
                // descriptor: the accept then either takes the waiting connection, which is
                // closed at once, or finds none and clears the readiness. Either way the loop
                // does not spin.
                let had_spare = spare.0.take().is_some();
                match listener.accept().now_or_never() {
                    Some(Ok((stream, peer))) => {
                        drop(stream);
                        metrics.refused("out_of_files");
                        if let Some(unlogged) = refusals.note(std::time::Instant::now()) {
                            tracing::warn!(%peer, %kind, %error, unlogged, "out of file descriptors, refusing a connection");
                        }
                    }
                    Some(Err(_)) | None if !had_spare => {
                        // Not even the spare: wait for descriptors to free up.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Some(Err(_)) | None => {}
                }
                spare = Spare::open();
                continue;
            }
            Err(error) => {
                // A connection reset before it was accepted and the like: nothing to wait for,
                // but a persistent error must not make this loop spin.
                tracing::debug!(%kind, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let permit = match &shared.connections {
            Some(limit) => match limit.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    metrics.refused("connection_limit");
                    if let Some(unlogged) = refusals.note(std::time::Instant::now()) {
                        tracing::warn!(%peer, %kind, max = shared.max_connections, unlogged, "connection limit reached, refusing a connection");
                    }
                    drop(stream);
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_stream(shared.clone(), stream, peer, kind, permit));
    }
}

// The handshakes before `drive` (TLS, the WebSocket upgrade or a web page), in a task that
// ends with them: `drive` then runs in a task of its own, so that their state, large, does not
// stay in the connection's allocation for its whole life.
async fn serve_stream(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    kind: TransportKind,
    permit: Option<OwnedSemaphorePermit>,
) {
    // Zero turns the timeout off, as the protocol's own handshake timer reads it; here it would
    // otherwise fail every TLS handshake and upgrade whose bytes were not there at once.
    let timeout = match shared.connection.handshake_timeout {
        Duration::ZERO => Duration::MAX,
        timeout => timeout,
    };
    let accepted = match &shared.tls {
        Some(acceptor) => {
            match Box::pin(tokio::time::timeout(timeout, acceptor.accept(stream))).await {
                Ok(Ok(tls)) => Accepted::Tls(Box::new(tls)),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %kind, %error, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, %kind, "tls handshake timed out");
                    return;
                }
            }
        }
        None => Accepted::Plain(stream),
    };
    let link = match kind {
        TransportKind::Tcp => match accepted {
            Accepted::Tls(io) => Link::stream(io),
            Accepted::Plain(stream) => Link::Tcp(stream),
        },
        TransportKind::WebSocket => {
            let io: BoxedIo = match accepted {
                Accepted::Tls(io) => io,
                Accepted::Plain(stream) => Box::new(stream),
            };
            // A packet plus WebSocket framing; several packets may share one frame.
            let max_message = shared
                .connection
                .max_packet_body
                .saturating_mul(4)
                .max(64 * 1024);
            // The timeout bounds the request head and the upgrade; a page from the web folder
            // may take longer to send, as long as the client keeps reading.
            match Box::pin(accept_websocket(
                io,
                max_message,
                shared.config.web.as_deref(),
                timeout,
            ))
            .await
            {
                Ok(Some(ws)) => Link::ws(ws),
                // A plain GET, answered with a file from the web folder.
                Ok(None) => return,
                Err(error) => {
                    tracing::debug!(%peer, %error, "websocket upgrade failed");
                    return;
                }
            }
        }
    };
    // A task of its own, sized for `drive` alone: this one, sized for the handshakes as
    // well, ends here instead of staying around it for the connection's life.
    tokio::spawn(drive(shared, link, peer, kind, permit));
}

/// An accepted socket, after the TLS handshake when TLS is on.
enum Accepted {
    Plain(TcpStream),
    Tls(BoxedIo),
}

/// Why a connection reads no more but still handles the messages it has (a byte, where the
/// reason's string would be 16 in every connection's task).
#[derive(Clone, Copy)]
enum Ending {
    ProtocolError,
    /// A packet over `--max-packet`: a protocol error that WebSocket names apart (1009).
    TooLarge,
    ClosedByClient,
}

impl Ending {
    fn reason(self) -> &'static str {
        match self {
            Self::ProtocolError => "protocol error",
            Self::TooLarge => "packet too large",
            Self::ClosedByClient => "closed by client",
        }
    }

    /// What the transport tells the client as it closes.
    fn farewell(self) -> Farewell {
        match self {
            Self::ProtocolError => Farewell::ProtocolError,
            Self::TooLarge => Farewell::TooLarge,
            Self::ClosedByClient => Farewell::Normal,
        }
    }
}

/// What woke the connection.
enum Wake {
    Read(io::Result<Option<Result<(), ProtocolError>>>),
    Timer,
    Dispatched((Option<Bytes>, Arc<Shared>)),
    Closed,
    /// The last packet was written (`Ok`), or writing failed.
    Written(io::Result<()>),
}

/// Messages one session may have waiting for their turn before the host stops reading from it.
const MAX_PENDING: usize = 1024;

/// Most messages a connection answers in a row, in the polls that take them, before it writes
/// their responses: enough to spare most of the writes of a client that pipelines, few enough
/// that its responses are not held back for long.
const INLINE_RUN: u32 = 8;

/// How long a closing connection may take to write what is still queued (a client that does
/// not read could hold it forever).
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// A message waiting for its turn; the rate limit is judged on arrival.
struct Pending {
    message: Message,
    limited: bool,
}

/// A token bucket: `rate` tokens a second, holding at most `rate`.
struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl RateLimiter {
    fn new(rate: u32, now: std::time::Instant) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: now,
        }
    }

    fn allow(&mut self, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the write side holds: packets taken from the queue and not yet written.
#[derive(Default)]
struct WriteSide {
    out: Outgoing,
    /// The connection's last packet (a kick) is among `out`: once written, the connection ends.
    last: bool,
}

impl WriteSide {
    /// Writes what is queued. Pending while there is nothing (more) to write; `Ready(Ok)` once
    /// the last packet is written, or, with `finishing`, once the queue is empty.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut Writer<'_>,
        queue: &SendQueue,
        metrics: &Metrics,
        finishing: bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.out.is_empty() {
                if self.last {
                    ready!(writer.poll_flush(cx))?;
                    return Poll::Ready(Ok(()));
                }
                match queue.take(&mut self.out.packets, cx) {
                    Taken::Nothing => {
                        ready!(writer.poll_flush(cx))?;
                        return if finishing {
                            Poll::Ready(Ok(()))
                        } else {
                            Poll::Pending
                        };
                    }
                    Taken::Packets { last } => self.last = last,
                }
            }
            let written = ready!(writer.poll_write(cx, &mut self.out))?;
            queue.release(written);
            metrics.bytes("out", written);
        }
    }
}

/// Runs one connection from accept to close.
///
/// A plain function around an `async move` block rather than an `async fn`: an `async fn` keeps
/// its arguments twice in its state (as arguments and as the body's locals), 120 bytes more in
/// every connection's task.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
fn drive(
    shared: Arc<Shared>,
    mut link: Link,
    peer: std::net::SocketAddr,
    kind: TransportKind,
    permit: Option<OwnedSemaphorePermit>,
) -> impl Future<Output = ()> + Send {
    async move {
        let metrics = shared.context.metrics.clone();
        let queue = SendQueue::new(shared.config.send_queue, shared.config.send_queue_bytes);
        // In a block of its own, so that `start` is not kept in the task's state.
        let (mut protocol, mut limiter) = {
            let start = std::time::Instant::now();
            let protocol = Connection::new(shared.connection.clone(), shared.router.dict(), start);
            let limiter = shared
                .config
                .rate_limit
                .map(|rate| RateLimiter::new(rate, start));
            (protocol, limiter)
        };
        let mut session: Option<Arc<Session>> = None;
        let mut pending: VecDeque<Pending> = VecDeque::new();
        // The message being handled. Its call runs to its end even if the connection ends first
        // (`to_the_end`), so an instance is never left half-way through a call.
        let mut in_flight = ToTheEnd::idle();
        // Lent to each dispatch and given back at its end, so that a request does not count the
        // shared state's references up and down, on a cache line every worker thread writes.
        let mut lent: Option<Arc<Shared>> = None;
        let mut inline_run = 0;
        let mut write_side = WriteSide::default();
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<std::time::Instant> = None;
        // Set when the connection may have gone quiet, to give back the buffers it used.
        let mut trim = false;
        // Set when the client stopped sending (end of stream) or broke the protocol: nothing more
        // is read, and the messages that arrived whole before that are still handled, in order,
        // before the connection ends. What a client sent is then handled the same whether the
        // bad bytes came in the same read as its messages or in a later one.
        let mut ending: Option<Ending> = None;
        let (mut reader, mut writer) = link.halves();

        let reason = 'conn: loop {
            while let Some(packet) = protocol.poll_transmit() {
                if queue.try_push_own(Outbound::Packet(packet)).is_err() {
                    break 'conn "send queue full";
                }
            }
            if let Some(ending) = ending {
                if pending.is_empty() && !in_flight.is_running() {
                    break 'conn ending.reason();
                }
            } else if protocol.state() == State::Closed {
                break 'conn "protocol closed";
            }
            if trim && !in_flight.is_running() && pending.is_empty() && write_side.out.is_empty() {
                in_flight.release();
                protocol.shrink_buffers();
                write_side.out.shrink_if_empty();
                queue.shrink_if_empty();
                if pending.capacity() > 0 {
                    pending = VecDeque::new();
                }
                trim = false;
            }
            let deadline = protocol.poll_timeout();
            match (deadline, armed) {
                // Every packet moves the heartbeat deadline later. Rather than move the timer
                // each time, it is left to fire at the earlier time; the state machine then finds
                // nothing due, and the timer is armed again for the deadline of that moment.
                (Some(next), Some(current)) if next >= current => {}
                (Some(next), _) => {
                    timer.as_mut().reset(Instant::from_std(next));
                    armed = Some(next);
                }
                (None, _) => armed = None,
            }
            // A message just taken is polled at once: most handlers answer in that first poll,
            // and a pass of the select below costs as much again as the call's own bookkeeping.
            // If it is not done, the select polls it again when it is woken. A pipelining
            // client's messages are answered so up to `INLINE_RUN` in a row, while the send
            // queue is under half full, and their responses then go out in one write when the
            // select polls the write side (first): one system call for the lot, where a write
            // each cost the host and the client a system call per request. An answer here
            // leaves the block at once, so that no value is held across the select's await, in
            // every connection's task.
            let wake = 'wake: {
                if !in_flight.is_running()
                    && let Some(session) = &session
                    && let Some(next) = pending.pop_front()
                {
                    in_flight.start(dispatch(
                        lent.take().unwrap_or_else(|| shared.clone()),
                        session.clone(),
                        next.message,
                        next.limited,
                    ));
                    if (inline_run == 0 || inline_run < INLINE_RUN && queue.half_empty())
                        && let Poll::Ready(response) =
                            poll_fn(|cx| Poll::Ready(in_flight.poll_unpin(cx))).await
                    {
                        inline_run += 1;
                        break 'wake Wake::Dispatched(response);
                    }
                }
                inline_run = 0;
                tokio::select! {
                    biased;
                    _ = poll_fn(|cx| session.as_ref().expect("guarded").poll_closed(cx)), if session.is_some() => Wake::Closed,
                    written = poll_fn(|cx| write_side.poll(cx, &mut writer, &queue, &metrics, false)) => Wake::Written(written),
                    response = &mut in_flight, if in_flight.is_running() => {
                        Wake::Dispatched(response)
                    }
                    // A client that pipelines faster than its handlers answer waits in its socket
                    // buffer, not in the host's memory.
                    read = poll_fn(|cx| reader.poll_read(cx, |bytes| {
                        metrics.bytes("in", bytes.len());
                        protocol.receive(bytes, std::time::Instant::now())
                    })), if pending.len() < MAX_PENDING && ending.is_none() => Wake::Read(read),
                    // Last: a pass that finds bytes to read does not poll the timer as well, which
                    // costs about as much as the read's own bookkeeping. A client that never stops
                    // sending still lets it run, whenever the read is not ready (the runtime's
                    // cooperative budget makes it so from time to time), and it is only ever late.
                    () = &mut timer, if armed.is_some() => Wake::Timer,
                }
            };
            // Read from the clock only when something needs the time: it is a measurable part of
            // a request's cost when every wake-up reads it.
            let mut woke_at = None;
            let mut now = || *woke_at.get_or_insert_with(std::time::Instant::now);
            let was_read = matches!(wake, Wake::Read(_));
            match wake {
                Wake::Read(Ok(Some(Ok(())))) => {}
                Wake::Read(Ok(Some(Err(error)))) => {
                    tracing::debug!(%peer, %kind, %error, "protocol error, closing");
                    // Flush what the state machine queued (a 400 handshake reply) before closing.
                    while let Some(packet) = protocol.poll_transmit() {
                        let _ = queue.try_push(Outbound::Packet(packet));
                    }
                    ending = Some(match error {
                        ProtocolError::Packet(PacketError::TooLarge { .. }) => Ending::TooLarge,
                        _ => Ending::ProtocolError,
                    });
                }
                Wake::Read(Ok(None)) => {
                    // No more heartbeats are sent or expected.
                    protocol.close();
                    ending = Some(Ending::ClosedByClient);
                }
                Wake::Read(Err(error)) => match RefusedFrame::farewell_of(&error) {
                    // As for a packet that breaks the protocol: nothing more is read, and what
                    // came before is still answered.
                    Some(farewell) => {
                        tracing::debug!(%peer, %kind, %error, "frame refused, closing");
                        protocol.close();
                        ending = Some(match farewell {
                            Farewell::TooLarge => Ending::TooLarge,
                            Farewell::ProtocolError | Farewell::Normal => Ending::ProtocolError,
                        });
                    }
                    None => {
                        tracing::debug!(%peer, %kind, %error, "read failed");
                        break 'conn "read error";
                    }
                },
                Wake::Timer => {
                    armed = None;
                    trim = true;
                    if let Err(error) = protocol.handle_timeout(now()) {
                        if matches!(error, ProtocolError::HeartbeatTimeout) {
                            metrics.heartbeat_timeouts.inc();
                        }
                        tracing::debug!(%peer, %kind, %error, "timed out, closing");
                        break 'conn "timeout";
                    }
                }
                Wake::Dispatched((response, given_back)) => {
                    lent = Some(given_back);
                    if let (Some(packet), Some(session)) = (response, &session)
                        && let Err(error) = session.send_own(packet)
                    {
                        // A handler that kicked its own session gets here too: closed, not full.
                        break 'conn match error {
                            SendError::QueueFull => "send queue full",
                            SendError::Closed | SendError::Remote => "closed by the server",
                        };
                    }
                }
                Wake::Closed => break 'conn "closed by the server",
                Wake::Written(Ok(())) => break 'conn "last packet written",
                Wake::Written(Err(error)) => {
                    tracing::debug!(%peer, %kind, %error, "write failed");
                    break 'conn "write error";
                }
            }
            let mut messages = false;
            while let Some(event) = protocol.poll_event() {
                match event {
                    Event::Handshake(handshake) => {
                        let created = shared.registry.create(peer, handshake, queue.clone());
                        if shared.context.cluster().is_some() {
                            // Go frontends tell backends the client's IP version this way.
                            let version = if peer.is_ipv4() {
                                "\"ipv4\""
                            } else {
                                "\"ipv6\""
                            };
                            created.set("ipversion".into(), version.into());
                        }
                        tracing::debug!(%peer, %kind, session = created.id(), "handshake");
                        let verdict = Box::pin(validate(&shared, &created)).await;
                        session = Some(created);
                        metrics.sessions.inc();
                        let outcome = if verdict.is_ok() { "ok" } else { "refused" };
                        metrics
                            .handshakes
                            .get_or_create(&crate::metrics::HandshakeOutcome { outcome })
                            .inc();
                        match verdict {
                            // Packets that came behind the handshake are decoded now; their events
                            // join the queue this loop is draining.
                            Ok(()) => {
                                if let Err(error) = protocol.accept_handshake() {
                                    tracing::debug!(%peer, %kind, %error, "protocol error, closing");
                                    ending = Some(Ending::ProtocolError);
                                }
                            }
                            Err(reason) => {
                                let reason = crate::clip(&reason, crate::runtime::MAX_REASON);
                                tracing::info!(%peer, %kind, %reason, "handshake refused");
                                protocol.refuse_handshake(400, &reason);
                            }
                        }
                    }
                    Event::Ready => trim = true,
                    Event::Message(message) => {
                        messages = true;
                        let limited = limiter
                            .as_mut()
                            .is_some_and(|limiter| !limiter.allow(now()));
                        pending.push_back(Pending { message, limited });
                    }
                }
            }
            // A read of heartbeats only: the connection is idle.
            if was_read && !messages {
                trim = true;
            }
        };

        drop(in_flight);
        let cleanup = async {
            if let Some(session) = &session {
                tracing::debug!(session = session.id(), %peer, reason, "session closed");
                session.close();
                metrics.sessions.dec();
                if session.overflowed() {
                    metrics.dropped("queue_full");
                }
                if let (Some(cluster), Some(uid)) = (shared.context.cluster(), session.uid()) {
                    cluster.forget_user(&uid, session.id());
                }
                release(&shared, session).await;
            } else {
                tracing::debug!(%peer, %kind, reason, "connection closed before a session began");
            }
        };
        // What is queued (a kick, a refusal, the last responses) still goes out, while the session
        // is cleaned up; a client that does not read cannot hold this up for long.
        let flush = async {
            if !matches!(reason, "write error" | "read error") {
                let _ = tokio::time::timeout(
                    FINAL_FLUSH,
                    poll_fn(|cx| write_side.poll(cx, &mut writer, &queue, &metrics, true)),
                )
                .await;
            }
        };
        Box::pin(async { tokio::join!(cleanup, flush) }).await;
        queue.close();
        drop(session);
        // Boxed: its state would otherwise widen every connection's task.
        let farewell = ending.map_or(Farewell::Normal, Ending::farewell);
        let _ = Box::pin(tokio::time::timeout(FINAL_FLUSH, link.shutdown(farewell))).await;
        // The connection counts against the limit until its socket is closed. Named here so
        // that the block captures the permit at all.
        drop(link);
        drop(permit);
    }
}

/// Asks every component that validates handshakes; the first refusal wins.
async fn validate(shared: &Shared, session: &Session) -> Result<(), String> {
    let validators: Vec<_> = shared
        .router
        .components()
        .filter(|component| component.validates_handshake())
        .collect();
    if validators.is_empty() {
        return Ok(());
    }
    for component in validators {
        // A component hears `session-closed` for a session it admitted, not for one it refused
        // (or trapped on): that session never began for it, and a count of players kept in
        // the validator and the close hook would otherwise go below zero.
        component
            .validate(session.id(), session.handshake().to_owned())
            .await?;
        session.note_component(component.index);
    }
    Ok(())
}

/// An error a handler call ended with: code, message, metadata.
pub(super) type Failure = (String, String, Vec<(String, String)>);

fn failure(code: &str, message: String) -> Failure {
    (code.to_owned(), message, Vec::new())
}

/// The answer to a route that no handler serves, worded as pitaya words it (protocol.md §5).
fn not_found(shared: &Shared, route: &str) -> Failure {
    failure(
        "PIT-404",
        format!(
            "pitaya/handler: {} not found",
            shared.router.full_route(route)
        ),
    )
}

/// The answer to a request over the rate limit (a notify over it is dropped).
fn rate_limited(shared: &Shared, message: &Message) -> Option<Bytes> {
    tracing::debug!(route = message.route, "rate limited");
    shared
        .context
        .metrics
        .request("unknown", "rate_limited", None);
    (message.kind == MessageType::Request).then(|| {
        response(
            shared,
            message.id,
            Err(failure(
                "PIT-429",
                "pitaya/handler: rate limit exceeded".into(),
            )),
        )
    })
}

/// Runs one client message through its handler and encodes the response (none for a notify).
/// A message over the rate limit gets its refusal instead.
async fn dispatch(
    shared: Arc<Shared>,
    session: Arc<Session>,
    message: Message,
    limited: bool,
) -> (Option<Bytes>, Arc<Shared>) {
    if limited {
        shared.context.metrics.dropped("rate_limited");
        let response = rate_limited(&shared, &message);
        return (response, shared);
    }
    // Only debug lines are logged inside it; at info, building it (its fields formatted for
    // lines that never come) cost about a quarter of the host's CPU per echo request.
    let span = tracing::debug_span!(
        "request",
        session = session.id(),
        uid = tracing::field::Empty,
        route = %message.route,
        outcome = tracing::field::Empty,
    );
    // Reading the uid takes a lock and a copy; only do it when the span is recorded.
    if !span.is_disabled()
        && let Some(uid) = session.uid()
    {
        span.record("uid", uid);
    }
    // Entering and leaving even a disabled span costs every poll of the call something.
    if span.is_disabled() {
        run_handler(shared, session, message).await
    } else {
        run_handler(shared, session, message).instrument(span).await
    }
}

async fn run_handler(
    shared: Arc<Shared>,
    session: Arc<Session>,
    message: Message,
) -> (Option<Bytes>, Arc<Shared>) {
    let is_request = message.kind == MessageType::Request;
    let outcome = call_route(
        &shared,
        &session,
        &message.route,
        message.id,
        message.payload,
        is_request,
        true,
    )
    .await;
    let response = is_request.then(|| response(&shared, message.id, outcome));
    (response, shared)
}

/// Runs one message for `session` through the handler its route names (or, in a cluster, a
/// server of the type it names, when `may_forward`), counting it and tracing its outcome.
///
/// The caller runs the future to its end (a connection's `to_the_end`, or a task of its own):
/// the component call inside is made in place.
pub(super) async fn call_route(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    route: &str,
    id: u64,
    payload: Bytes,
    is_request: bool,
    may_forward: bool,
) -> Result<Vec<u8>, Failure> {
    // Series are labelled with served routes only, so clients cannot mint new ones.
    let mut served: Option<(&crate::runtime::ComponentHandle, &str)> = None;
    let mut metric_route: Option<String> = None;
    let mut elapsed = None;
    let (outcome, label): (Result<Vec<u8>, Failure>, &'static str) = match shared
        .router
        .resolve(route)
    {
        Resolved::Malformed => (
            Err(failure(
                "PIT-400",
                format!("pitaya/handler: malformed route {route:?}"),
            )),
            "bad_request",
        ),
        Resolved::Elsewhere { server_type }
            if may_forward && shared.context.cluster().is_some() =>
        {
            let cluster = shared.context.cluster().expect("checked").clone();
            let started = std::time::Instant::now();
            // Boxed, so that the common case, a local handler, does not carry the
            // forward's state in every dispatch's allocation.
            let result =
                Box::pin(cluster.forward(server_type, session, id, route, &payload, !is_request))
                    .await;
            elapsed = Some(started.elapsed());
            if result.is_ok() || !cluster.servers.of_type(server_type).is_empty() {
                // Only types some server has: clients cannot mint series.
                metric_route = Some(format!("{server_type}.*"));
            }
            match result {
                Ok(data) => (Ok(data), "ok"),
                Err(error) => {
                    let label = if error.code == "PIT-408" {
                        "timeout"
                    } else {
                        "error"
                    };
                    (Err((error.code, error.message, error.metadata)), label)
                }
            }
        }
        Resolved::NotFound | Resolved::Elsewhere { .. } => {
            (Err(not_found(shared, route)), "not_found")
        }
        Resolved::Handler {
            component,
            handler,
            kind: HandlerKind::Notify,
        } if is_request => {
            // A served route: counted under its name, like its other outcomes.
            served = Some((component, handler));
            (
                Err(failure(
                    "PIT-400",
                    format!(
                        "pitaya/handler: {} is a notify handler and gives no response",
                        shared.router.full_route(route)
                    ),
                )),
                "bad_request",
            )
        }
        Resolved::Handler {
            component, handler, ..
        } => {
            served = Some((component, handler));
            session.note_component(component.index);
            let started = std::time::Instant::now();
            let result = component
                .call_in_place(session.id(), handler, &payload)
                .await;
            elapsed = Some(started.elapsed());
            handler_outcome(shared, route, result)
        }
    };
    let metrics = &shared.context.metrics;
    match (&served, &metric_route) {
        (Some((component, handler)), _) => {
            metrics.served(component.name(), handler, label, elapsed)
        }
        (None, Some(route)) => metrics.request(route, label, elapsed),
        (None, None) => metrics.request("unknown", label, elapsed),
    }
    // Finding the current span asks the subscriber, per request: only when it is recorded.
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::Span::current().record("outcome", label);
        match &outcome {
            Ok(_) => tracing::debug!("handled"),
            Err((code, msg, _)) => tracing::debug!(code, msg, "failed"),
        }
    }
    outcome
}

/// Forgets a session that closed (or a stand-in whose frontend left): the registry, its
/// groups, and the components it called hear of it.
pub(super) async fn release(shared: &Arc<Shared>, session: &Arc<Session>) {
    shared.registry.remove(session.id());
    shared
        .context
        .groups
        .leave_all(session.id(), &session.groups());
    for index in session.components_seen() {
        if let Some(component) = shared.router.component_by_index(index) {
            component.session_closed(session).await;
        }
    }
}

/// Runs a handler for no session (an RPC from another server of the cluster): session id 0.
/// Like [`call_route`], it runs to its end: each RPC is served in a task of its own.
pub(super) async fn call_sessionless(
    shared: &Arc<Shared>,
    route: &str,
    payload: Bytes,
) -> Result<Vec<u8>, Failure> {
    let (outcome, label) = match shared.router.resolve(route) {
        Resolved::Handler {
            component, handler, ..
        } => {
            let started = std::time::Instant::now();
            let result = component.call_in_place(0, handler, &payload).await;
            let outcome = handler_outcome(shared, route, result);
            shared.context.metrics.served(
                component.name(),
                handler,
                outcome.1,
                Some(started.elapsed()),
            );
            return outcome.0;
        }
        Resolved::Malformed => (
            failure(
                "PIT-400",
                format!("pitaya/handler: malformed route {route:?}"),
            ),
            "bad_request",
        ),
        Resolved::NotFound | Resolved::Elsewhere { .. } => (not_found(shared, route), "not_found"),
    };
    shared.context.metrics.request("unknown", label, None);
    Err(outcome)
}

/// What a handler call's result means for the caller, and its metric label.
fn handler_outcome(
    shared: &Shared,
    route: &str,
    result: crate::runtime::CallResult,
) -> (Result<Vec<u8>, Failure>, &'static str) {
    // Only the failures below name the route, and they are rare: no copy for a success.
    let named = || shared.router.full_route(route);
    match result {
        Ok(Ok(payload)) if payload.len() > shared.config.max_response => (
            Err(failure(
                "PIT-500",
                format!(
                    "pitaya/handler: {} answered {} bytes, over the limit of {}",
                    named(),
                    payload.len(),
                    shared.config.max_response
                ),
            )),
            "error",
        ),
        Ok(Ok(payload)) => (Ok(payload), "ok"),
        // An error's code, message and metadata come from the component too: held to the same
        // limit as an answer, so that a failing handler cannot send a client more than a
        // succeeding one may.
        Ok(Err(error)) => match error_size(&error) {
            size if size > shared.config.max_response => (
                Err(failure(
                    "PIT-500",
                    format!(
                        "pitaya/handler: {} failed with an error of {size} bytes, over the limit of {}",
                        named(),
                        shared.config.max_response
                    ),
                )),
                "error",
            ),
            _ => (Err((error.code, error.message, error.metadata)), "error"),
        },
        Err(failure_kind) => {
            let (why, label) = match failure_kind {
                CallFailure::Trap => ("trapped", "trap"),
                CallFailure::Timeout => ("ran out of time", "timeout"),
                CallFailure::Unavailable => ("is unavailable", "unavailable"),
                CallFailure::NoHandler => return (Err(not_found(shared, route)), "not_found"),
            };
            (
                Err(failure(
                    "PIT-503",
                    format!(
                        "pitaya/handler: {} unavailable: the component {why}",
                        named()
                    ),
                )),
                label,
            )
        }
    }
}

/// The bytes of an error's code, message and metadata.
fn error_size(error: &crate::runtime::HandlerError) -> usize {
    error.code.len()
        + error.message.len()
        + error
            .metadata
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>()
}

/// Encodes a response packet, falling back to a PIT-500 error if it cannot be encoded.
fn response(shared: &Shared, id: u64, outcome: Result<Vec<u8>, Failure>) -> Bytes {
    let mut packet = BytesMut::new();
    let encoded = match &outcome {
        Ok(payload) => encode_response(id, payload, false, &shared.config.encode, &mut packet),
        Err((code, msg, metadata)) => {
            let payload = shared.config.serializer.error_payload(code, msg, metadata);
            encode_response(id, &payload, true, &shared.config.encode, &mut packet)
        }
    };
    if let Err(error) = encoded {
        tracing::warn!(id, %error, "response refused");
        packet.clear();
        let payload = shared.config.serializer.error_payload(
            "PIT-500",
            &format!("pitaya/handler: response refused: {error}"),
            &[],
        );
        // A short error always encodes.
        let _ = encode_response(id, &payload, true, &shared.config.encode, &mut packet);
    }
    packet.freeze()
}
