//! A client connection to a pitaya server over TCP or WebSocket: packets out, packets in, the
//! pitaya-style handshake, and a fast encoder for the one request a run repeats.
//!
//! The connection is split into a sending half ([`Tx`]) and a receiving half ([`Rx`]) so that one
//! task can write and read at the same time (two futures joined in the task), which keeps a
//! pipelined client from deadlocking against a server that writes while we write.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use pitaya_protocol::{
    HEADER_LEN, MAX_BODY_LEN, MessageType, Packet, PacketDecoder, PacketType, encode_message,
    encode_varint, inflate,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::target::{Target, Transport};

/// The handshake this tool sends: pitaya's shape, naming the tool as the platform.
const CLIENT_HANDSHAKE: &[u8] = br#"{"sys":{"platform":"pitaya-bench","libVersion":"0.1.0","clientBuildNumber":"1","clientVersion":"0.1.0"},"user":{}}"#;

/// Largest packet body we accept from a server (the protocol's own maximum).
const MAX_INCOMING_BODY: usize = MAX_BODY_LEN;

/// tungstenite's read buffer per connection. Its default (128 KiB, zero-filled on every read)
/// would make 19,900 idle WebSocket connections cost this client 2.5 GiB.
const WS_READ_BUFFER: usize = 8 * 1024;

/// Largest size an inflated handshake may have.
const MAX_INFLATED_HANDSHAKE: usize = 1 << 20;

type Ws = WebSocketStream<TcpStream>;

/// The sending half of a connection.
pub enum Tx {
    /// TCP: packets are concatenated into one write.
    Tcp(OwnedWriteHalf),
    /// WebSocket: one binary frame per packet, flushed once per batch.
    Ws(SplitSink<Ws, WsMessage>),
}

/// The receiving half of a connection, with its packet buffer.
pub struct Rx {
    inner: RxInner,
    buf: BytesMut,
    decoder: PacketDecoder,
}

enum RxInner {
    Tcp(OwnedReadHalf),
    Ws(SplitStream<Ws>),
}

/// Packets queued for one write: their bytes back to back and where each one ends.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: BytesMut,
    ends: Vec<usize>,
}

impl Outbox {
    /// Marks the bytes appended since the last call as one packet.
    pub fn end_packet(&mut self) {
        self.ends.push(self.buf.len());
    }

    /// The buffer to append a packet to (call [`Outbox::end_packet`] after).
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Queues a ready-made packet.
    pub fn push(&mut self, packet: &[u8]) {
        self.buf.extend_from_slice(packet);
        self.end_packet();
    }
}

/// Opens a connection (TCP, or TCP then the WebSocket upgrade) within `timeout`.
pub async fn connect(target: &Target, timeout: Duration) -> Result<(Tx, Rx)> {
    tokio::time::timeout(timeout, connect_inner(target))
        .await
        .with_context(|| format!("connecting to {target} timed out after {timeout:?}"))?
}

async fn connect_inner(target: &Target) -> Result<(Tx, Rx)> {
    let stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let decoder = PacketDecoder::new(MAX_INCOMING_BODY);
    match target.transport {
        Transport::Tcp => {
            let (read, write) = stream.into_split();
            Ok((
                Tx::Tcp(write),
                Rx {
                    inner: RxInner::Tcp(read),
                    buf: BytesMut::with_capacity(512),
                    decoder,
                },
            ))
        }
        Transport::Ws => {
            let config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER);
            let (ws, _response) =
                tokio_tungstenite::client_async_with_config(target.ws_url(), stream, Some(config))
                    .await
                    .with_context(|| format!("WebSocket upgrade at {target}"))?;
            let (sink, stream) = ws.split();
            Ok((
                Tx::Ws(sink),
                Rx {
                    inner: RxInner::Ws(stream),
                    buf: BytesMut::with_capacity(512),
                    decoder,
                },
            ))
        }
    }
}

