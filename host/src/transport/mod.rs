//! Transports: TCP and WebSocket listeners and the byte pipes of their connections.
//!
//! A transport moves bytes and nothing else: it does not parse packets beyond what WebSocket
//! framing needs, and knows nothing about sessions or components. The connection driver in
//! [`crate::server`] sits on top of a [`Link`], whose [`Reader`] and [`Writer`] halves it polls
//! from one task.
//!
//! An idle connection should hold as little memory as possible, so a plain TCP connection keeps
//! no read buffer: it waits for the socket to become readable, then reads into a buffer owned by
//! the worker thread (`with_scratch`) and hands the bytes on before anything else runs there.

mod http;
mod tcp;
pub mod tls;
pub mod upgrade;
mod ws;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// A byte stream a connection runs over: a TCP stream, or TLS over one.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connection's stream, plain or TLS, behind one type.
pub type BoxedIo = Box<dyn Io>;

pub use ws::accept_websocket;

type Ws = ws::Stream;

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

/// Bytes read at most per read: the scratch buffer of each worker thread.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer. `f` must not await (it cannot: it is not async),
/// so no other connection can use the buffer before `f` is done with it.
fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < SCRATCH {
                buf.resize(SCRATCH, 0);
            }
            f(&mut buf)
        }
        // Only reachable if `f` re-entered; a private buffer keeps it correct anyway.
        Err(_) => f(&mut vec![0; SCRATCH]),
    })
}

/// A connection's transport, owned for its whole life.
pub enum Link {
    /// Plain TCP: read and written through readiness, with no buffer of its own.
    Tcp(TcpStream),
    /// TLS over TCP, split so that reading and writing proceed independently.
    Stream {
        /// Receiving half.
        read: ReadHalf<BoxedIo>,
        /// Sending half.
        write: WriteHalf<BoxedIo>,
        /// Bytes were written since the last flush.
        unflushed: bool,
    },
    /// WebSocket (over TCP or TLS).
    Ws {
        /// Receiving half.
        stream: SplitStream<Ws>,
        /// Sending half.
        /// Boxed: the sink is 64 bytes, and as the widest variant it would make every link,
        /// plain TCP ones included, that wide inside the connection's task.
        sink: Box<SplitSink<Ws, Message>>,
        /// Frames were queued since the last flush.
        unflushed: bool,
    },
}

impl Link {
    /// TLS (or any boxed stream) carrying raw packets.
    pub fn stream(io: BoxedIo) -> Self {
        let (read, write) = tokio::io::split(io);
        Link::Stream {
            read,
            write,
            unflushed: false,
        }
    }

    /// A WebSocket after its upgrade.
    pub fn ws(ws: Ws) -> Self {
        let (sink, stream) = ws.split();
        let sink = Box::new(sink);
        Link::Ws {
            stream,
            sink,
            unflushed: false,
        }
    }

    /// The two halves, to be polled side by side.
    pub fn halves(&mut self) -> (Reader<'_>, Writer<'_>) {
        match self {
            Link::Tcp(stream) => (Reader::Tcp(stream), Writer::Tcp(stream)),
            Link::Stream {
                read,
                write,
                unflushed,
            } => (Reader::Stream(read), Writer::Stream { write, unflushed }),
            Link::Ws {
                stream,
                sink,
                unflushed,
            } => (Reader::Ws(stream), Writer::Ws { sink, unflushed }),
        }
    }

    /// Closes the sending direction after what was written (a FIN, or a WebSocket close frame
    /// whose code, from `farewell`, says whether and how the peer broke the protocol).
    pub async fn shutdown(&mut self, farewell: Farewell) {
        match self {
            Link::Tcp(stream) => {
                let _ = stream.shutdown().await;
            }
            Link::Stream { write, .. } => {
                let _ = write.shutdown().await;
            }
            Link::Ws { sink, .. } => {
                let code = match farewell {
                    Farewell::Normal => CloseCode::Normal,
                    Farewell::ProtocolError => CloseCode::Protocol,
                    Farewell::TooLarge => CloseCode::Size,
                };
                let frame = CloseFrame {
                    code,
                    reason: Default::default(),
                };
                // `send` flushes the frame; `close` then ends the sink (a second close frame is
                // not sent).
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.close().await;
            }
        }
    }
}

