//! The server: loads components, binds the listeners, and drives each connection from the
//! protocol state machine to the components and back.
//!
//! Each connection has two tasks. The driver reads bytes, feeds [`pitaya_protocol::Connection`],
//! dispatches the session's messages one at a time in arrival order, and queues responses. The
//! writer drains the session's bounded send queue into the socket, batching what is waiting.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pitaya_protocol::{
    Connection, ConnectionConfig, EncodeOptions, Event, Message, MessageType, State,
    encode_response, error_payload_json,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::router::{Resolved, Router, RouterError};
use crate::runtime::{
    CallFailure, ComponentHandle, HandlerKind, HostContext, Limits, LoadError, Runtime,
};
use crate::session::{Outbound, Registry, Session};
use crate::transport::{
    Conn, ConnReader, ConnWriter, TcpReader, TcpWriter, TransportKind, accept_websocket,
};

/// A component to load, with its configuration bytes (given to its `init`).
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// The `.wasm` file.
    pub path: PathBuf,
    /// Bytes passed to the component's `init`.
    pub config: Vec<u8>,
}

/// Everything the server is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP listen address, or none for no TCP listener.
    pub tcp: Option<SocketAddr>,
    /// WebSocket listen address, or none for no WebSocket listener.
    pub ws: Option<SocketAddr>,
    /// This server's type, the optional first part of routes.
    pub server_type: String,
    /// Protocol limits and timers.
    pub connection: ConnectionConfig,
    /// How responses and pushes are encoded.
    pub encode: EncodeOptions,
    /// Packets queued for one client before it counts as not reading and is disconnected.
    pub send_queue: usize,
    /// Per-instance limits.
    pub limits: Limits,
    /// The components to serve.
    pub components: Vec<ComponentSpec>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tcp: Some(SocketAddr::from(([127, 0, 0, 1], 3250))),
            ws: Some(SocketAddr::from(([127, 0, 0, 1], 3251))),
            server_type: "connector".into(),
            connection: ConnectionConfig::default(),
            encode: EncodeOptions {
                compress: false,
                push_route_codes: false,
            },
            send_queue: 1024,
            limits: Limits::default(),
            components: Vec::new(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A component failed to load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Two components claim the same routes.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A listener could not be bound.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// Which listener.
        transport: TransportKind,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Neither TCP nor WebSocket is enabled.
    #[error("no listener: enable TCP, WebSocket or both")]
    NoListener,
}

/// What every connection task shares.
struct Shared {
    router: Router,
    registry: Arc<Registry>,
    connection: Arc<ConnectionConfig>,
    encode: EncodeOptions,
    send_queue: usize,
}

/// A loaded, listening server that has not started accepting yet.
pub struct Server {
    shared: Arc<Shared>,
    tcp: Option<TcpListener>,
    ws: Option<TcpListener>,
}

