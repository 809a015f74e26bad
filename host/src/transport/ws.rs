//! WebSocket: binary frames over TCP. Any URL path upgrades; no subprotocol is required.
//! A frame may hold one or several packets; every packet sent goes in a frame of its own.

use std::future::poll_fn;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::http::serve_file;
use super::upgrade::{self, Parsed, UpgradeError, Verdict};
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

impl Scratched {
    /// Reads until a whole request head is in, and judges it. `partial` holds the head so far
    /// only when it comes in pieces; a head that arrives in one read is parsed where it was read.
    /// What follows the head stays in `rest`, for tungstenite.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        partial: &mut Vec<u8>,
    ) -> Poll<io::Result<Verdict>> {
        loop {
            let step = with_scratch(|scratch| {
                let mut read = ReadBuf::new(scratch);
                ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
                let got = read.filled();
                if got.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before the end of the upgrade request",
                    )));
                }
                let pieces = !partial.is_empty();
                if pieces {
                    partial.extend_from_slice(got);
                }
                let head = if pieces { &partial[..] } else { got };
                Poll::Ready(Ok(match upgrade::parse(head) {
                    Parsed::Complete { verdict, len } => {
                        if len < head.len() {
                            self.rest = Bytes::copy_from_slice(&head[len..]);
                        }
                        Some(verdict)
                    }
                    Parsed::Partial => {
                        if !pieces {
                            partial.extend_from_slice(got);
                        }
                        None
                    }
                }))
            });
            if let Some(verdict) = ready!(step)? {
                return Poll::Ready(Ok(verdict));
            }
        }
    }
}

/// Completes the WebSocket upgrade on an accepted stream (plain or TLS): a request that is not
/// one gets an HTTP error saying why, then the close, except a plain GET when `web` names a
/// folder: that gets a file from it (`Ok(None)`). `timeout` bounds the request head and the
/// answer to it; a file takes as long as it takes, but no write of it may stall that long.
/// Frames and messages larger than `max_message` are refused by tungstenite before they are
/// buffered whole.
pub async fn accept_websocket(
    stream: BoxedIo,
    max_message: usize,
    web: Option<&Path>,
    timeout: Duration,
) -> Result<Option<Stream>, UpgradeError> {
    let mut stream = Scratched {
        io: stream,
        rest: Bytes::new(),
    };
    let handshake = async {
        let mut partial = Vec::new();
        let verdict = poll_fn(|cx| stream.poll_head(cx, &mut partial)).await?;
        drop(partial);
        let refusal = match verdict {
            Verdict::Accept(key) => {
                stream
                    .write_all(upgrade::switching_protocols(&key).as_bytes())
                    .await?;
                return Ok(None);
            }
            Verdict::Get(page) => match web {
                Some(root) => return Ok(Some((root, page))),
                None => upgrade::NOT_AN_UPGRADE,
            },
            Verdict::Refuse(refusal) => refusal,
        };
        stream
            .write_all(upgrade::refusal(refusal).as_bytes())
            .await?;
        stream.shutdown().await?;
        Err(UpgradeError::Refused(refusal.reason))
    };
    let page = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| UpgradeError::TimedOut)??;
    if let Some((root, page)) = page {
        serve_file(&mut stream, root, &page, timeout).await?;
        return Ok(None);
    }
    // tungstenite's default 128 KiB read buffer would stay resident for every connection.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    Ok(Some(
        WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await,
    ))
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

    /// A head that comes a byte at a time is put together and answered with the RFC's accept
    /// key, and a frame sent right behind it is not lost.
    #[tokio::test]
    async fn an_upgrade_in_pieces_is_answered_and_what_follows_it_is_kept() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let head: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let client = tokio::spawn(async move {
            for byte in head {
                client.write_all(&[*byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            // A masked binary frame holding "hi", with a zero mask.
            client
                .write_all(&[0x82, 0x82, 0, 0, 0, 0, b'h', b'i'])
                .await
                .unwrap();
            let mut answer = Vec::new();
            while !answer.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8];
                client.read_exact(&mut byte).await.unwrap();
                answer.push(byte[0]);
            }
            (client, String::from_utf8(answer).unwrap())
        });
        let mut ws = accept_websocket(Box::new(server), 1 << 16, None, Duration::from_secs(10))
            .await
            .unwrap()
            .expect("an upgrade");
        let message = ws.next().await.unwrap().unwrap();
        assert_eq!(message, Message::Binary(Bytes::from_static(b"hi")));
        let (_client, answer) = client.await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{answer}"
        );
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    /// A request that is not an upgrade is answered with the reason and refused.
    #[tokio::test]
    async fn a_plain_request_gets_an_http_error_and_no_websocket() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let outcome =
            accept_websocket(Box::new(server), 1 << 16, None, Duration::from_secs(10)).await;
        assert!(matches!(outcome, Err(UpgradeError::Refused(_))));
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("not a WebSocket upgrade: no Upgrade: websocket\n"));
    }
}
