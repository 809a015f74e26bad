//! WebSocket: binary frames over TCP. Any URL path upgrades; no subprotocol is required.
//! A frame may hold one or several packets; every packet sent goes in a frame of its own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{BoxedIo, with_scratch};

pub(super) type Stream = WebSocketStream<Scratched>;

/// Bytes tungstenite asks for at a time, and the size of its read buffer, which stays allocated
/// for every connection (it grows for a larger frame). Small, because the socket is read through
/// the worker thread's scratch buffer ([`Scratched`]): a frame larger than this costs another
/// copy from what was read, not another system call.
const READ_BUFFER: usize = 256;

/// A connection's stream read through the worker thread's scratch buffer: each read from the
/// socket takes all that waits (up to the scratch buffer's size), hands tungstenite what it
/// asked for, and keeps the rest until tungstenite asks again. So tungstenite's own buffer can
/// be small, and an idle connection holds no leftover: tungstenite reads until the socket has
/// nothing more.
pub struct Scratched {
    io: BoxedIo,
    /// Read from the socket and not yet asked for.
    rest: Bytes,
}

impl AsyncRead for Scratched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if !this.rest.is_empty() {
            let n = this.rest.len().min(buf.remaining());
            buf.put_slice(&this.rest[..n]);
            this.rest.advance(n);
            if this.rest.is_empty() {
                this.rest = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        with_scratch(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            let read = read.filled();
            let n = read.len().min(buf.remaining());
            buf.put_slice(&read[..n]);
            if n < read.len() {
                this.rest = Bytes::copy_from_slice(&read[n..]);
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncWrite for Scratched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Completes the WebSocket upgrade on an accepted TCP stream. Frames and messages larger than
/// `max_message` are refused by tungstenite before they are buffered whole.
pub async fn accept_websocket(stream: BoxedIo, max_message: usize) -> Result<Stream, WsError> {
    // tungstenite's default 128 KiB read buffer would stay resident for every connection.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let stream = Scratched {
        io: stream,
        rest: Bytes::new(),
    };
    tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What one read from the socket brought beyond what was asked for comes out of later reads,
    /// in order, and is not kept once handed out; then the socket is read again.
    #[tokio::test]
    async fn the_rest_of_a_read_is_handed_out_in_order() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut scratched = Scratched {
            io: Box::new(server),
            rest: Bytes::new(),
        };
        let sent: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 64];
        while got.len() < sent.len() {
            let n = scratched.read(&mut chunk).await.unwrap();
            assert!(n > 0 && n <= chunk.len());
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, sent);
        assert!(
            scratched.rest.is_empty(),
            "nothing is kept once all is handed out"
        );
        client.write_all(b"more").await.unwrap();
        drop(client);
        let mut tail = Vec::new();
        scratched.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, b"more");
    }
}
