//! The per-connection state machine (protocol.md §2, §6, §8): handshake order, heartbeats and
//! timeouts, driven by the bytes and the `now` the host passes in.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::dict::RouteDict;
use crate::handshake::{
    ClientHandshake, HandshakeError, handshake_error_json, parse_client_handshake,
    server_handshake_json,
};
use crate::json;
use crate::message::{Message, MessageError, MessageType, decode_message_bytes, deflate};
use crate::packet::{HEADER_LEN, Packet, PacketDecoder, PacketError, PacketType, packet_bytes};

/// The reply message for a handshake that is not valid JSON.
const INVALID_HANDSHAKE_MSG: &str = "invalid handshake data";

/// Limits and settings shared by every connection of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Largest packet body accepted from the client (default 64 KiB, clamped to 2^24−1).
    pub max_packet_body: usize,
    /// Largest size a compressed payload may inflate to (default 1 MiB).
    pub max_inflated: usize,
    /// Heartbeat interval (default 30 s). Zero disables heartbeats and the liveness timeout.
    /// Clients are told whole seconds, rounded up, so keep it a whole number of seconds.
    pub heartbeat: Duration,
    /// How long a client has from connecting to acknowledging the handshake (default 10 s).
    /// Zero disables the timeout.
    pub handshake_timeout: Duration,
    /// The serializer named in the server handshake: `json` (default) or `protobuf`.
    pub serializer: String,
    /// zlib the server handshake JSON when that makes it smaller. Off by default: older
    /// JavaScript clients cannot inflate it.
    pub compress_handshake: bool,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_packet_body: 64 * 1024,
            max_inflated: 1024 * 1024,
            heartbeat: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            serializer: "json".to_owned(),
            compress_handshake: false,
        }
    }
}

impl ConnectionConfig {
    /// The heartbeat interval as the whole seconds the handshake announces, rounded up so that a
    /// sub-second interval is not announced as 0, which clients read as "never".
    pub fn heartbeat_secs(&self) -> u64 {
        let secs = self.heartbeat.as_secs();
        if self.heartbeat.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting for the client's handshake packet.
    AwaitingHandshake,
    /// The handshake event was emitted; the host must accept or refuse it.
    AwaitingValidation,
    /// The server handshake was queued; waiting for the client's ack.
    HandshakeSent,
    /// Handshake complete: requests and notifies flow.
    Working,
    /// Finished, by a protocol error, a timeout, a refusal or a kick. Nothing more is accepted.
    Closed,
}

/// Something the host must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The client sent its handshake: the host must call accept_handshake or refuse_handshake.
    Handshake(ClientHandshake),
    /// The client acknowledged the handshake; requests may follow.
    Ready,
    /// A Request or Notify from the client (never Response/Push: those are protocol errors from a
    /// client).
    Message(Message),
}