/// How a connection ends, for transports that can say so (a WebSocket close code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Farewell {
    /// The connection ends normally (1000): the client closed, was kicked, or the server stops.
    Normal,
    /// The peer broke the protocol (1002).
    ProtocolError,
    /// The peer sent a packet over the size limit (1009).
    TooLarge,
}

/// A WebSocket frame the transport refused, carried in the `io::Error` its read returns: the
/// client broke WebSocket's rules or ours, as opposed to a connection that failed, and the close
/// frame says which (1009 for a frame over the size cap, 1002 otherwise).
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct RefusedFrame {
    /// The close code the client is owed.
    farewell: Farewell,
    what: String,
}

impl RefusedFrame {
    fn error(farewell: Farewell, what: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, Self { farewell, what })
    }

    /// The close code a read error calls for, if it is a refused frame.
    pub fn farewell_of(error: &io::Error) -> Option<Farewell> {
        error
            .get_ref()?
            .downcast_ref::<Self>()
            .map(|refused| refused.farewell)
    }
}

/// A tungstenite read error as an `io::Error`: a [`RefusedFrame`] when the client's frames broke
/// the rules (too large, not WebSocket, text), a plain failure otherwise.
fn refused_or_failed(error: tungstenite::Error) -> io::Error {
    use tungstenite::error::ProtocolError;
    match error {
        tungstenite::Error::Capacity(capacity) => {
            RefusedFrame::error(Farewell::TooLarge, capacity.to_string())
        }
        // A peer that dropped the connection without a close frame broke nothing worth a code.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            io::Error::other(error)
        }
        tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => {
            RefusedFrame::error(Farewell::ProtocolError, error.to_string())
        }
        error => io::Error::other(error),
    }
}

/// The receiving half of a [`Link`].
pub enum Reader<'a> {
    /// Plain TCP.
    Tcp(&'a TcpStream),
    /// TLS.
    Stream(&'a mut ReadHalf<BoxedIo>),
    /// WebSocket.
    Ws(&'a mut SplitStream<Ws>),
}

impl Reader<'_> {
    /// Waits for bytes and hands them to `f` (bytes of a stream, or one WebSocket frame's
    /// payload). `Ready(Ok(None))` is the end of the stream.
    pub fn poll_read<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Poll<io::Result<Option<R>>> {
        match self {
            Reader::Tcp(stream) => tcp::poll_read(stream, cx, f),
            Reader::Stream(read) => with_scratch(|buf| {
                let mut filled = ReadBuf::new(buf);
                ready!(Pin::new(&mut **read).poll_read(cx, &mut filled))?;
                let bytes = filled.filled();
                Poll::Ready(Ok((!bytes.is_empty()).then(|| f(bytes))))
            }),
            Reader::Ws(stream) => loop {
                match ready!(stream.poll_next_unpin(cx)) {
                    None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(None)),
                    Some(Ok(Message::Binary(data))) => return Poll::Ready(Ok(Some(f(&data)))),
                    // Pings are answered by tungstenite itself; pongs and raw frames carry
                    // nothing for us.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Text(_))) => {
                        return Poll::Ready(Err(RefusedFrame::error(
                            Farewell::ProtocolError,
                            "text frame: the protocol uses binary frames".into(),
                        )));
                    }
                    Some(Err(error)) => return Poll::Ready(Err(refused_or_failed(error))),
                }
            },
        }
    }
}

/// Packets taken from the send queue and not yet (wholly) written.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Whole packets, in order.
    pub packets: VecDeque<Bytes>,
    /// Bytes of the first packet already written (TCP and TLS may write part of one).
    pub offset: usize,
}