impl Tx {
    /// Sends every packet in `outbox` and empties it.
    pub async fn send(&mut self, outbox: &mut Outbox) -> Result<()> {
        let result = match self {
            Tx::Tcp(write) => write
                .write_all(&outbox.buf)
                .await
                .context("writing to the server"),
            Tx::Ws(sink) => {
                let mut start = 0;
                let mut all = outbox.buf.split().freeze();
                for &end in &outbox.ends {
                    let frame = all.split_to(end - start);
                    start = end;
                    sink.feed(WsMessage::Binary(frame))
                        .await
                        .context("sending a WebSocket frame")?;
                }
                sink.flush().await.context("flushing WebSocket frames")
            }
        };
        outbox.buf.clear();
        outbox.ends.clear();
        result
    }

    /// Sends one packet.
    pub async fn send_packet(&mut self, packet: &[u8]) -> Result<()> {
        let mut outbox = Outbox::default();
        outbox.push(packet);
        self.send(&mut outbox).await
    }

    /// Closes the sending side politely (FIN, or a WebSocket close frame); errors are ignored.
    pub async fn close(&mut self) {
        match self {
            Tx::Tcp(write) => {
                let _ = write.shutdown().await;
            }
            Tx::Ws(sink) => {
                let _ = sink.close().await;
            }
        }
    }
}

impl Rx {
    /// The next packet, or `None` when the server closed the connection. Cancel-safe: bytes
    /// already read stay buffered.
    pub async fn next_packet(&mut self) -> Result<Option<Packet>> {
        loop {
            if let Some(packet) = self
                .decoder
                .decode(&mut self.buf)
                .context("bad packet from the server")?
            {
                return Ok(Some(packet));
            }
            match &mut self.inner {
                RxInner::Tcp(read) => {
                    if self.buf.capacity() - self.buf.len() < 256 {
                        self.buf.reserve(4096);
                    }
                    let n = read
                        .read_buf(&mut self.buf)
                        .await
                        .context("reading from the server")?;
                    if n == 0 {
                        return Ok(None);
                    }
                }
                RxInner::Ws(stream) => match stream.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                    Some(Ok(WsMessage::Binary(data))) => self.buf.extend_from_slice(&data),
                    Some(Ok(WsMessage::Text(_))) => bail!("the server sent a text frame"),
                    Some(Ok(_)) => {} // ping, pong, raw frames: nothing to decode
                    Some(Err(error)) => {
                        return Err(error).context("reading a WebSocket frame");
                    }
                },
            }
        }
    }
}

/// What the server's handshake reply told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHandshake {
    /// Heartbeat interval in seconds (0: none).
    pub heartbeat_secs: u64,
}

/// Performs the pitaya handshake (handshake, reply, ack) within `timeout`.
pub async fn handshake(tx: &mut Tx, rx: &mut Rx, timeout: Duration) -> Result<ServerHandshake> {
    tokio::time::timeout(timeout, async {
        tx.send_packet(&packet(PacketType::Handshake, CLIENT_HANDSHAKE)?)
            .await?;
        let reply = loop {
            match rx.next_packet().await? {
                None => bail!("the server closed the connection during the handshake"),
                Some(p) if p.kind == PacketType::Handshake => break p,
                Some(p) if p.kind == PacketType::Heartbeat => continue,
                Some(p) => bail!("expected a handshake reply, got a {:?} packet", p.kind),
            }
        };
        let info = parse_server_handshake(&reply.body)?;
        tx.send_packet(&packet(PacketType::HandshakeAck, &[])?)
            .await?;
        Ok(info)
    })
    .await
    .with_context(|| format!("handshake timed out after {timeout:?}"))?
}

/// Parses the server's handshake JSON (zlib-compressed when it starts with 0x78) and checks
/// that its code is 200.
pub fn parse_server_handshake(body: &[u8]) -> Result<ServerHandshake> {
    let inflated;
    let json = if body.first() == Some(&0x78) {
        inflated = inflate(body, MAX_INFLATED_HANDSHAKE)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("inflating the handshake reply")?;
        &inflated[..]
    } else {
        body
    };
    let value: serde_json::Value =
        serde_json::from_slice(json).context("the handshake reply is not JSON")?;
    let code = value.get("code").and_then(serde_json::Value::as_u64);
    if code != Some(200) {
        bail!(
            "the server refused the handshake: {}",
            String::from_utf8_lossy(json)
        );
    }
    let heartbeat_secs = value
        .pointer("/sys/heartbeat")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Ok(ServerHandshake { heartbeat_secs })
}

