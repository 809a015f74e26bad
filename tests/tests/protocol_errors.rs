//! Protocol errors close the connection (§1, §2, §3): data or an ack before the handshake, unknown packet
//! types, invalid message types, client-sent Responses and Pushes, unknown route codes, overlong varints,
//! truncated messages. After each, the server still serves new connections.

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::ensure_nothing_else;
use pitaya_tests::codec::{self, Message, PITAYA_HANDSHAKE, Route};
use pitaya_tests::{Client, MessageType, Server, Transport};

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
