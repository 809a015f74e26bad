//! Protocol errors close the connection (§1, §2, §3): data or an ack before the handshake, unknown packet
//! types, invalid message types, client-sent Responses and Pushes, unknown route codes, overlong varints,
//! truncated messages. After each, the server still serves new connections.

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::ensure_nothing_else;
use pitaya_tests::codec::{self, Message, PITAYA_HANDSHAKE, Route};
use pitaya_tests::{Client, DEFAULT_WAIT, MessageType, Server, ServerOptions, Transport};

/// Sends `bytes` (one write / one frame) and expects the server to close the connection without answering
/// any request; then checks that a new connection still works.
async fn expect_close(server: &Server, mut c: Client, bytes: &[u8], what: &str) -> Result<()> {
    c.send_raw(bytes)
        .await
        .with_context(|| format!("sending {what}"))?;
    c.wait_closed()
        .await
        .with_context(|| format!("{what} must close the connection"))?;
    let answered: Vec<_> = c
        .unclaimed_messages()
        .into_iter()
        .filter(|m| m.kind == MessageType::Response)
        .collect();
    ensure!(
        answered.is_empty(),
        "{what} was answered before the close: {answered:?}"
    );
    let mut fresh = server
        .connect_ready(c.transport())
        .await
        .with_context(|| format!("a new connection after {what}"))?;
    ensure_nothing_else(&mut fresh)
        .await
        .with_context(|| format!("a new connection after {what}"))
}

fn echo_request(id: u64) -> Result<Vec<u8>> {
    Message::request(id, "echo.echo", b"{}").to_packet()
}

async fn data_before_handshake(server: &Server, t: Transport) -> Result<()> {
    let c = server.connect(t).await?;
    expect_close(
        server,
        c,
        &echo_request(1)?,
        "a Data packet before the handshake",
    )
    .await
}

#[tokio::test]
async fn data_before_handshake_closes() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| data_before_handshake(&server, t))
        .await
}

async fn data_before_ack(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect(t).await?;
    c.send_handshake(PITAYA_HANDSHAKE).await?;
    let reply = c.wait_handshake().await?;
    ensure!(reply.code == 200, "handshake refused: {}", reply.json);
    expect_close(
        server,
        c,
        &echo_request(1)?,
        "a Data packet after the handshake but before the ack",
    )
    .await
}

#[tokio::test]
async fn data_before_ack_closes() -> Result<()> {
    let server = Server::start_default().await?;
    server.each_transport(|t| data_before_ack(&server, t)).await
}

async fn ack_without_handshake(server: &Server, t: Transport) -> Result<()> {
    let c = server.connect(t).await?;
    expect_close(
        server,
        c,
        &codec::encode_packet(codec::HANDSHAKE_ACK, &[]),
        "an ack without a handshake",
    )
    .await
}

#[tokio::test]
async fn ack_without_handshake_closes() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| ack_without_handshake(&server, t))
        .await
}

async fn unknown_packet_types(server: &Server, t: Transport) -> Result<()> {
    for kind in [0x00u8, 0x06, 0x07, 0x80, 0xff] {
        let what = format!("a packet of unknown type 0x{kind:02x} after the handshake");
        let c = server.connect_ready(t).await?;
        expect_close(server, c, &[kind, 0, 0, 0], &what).await?;
    }
    for kind in [0x00u8, 0x06] {
        let what = format!("a packet of unknown type 0x{kind:02x} before the handshake");
        let c = server.connect(t).await?;
        expect_close(server, c, &[kind, 0, 0, 0], &what).await?;
    }
    // With a body, too.
    let c = server.connect_ready(t).await?;
    expect_close(
        server,
        c,
        &codec::encode_packet(0x06, b"{}"),
        "a packet of type 0x06 with a body",
    )
    .await
}

#[tokio::test]
async fn unknown_packet_types_close() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| unknown_packet_types(&server, t))
        .await
}

async fn invalid_message_types(server: &Server, t: Transport) -> Result<()> {
    let route = Route::from("echo.echo");
    for ty in 4u8..=7 {
        let body = codec::encode_message_raw(ty << 1, Some(1), Some(&route), b"{}")?;
        let c = server.connect_ready(t).await?;
        expect_close(
            server,
            c,
            &codec::encode_packet(codec::DATA, &body),
            &format!("a message of type {ty}"),
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn invalid_message_types_close() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| invalid_message_types(&server, t))
        .await
}

async fn client_response_and_push(server: &Server, t: Transport) -> Result<()> {
    let c = server.connect_ready(t).await?;
    expect_close(
        server,
        c,
        &Message::response(1, b"{}").to_packet()?,
        "a Response sent by the client",
    )
    .await?;
    let c = server.connect_ready(t).await?;
    expect_close(
        server,
        c,
        &Message::push("onEcho", b"{}").to_packet()?,
        "a Push sent by the client",
    )
    .await
}

#[tokio::test]
async fn client_sent_response_or_push_closes() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| client_response_and_push(&server, t))
        .await
}

async fn unknown_route_code(server: &Server, t: Transport) -> Result<()> {
    let (c, reply) = server.connect_ready_with_reply(t).await?;
    let code = (0..=u16::MAX)
        .rev()
        .find(|c| !reply.dict.values().any(|v| v == c))
        .context("every code is in the dict")?;
    let packet = Message::request(1, code, b"{}").to_packet()?;
    expect_close(
        server,
        c,
        &packet,
        &format!("a request with route code {code}, not in the dict"),
    )
    .await
}