/// Why a connection was closed. Every variant means the host should close the transport.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The byte stream is not a sequence of valid packets.
    #[error(transparent)]
    Packet(#[from] PacketError),
    /// A Data packet holds an invalid message.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The handshake is not valid JSON or not an object; a 400 reply is queued.
    #[error(transparent)]
    InvalidHandshake(#[from] HandshakeError),
    /// A valid packet arrived in a state where the protocol does not allow it.
    #[error("unexpected {kind:?} packet in state {state:?}")]
    UnexpectedPacket {
        /// The packet's type.
        kind: PacketType,
        /// The state the connection was in when it arrived.
        state: State,
    },
    /// The client sent a message type only a server may send (Response or Push).
    #[error("a client may not send a {0:?} message")]
    UnexpectedMessageType(MessageType),
    /// The client did not acknowledge the handshake in time.
    #[error("handshake not completed in time")]
    HandshakeTimeout,
    /// Nothing was received from the client for two heartbeat intervals.
    #[error("no packet from the client for two heartbeat intervals")]
    HeartbeatTimeout,
    /// Bytes were fed to a connection that is already closed.
    #[error("connection is closed")]
    Closed,
}

/// The protocol state of one client connection, without any I/O.
///
/// The host feeds it received bytes ([`Connection::receive`]) and the passing of time
/// ([`Connection::handle_timeout`]), then drains what it produced: events with
/// [`Connection::poll_event`] and packets to send with [`Connection::poll_transmit`].
#[derive(Debug)]
pub struct Connection {
    config: Arc<ConnectionConfig>,
    dict: Arc<RouteDict>,
    decoder: PacketDecoder,
    state: State,
    /// Bytes of a packet not yet complete; a TCP read or a WebSocket frame may end mid-packet.
    recv_buf: BytesMut,
    events: VecDeque<Event>,
    transmits: VecDeque<Bytes>,
    /// The handshake deadline counts from here.
    started: Instant,
    /// The last time a complete packet arrived: the liveness deadline counts from here.
    last_received: Instant,
    /// The latest `now` seen, so that methods without a `now` argument can still schedule.
    latest_now: Instant,
    /// When the next server heartbeat is due, one interval after the last; `None` until the
    /// handshake is accepted.
    next_heartbeat: Option<Instant>,
    /// A heartbeat owed half an interval after the client's ack or late heartbeat (see
    /// [`Connection::client_beat`]), besides the one an interval after the last; `None` once
    /// sent.
    owed_heartbeat: Option<Instant>,
    /// When the client last acked or sent a heartbeat (see [`Connection::client_beat`]).
    last_beat: Option<Instant>,
}

impl Connection {
    /// A new connection, accepted at `now`, waiting for the client's handshake.
    pub fn new(config: Arc<ConnectionConfig>, dict: Arc<RouteDict>, now: Instant) -> Self {
        Self {
            decoder: PacketDecoder::new(config.max_packet_body),
            config,
            dict,
            state: State::AwaitingHandshake,
            recv_buf: BytesMut::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            started: now,
            last_received: now,
            latest_now: now,
            next_heartbeat: None,
            owed_heartbeat: None,
            last_beat: None,
        }
    }

    /// Feeds received bytes: decodes every complete packet, updates the state, queues events and
    /// outgoing packets. An incomplete packet at the end is kept for the next call, so a WebSocket
    /// frame may hold one packet, several, or part of one.
    ///
    /// Every complete packet counts as a sign of life. On a protocol error the state becomes
    /// [`State::Closed`] and the error is returned; events queued before the error stay queued.
    /// For a handshake that is not valid JSON the 400 reply is queued first, so the host should
    /// flush [`Connection::poll_transmit`] before closing.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<(), ProtocolError> {
        if self.state == State::Closed {
            return Err(ProtocolError::Closed);
        }
        self.observe(now);
        self.recv_buf.extend_from_slice(bytes);
        self.process_buffered(now)
    }

    /// Decodes buffered packets until more bytes are needed. While the host validates a
    /// handshake, later packets (a client may send its ack in the same write) stay buffered:
    /// they are judged against the state the host's decision leads to.
    fn process_buffered(&mut self, now: Instant) -> Result<(), ProtocolError> {
        while self.state != State::AwaitingValidation {
            let packet = match self.decoder.decode(&mut self.recv_buf) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(error) => return Err(self.fail(error.into())),
            };
            self.last_received = now;
            if let Err(error) = self.handle_packet(packet, now) {
                return Err(self.fail(error));
            }
        }
        Ok(())
    }

    fn handle_packet(&mut self, packet: Packet, now: Instant) -> Result<(), ProtocolError> {
        let unexpected = ProtocolError::UnexpectedPacket {
            kind: packet.kind,
            state: self.state,
        };
        match (packet.kind, self.state) {
            (PacketType::Handshake, State::AwaitingHandshake) => {
                match parse_client_handshake(&packet.body) {
                    // Handed over, not kept: parsed JSON costs hundreds of bytes per
                    // connection, and the host keeps its own copy with the session.
                    Ok(handshake) => {
                        self.events.push_back(Event::Handshake(handshake));
                        self.state = State::AwaitingValidation;
                        Ok(())
                    }
                    Err(error) => {
                        self.queue_handshake_reply(&handshake_error_json(
                            400,
                            INVALID_HANDSHAKE_MSG,
                        ));
                        Err(error.into())
                    }
                }
            }
            // The ack's body should be empty; like pitaya, ignore whatever it holds.
            (PacketType::HandshakeAck, State::HandshakeSent) => {
                self.state = State::Working;
                self.events.push_back(Event::Ready);
                self.client_beat(now);
                Ok(())
            }
            (PacketType::Heartbeat, _) => {
                self.client_beat(now);
                Ok(())
            }
            (PacketType::Data, State::Working) => {
                let message =
                    decode_message_bytes(&packet.body, &self.dict, self.config.max_inflated)?;
                match message.kind {
                    MessageType::Request | MessageType::Notify => {
                        self.events.push_back(Event::Message(message));
                        Ok(())
                    }
                    kind => Err(ProtocolError::UnexpectedMessageType(kind)),
                }
            }
            _ => Err(unexpected),
        }
    }

    /// The client acked or sent a heartbeat at `now`. After its ack, or a heartbeat that came more
    /// than 1.25 intervals after its last, the host owes it a heartbeat half an interval later,
    /// besides the one due an interval after the host's last (protocol.md §6: the host beats
    /// every interval, whatever the client does).
    ///
    /// pomelo's client sends its heartbeat one interval after it *receives* one, and ignores a
    /// heartbeat that arrives while its own is pending. A server that only beats every interval
    /// lands each beat just before that client's timer fires, so the client beats every other
    /// interval: a silence of 2 × `heartbeat` plus timer drift, which the liveness deadline cuts
    /// off. A beat half an interval after the client's always finds it waiting, so such a client
    /// beats every 1.5 intervals at most. The owed beat is sent even when another went out just
    /// before it: a late host that reads the client's heartbeat just before sending one that was
    /// due starts the client's next interval in step with its own, and only the owed beat,
    /// which the waiting client drops, moves the host's beats out of step again (every beat
    /// restarts the host's interval). A client that beats every interval, on its own timer
    /// (libpitaya) or in answer to the server's (pitaya-bench), never gaps that long after its
    /// first beat, so it sees one server heartbeat an interval.
    fn client_beat(&mut self, now: Instant) {
        let late = self.last_beat.is_none_or(|last| {
            self.after(last, self.config.heartbeat.saturating_mul(5) / 4)
                .is_some_and(|limit| now > limit)
        });
        self.last_beat = Some(now);
        if late && self.next_heartbeat.is_some() {
            self.owed_heartbeat = self.after(now, self.config.heartbeat / 2);
        }
    }

    /// Closes the connection because of `error` and hands the error back.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        self.close();
        error
    }

    fn observe(&mut self, now: Instant) {
        self.latest_now = self.latest_now.max(now);
    }

    /// Frees the buffers that hold nothing now (partial packets, events and packets to send),
    /// so that a connection that went quiet holds no memory for them. They are allocated again
    /// when next needed.
    pub fn shrink_buffers(&mut self) {
        if self.recv_buf.is_empty() && self.recv_buf.capacity() > 0 {
            self.recv_buf = BytesMut::new();
        }
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        if self.transmits.is_empty() && self.transmits.capacity() > 0 {
            self.transmits = VecDeque::new();
        }
    }

    /// The next event for the host, in the order the packets arrived.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Accepts the client's handshake: queues the server handshake (code 200, heartbeat seconds,
    /// dict, serializer) and moves to [`State::HandshakeSent`]. The first server heartbeat is due
    /// one interval after the latest `now` the connection was given.
    ///
    /// Packets that arrived behind the handshake are then processed, so this can fail like
    /// [`Connection::receive`]. Does nothing unless the state is [`State::AwaitingValidation`].
    pub fn accept_handshake(&mut self) -> Result<(), ProtocolError> {
        if self.state != State::AwaitingValidation {
            return Ok(());
        }
        let json = server_handshake_json(
            self.config.heartbeat_secs(),
            &self.dict,
            &self.config.serializer,
        );
        let body = if self.config.compress_handshake {
            let compressed = deflate(&json);
            // Like pitaya: compression is only worth it when it makes the reply smaller.
            if !compressed.is_empty() && compressed.len() < json.len() {
                compressed
            } else {
                json
            }
        } else {
            json
        };
        self.queue_handshake_reply(&body);
        self.state = State::HandshakeSent;
        self.next_heartbeat = self.after(self.latest_now, self.config.heartbeat);
        self.process_buffered(self.latest_now)
    }

    /// Refuses the client's handshake: queues `{"code":<code>,"msg":...}` and moves to
    /// [`State::Closed`].
    ///
    /// The reply is only queued before the handshake has been answered (states
    /// [`State::AwaitingHandshake`] and [`State::AwaitingValidation`]); later the connection is
    /// just closed.
    pub fn refuse_handshake(&mut self, code: u16, msg: &str) {
        if matches!(
            self.state,
            State::AwaitingHandshake | State::AwaitingValidation
        ) {
            self.queue_handshake_reply(&handshake_error_json(code, msg));
        }
        self.close();
    }

    /// Queues a Kick packet (with `{"reason":...}` when `reason` is given) and moves to
    /// [`State::Closed`]. Does nothing if the connection is already closed.
    pub fn kick(&mut self, reason: Option<&str>) {
        if self.state == State::Closed {
            return;
        }
        self.transmits.push_back(kick_packet(reason));
        self.close();
    }

    /// Moves to [`State::Closed`] without sending anything. Packets already queued stay queued.
    pub fn close(&mut self) {
        self.state = State::Closed;
        self.next_heartbeat = None;
        self.owed_heartbeat = None;
        self.recv_buf = BytesMut::new();
    }

    fn queue_handshake_reply(&mut self, body: &[u8]) {
        // A reply too large for a packet would need a dict of over half a million routes;
        // queueing nothing then makes the client time out instead of reading garbage.
        if let Ok(packet) = packet_bytes(PacketType::Handshake, body) {
            self.transmits.push_back(packet);
        }
    }

    /// The next packet the state machine itself wants sent (handshake reply, heartbeat, kick), one
    /// whole packet per `Bytes`, because WebSocket clients want exactly one packet per frame.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// When [`Connection::handle_timeout`] should next be called: the handshake deadline, the next
    /// heartbeat to send, or the liveness deadline, whichever comes first. `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.handshake_deadline(),
            self.heartbeat_due(),
            self.liveness_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Acts on the deadlines that have passed by `now`.
    ///
    /// Queues a heartbeat when one is due (every `heartbeat` while [`State::HandshakeSent`] or
    /// [`State::Working`]; a host that wakes up late gets one heartbeat, not a burst). Fails with
    /// [`ProtocolError::HandshakeTimeout`] if the ack has not arrived within `handshake_timeout`
    /// of the connection's start, and with [`ProtocolError::HeartbeatTimeout`] if no packet has
    /// arrived for 2 × `heartbeat`; the state is then [`State::Closed`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ProtocolError> {
        if self.state == State::Closed {
            return Ok(());
        }
        self.observe(now);
        if self
            .handshake_deadline()
            .is_some_and(|deadline| now >= deadline)
        {
            return Err(self.fail(ProtocolError::HandshakeTimeout));
        }
        if self
            .liveness_deadline()
            .is_some_and(|deadline| now >= deadline)
        {
            return Err(self.fail(ProtocolError::HeartbeatTimeout));
        }
        if let Some(due) = self.heartbeat_due().filter(|&due| now >= due) {
            self.transmits.push_back(heartbeat_packet());
            self.next_heartbeat = self
                .after(due, self.config.heartbeat)
                .filter(|&next| next > now)
                .or_else(|| self.after(now, self.config.heartbeat));
            self.owed_heartbeat = self.owed_heartbeat.filter(|&owed| owed > now);
        }
        Ok(())
    }

    /// `start + interval`, or `None` when the interval is zero (disabled) or overflows `Instant`.
    fn after(&self, start: Instant, interval: Duration) -> Option<Instant> {
        if interval.is_zero() {
            None
        } else {
            start.checked_add(interval)
        }
    }

    fn handshake_deadline(&self) -> Option<Instant> {
        match self.state {
            State::AwaitingHandshake | State::AwaitingValidation | State::HandshakeSent => {
                self.after(self.started, self.config.handshake_timeout)
            }
            State::Working | State::Closed => None,
        }
    }

    fn heartbeat_due(&self) -> Option<Instant> {
        match self.state {
            // A beat is owed only while one is scheduled: none without heartbeats.
            State::HandshakeSent | State::Working => self
                .next_heartbeat
                .map(|next| self.owed_heartbeat.map_or(next, |owed| next.min(owed))),
            _ => None,
        }
    }

    fn liveness_deadline(&self) -> Option<Instant> {
        match self.state {
            State::HandshakeSent | State::Working => self.after(
                self.last_received,
                self.config
                    .heartbeat
                    .checked_mul(2)
                    .unwrap_or(Duration::MAX),
            ),
            _ => None,
        }
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// The settings this connection runs with.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// The route dictionary this connection resolves codes with.
    pub fn dict(&self) -> &RouteDict {
        &self.dict
    }
}

