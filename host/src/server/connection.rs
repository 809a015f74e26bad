//! One connection from accept to close.
//!
//! Each connection has two tasks. The driver reads bytes, feeds [`pitaya_protocol::Connection`],
//! dispatches the session's messages one at a time in arrival order, and queues responses. The
//! writer drains the session's bounded send queue into the socket, batching what is waiting.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pitaya_protocol::{Connection, Event, Message, MessageType, State, encode_response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use super::Shared;
use crate::router::Resolved;
use crate::runtime::{CallFailure, HandlerKind};
use crate::session::{Outbound, SendQueue, Session};
use crate::transport::http::{Sniffed, serve_file, sniff};
use crate::transport::{
    BoxedIo, Conn, ConnReader, ConnWriter, TcpReader, TcpWriter, TransportKind, accept_websocket,
};

pub(super) async fn accept_loop(listener: TcpListener, kind: TransportKind, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors is the usual cause; back off instead of spinning.
                tracing::warn!(%kind, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match &shared.connections {
            Some(limit) => match limit.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    shared.context.metrics.dropped("connection_limit");
                    tracing::warn!(%peer, %kind, max = shared.config.max_connections, "connection limit reached, refusing a connection");
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

async fn serve_stream(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    kind: TransportKind,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let timeout = shared.connection.handshake_timeout;
    // Plain HTTP is only told apart from a WebSocket upgrade on a plain port.
    if kind == TransportKind::WebSocket
        && shared.tls.is_none()
        && let Some(root) = &shared.config.web
    {
        match sniff(&stream, timeout).await {
            Ok(Sniffed::WebSocket) => {}
            Ok(request) => {
                if let Err(error) = serve_file(stream, root, request).await {
                    tracing::debug!(%peer, %error, "http request failed");
                }
                return;
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "no request head");
                return;
            }
        }
    }
    let accepted = match &shared.tls {
        Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Accepted::Tls(Box::new(tls)),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %kind, %error, "tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, %kind, "tls handshake timed out");
                return;
            }
        },
        None => Accepted::Plain(stream),
    };
    let conn = match kind {
        TransportKind::Tcp => {
            let (read, write): (
                Box<dyn AsyncRead + Send + Unpin>,
                Box<dyn AsyncWrite + Send + Unpin>,
            ) = match accepted {
                Accepted::Tls(io) => {
                    let (read, write) = tokio::io::split(io);
                    (Box::new(read), Box::new(write))
                }
                // A plain socket splits without a lock between its halves.
                Accepted::Plain(stream) => {
                    let (read, write) = stream.into_split();
                    (Box::new(read), Box::new(write))
                }
            };
            Conn {
                reader: ConnReader::Tcp(TcpReader(read)),
                writer: ConnWriter::Tcp(TcpWriter::new(write)),
                peer,
                kind,
            }
        }
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
            match tokio::time::timeout(timeout, accept_websocket(io, max_message)).await {
                Ok(Ok((reader, writer))) => Conn {
                    reader: ConnReader::Ws(reader),
                    writer: ConnWriter::Ws(writer),
                    peer,
                    kind,
                },
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "websocket upgrade failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "websocket upgrade timed out");
                    return;
                }
            }
        }
    };
    drive(shared, conn).await;
}

/// An accepted socket, after the TLS handshake when TLS is on.
enum Accepted {
    Plain(TcpStream),
    Tls(BoxedIo),
}

type Dispatch = Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;

/// What woke the driver.
enum Wake {
    Read(std::io::Result<bool>),
    Timer,
    Dispatched(Option<Bytes>),
    Closed,
    WriterDone,
}

/// Messages one session may have waiting for their turn before the host stops reading from it.
const MAX_PENDING: usize = 1024;

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

