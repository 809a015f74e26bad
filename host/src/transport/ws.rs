//! WebSocket: binary frames over TCP. Any URL path upgrades; no subprotocol is required.
//! A frame may hold one or several packets; every packet sent goes in a frame of its own.

use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::BoxedIo;

pub(super) type Stream = WebSocketStream<BoxedIo>;

/// Bytes tungstenite reads at a time (its buffer grows for a larger frame). Small, because it
/// stays allocated, zero-filled, for every connection; game messages are small.
const READ_BUFFER: usize = 1024;

/// Completes the WebSocket upgrade on an accepted TCP stream. Frames and messages larger than
/// `max_message` are refused by tungstenite before they are buffered whole.
pub async fn accept_websocket(stream: BoxedIo, max_message: usize) -> Result<Stream, WsError> {
    // tungstenite's default 128 KiB read buffer stays resident for every connection; game
    // messages are small, and the buffer grows when a frame needs it.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
}