#[tokio::test]
async fn route_code_not_in_dict_closes() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| unknown_route_code(&server, t))
        .await
}

async fn overlong_varint(server: &Server, t: Transport) -> Result<()> {
    // Eleven bytes: longer than any u64 varint.
    let mut body = vec![0x00];
    body.extend_from_slice(&[0x81; 10]);
    body.push(0x01);
    body.push(9);
    body.extend_from_slice(b"echo.echo{}");
    let c = server.connect_ready(t).await?;
    expect_close(
        server,
        c,
        &codec::encode_packet(codec::DATA, &body),
        "a request id varint of 11 bytes",
    )
    .await
}

#[tokio::test]
async fn overlong_varint_id_closes() -> Result<()> {
    let server = Server::start_default().await?;
    server.each_transport(|t| overlong_varint(&server, t)).await
}

async fn truncated_messages(server: &Server, t: Transport) -> Result<()> {
    let cases: [(&str, Vec<u8>); 4] = [
        ("a Data packet with an empty body", vec![]),
        ("a request whose id varint is cut", vec![0x00, 0x80]),
        (
            "a request whose route length runs past the end",
            b"\x00\x01\x09echo".to_vec(),
        ),
        ("a notify whose route code is cut", vec![0x03, 0x00]),
    ];
    for (what, body) in cases {
        let c = server.connect_ready(t).await?;
        expect_close(server, c, &codec::encode_packet(codec::DATA, &body), what).await?;
    }
    Ok(())
}

#[tokio::test]
async fn truncated_messages_close() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| truncated_messages(&server, t))
        .await
}

/// The messages a client sent before a protocol error, or before closing its side: `echo.echo`
/// id 1, `echo.notify` (a push back), `echo.echo` id 3, in one write.
fn three_messages() -> Result<Vec<u8>> {
    let mut bytes = Message::request(1, "echo.echo", br#"{"n":1}"#).to_packet()?;
    bytes.extend(Message::notify("echo.notify", br#"{"n":2}"#).to_packet()?);
    bytes.extend(Message::request(3, "echo.echo", br#"{"n":3}"#).to_packet()?);
    Ok(bytes)
}

/// Checks that the three messages were each handled, in the order they were sent.
async fn ensure_three_answered(c: &mut Client, what: &str) -> Result<()> {
    let expected = [
        (MessageType::Response, 1, &br#"{"n":1}"#[..]),
        (MessageType::Push, 0, br#"{"n":2}"#),
        (MessageType::Response, 3, br#"{"n":3}"#),
    ];
    for (kind, id, payload) in expected {
        let m = c.next_message().await.with_context(|| {
            format!(
                "{what}: waiting for the {kind:?} {}",
                String::from_utf8_lossy(payload)
            )
        })?;
        ensure!(
            m.kind == kind && m.id == id && m.payload == payload,
            "{what}: expected the {kind:?} id {id} {}, got {m:?}",
            String::from_utf8_lossy(payload)
        );
    }
    Ok(())
}

/// Messages that arrived whole before a protocol error are still handled, in order, before the
/// close: whether the bad bytes came in the same write as them must not change what is handled.
async fn messages_before_an_error(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let mut bytes = three_messages()?;
    bytes.extend([0x09, 0, 0, 0]);
    c.send_raw(&bytes).await?;
    ensure_three_answered(&mut c, "messages before a packet of type 0x09").await?;
    let (why, _) = c
        .wait_close(DEFAULT_WAIT)
        .await
        .context("the packet of type 0x09 must close the connection")?;
    // RFC 6455 section 7.4.1: 1002, the endpoint is terminating because of a protocol error.
    ensure!(
        t == Transport::Tcp || why.contains("code: Protocol"),
        "a protocol error must end a WebSocket with close code 1002, got {why}"
    );
    Ok(())
}

#[tokio::test]
async fn messages_before_a_protocol_error_are_handled_then_the_connection_closes() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| messages_before_an_error(&server, t))
        .await
}

/// TCP: a client that sends its last messages and shuts down its side (a half-close) still gets
/// them handled and answered, then the server closes. The first message is a `lab.work` call
/// long enough (tens of ms) that the end of stream arrives while the rest wait their turn; the
/// call timeout is raised so that a slow machine cannot turn it into PIT-503. (A WebSocket Close
/// frame ends the data in both directions, so this is TCP's alone.)
#[tokio::test]
async fn messages_before_the_clients_end_of_stream_are_handled() -> Result<()> {
    let server = Server::start(
        ServerOptions {
            components: vec!["echo.wasm".into(), "lab.wasm".into()],
            ..ServerOptions::default()
        }
        .args("--call-timeout-ms", 30_000),
    )
    .await?;
    let mut c = server.connect_ready(Transport::Tcp).await?;
    let work = br#"{"iterations":30000000}"#;
    let mut bytes = Message::request(9, "lab.work", work).to_packet()?;
    bytes.extend(three_messages()?);
    c.send_raw(&bytes).await?;
    c.close()
        .await
        .context("the server must close after the client's end of stream")?;
    let m = c
        .next_message()
        .await
        .context("waiting for lab.work's response")?;
    ensure!(
        m.kind == MessageType::Response && m.id == 9 && m.payload == br#"{"done":30000000}"#,
        "expected lab.work's response, got {m:?}"
    );
    ensure_three_answered(&mut c, "messages before the end of stream").await
}
