//! Byte transports: TCP, TLS over TCP, and WebSocket (plain or over TLS). Every one carries
//! whole packets out and hands received bytes to the caller's packet decoder, so a packet split
//! across reads or several packets in one WebSocket frame are handled the same way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::target::Target;

/// Anything a transport can run over: a TCP stream or a TLS stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected transport.
pub enum Transport {
    /// TCP or TLS: a byte stream.
    Stream(Box<dyn Io>),
    /// WebSocket: one packet per binary frame out; frames of any size in.
    Ws(Box<WebSocketStream<Box<dyn Io>>>),
}

impl Transport {
    /// Connects to `target` within `timeout`. `tls` is needed for `tls://` and `wss://`.
    pub async fn connect(
        target: &Target,
        tls: Option<Arc<ClientConfig>>,
        timeout: Duration,
    ) -> Result<Self> {
        tokio::time::timeout(timeout, Self::connect_inner(target, tls))
            .await
            .with_context(|| format!("connecting to {target} timed out after {timeout:?}"))?
    }

    async fn connect_inner(target: &Target, tls: Option<Arc<ClientConfig>>) -> Result<Self> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .with_context(|| format!("connecting to {}", target.authority()))?;
        tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
        let io: Box<dyn Io> = if target.scheme.is_tls() {
            let config = tls.context("no TLS configuration")?;
            let name = ServerName::try_from(target.host.clone())
                .with_context(|| format!("{:?} is not a valid TLS server name", target.host))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {}", target.authority()))?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        if target.scheme.is_ws() {
            let url = target.ws_url();
            let (ws, _response) = tokio_tungstenite::client_async(url.as_str(), io)
                .await
                .with_context(|| format!("WebSocket upgrade at {url}"))?;
            Ok(Self::Ws(Box::new(ws)))
        } else {
            Ok(Self::Stream(io))
        }
    }

    /// Sends one whole packet.
    pub async fn send(&mut self, packet: Bytes) -> Result<()> {
        match self {
            Self::Stream(io) => {
                io.write_all(&packet)
                    .await
                    .context("writing to the socket")?;
                io.flush().await.context("writing to the socket")
            }
            Self::Ws(ws) => ws
                .send(WsMessage::Binary(packet))
                .await
                .context("sending a WebSocket frame"),
        }
    }

    /// Appends received bytes to `buf`; `Ok(false)` once the server closed the connection.
    /// Cancel-safe: dropping the future loses no data.
    pub async fn recv(&mut self, buf: &mut BytesMut) -> Result<bool> {
        match self {
            Self::Stream(io) => {
                buf.reserve(8 * 1024);
                let read = io.read_buf(buf).await.context("reading from the socket")?;
                Ok(read > 0)
            }
            Self::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(false),
                    Some(Ok(WsMessage::Binary(data))) => {
                        buf.extend_from_slice(&data);
                        return Ok(true);
                    }
                    // pitaya servers send binary frames; a text frame is taken as bytes all the same.
                    Some(Ok(WsMessage::Text(text))) => {
                        buf.extend_from_slice(text.as_bytes());
                        return Ok(true);
                    }
                    Some(Ok(_)) => {} // ping, pong, raw frame: tungstenite answers pings itself
                    Some(Err(error)) => {
                        return Err(error).context("reading a WebSocket frame");
                    }
                }
            },
        }
    }

    /// Closes politely (a WebSocket close frame, a TLS close_notify, a TCP FIN); errors ignored.
    pub async fn close(&mut self) {
        let closing = async {
            match self {
                Self::Stream(io) => {
                    let _ = io.shutdown().await;
                }
                Self::Ws(ws) => {
                    let _ = WebSocketStream::close(ws.as_mut(), None).await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
    }
}
