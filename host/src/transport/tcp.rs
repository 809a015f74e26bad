//! Plain TCP through readiness: a byte stream, so a read may hold part of a packet or several
//! packets. The socket is read into the worker's scratch buffer only once it is readable, and
//! written with one vectored write for everything queued, so a connection holds no buffer of its
//! own and a burst of packets costs one system call.

use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{Outgoing, with_scratch};

/// Most packets handed to one `writev` (well under any system's IOV_MAX).
const MAX_SLICES: usize = 64;

pub(super) fn poll_read<R>(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    f: impl FnOnce(&[u8]) -> R,
) -> Poll<io::Result<Option<R>>> {
    let mut f = Some(f);
    loop {
        ready!(stream.poll_read_ready(cx))?;
        // A short read emptied the socket's queue, so the readiness can be cleared now rather
        // than learnt from one more read that fails with WouldBlock (a system call per
        // request). It must be the readiness seen *before* the read: bytes that arrive after it
        // raise a newer one, and clearing that would leave them unread until the client sends
        // more. So the read runs inside `try_io`, which takes the readiness first and clears
        // exactly that one when the closure says WouldBlock; a short read says so too, keeping
        // its byte count aside.
        let outcome = with_scratch(|buf| {
            let capacity = buf.len();
            let mut short = None;
            let attempt = stream.try_io(Interest::READABLE, || {
                let n = stream.try_read(buf)?;
                if n > 0 && n < capacity {
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match (attempt, short) {
                (_, Some(n)) | (Ok(n @ 1..), None) => Some(Ok(f.take().map(|f| f(&buf[..n])))),
                (Ok(_), None) => Some(Ok(None)),
                (Err(error), None) if error.kind() == io::ErrorKind::WouldBlock => None,
                (Err(error), None) => Some(Err(error)),
            }
        });
        if let Some(outcome) = outcome {
            return Poll::Ready(outcome);
        }
    }
}

pub(super) fn poll_write(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    out: &Outgoing,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        let result = match out.packets.len() {
            1 => stream.try_write(&out.packets[0][out.offset..]),
            _ => {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (i, packet) in out.packets.iter().take(MAX_SLICES).enumerate() {
                    let start = if i == 0 { out.offset } else { 0 };
                    slices[i] = IoSlice::new(&packet[start..]);
                    count = i + 1;
                }
                stream.try_write_vectored(&slices[..count])
            }
        };
        match result {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Poll::Ready(Err(error)),
        }
    }
}