impl Server {
    /// Loads every component (compiling them, running their `init`) and binds the listeners.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        if config.tcp.is_none() && config.ws.is_none() {
            return Err(ServerError::NoListener);
        }
        let registry = Arc::new(Registry::default());
        let context = Arc::new(HostContext {
            registry: registry.clone(),
            encode: config.encode.clone(),
            dict: Default::default(),
        });
        let specs = config.components.clone();
        let limits = config.limits.clone();
        let loader_context = context.clone();
        // Compiling is CPU work that must not stall the async runtime's threads.
        let loaded =
            tokio::task::spawn_blocking(move || -> Result<Vec<ComponentHandle>, LoadError> {
                let runtime = Runtime::new(loader_context, limits)?;
                specs
                    .iter()
                    .enumerate()
                    .map(|(index, spec)| runtime.load(&spec.path, index, spec.config.clone()))
                    .collect()
            })
            .await
            .map_err(|e| LoadError::Engine(format!("loader thread failed: {e}")))??;
        for component in &loaded {
            let routes: Vec<String> = component
                .handlers
                .iter()
                .map(|h| format!("{}.{}", component.name, h.name))
                .collect();
            tracing::info!(
                component = %component.name,
                path = %component.path.display(),
                routes = %routes.join(" "),
                "component loaded"
            );
        }
        let router = Router::new(&config.server_type, loaded)?;
        // Host functions encode coded push routes with the same dict the handshake offers.
        let _ = context.dict.set(router.dict().clone());
        let shared = Arc::new(Shared {
            registry,
            connection: Arc::new(config.connection.clone()),
            encode: config.encode.clone(),
            send_queue: config.send_queue.max(1),
            router,
        });
        let tcp = match config.tcp {
            Some(addr) => Some(listen(TransportKind::Tcp, addr).await?),
            None => None,
        };
        let ws = match config.ws {
            Some(addr) => Some(listen(TransportKind::WebSocket, addr).await?),
            None => None,
        };
        Ok(Self { shared, tcp, ws })
    }

    /// The bound TCP address, if TCP is enabled.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound WebSocket address, if WebSocket is enabled.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accepts and serves connections until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut accept_tasks = Vec::new();
        if let Some(listener) = self.tcp {
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                TransportKind::Tcp,
                self.shared.clone(),
            )));
        }
        if let Some(listener) = self.ws {
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                TransportKind::WebSocket,
                self.shared.clone(),
            )));
        }
        shutdown.await;
        for task in accept_tasks {
            task.abort();
        }
    }
}

async fn listen(transport: TransportKind, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            transport,
            addr,
            source,
        })
}

async fn accept_loop(listener: TcpListener, kind: TransportKind, shared: Arc<Shared>) {
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
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let conn = match kind {
                TransportKind::Tcp => {
                    let (read, write) = stream.into_split();
                    Conn {
                        reader: ConnReader::Tcp(TcpReader(read)),
                        writer: ConnWriter::Tcp(TcpWriter::new(write)),
                        peer,
                        kind,
                    }
                }
                TransportKind::WebSocket => {
                    // A packet plus WebSocket framing; several packets may share one frame.
                    let max_message = shared
                        .connection
                        .max_packet_body
                        .saturating_mul(4)
                        .max(64 * 1024);
                    let upgrade = accept_websocket(stream, max_message);
                    match tokio::time::timeout(shared.connection.handshake_timeout, upgrade).await {
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
        });
    }
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

/// Runs one connection from accept to close.
async fn drive(shared: Arc<Shared>, conn: Conn) {
    let Conn {
        mut reader,
        writer,
        peer,
        kind,
    } = conn;
    let (outbound, queue) = mpsc::channel(shared.send_queue);
    let (stop_writer, stop) = oneshot::channel();
    let mut writer_task = tokio::spawn(write_loop(writer, queue, stop));
    let mut writer_done = false;
    let mut protocol = Connection::new(
        shared.connection.clone(),
        shared.router.dict().clone(),
        std::time::Instant::now(),
    );
    let mut buf = BytesMut::new();
    let mut session: Option<Arc<Session>> = None;
    let mut pending: VecDeque<Message> = VecDeque::new();
    let mut in_flight: Option<Dispatch> = None;

    let reason = 'conn: loop {
        while let Some(packet) = protocol.poll_transmit() {
            if outbound.try_send(Outbound::Packet(packet)).is_err() {
                break 'conn "send queue full";
            }
        }
        if protocol.state() == State::Closed {
            break 'conn "protocol closed";
        }
        if in_flight.is_none()
            && let (Some(message), Some(session)) = (pending.pop_front(), &session)
        {
            in_flight = Some(Box::pin(dispatch(shared.clone(), session.clone(), message)));
        }
        let deadline = protocol.poll_timeout().map(Instant::from_std);
        let wake = tokio::select! {
            result = reader.read(&mut buf) => Wake::Read(result),
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
                let received = protocol.receive(&buf, now);
                buf.clear();
                if let Err(error) = received {
                    tracing::debug!(%peer, %kind, %error, "protocol error, closing");
                    // Flush what the state machine queued (a 400 handshake reply) before closing.
                    while let Some(packet) = protocol.poll_transmit() {
                        let _ = outbound.try_send(Outbound::Packet(packet));
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
                    tracing::debug!(%peer, %kind, session = created.id(), "handshake");
                    session = Some(created);
                    // Packets that came behind the handshake are decoded now; their events
                    // join the queue this loop is draining.
                    if let Err(error) = protocol.accept_handshake() {
                        tracing::debug!(%peer, %kind, %error, "protocol error, closing");
                    }
                }
                Event::Ready => {}
                Event::Message(message) => pending.push_back(message),
            }
        }
    };

    drop(in_flight);
    if let Some(session) = &session {
        tracing::debug!(session = session.id(), %peer, reason, "session closed");
        session.close();
        shared.registry.remove(session.id());
        for index in session.components_seen() {
            if let Some(component) = shared.router.component_by_index(index) {
                component.session_closed(session.id()).await;
            }
        }
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
        if writer.write_packets(&batch).await.is_err() {
            return;
        }
        batch.clear();
        if last {
            break;
        }
    }
    writer.shutdown().await;
}