/// Runs one connection from accept to close.
async fn drive(shared: Arc<Shared>, conn: Conn) {
    let Conn {
        mut reader,
        writer,
        peer,
        kind,
    } = conn;
    let (sender, queue) = mpsc::channel(shared.config.send_queue.max(1));
    let outbound = SendQueue {
        sender,
        queued: Arc::new(AtomicUsize::new(0)),
        max_queued: shared.config.send_queue_bytes.max(1),
    };
    let (stop_writer, stop) = oneshot::channel();
    let mut writer_task = tokio::spawn(write_loop(
        writer,
        queue,
        outbound.queued.clone(),
        shared.context.metrics.clone(),
        stop,
    ));
    let mut writer_done = false;
    let start = std::time::Instant::now();
    let mut protocol = Connection::new(
        shared.connection.clone(),
        shared.router.dict().clone(),
        start,
    );
    let mut limiter = shared
        .config
        .rate_limit
        .map(|rate| RateLimiter::new(rate, start));
    let mut buf = BytesMut::new();
    let mut session: Option<Arc<Session>> = None;
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut in_flight: Option<Dispatch> = None;

    let reason = 'conn: loop {
        while let Some(packet) = protocol.poll_transmit() {
            if outbound.try_push(Outbound::Packet(packet)).is_err() {
                break 'conn "send queue full";
            }
        }
        if protocol.state() == State::Closed {
            break 'conn "protocol closed";
        }
        if in_flight.is_none()
            && let Some(session) = &session
            && let Some(next) = pending.pop_front()
        {
            in_flight = Some(if next.limited {
                shared.context.metrics.dropped("rate_limited");
                Box::pin(std::future::ready(rate_limited(&shared, &next.message)))
            } else {
                Box::pin(dispatch(shared.clone(), session.clone(), next.message))
            });
        }
        let deadline = protocol.poll_timeout().map(Instant::from_std);
        let wake = tokio::select! {
            // A client that pipelines faster than its handlers answer waits in its socket
            // buffer, not in the host's memory.
            result = reader.read(&mut buf), if pending.len() < MAX_PENDING => Wake::Read(result),
            _ = sleep_until(deadline) => Wake::Timer,
            response = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                Wake::Dispatched(response)
            }
            _ = async { session.as_ref().expect("guarded").closed().await }, if session.is_some() => Wake::Closed,
            _ = &mut writer_task, if !writer_done => Wake::WriterDone,
        };
        let now = std::time::Instant::now();
        match wake {
            Wake::Read(Ok(true)) => {
                shared.context.metrics.bytes("in", buf.len());
                let received = protocol.receive(&buf, now);
                buf.clear();
                if let Err(error) = received {
                    tracing::debug!(%peer, %kind, %error, "protocol error, closing");
                    // Flush what the state machine queued (a 400 handshake reply) before closing.
                    while let Some(packet) = protocol.poll_transmit() {
                        let _ = outbound.try_push(Outbound::Packet(packet));
                    }
                    break 'conn "protocol error";
                }
            }
            Wake::Read(Ok(false)) => break 'conn "closed by client",
            Wake::Read(Err(error)) => {
                tracing::debug!(%peer, %kind, %error, "read failed");
                break 'conn "read error";
            }
            Wake::Timer => {
                if let Err(error) = protocol.handle_timeout(now) {
                    if matches!(error, pitaya_protocol::ProtocolError::HeartbeatTimeout) {
                        shared.context.metrics.heartbeat_timeouts.inc();
                    }
                    tracing::debug!(%peer, %kind, %error, "timed out, closing");
                    break 'conn "timeout";
                }
            }
            Wake::Dispatched(response) => {
                in_flight = None;
                if let (Some(packet), Some(session)) = (response, &session)
                    && session.send(packet).is_err()
                {
                    break 'conn "send queue full";
                }
            }
            Wake::Closed => break 'conn "closed by the server",
            Wake::WriterDone => {
                writer_done = true;
                break 'conn "writer finished";
            }
        }
        while let Some(event) = protocol.poll_event() {
            match event {
                Event::Handshake(handshake) => {
                    let created = shared.registry.create(peer, handshake, outbound.clone());
                    if shared.context.cluster().is_some() {
                        // Go frontends tell backends the client's IP version this way.
                        let version = if peer.is_ipv4() { "\"ipv4\"" } else { "\"ipv6\"" };
                        created.set("ipversion".into(), version.into());
                    }
                    tracing::debug!(%peer, %kind, session = created.id(), "handshake");
                    let verdict = validate(&shared, &created).await;
                    session = Some(created);
                    shared.context.metrics.sessions.inc();
                    let outcome = if verdict.is_ok() { "ok" } else { "refused" };
                    shared
                        .context
                        .metrics
                        .handshakes
                        .get_or_create(&crate::metrics::HandshakeOutcome { outcome })
                        .inc();
                    match verdict {
                        // Packets that came behind the handshake are decoded now; their events
                        // join the queue this loop is draining.
                        Ok(()) => {
                            if let Err(error) = protocol.accept_handshake() {
                                tracing::debug!(%peer, %kind, %error, "protocol error, closing");
                            }
                        }
                        Err(reason) => {
                            tracing::info!(%peer, %kind, reason, "handshake refused");
                            protocol.refuse_handshake(400, &reason);
                        }
                    }
                }
                Event::Ready => {}
                Event::Message(message) => {
                    let limited = limiter.as_mut().is_some_and(|limiter| !limiter.allow(now));
                    pending.push_back(Pending { message, limited });
                }
            }
        }
    };

    drop(in_flight);
    if let Some(session) = &session {
        tracing::debug!(session = session.id(), %peer, reason, "session closed");
        session.close();
        shared.context.metrics.sessions.dec();
        if session.overflowed() {
            shared.context.metrics.dropped("queue_full");
        }
        if let (Some(cluster), Some(uid)) = (shared.context.cluster(), session.uid()) {
            cluster.forget_user(&uid, session.id());
        }
        release(&shared, session).await;
    } else {
        tracing::debug!(%peer, %kind, reason, "connection closed before a session began");
    }
    drop(session);
    drop(outbound);
    let _ = stop_writer.send(());
    if !writer_done {
        // A client that does not read can hold the writer in a write forever.
        if tokio::time::timeout(Duration::from_secs(1), &mut writer_task)
            .await
            .is_err()
        {
            writer_task.abort();
        }
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
    let handshake = session.handshake();
    let json = serde_json::json!({ "sys": handshake.sys, "user": handshake.user }).to_string();
    for component in validators {
        session.note_component(component.index);
        component.validate(session.id(), json.clone()).await?;
    }
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Most packets written in one go.
const WRITE_BATCH: usize = 64;

/// Drains the send queue into the socket until stopped, the queue ends, or a last packet goes.
async fn write_loop(
    mut writer: ConnWriter,
    mut queue: mpsc::Receiver<Outbound>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<crate::metrics::Metrics>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut stopping = false;
    loop {
        let first = if stopping {
            queue.try_recv().ok()
        } else {
            tokio::select! {
                biased;
                item = queue.recv() => item,
                _ = &mut stop => {
                    stopping = true;
                    queue.try_recv().ok()
                }
            }
        };
        let Some(first) = first else { break };
        let mut last = false;
        let mut item = Some(first);
        while let Some(next) = item.take() {
            match next {
                Outbound::Packet(packet) => batch.push(packet),
                Outbound::Last(packet) => {
                    batch.push(packet);
                    last = true;
                    break;
                }
            }
            if batch.len() < WRITE_BATCH {
                item = queue.try_recv().ok();
            }
        }
        let written: usize = batch.iter().map(Bytes::len).sum();
        if writer.write_packets(&batch).await.is_err() {
            return;
        }
        queued.fetch_sub(written, Ordering::AcqRel);
        metrics.bytes("out", written);
        batch.clear();
        if last {
            break;
        }
    }
    writer.shutdown().await;
}

/// An error a handler call ended with: code, message, metadata.
pub(super) type Failure = (String, String, Vec<(String, String)>);

fn failure(code: &str, message: String) -> Failure {
    (code.to_owned(), message, Vec::new())
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
async fn dispatch(shared: Arc<Shared>, session: Arc<Session>, message: Message) -> Option<Bytes> {
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
    run_handler(shared, session, message).instrument(span).await
}

async fn run_handler(
    shared: Arc<Shared>,
    session: Arc<Session>,
    message: Message,
) -> Option<Bytes> {
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
    is_request.then(|| response(&shared, message.id, outcome))
}

/// Runs one message for `session` through the handler its route names (or, in a cluster, a
/// server of the type it names, when `may_forward`), counting it and tracing its outcome.
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
    let mut metric_route = "unknown".to_owned();
    let mut elapsed = None;
    let (outcome, label): (Result<Vec<u8>, Failure>, &'static str) =
        match shared.router.resolve(route) {
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
                let result = cluster
                    .forward(server_type, session, id, route, &payload, !is_request)
                    .await;
                elapsed = Some(started.elapsed());
                if result.is_ok() || !cluster.servers.of_type(server_type).is_empty() {
                    // Only types some server has: clients cannot mint series.
                    metric_route = format!("{server_type}.*");
                }
                match result {
                    Ok(data) => (Ok(data), "ok"),
                    Err(error) => {
                        let label = if error.code == "PIT-408" { "timeout" } else { "error" };
                        (Err((error.code, error.message, error.metadata)), label)
                    }
                }
            }
            Resolved::NotFound | Resolved::Elsewhere { .. } => (
                Err(failure(
                    "PIT-404",
                    format!("pitaya/handler: {route} not found"),
                )),
                "not_found",
            ),
            Resolved::Handler {
                kind: HandlerKind::Notify,
                ..
            } if is_request => (
                Err(failure(
                    "PIT-400",
                    format!("pitaya/handler: {route} is a notify handler and gives no response"),
                )),
                "bad_request",
            ),
            Resolved::Handler {
                component, handler, ..
            } => {
                let component = component.clone();
                metric_route = format!("{}.{handler}", component.name());
                session.note_component(component.index);
                let started = std::time::Instant::now();
                let result = component
                    .call(session.id(), handler.to_owned(), payload)
                    .await;
                elapsed = Some(started.elapsed());
                handler_outcome(shared, route, result)
            }
        };
    shared
        .context
        .metrics
        .request(&metric_route, label, elapsed);
    tracing::Span::current().record("outcome", label);
    match &outcome {
        Ok(_) => tracing::debug!("handled"),
        Err((code, msg, _)) => tracing::debug!(code, msg, "failed"),
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
            component.session_closed(session.id()).await;
        }
    }
}

