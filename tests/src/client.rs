//! An async pitaya client over TCP or WebSocket behind one interface, with a background reader that collects
//! incoming packets so that a test can await "the response with id N", "the push with route R", "a heartbeat",
//! or "the connection closed", each with a timeout.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::codec::{self, Message, MessageType, Packet, Route};

/// How long a wait lasts unless a test says otherwise. Generous: the machine may be busy compiling.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The two transports the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Ws,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Tcp, Transport::Ws];
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Ws => "WebSocket",
        })
    }
}

/// What the reader saw, in order of arrival.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A Handshake packet; its raw body.
    Handshake(Vec<u8>),
    Heartbeat,
    /// A Data packet, decoded.
    Data(Message),
    /// A Kick packet; its body (empty for pitaya).
    Kick(Vec<u8>),
    /// The connection ended (EOF, reset, close frame, ...).
    Closed(String),
    /// The server broke the protocol (undecodable packet or message, several packets in one WebSocket frame,
    /// a text frame, a HandshakeAck...). The reader stops after one.
    Violation(String),
}

impl Incoming {
    fn summary(&self) -> String {
        match self {
            Self::Handshake(b) => format!("Handshake {}", String::from_utf8_lossy(b)),
            Self::Heartbeat => "Heartbeat".into(),
            Self::Data(m) => {
                let route = m
                    .route
                    .as_ref()
                    .map(|r| format!(" route {r}"))
                    .unwrap_or_default();
                let mut text = m.text();
                if text.len() > 200 {
                    text.truncate(200);
                    text.push('…');
                }
                format!(
                    "{:?} id {}{route}{}{} {text:?}",
                    m.kind,
                    m.id,
                    if m.error { " ERROR" } else { "" },
                    if m.zlib { " zlib" } else { "" }
                )
            }
            Self::Kick(b) => format!("Kick {}", String::from_utf8_lossy(b)),
            Self::Closed(why) => format!("Closed ({why})"),
            Self::Violation(why) => format!("PROTOCOL VIOLATION: {why}"),
        }
    }
}

/// An incoming event and when the reader saw it.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub what: Incoming,
}

/// The server's handshake reply, parsed.
#[derive(Debug, Clone)]
pub struct HandshakeReply {
    pub code: i64,
    /// `sys.heartbeat`, when present and a number.
    pub heartbeat: Option<u64>,
    /// `sys.dict`: route → code; empty when absent.
    pub dict: HashMap<String, u16>,
    pub serializer: Option<String>,
    /// The whole JSON.
    pub json: Value,
    /// Whether the JSON arrived zlib-compressed.
    pub compressed: bool,
}

impl HandshakeReply {
    /// Parses a Handshake packet body (inflating it when it starts with the zlib magic byte 0x78).
    pub fn parse(body: &[u8]) -> Result<Self> {
        let compressed = body.first() == Some(&0x78);
        let text = if compressed {
            codec::zlib_decompress(body, codec::MAX_INFLATED)
                .context("inflating the handshake reply")?
        } else {
            body.to_vec()
        };
        let json: Value = serde_json::from_slice(&text).with_context(|| {
            format!(
                "handshake reply is not JSON: {:?}",
                String::from_utf8_lossy(&text)
            )
        })?;
        let code = json["code"]
            .as_i64()
            .with_context(|| format!("handshake reply without a numeric code: {json}"))?;
        let sys = &json["sys"];
        let mut dict = HashMap::new();
        if let Some(d) = sys.get("dict").filter(|d| !d.is_null()) {
            let d = d
                .as_object()
                .with_context(|| format!("sys.dict is not an object: {d}"))?;
            for (route, code) in d {
                let c = code
                    .as_u64()
                    .filter(|c| *c <= u64::from(u16::MAX))
                    .with_context(|| {
                        format!("dict code of {route:?} is not a 16-bit number: {code}")
                    })?;
                dict.insert(route.clone(), c as u16);
            }
        }
        Ok(Self {
            code,
            heartbeat: sys["heartbeat"].as_u64(),
            dict,
            serializer: sys["serializer"].as_str().map(str::to_owned),
            json,
            compressed,
        })
    }

    /// The dictionary code of `route`.
    pub fn code_of(&self, route: &str) -> Result<u16> {
        self.dict.get(route).copied().with_context(|| {
            format!(
                "route {route:?} is not in the handshake dict {:?}",
                self.dict
            )
        })
    }
}

