//! One connection to a server: the handshake, then a task that reads packets (printing pushes and
//! kicks, handing responses to the requests waiting for them), writes what the REPL sends and
//! keeps the heartbeat going.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::{BufMut, Bytes, BytesMut};
use pitaya_protocol::{
    Message, MessageType, Packet, PacketDecoder, PacketType, RouteDict, decode_message_bytes,
    encode_message, inflate, packet_bytes,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::format;
use crate::output::Output;
use crate::transport::Transport;

/// Largest payload the client inflates.
const MAX_INFLATED: usize = 16 * 1024 * 1024;
/// The server is given up on after this many heartbeat intervals without a packet.
const SILENT_INTERVALS: u32 = 3;
/// Longest heartbeat interval the client keeps to (one day).
const MAX_HEARTBEAT_SECS: u64 = 86_400;

/// What the server said in its handshake reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerHandshake {
    /// `code`: 200 when accepted.
    pub code: i64,
    /// `sys.heartbeat` in seconds; 0 when absent (no heartbeats).
    pub heartbeat: u64,
    /// `sys.serializer`, `json` when absent.
    pub serializer: String,
    /// `sys.dict`: route codes to routes.
    pub dict: HashMap<u16, String>,
    /// The whole reply.
    pub raw: Value,
}

impl ServerHandshake {
    /// Parses the server's handshake body, inflating it if it is zlib (first byte 0x78).
    pub fn parse(body: &[u8]) -> Result<Self> {
        let inflated;
        let body = if body.first() == Some(&0x78) {
            inflated = inflate(body, MAX_INFLATED).context("inflating the server handshake")?;
            &inflated[..]
        } else {
            body
        };
        let raw: Value = serde_json::from_slice(body).with_context(|| {
            format!(
                "the server handshake is not JSON: {}",
                String::from_utf8_lossy(body)
            )
        })?;
        let code = raw
            .get("code")
            .and_then(Value::as_i64)
            .context("the server handshake has no numeric code")?;
        let sys = raw.get("sys");
        let heartbeat = sys
            .and_then(|sys| sys.get("heartbeat"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let serializer = sys
            .and_then(|sys| sys.get("serializer"))
            .and_then(Value::as_str)
            .unwrap_or("json")
            .to_owned();
        let mut dict = HashMap::new();
        if let Some(Value::Object(entries)) = sys.and_then(|sys| sys.get("dict")) {
            for (route, code) in entries {
                if let Some(code) = code.as_u64().and_then(|c| u16::try_from(c).ok()) {
                    dict.insert(code, route.clone());
                }
            }
        }
        Ok(Self {
            code,
            heartbeat,
            serializer,
            dict,
            raw,
        })
    }

    /// One line for the REPL: code, heartbeat, serializer and dictionary size.
    pub fn summary(&self) -> String {
        let heartbeat = if self.heartbeat == 0 {
            "off".to_owned()
        } else {
            format!("{} s", self.heartbeat)
        };
        format!(
            "handshake: code {}, heartbeat {heartbeat}, serializer {}, dict {} route{}",
            self.code,
            self.serializer,
            self.dict.len(),
            if self.dict.len() == 1 { "" } else { "s" }
        )
    }
}

/// A request waiting for its response.
struct Pending {
    route: String,
    reply: oneshot::Sender<Message>,
}

/// State shared by the connection task and the REPL.
#[derive(Default)]
struct Shared {
    pending: HashMap<u64, Pending>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

enum Command {
    Send(Bytes),
    Close,
}

/// A live connection, after a completed handshake.
pub struct Conn {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Mutex<Shared>>,
    next_id: u64,
    task: JoinHandle<()>,
    /// The server's handshake reply.
    pub handshake: ServerHandshake,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// Sends `handshake_json`, waits for the server's reply (within `timeout`), sends the ack and
    /// starts the connection task. A reply other than code 200 is an error.
    pub async fn open(
        mut transport: Transport,
        handshake_json: &[u8],
        timeout: Duration,
        out: Arc<Output>,
    ) -> Result<Self> {
        let hello = packet_bytes(PacketType::Handshake, handshake_json)
            .context("encoding the handshake")?;
        transport.send(hello).await?;
        let decoder = PacketDecoder::default();
        let mut buf = BytesMut::new();
        let packet = tokio::time::timeout(timeout, async {
            loop {
                if let Some(packet) = decoder
                    .decode(&mut buf)
                    .context("bad packet from the server")?
                {
                    return Ok::<Packet, anyhow::Error>(packet);
                }
                if !transport.recv(&mut buf).await? {
                    bail!("the server closed the connection during the handshake");
                }
            }
        })
        .await
        .with_context(|| format!("no handshake reply within {timeout:?}"))?
        .map_err(|error| match buf.first() {
            // 0x15 (alert) or 0x16 (handshake) opens a TLS record: a TLS port spoken to in plain.
            Some(0x15 | 0x16) => error.context("the server speaks TLS: use tls:// or wss://"),
            _ => error,
        })?;
        match packet.kind {
            PacketType::Handshake => {}
            PacketType::Kick => bail!("kicked during the handshake{}", kick_reason(&packet.body)),
            other => bail!("expected the server's handshake, got a {other:?} packet"),
        }
        let handshake = ServerHandshake::parse(&packet.body)?;
        out.line(handshake.summary());
        ensure!(
            handshake.code == 200,
            "the server refused the handshake: {}",
            handshake.raw
        );
        let ack = packet_bytes(PacketType::HandshakeAck, &[]).context("encoding the ack")?;
        transport.send(ack).await?;

        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver {
            transport,
            decoder,
            buf,
            rx,
            shared: Arc::clone(&shared),
            out,
            dict: handshake.dict.clone(),
            // Clamped: the interval comes from the server, and timer arithmetic must not overflow.
            heartbeat: Duration::from_secs(handshake.heartbeat.min(MAX_HEARTBEAT_SECS)),
        };
        let task = tokio::spawn(driver.run());
        Ok(Self {
            tx,
            shared,
            next_id: 1,
            task,
            handshake,
        })
    }

    /// Why the connection ended, or `None` while it is up.
    pub fn closed(&self) -> Option<String> {
        lock(&self.shared).closed.clone()
    }

    /// How many requests await a response.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared).pending.len()
    }

    /// Sends a Request with the next id; the receiver gets the response. Returns the id.
    pub fn request(
        &mut self,
        route: &str,
        payload: &[u8],
    ) -> Result<(u64, oneshot::Receiver<Message>)> {
        let id = self.next_id;
        let packet = data_packet(MessageType::Request, id, route, payload)?;
        let (reply, rx) = oneshot::channel();
        {
            let mut shared = lock(&self.shared);
            if let Some(reason) = &shared.closed {
                bail!("not connected ({reason})");
            }
            shared.pending.insert(
                id,
                Pending {
                    route: route.to_owned(),
                    reply,
                },
            );
        }
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        if self.tx.send(Command::Send(packet)).is_err() {
            lock(&self.shared).pending.remove(&id);
            bail!("not connected (the connection task ended)");
        }
        Ok((id, rx))
    }

    /// Forgets a request that timed out; a late response is then printed as such.
    pub fn forget(&self, id: u64) {
        lock(&self.shared).pending.remove(&id);
    }

    /// Sends a Notify.
    pub fn notify(&self, route: &str, payload: &[u8]) -> Result<()> {
        if let Some(reason) = self.closed() {
            bail!("not connected ({reason})");
        }
        let packet = data_packet(MessageType::Notify, 0, route, payload)?;
        self.tx
            .send(Command::Send(packet))
            .ok()
            .context("not connected (the connection task ended)")
    }

    /// Closes the connection politely and waits (briefly) for the task to finish.
    pub async fn close(mut self) {
        if self.tx.send(Command::Close).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// A whole Data packet for a Request or Notify with a plain string route.
fn data_packet(kind: MessageType, id: u64, route: &str, payload: &[u8]) -> Result<Bytes> {
    let mut body = BytesMut::new();
    encode_message(
        kind,
        id,
        Some(route),
        None,
        payload,
        false,
        false,
        &mut body,
    )
    .with_context(|| format!("encoding a message for {route:?}"))?;
    packet_bytes(PacketType::Data, &body).context("encoding the packet")
}

/// ` with reason ...` for a Kick body (pomelo sends `{"reason":"..."}`), empty for none.
fn kick_reason(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body)
        && let Some(Value::String(reason)) = map.get("reason")
    {
        return format!(": {reason}");
    }
    format!(" {}", format::body(body))
}

/// Rewrites a message whose route is a 2-byte dictionary code into the plain-route form, using
/// the codes the server announced (the protocol crate's `RouteDict` numbers routes itself, which
/// need not match another server's dictionary). Unknown codes are left for the decoder to report.
fn expand_route_code(body: &Bytes, dict: &HashMap<u16, String>) -> Bytes {
    let Some(&flag) = body.first() else {
        return body.clone();
    };
    let kind = (flag >> 1) & 0x07;
    // Only Notify and Push carry a route and no id; a server sends nothing else with a route.
    if flag & 0x01 == 0 || !(kind == 1 || kind == 3) {
        return body.clone();
    }
    let Some(&[high, low]) = body.get(1..3) else {
        return body.clone();
    };
    let Some(route) = dict.get(&u16::from_be_bytes([high, low])) else {
        return body.clone();
    };
    let Ok(len) = u8::try_from(route.len()) else {
        return body.clone();
    };
    let rest = body.get(3..).unwrap_or_default();
    let mut out = BytesMut::with_capacity(2 + route.len() + rest.len());
    out.put_u8(flag & !0x01);
    out.put_u8(len);
    out.put_slice(route.as_bytes());
    out.put_slice(rest);
    out.freeze()
}

/// The connection task.
struct Driver {
    transport: Transport,
    decoder: PacketDecoder,
    buf: BytesMut,
    rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Mutex<Shared>>,
    out: Arc<Output>,
    dict: HashMap<u16, String>,
    heartbeat: Duration,
}

/// How the connection task ended.
enum End {
    /// The user closed it: nothing to print.
    Quiet(String),
    /// Print this line.
    Loud(String),
}

impl Driver {
    async fn run(mut self) {
        let end = self.serve().await;
        let reason = match end {
            End::Quiet(reason) => reason,
            End::Loud(reason) => {
                self.out.line(format!("disconnected: {reason}"));
                reason
            }
        };
        self.transport.close().await;
        let mut shared = lock(&self.shared);
        shared.closed = Some(reason);
        // Dropping the senders tells the waiting requests that no response will come.
        shared.pending.clear();
    }

    async fn serve(&mut self) -> End {
        let beat = (!self.heartbeat.is_zero()).then_some(self.heartbeat);
        let period = beat.unwrap_or(Duration::from_secs(3600));
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            loop {
                match self.decoder.decode(&mut self.buf) {
                    Ok(Some(packet)) => {
                        if let Some(end) = self.on_packet(packet) {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => return End::Loud(format!("bad packet from the server: {error}")),
                }
            }
            tokio::select! {
                received = self.transport.recv(&mut self.buf) => match received {
                    Ok(true) => last_heard = Instant::now(),
                    Ok(false) => return End::Loud("the server closed the connection".into()),
                    Err(error) => return End::Loud(format!("{error:#}")),
                },
                command = self.rx.recv() => match command {
                    Some(Command::Send(packet)) => {
                        if let Err(error) = self.transport.send(packet).await {
                            return End::Loud(format!("{error:#}"));
                        }
                    }
                    Some(Command::Close) | None => return End::Quiet("disconnected".into()),
                },
                _ = ticker.tick(), if beat.is_some() => {
                    let silent = last_heard.elapsed();
                    if silent > period.saturating_mul(SILENT_INTERVALS) {
                        return End::Loud(format!(
                            "no packet from the server for {} s", silent.as_secs()
                        ));
                    }
                    let Ok(packet) = packet_bytes(PacketType::Heartbeat, &[]) else { continue };
                    if let Err(error) = self.transport.send(packet).await {
                        return End::Loud(format!("{error:#}"));
                    }
                }
            }
        }
    }

    /// Handles one packet; `Some` ends the connection.
    fn on_packet(&mut self, packet: Packet) -> Option<End> {
        match packet.kind {
            PacketType::Heartbeat => None,
            PacketType::Kick => {
                let reason = kick_reason(&packet.body);
                self.out.line(format!("kicked{reason}"));
                Some(End::Quiet(format!("kicked{reason}")))
            }
            PacketType::Data => {
                self.on_data(&packet.body);
                None
            }
            PacketType::Handshake | PacketType::HandshakeAck => {
                self.out.error(format!(
                    "unexpected {:?} packet from the server, ignored",
                    packet.kind
                ));
                None
            }
        }
    }

    fn on_data(&mut self, body: &Bytes) {
        let body = expand_route_code(body, &self.dict);
        let message = match decode_message_bytes(&body, &RouteDict::default(), MAX_INFLATED) {
            Ok(message) => message,
            Err(error) => {
                self.out.error(format!(
                    "undecodable message from the server ({error}): {}",
                    format::hex(&body)
                ));
                return;
            }
        };
        match message.kind {
            MessageType::Push => {
                let text = if message.error {
                    format::error_response(&message.payload)
                } else {
                    format::body(&message.payload)
                };
                self.out.line(format!("push {} {text}", message.route));
            }
            MessageType::Response => {
                let pending = lock(&self.shared).pending.remove(&message.id);
                match pending {
                    Some(pending) => {
                        if let Err(message) = pending.reply.send(message) {
                            // The request gave up just now: show the answer anyway.
                            self.out.line(late_response(&pending.route, &message));
                        }
                    }
                    None => self.out.line(late_response("", &message)),
                }
            }
            MessageType::Request | MessageType::Notify => self.out.error(format!(
                "unexpected {:?} message from the server for route {:?}",
                message.kind, message.route
            )),
        }
    }
}

/// A response nobody waits for any more (the request timed out, or never existed).
fn late_response(route: &str, message: &Message) -> String {
    let text = if message.error {
        format::error_response(&message.payload)
    } else {
        format::body(&message.payload)
    };
    let route = if route.is_empty() {
        String::new()
    } else {
        format!(" {route}")
    };
    format!("late response #{}{route} {text}", message.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_reply() {
        let reply = ServerHandshake::parse(
            br#"{"code":200,"sys":{"dict":{"room.join":1,"onMessage":2},"heartbeat":30,"serializer":"json"}}"#,
        )
        .unwrap();
        assert_eq!(
            (reply.code, reply.heartbeat, reply.serializer.as_str()),
            (200, 30, "json")
        );
        assert_eq!(reply.dict.get(&2).map(String::as_str), Some("onMessage"));
        assert_eq!(
            reply.summary(),
            "handshake: code 200, heartbeat 30 s, serializer json, dict 2 routes"
        );
        let zipped = pitaya_protocol::deflate(br#"{"code":400}"#);
        let refused = ServerHandshake::parse(&zipped).unwrap();
        assert_eq!((refused.code, refused.heartbeat), (400, 0));
        assert!(ServerHandshake::parse(b"nope").is_err());
        assert!(ServerHandshake::parse(b"{}").is_err());
        assert!(ServerHandshake::parse(b"\x78\x00").is_err());
    }

    #[test]
    fn coded_push_routes_are_expanded() {
        let dict = HashMap::from([(7u16, "onMessage".to_owned())]);
        // Push with route code 7 and payload {}.
        let coded = Bytes::from_static(&[0x07, 0x00, 0x07, b'{', b'}']);
        let message = decode_message_bytes(
            &expand_route_code(&coded, &dict),
            &RouteDict::default(),
            MAX_INFLATED,
        )
        .unwrap();
        assert_eq!(
            (message.kind, message.route.as_str(), &message.payload[..]),
            (MessageType::Push, "onMessage", &b"{}"[..])
        );
        // Unknown code, truncated body, a response: left alone.
        for body in [&[0x07u8, 0x00, 0x08][..], &[0x07, 0x00], &[0x04, 0x01], &[]] {
            let body = Bytes::copy_from_slice(body);
            assert_eq!(expand_route_code(&body, &dict), body);
        }
    }

    #[test]
    fn kick_reasons() {
        assert_eq!(kick_reason(b""), "");
        assert_eq!(kick_reason(br#"{"reason":"bye"}"#), ": bye");
        assert_eq!(
            kick_reason(b"x"),
            " (1 bytes, not JSON)\n  hex:  78\n  utf8: x"
        );
    }
}
