//! TCP (or TLS over TCP): a byte stream, so reads may hold part of a packet or several packets.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How much a read asks for at a time; a small figure keeps idle connections cheap.
const READ_CHUNK: usize = 4096;

/// Receiving half of a TCP connection.
pub struct TcpReader(pub Box<dyn AsyncRead + Send + Unpin>);

impl TcpReader {
    pub(super) async fn read(&mut self, buf: &mut BytesMut) -> io::Result<bool> {
        buf.reserve(READ_CHUNK);
        Ok(self.0.read_buf(buf).await? > 0)
    }
}

/// Sending half of a TCP connection.
pub struct TcpWriter {
    stream: Box<dyn AsyncWrite + Send + Unpin>,
    /// Several queued packets are copied here and written with one system call.
    batch: Vec<u8>,
}

impl TcpWriter {
    /// Wraps the write half of a stream.
    pub fn new(stream: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        Self {
            stream,
            batch: Vec::new(),
        }
    }

    pub(super) async fn write_packets(&mut self, packets: &[Bytes]) -> io::Result<()> {
        match packets {
            [] => return Ok(()),
            [one] => self.stream.write_all(one).await?,
            many => {
                self.batch.clear();
                for packet in many {
                    self.batch.extend_from_slice(packet);
                }
                let result = self.stream.write_all(&self.batch).await;
                // A burst must not pin a large buffer to an idle connection.
                if self.batch.capacity() > 64 * 1024 {
                    self.batch = Vec::new();
                }
                result?
            }
        }
        // A TLS stream holds written bytes until flushed; a plain one flushes for free.
        self.stream.flush().await
    }

    pub(super) async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