type WsStream = WebSocketStream<TcpStream>;

enum Writer {
    Tcp(OwnedWriteHalf),
    Ws(SplitSink<WsStream, WsMessage>),
}

/// One connection to the server.
pub struct Client {
    transport: Transport,
    writer: Writer,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Events received but not yet claimed by a wait, in arrival order.
    backlog: VecDeque<Event>,
    /// Set once the reader reported Closed or Violation (also kept in the backlog until claimed).
    ended: Option<String>,
    reader: JoinHandle<()>,
    next_id: u64,
    /// The default timeout of the `wait_*` methods.
    pub wait: Duration,
    /// The handshake reply, once [`Client::handshake`] succeeded.
    pub handshake: Option<HandshakeReply>,
    /// When the connection was opened.
    pub opened_at: Instant,
    /// Our end of the connection.
    pub local_addr: SocketAddr,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a connection to `addr` (the TCP listener or the WebSocket listener, after `transport`).
    pub async fn connect(transport: Transport, addr: SocketAddr) -> Result<Self> {
        Self::connect_at(transport, addr, "/pitaya").await
    }

    /// Like [`Client::connect`]; a WebSocket upgrades at URL path `path` (ignored over TCP).
    pub async fn connect_at(transport: Transport, addr: SocketAddr, path: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr} ({transport})"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let local_addr = stream.local_addr().context("local address")?;
        let opened_at = Instant::now();
        let (tx, rx) = mpsc::unbounded_channel();
        let (writer, reader) = match transport {
            Transport::Tcp => {
                let (rd, wr) = stream.into_split();
                (Writer::Tcp(wr), tokio::spawn(tcp_reader(rd, tx)))
            }
            Transport::Ws => {
                let url = format!("ws://{addr}{path}");
                let (ws, _resp) = tokio_tungstenite::client_async(url.as_str(), stream)
                    .await
                    .with_context(|| format!("WebSocket upgrade at {url}"))?;
                let (sink, stream) = ws.split();
                (Writer::Ws(sink), tokio::spawn(ws_reader(stream, tx)))
            }
        };
        Ok(Self {
            transport,
            writer,
            rx,
            backlog: VecDeque::new(),
            ended: None,
            reader,
            next_id: 1,
            wait: DEFAULT_WAIT,
            handshake: None,
            opened_at,
            local_addr,
        })
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    // ---------------------------------------------------------------- sending