impl Outgoing {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Marks `n` more bytes as written, dropping the packets that are done.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.packets.front() else {
                return;
            };
            let left = front.len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            self.packets.pop_front();
        }
        // A packet of zero bytes is never queued, but would otherwise stay forever.
        while self.packets.front().is_some_and(Bytes::is_empty) {
            self.packets.pop_front();
        }
    }

    /// Frees the buffer when empty, so an idle connection holds none.
    pub fn shrink_if_empty(&mut self) {
        if self.packets.is_empty() && self.packets.capacity() > 0 {
            self.packets = VecDeque::new();
        }
    }
}

/// The sending half of a [`Link`].
pub enum Writer<'a> {
    /// Plain TCP: queued packets go out in one vectored write.
    Tcp(&'a TcpStream),
    /// TLS.
    Stream {
        /// The stream.
        write: &'a mut WriteHalf<BoxedIo>,
        /// Bytes were written since the last flush.
        unflushed: &'a mut bool,
    },
    /// WebSocket: one binary frame per packet, as pitaya clients require.
    Ws {
        /// The sink.
        sink: &'a mut SplitSink<Ws, Message>,
        /// Frames were queued since the last flush.
        unflushed: &'a mut bool,
    },
}

impl Writer<'_> {
    /// Writes some of `out` (at least one byte, or Pending). Returns how many bytes of packets
    /// left `out`.
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Outgoing,
    ) -> Poll<io::Result<usize>> {
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self {
            Writer::Tcp(stream) => {
                let n = ready!(tcp::poll_write(stream, cx, out))?;
                out.advance(n);
                Poll::Ready(Ok(n))
            }
            Writer::Stream { write, unflushed } => {
                let front = &out.packets[0][out.offset..];
                let n = ready!(Pin::new(&mut **write).poll_write(cx, front))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                **unflushed = true;
                out.advance(n);
                Poll::Ready(Ok(n))
            }
            Writer::Ws { sink, unflushed } => {
                let mut sent = 0;
                while let Some(packet) = out.packets.front() {
                    if sink
                        .poll_ready_unpin(cx)
                        .map_err(io::Error::other)?
                        .is_pending()
                    {
                        break;
                    }
                    let len = packet.len();
                    let packet = out.packets.pop_front().unwrap_or_default();
                    sink.start_send_unpin(Message::Binary(packet))
                        .map_err(io::Error::other)?;
                    **unflushed = true;
                    sent += len;
                }
                if sent == 0 {
                    Poll::Pending
                } else {
                    Poll::Ready(Ok(sent))
                }
            }
        }
    }

    /// Pushes out what a TLS or WebSocket layer still buffers; plain TCP buffers nothing.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Writer::Tcp(_) => Poll::Ready(Ok(())),
            Writer::Stream { write, unflushed } => {
                if **unflushed {
                    ready!(Pin::new(&mut **write).poll_flush(cx))?;
                    **unflushed = false;
                }
                Poll::Ready(Ok(()))
            }
            Writer::Ws { sink, unflushed } => {
                if **unflushed {
                    ready!(sink.poll_flush_unpin(cx)).map_err(io::Error::other)?;
                    **unflushed = false;
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_advances_across_packets() {
        let mut out = Outgoing::default();
        out.packets.push_back(Bytes::from_static(b"abc"));
        out.packets.push_back(Bytes::from_static(b"de"));
        out.packets.push_back(Bytes::from_static(b"fgh"));
        out.advance(2);
        assert_eq!((out.packets.len(), out.offset), (3, 2));
        out.advance(2);
        assert_eq!((out.packets.len(), out.offset), (2, 1));
        out.advance(4);
        assert!(out.is_empty());
        assert_eq!(out.offset, 0);
        out.shrink_if_empty();
        assert_eq!(out.packets.capacity(), 0);
    }
}
