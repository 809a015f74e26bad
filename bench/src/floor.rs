//! The floor: the least a pitaya server can do. It answers the handshake with a fixed reply
//! (empty dict, heartbeat 0), echoes each Request's payload as the Response with the same id,
//! and does nothing else: no heartbeats, no timeouts, no routing, no validation beyond framing.
//! Measuring it the same way as the host gives every figure a baseline that is the cost of the
//! socket work, the client and the machine.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use pitaya_protocol::{
    EncodeOptions, MessageType, PacketDecoder, PacketType, RouteDict, decode_message_bytes,
    encode_response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The fixed handshake reply.
const HANDSHAKE_REPLY: &[u8] =
    br#"{"code":200,"sys":{"dict":{},"heartbeat":0,"serializer":"json"}}"#;

/// Largest packet body the floor accepts (the host's default).
const MAX_BODY: usize = 64 * 1024;

/// What the floor serves, and for how long.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    /// Loopback address to listen on.
    pub listen: SocketAddr,
    /// WebSocket instead of raw TCP.
    pub ws: bool,
    /// The floor exits after this long.
    pub lifetime: Duration,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// tungstenite's read buffer per WebSocket connection, in bytes. tungstenite zero-fills its
    /// whole read buffer (128 KiB by default) on every read, so this sets most of an idle
    /// WebSocket connection's memory.
    pub ws_read_buffer: usize,
}

/// Runs the floor until its lifetime ends or SIGINT/SIGTERM arrives.
pub async fn run(config: FloorConfig) -> Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let scheme = if config.ws { "ws" } else { "tcp" };
    println!("{scheme}://{local}");
    use std::io::Write as _;
    std::io::stdout().flush().context("flushing stdout")?;

    let slots = std::sync::Arc::new(Semaphore::new(config.max_connections));
    let accept = async {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    eprintln!("floor: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let ws = config.ws.then_some(config.ws_read_buffer);
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let _ = if let Some(read_buffer) = ws {
                    serve_ws(stream, read_buffer).await
                } else {
                    serve_tcp(stream).await
                };
                drop(permit);
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = tokio::time::sleep(config.lifetime) => {
            eprintln!("floor: lifetime of {:?} reached, exiting", config.lifetime);
        }
        () = shutdown_signal() => {
            eprintln!("floor: signal received, exiting");
        }
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (never, if the handlers cannot be installed).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Handles every whole packet in `input`, appending replies to `out` with `end` after each.
/// Returns false when the connection must close (a bad packet or message).
fn handle(input: &mut BytesMut, out: &mut BytesMut, mut end: impl FnMut(&mut BytesMut)) -> bool {
    let decoder = PacketDecoder::new(MAX_BODY);
    let dict = RouteDict::default();
    let opts = EncodeOptions::default();
    loop {
        let packet = match decoder.decode(input) {
            Ok(Some(packet)) => packet,
            Ok(None) => return true,
            Err(_) => return false,
        };
        match packet.kind {
            PacketType::Handshake => {
                if pitaya_protocol::encode_packet(PacketType::Handshake, HANDSHAKE_REPLY, out)
                    .is_err()
                {
                    return false;
                }
                end(out);
            }
            PacketType::Data => {
                let Ok(message) = decode_message_bytes(&packet.body, &dict, MAX_BODY) else {
                    return false;
                };
                if message.kind == MessageType::Request {
                    if encode_response(message.id, &message.payload, false, &opts, out).is_err() {
                        return false;
                    }
                    end(out);
                }
            }
            PacketType::HandshakeAck | PacketType::Heartbeat => {}
            PacketType::Kick => return false,
        }
    }
}

async fn serve_tcp(mut stream: TcpStream) -> Result<()> {
    let mut input = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(4096);
    loop {
        if input.capacity() - input.len() < 1024 {
            input.reserve(4096);
        }
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        let keep_going = handle(&mut input, &mut out, |_| {});
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if !keep_going {
            return Ok(());
        }
    }
}

async fn serve_ws(stream: TcpStream, read_buffer: usize) -> Result<()> {
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    let mut ends = Vec::new();
    while let Some(frame) = ws.next().await {
        let data = match frame? {
            WsMessage::Binary(data) => data,
            WsMessage::Close(_) => return Ok(()),
            _ => continue,
        };
        input.extend_from_slice(&data);
        let keep_going = handle(&mut input, &mut out, |out| ends.push(out.len()));
        if !ends.is_empty() {
            let mut start = 0;
            let mut all = out.split().freeze();
            for &end in &ends {
                ws.feed(WsMessage::Binary(all.split_to(end - start)))
                    .await?;
                start = end;
            }
            ends.clear();
            ws.flush().await?;
        }
        if !keep_going {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitaya_protocol::{HEADER_LEN, decode_message, encode_packet};

    #[test]
    fn answers_handshake_and_echoes_requests() {
        let mut input = BytesMut::new();
        encode_packet(PacketType::Handshake, b"{}", &mut input).unwrap();
        encode_packet(PacketType::HandshakeAck, b"", &mut input).unwrap();
        crate::conn::RequestEncoder::new("echo.echo", b"hi")
            .unwrap()
            .encode(7, &mut input);
        input.extend_from_slice(&[4, 0]); // half a header: kept for later
        let mut out = BytesMut::new();
        let mut ends = Vec::new();
        assert!(handle(&mut input, &mut out, |o| ends.push(o.len())));
        assert_eq!(input.as_ref(), [4, 0]);
        assert_eq!(ends.len(), 2);
        assert_eq!(out[0], PacketType::Handshake as u8);
        let response = &out[ends[0]..];
        let message = decode_message(&response[HEADER_LEN..], &RouteDict::default(), 1024).unwrap();
        assert_eq!(message.kind, MessageType::Response);
        assert_eq!(message.id, 7);
        assert_eq!(message.payload.as_ref(), b"hi");
    }

    #[test]
    fn closes_on_garbage() {
        let mut input = BytesMut::from(&[9u8, 0, 0, 0][..]);
        assert!(!handle(&mut input, &mut BytesMut::new(), |_| {}));
        let mut input = BytesMut::from(&[4u8, 0, 0, 1, 0xff][..]);
        assert!(!handle(&mut input, &mut BytesMut::new(), |_| {}));
    }
}