/// A whole packet as bytes.
pub fn packet(kind: PacketType, body: &[u8]) -> Result<Bytes> {
    pitaya_protocol::packet_bytes(kind, body).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Encodes Data packets for one route and payload with any id, without re-encoding the route
/// and payload each time.
#[derive(Debug, Clone)]
pub struct RequestEncoder {
    /// Route length byte, route and payload: everything after the id.
    tail: Bytes,
}

impl RequestEncoder {
    /// Checks that a Request to `route` with `payload` fits in one packet with any u32 id.
    pub fn new(route: &str, payload: &[u8]) -> Result<Self> {
        let mut message = BytesMut::new();
        encode_message(
            MessageType::Request,
            u64::from(u32::MAX),
            Some(route),
            None,
            payload,
            false,
            false,
            &mut message,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("encoding a request to {route:?}"))?;
        if message.len() > MAX_BODY_LEN {
            bail!(
                "a request of {} bytes does not fit in a packet (max {MAX_BODY_LEN})",
                message.len()
            );
        }
        let mut tail = BytesMut::with_capacity(1 + route.len() + payload.len());
        tail.put_u8(route.len() as u8);
        tail.put_slice(route.as_bytes());
        tail.put_slice(payload);
        Ok(Self {
            tail: tail.freeze(),
        })
    }

    /// Appends one Data packet holding a Request with `id` (1..=u32::MAX) to `out`.
    pub fn encode(&self, id: u32, out: &mut BytesMut) {
        let mut varint = BytesMut::with_capacity(5);
        encode_varint(u64::from(id), &mut varint);
        let len = 1 + varint.len() + self.tail.len();
        let [_, high, mid, low] = (len as u32).to_be_bytes();
        out.reserve(HEADER_LEN + len);
        out.put_slice(&[PacketType::Data as u8, high, mid, low]);
        out.put_u8(0); // flag: Request, plain route, plain payload
        out.put_slice(&varint);
        out.put_slice(&self.tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitaya_protocol::{RouteDict, decode_message, encode_packet};

    #[test]
    fn request_encoder_matches_the_codec() {
        let enc = RequestEncoder::new("echo.echo", br#"{"a":1}"#).unwrap();
        for id in [1u32, 127, 128, 300, u32::MAX] {
            let mut fast = BytesMut::new();
            enc.encode(id, &mut fast);
            let mut message = BytesMut::new();
            encode_message(
                MessageType::Request,
                u64::from(id),
                Some("echo.echo"),
                None,
                br#"{"a":1}"#,
                false,
                false,
                &mut message,
            )
            .unwrap();
            let mut slow = BytesMut::new();
            encode_packet(PacketType::Data, &message, &mut slow).unwrap();
            assert_eq!(fast, slow, "id {id}");
            let decoded = decode_message(&fast[HEADER_LEN..], &RouteDict::default(), 0).unwrap();
            assert_eq!(decoded.id, u64::from(id));
        }
    }

    #[test]
    fn request_encoder_refuses_what_cannot_be_sent() {
        assert!(RequestEncoder::new(&"r".repeat(256), b"{}").is_err());
        assert!(RequestEncoder::new("a.b", &vec![b' '; MAX_BODY_LEN]).is_err());
    }

    #[test]
    fn server_handshake_replies() {
        let ok = br#"{"code":200,"sys":{"dict":{},"heartbeat":30,"serializer":"json"}}"#;
        assert_eq!(parse_server_handshake(ok).unwrap().heartbeat_secs, 30);
        let zipped = pitaya_protocol::deflate(ok);
        assert_eq!(parse_server_handshake(&zipped).unwrap().heartbeat_secs, 30);
        assert!(parse_server_handshake(br#"{"code":400}"#).is_err());
        assert!(parse_server_handshake(b"not json").is_err());
        assert!(parse_server_handshake(&[0x78, 0x00]).is_err());
    }
}