/// Runs one client message through its handler and encodes the response (none for a notify).
async fn dispatch(shared: Arc<Shared>, session: Arc<Session>, message: Message) -> Option<Bytes> {
    let is_request = message.kind == MessageType::Request;
    let route = message.route;
    let outcome: Result<Vec<u8>, (String, String, Vec<(String, String)>)> =
        match shared.router.resolve(&route) {
            Resolved::Malformed => Err((
                "PIT-400".into(),
                format!("pitaya/handler: malformed route {route:?}"),
                Vec::new(),
            )),
            Resolved::NotFound => Err((
                "PIT-404".into(),
                format!("pitaya/handler: {route} not found"),
                Vec::new(),
            )),
            Resolved::Handler {
                kind: HandlerKind::Notify,
                ..
            } if is_request => Err((
                "PIT-400".into(),
                format!("pitaya/handler: {route} is a notify handler and gives no response"),
                Vec::new(),
            )),
            Resolved::Handler {
                component, handler, ..
            } => {
                let component = component.clone();
                let handler = handler.to_owned();
                session.note_component(component.index);
                match component
                    .call(session.id(), &handler, message.payload)
                    .await
                {
                    Ok(Ok(payload)) => Ok(payload),
                    Ok(Err(error)) => Err((error.code, error.message, error.metadata)),
                    Err(failure) => {
                        let why = match failure {
                            CallFailure::Trap => "trapped",
                            CallFailure::Timeout => "ran out of time",
                            CallFailure::Unavailable => "is unavailable",
                        };
                        Err((
                            "PIT-503".into(),
                            format!("pitaya/handler: {route} unavailable: the component {why}"),
                            Vec::new(),
                        ))
                    }
                }
            }
        };
    if !is_request {
        if let Err((code, msg, _)) = outcome {
            tracing::debug!(session = session.id(), route, code, msg, "notify failed");
        }
        return None;
    }
    let mut packet = BytesMut::new();
    let encoded = match &outcome {
        Ok(payload) => encode_response(message.id, payload, false, &shared.encode, &mut packet),
        Err((code, msg, metadata)) => {
            let payload = error_payload_json(code, msg, metadata);
            encode_response(message.id, &payload, true, &shared.encode, &mut packet)
        }
    };
    if let Err(error) = encoded {
        tracing::warn!(session = session.id(), route, %error, "response refused");
        packet.clear();
        let payload = error_payload_json(
            "PIT-500",
            &format!("pitaya/handler: response refused: {error}"),
            &[],
        );
        encode_response(message.id, &payload, true, &shared.encode, &mut packet).ok()?;
    }
    Some(packet.freeze())
}