    /// Sends `bytes` as they are: one TCP write, or one binary WebSocket frame.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.writer {
            Writer::Tcp(w) => {
                w.write_all(bytes).await.context("TCP write")?;
                w.flush().await.context("TCP flush")?;
            }
            Writer::Ws(s) => s
                .send(WsMessage::binary(bytes.to_vec()))
                .await
                .context("WebSocket send")?,
        }
        Ok(())
    }

    /// WebSocket only: sends `text` as a text frame, which the protocol does not use.
    pub async fn send_ws_text(&mut self, text: &str) -> Result<()> {
        let Writer::Ws(s) = &mut self.writer else {
            bail!("a text frame is for WebSocket only");
        };
        s.send(WsMessage::text(text))
            .await
            .context("WebSocket send")
    }

    /// Sends several packets (already encoded) together: one TCP write, or one WebSocket frame.
    pub async fn send_batch(&mut self, packets: &[Vec<u8>]) -> Result<()> {
        self.send_raw(&packets.concat()).await
    }

    /// TCP only: sends `bytes` one byte per write, with TCP_NODELAY and a 1 ms pause between writes so that the
    /// server really receives them in pieces (the pause paces the writes; nothing waits on it).
    pub async fn send_bytewise(&mut self, bytes: &[u8]) -> Result<()> {
        let Writer::Tcp(w) = &mut self.writer else {
            bail!(
                "byte-per-write sending is for TCP only: a WebSocket frame must hold whole packets"
            );
        };
        for (i, b) in bytes.iter().enumerate() {
            w.write_all(std::slice::from_ref(b))
                .await
                .with_context(|| format!("TCP write of byte {i}"))?;
            w.flush().await.context("TCP flush")?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Sends one packet.
    pub async fn send_packet(&mut self, kind: u8, body: &[u8]) -> Result<()> {
        self.send_raw(&codec::encode_packet(kind, body)).await
    }

    /// Sends one message in a Data packet.
    pub async fn send_message(&mut self, msg: &Message) -> Result<()> {
        let packet = msg.to_packet()?;
        self.send_raw(&packet).await
    }

    /// Sends a Request with the given id.
    pub async fn send_request(
        &mut self,
        id: u64,
        route: impl Into<Route>,
        payload: &[u8],
    ) -> Result<()> {
        self.send_message(&Message::request(id, route, payload))
            .await
    }

    /// Sends a Notify.
    pub async fn send_notify(&mut self, route: impl Into<Route>, payload: &[u8]) -> Result<()> {
        self.send_message(&Message::notify(route, payload)).await
    }

    pub async fn send_heartbeat(&mut self) -> Result<()> {
        self.send_packet(codec::HEARTBEAT, &[]).await
    }

    pub async fn send_handshake(&mut self, json: &str) -> Result<()> {
        self.send_packet(codec::HANDSHAKE, json.as_bytes()).await
    }

    pub async fn send_ack(&mut self) -> Result<()> {
        self.send_packet(codec::HANDSHAKE_ACK, &[]).await
    }

    /// Sends `json` as the handshake, waits for the reply, checks its code is 200 and sends the ack.
    pub async fn handshake(&mut self, json: &str) -> Result<HandshakeReply> {
        self.send_handshake(json).await?;
        let reply = self.wait_handshake().await?;
        ensure!(reply.code == 200, "handshake refused: {}", reply.json);
        self.send_ack().await?;
        Ok(reply)
    }

    /// A fresh request id (1, 2, 3, ...).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a Request with a fresh id and waits for its Response (success or error).
    pub async fn request(&mut self, route: impl Into<Route>, payload: &[u8]) -> Result<Message> {
        let id = self.next_id();
        self.send_request(id, route, payload).await?;
        self.wait_response(id).await
    }

    /// Closes our side gracefully (TCP: shutdown of the write half; WebSocket: a Close frame), then waits until
    /// the server has closed its side too.
    pub async fn close(&mut self) -> Result<()> {
        match &mut self.writer {
            Writer::Tcp(w) => w.shutdown().await.context("TCP shutdown")?,
            Writer::Ws(s) => s
                .send(WsMessage::Close(None))
                .await
                .context("sending a WebSocket Close")?,
        }
        self.wait_closed().await.map(|_| ())
    }

    // ---------------------------------------------------------------- waiting

    /// Waits for the first event (in arrival order, backlog first) that `pick` accepts, and removes it. Events
    /// it skips stay in the backlog for later waits. Fails on timeout, and when the connection ends or the server
    /// breaks the protocol first (unless `pick` accepts that).
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&Incoming) -> Option<T>,
    ) -> Result<(T, Instant)> {
        if let Some(pos) = self.backlog.iter().position(|e| pick(&e.what).is_some()) {
            let e = self.backlog.remove(pos).expect("position is in range");
            let t = pick(&e.what).expect("accepted just before");
            return Ok((t, e.at));
        }
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(why) = &self.ended {
                bail!(
                    "connection ended before {what}: {why}\n{}",
                    self.describe_backlog()
                );
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => bail!(
                    "timed out after {:.1?} waiting for {what} over {}\n{}",
                    start.elapsed(),
                    self.transport,
                    self.describe_backlog()
                ),
                Ok(None) => {
                    self.ended = Some("reader stopped".into());
                }
                Ok(Some(e)) => {
                    if let Some(t) = pick(&e.what) {
                        if matches!(e.what, Incoming::Closed(_) | Incoming::Violation(_)) {
                            self.ended = Some(e.what.summary());
                        }
                        return Ok((t, e.at));
                    }
                    if matches!(e.what, Incoming::Closed(_) | Incoming::Violation(_)) {
                        self.ended = Some(e.what.summary());
                    }
                    self.backlog.push_back(e);
                }
            }
        }
    }

    /// Moves every event already delivered by the reader into the backlog, without waiting.
    pub fn pump(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            if matches!(e.what, Incoming::Closed(_) | Incoming::Violation(_)) {
                self.ended = Some(e.what.summary());
            }
            self.backlog.push_back(e);
        }
    }

    /// The events received and not claimed yet (after a [`Client::pump`]).
    pub fn backlog(&mut self) -> &VecDeque<Event> {
        self.pump();
        &self.backlog
    }

    /// Unclaimed Data messages received so far (without waiting), leaving them in the backlog.
    pub fn unclaimed_messages(&mut self) -> Vec<Message> {
        self.pump();
        self.backlog
            .iter()
            .filter_map(|e| match &e.what {
                Incoming::Data(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// Fails if the server broke the protocol or closed the connection so far (without waiting).
    pub fn ensure_open(&mut self) -> Result<()> {
        self.pump();
        if let Some(why) = &self.ended {
            bail!("connection ended: {why}\n{}", self.describe_backlog());
        }
        Ok(())
    }

    fn describe_backlog(&self) -> String {
        if self.backlog.is_empty() {
            return "  (nothing else received)".into();
        }
        let mut s = String::from("  received meanwhile:");
        for e in &self.backlog {
            s.push_str(&format!(
                "\n    +{:.3?} {}",
                e.at.duration_since(self.opened_at),
                e.what.summary()
            ));
        }
        s
    }

    /// Waits for the server's Handshake packet and parses it.
    pub async fn wait_handshake(&mut self) -> Result<HandshakeReply> {
        let (body, _) = self
            .wait_for("the handshake reply", self.wait, |e| match e {
                Incoming::Handshake(b) => Some(b.clone()),
                _ => None,
            })
            .await?;
        let reply = HandshakeReply::parse(&body)?;
        self.handshake = Some(reply.clone());
        Ok(reply)
    }

    /// Waits for the Response with id `id` (success or error).
    pub async fn wait_response(&mut self, id: u64) -> Result<Message> {
        self.wait_response_within(id, self.wait).await
    }

    pub async fn wait_response_within(&mut self, id: u64, within: Duration) -> Result<Message> {
        let what = format!("the response to request {id}");
        let (m, _) = self
            .wait_for(&what, within, |e| match e {
                Incoming::Data(m) if m.kind == MessageType::Response && m.id == id => {
                    Some(m.clone())
                }
                _ => None,
            })
            .await?;
        Ok(m)
    }

    /// Waits for a Push whose route is the plain string `route` (a coded push route is never accepted).
    pub async fn wait_push(&mut self, route: &str) -> Result<Message> {
        let what = format!("a push with route {route:?}");
        let (m, _) = self
            .wait_for(&what, self.wait, |e| match e {
                Incoming::Data(m)
                    if m.kind == MessageType::Push
                        && m.route == Some(Route::Plain(route.into())) =>
                {
                    Some(m.clone())
                }
                _ => None,
            })
            .await?;
        Ok(m)
    }

    /// Like [`Client::wait_push`], within `within`, also returning when the push arrived.
    pub async fn wait_push_within(
        &mut self,
        route: &str,
        within: Duration,
    ) -> Result<(Message, Instant)> {
        let what = format!("a push with route {route:?}");
        self.wait_for(&what, within, |e| match e {
            Incoming::Data(m)
                if m.kind == MessageType::Push && m.route == Some(Route::Plain(route.into())) =>
            {
                Some(m.clone())
            }
            _ => None,
        })
        .await
    }

    /// Waits for a Kick packet; returns its body (empty for pitaya-style kicks).
    pub async fn wait_kick(&mut self) -> Result<Vec<u8>> {
        self.wait_kick_within(self.wait).await
    }

    pub async fn wait_kick_within(&mut self, within: Duration) -> Result<Vec<u8>> {
        let (body, _) = self
            .wait_for("a Kick packet", within, |e| match e {
                Incoming::Kick(b) => Some(b.clone()),
                _ => None,
            })
            .await?;
        Ok(body)
    }

    /// Waits for the next Data message of any kind, in arrival order.
    pub async fn next_message(&mut self) -> Result<Message> {
        let (m, _) = self
            .wait_for("the next data message", self.wait, |e| match e {
                Incoming::Data(m) => Some(m.clone()),
                _ => None,
            })
            .await?;
        Ok(m)
    }

    /// Waits for a Heartbeat from the server; returns when it arrived.
    pub async fn wait_heartbeat(&mut self, within: Duration) -> Result<Instant> {
        let (_, at) = self
            .wait_for("a heartbeat", within, |e| {
                matches!(e, Incoming::Heartbeat).then_some(())
            })
            .await?;
        Ok(at)
    }

    /// Waits until the connection is closed by the server; returns when the reader saw it. Packets received
    /// before are skipped (kept in the backlog); a protocol violation is an error.
    pub async fn wait_closed(&mut self) -> Result<Instant> {
        self.wait_closed_within(self.wait).await
    }

    pub async fn wait_closed_within(&mut self, within: Duration) -> Result<Instant> {
        Ok(self.wait_close(within).await?.1)
    }

    /// As [`Self::wait_closed_within`], and says how the connection ended: over WebSocket the
    /// close frame (`Some(CloseFrame { code: Protocol, .. })`), over TCP the end of stream.
    pub async fn wait_close(&mut self, within: Duration) -> Result<(String, Instant)> {
        if let Some(event) = self.backlog.iter().find_map(|e| match &e.what {
            Incoming::Closed(why) => Some((why.clone(), e.at)),
            _ => None,
        }) {
            return Ok(event);
        }
        let (closed, at) = self
            .wait_for("the server to close the connection", within, |e| match e {
                Incoming::Closed(why) => Some(Ok(why.clone())),
                Incoming::Violation(v) => {
                    Some(Err(anyhow!("protocol violation by the server: {v}")))
                }
                _ => None,
            })
            .await?;
        Ok((closed?, at))
    }
}

/// Converts a packet from the server into an event.
fn incoming_of(p: Packet) -> Incoming {
    match p.kind {
        codec::HANDSHAKE => Incoming::Handshake(p.body),
        codec::HEARTBEAT if p.body.is_empty() => Incoming::Heartbeat,
        codec::HEARTBEAT => {
            Incoming::Violation(format!("heartbeat with a {}-byte body", p.body.len()))
        }
        codec::DATA => match Message::decode(&p.body) {
            Ok(m) => Incoming::Data(m),
            Err(e) => Incoming::Violation(format!(
                "undecodable message {:02x?}: {e:#}",
                truncate(&p.body)
            )),
        },
        codec::KICK => Incoming::Kick(p.body),
        other => Incoming::Violation(format!(
            "server sent a {} packet",
            codec::packet_type_name(other)
        )),
    }
}

fn truncate(b: &[u8]) -> &[u8] {
    &b[..b.len().min(64)]
}

fn send(tx: &mpsc::UnboundedSender<Event>, what: Incoming) -> bool {
    tx.send(Event {
        at: Instant::now(),
        what,
    })
    .is_ok()
}

async fn tcp_reader(mut rd: OwnedReadHalf, tx: mpsc::UnboundedSender<Event>) {
    let mut dec = codec::PacketDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => {
                let why = match dec.pending() {
                    0 => "EOF".to_owned(),
                    n => format!("EOF inside a packet ({n} bytes of it received)"),
                };
                send(&tx, Incoming::Closed(why));
                return;
            }
            Ok(n) => {
                dec.push(&buf[..n]);
                loop {
                    match dec.next_packet() {
                        Ok(Some(p)) => {
                            let ev = incoming_of(p);
                            let stop = matches!(ev, Incoming::Violation(_));
                            if !send(&tx, ev) || stop {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            send(&tx, Incoming::Violation(format!("{e:#}")));
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                send(&tx, Incoming::Closed(format!("read error: {e}")));
                return;
            }
        }
    }
}

async fn ws_reader(
    mut stream: futures_util::stream::SplitStream<WsStream>,
    tx: mpsc::UnboundedSender<Event>,
) {
    while let Some(item) = stream.next().await {
        let ev = match item {
            Ok(WsMessage::Binary(b)) => match codec::decode_packets(&b) {
                Ok(mut ps) if ps.len() == 1 => incoming_of(ps.remove(0)),
                Ok(ps) => Incoming::Violation(format!(
                    "a binary frame of {} bytes holds {} packets, not exactly one",
                    b.len(),
                    ps.len()
                )),
                Err(e) => {
                    Incoming::Violation(format!("bad binary frame {:02x?}: {e:#}", truncate(&b)))
                }
            },
            Ok(WsMessage::Text(t)) => Incoming::Violation(format!("text frame {:?}", t.as_str())),
            Ok(WsMessage::Close(frame)) => Incoming::Closed(format!("close frame {frame:?}")),
            Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_)) => continue,
            Err(e) => Incoming::Closed(format!("WebSocket error: {e}")),
        };
        let stop = matches!(ev, Incoming::Violation(_) | Incoming::Closed(_));
        if !send(&tx, ev) || stop {
            return;
        }
    }
    send(&tx, Incoming::Closed("end of the WebSocket stream".into()));
}
