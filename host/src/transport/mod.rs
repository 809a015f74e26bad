//! Transports: TCP and WebSocket listeners and the byte pipes of their connections.
//!
//! A transport moves bytes and nothing else: it does not parse packets beyond what WebSocket
//! framing needs, and knows nothing about sessions or components. The connection driver in
//! [`crate::server`] sits on top of [`ConnReader`] and [`ConnWriter`].

pub mod http;
mod tcp;
pub mod tls;
mod ws;

use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream a connection runs over: a TCP stream, or TLS over one.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connection's stream, plain or TLS, behind one type.
pub type BoxedIo = Box<dyn Io>;

pub use tcp::{TcpReader, TcpWriter};
pub use ws::{WsReader, WsWriter, accept_websocket};

/// Which transport a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// A raw TCP byte stream.
    Tcp,
    /// WebSocket binary frames, one packet per frame sent.
    WebSocket,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Tcp => "tcp",
            TransportKind::WebSocket => "ws",
        })
    }
}

/// The receiving half of a connection.
pub enum ConnReader {
    /// TCP.
    Tcp(TcpReader),
    /// WebSocket.
    Ws(WsReader),
}

impl ConnReader {
    /// Appends what arrives next to `buf`. Returns false at the end of the stream.
    pub async fn read(&mut self, buf: &mut BytesMut) -> io::Result<bool> {
        match self {
            ConnReader::Tcp(reader) => reader.read(buf).await,
            ConnReader::Ws(reader) => reader.read(buf).await,
        }
    }
}

/// The sending half of a connection.
pub enum ConnWriter {
    /// TCP.
    Tcp(TcpWriter),
    /// WebSocket.
    Ws(WsWriter),
}

impl ConnWriter {
    /// Writes whole packets, in order, and flushes. TCP coalesces them into one write;
    /// WebSocket sends one binary frame per packet, as pitaya clients require.
    pub async fn write_packets(&mut self, packets: &[Bytes]) -> io::Result<()> {
        match self {
            ConnWriter::Tcp(writer) => writer.write_packets(packets).await,
            ConnWriter::Ws(writer) => writer.write_packets(packets).await,
        }
    }

    /// Closes the connection after what was written.
    pub async fn shutdown(&mut self) {
        match self {
            ConnWriter::Tcp(writer) => writer.shutdown().await,
            ConnWriter::Ws(writer) => writer.shutdown().await,
        }
    }
}

/// A new connection, split into its halves.
pub struct Conn {
    /// Receiving half.
    pub reader: ConnReader,
    /// Sending half.
    pub writer: ConnWriter,
    /// The client's address.
    pub peer: SocketAddr,
    /// Which transport.
    pub kind: TransportKind,
}