/// A Kick packet: `05 00 00 00`, or with a `{"reason":"..."}` body when `reason` is given.
///
/// A reason too long for a packet is dropped rather than failing the kick.
pub fn kick_packet(reason: Option<&str>) -> Bytes {
    let Some(reason) = reason else {
        return Bytes::from_static(&[PacketType::Kick as u8, 0, 0, 0]);
    };
    let mut body = Vec::with_capacity(reason.len() + 14);
    body.extend_from_slice(b"{\"reason\":");
    json::push_string(&mut body, reason);
    body.push(b'}');
    packet_bytes(PacketType::Kick, &body)
        .unwrap_or_else(|_| Bytes::from_static(&[PacketType::Kick as u8, 0, 0, 0]))
}

/// A Kick packet whose body is `{}`: pomelo's kick without a reason.
pub fn kick_packet_without_reason() -> Bytes {
    Bytes::from_static(&[PacketType::Kick as u8, 0, 0, 2, b'{', b'}'])
}

/// A Heartbeat packet: `03 00 00 00`.
pub fn heartbeat_packet() -> Bytes {
    const HEARTBEAT: [u8; HEADER_LEN] = [PacketType::Heartbeat as u8, 0, 0, 0];
    Bytes::from_static(&HEARTBEAT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_packets() {
        assert_eq!(kick_packet(None).as_ref(), [5, 0, 0, 0]);
        let with_reason = kick_packet(Some("bye \"now\""));
        let body = br#"{"reason":"bye \"now\""}"#;
        assert_eq!(with_reason[..4], [5, 0, 0, body.len() as u8]);
        assert_eq!(&with_reason[4..], body);
    }

    #[test]
    fn heartbeat_seconds_round_up() {
        let mut config = ConnectionConfig::default();
        assert_eq!(config.heartbeat_secs(), 30);
        config.heartbeat = Duration::from_millis(1500);
        assert_eq!(config.heartbeat_secs(), 2);
        config.heartbeat = Duration::ZERO;
        assert_eq!(config.heartbeat_secs(), 0);
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let config = ConnectionConfig {
            heartbeat: Duration::MAX,
            handshake_timeout: Duration::MAX,
            ..ConnectionConfig::default()
        };
        let now = Instant::now();
        let mut conn = Connection::new(Arc::new(config), Arc::default(), now);
        assert_eq!(conn.poll_timeout(), None);
        conn.receive(&[1, 0, 0, 2, b'{', b'}'], now).unwrap();
        conn.accept_handshake().unwrap();
        conn.receive(&[2, 0, 0, 0], now).unwrap();
        assert_eq!(
            conn.handle_timeout(now + Duration::from_secs(1 << 30)),
            Ok(())
        );
        assert_eq!(conn.state(), State::Working);
    }
}
