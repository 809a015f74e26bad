//! WebSocket: binary frames over TCP. Any URL path upgrades; no subprotocol is required.
//! A frame may hold one or several packets; every packet sent goes in a frame of its own.

use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::BoxedIo;

type Stream = WebSocketStream<BoxedIo>;

/// Bytes tungstenite reads at a time.
const READ_BUFFER: usize = 4096;

/// Completes the WebSocket upgrade on an accepted TCP stream. Frames and messages larger than
/// `max_message` are refused by tungstenite before they are buffered whole.
pub async fn accept_websocket(
    stream: BoxedIo,
    max_message: usize,
) -> Result<(WsReader, WsWriter), WsError> {
    // tungstenite's default 128 KiB read buffer stays resident for every connection; game
    // messages are small, and the buffer grows when a frame needs it.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let (sink, stream) = ws.split();
    Ok((WsReader(stream), WsWriter(sink)))
}

/// Receiving half of a WebSocket connection.
pub struct WsReader(SplitStream<Stream>);

impl WsReader {
    pub(super) async fn read(&mut self, buf: &mut BytesMut) -> io::Result<bool> {
        loop {
            match self.0.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(false),
                Some(Ok(Message::Binary(data))) => {
                    buf.extend_from_slice(&data);
                    return Ok(true);
                }
                // Pings are answered by tungstenite itself; pongs and raw frames carry nothing for us.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(_))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame: the protocol uses binary frames",
                    ));
                }
                Some(Err(error)) => return Err(io::Error::other(error)),
            }
        }
    }
}

/// Sending half of a WebSocket connection.
pub struct WsWriter(SplitSink<Stream, Message>);

impl WsWriter {
    pub(super) async fn write_packets(&mut self, packets: &[Bytes]) -> io::Result<()> {
        for packet in packets {
            self.0
                .feed(Message::Binary(packet.clone()))
                .await
                .map_err(io::Error::other)?;
        }
        self.0.flush().await.map_err(io::Error::other)
    }

    pub(super) async fn shutdown(&mut self) {
        let _ = self.0.close().await;
    }
}