/// Runs a handler for no session (an RPC from another server of the cluster): session id 0.
pub(super) async fn call_sessionless(
    shared: &Arc<Shared>,
    route: &str,
    payload: Bytes,
) -> Result<Vec<u8>, Failure> {
    let (outcome, label) = match shared.router.resolve(route) {
        Resolved::Handler {
            component, handler, ..
        } => {
            let component = component.clone();
            let started = std::time::Instant::now();
            let result = component.call(0, handler.to_owned(), payload).await;
            let outcome = handler_outcome(shared, route, result);
            shared.context.metrics.request(
                &format!("{}.{handler}", component.name()),
                outcome.1,
                Some(started.elapsed()),
            );
            return outcome.0;
        }
        Resolved::Malformed => (
            failure("PIT-400", format!("pitaya/handler: malformed route {route:?}")),
            "bad_request",
        ),
        Resolved::NotFound | Resolved::Elsewhere { .. } => (
            failure("PIT-404", format!("pitaya/handler: {route} not found")),
            "not_found",
        ),
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
                match result {
                    Ok(Ok(payload)) if payload.len() > shared.config.max_response => (
                        Err(failure(
                            "PIT-500",
                            format!(
                                "pitaya/handler: {route} answered {} bytes, over the limit of {}",
                                payload.len(),
                                shared.config.max_response
                            ),
                        )),
                        "error",
                    ),
                    Ok(Ok(payload)) => (Ok(payload), "ok"),
                    Ok(Err(error)) => (Err((error.code, error.message, error.metadata)), "error"),
                    Err(failure_kind) => {
                        let (why, label) = match failure_kind {
                            CallFailure::Trap => ("trapped", "trap"),
                            CallFailure::Timeout => ("ran out of time", "timeout"),
                            CallFailure::Unavailable => ("is unavailable", "unavailable"),
                        };
                        (
                            Err(failure(
                                "PIT-503",
                                format!("pitaya/handler: {route} unavailable: the component {why}"),
                            )),
                            label,
                        )
                    }
                }
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
