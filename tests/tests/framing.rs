//! Framing tests (§1): pipelined requests answered in order (also with a send queue smaller than
//! the pipeline), several packets in one TCP write or one WebSocket frame, a whole exchange
//! delivered one byte at a time over TCP, and the packet size limit.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::{ensure_echo, ensure_nothing_else, ensure_push};
use pitaya_tests::codec::{self, Message, PITAYA_HANDSHAKE};
use pitaya_tests::{Server, ServerOptions, Transport};

fn payload_of(i: u64) -> Vec<u8> {
    format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat((i % 7) as usize)).into_bytes()
}

/// Sends 100 requests without waiting (one write each, or all in one write), then checks that the responses
/// arrive in order, each with its own payload.
async fn pipelined(server: &Server, t: Transport, one_write: bool) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let ids: Vec<u64> = (0..100).map(|_| c.next_id()).collect();
    if one_write {
        let packets = ids
            .iter()
            .map(|&id| Message::request(id, "echo.echo", &payload_of(id)).to_packet())
            .collect::<Result<Vec<_>>>()?;
        c.send_batch(&packets).await?;
    } else {
        for &id in &ids {
            c.send_request(id, "echo.echo", &payload_of(id)).await?;
        }
    }
    for &id in &ids {
        let m = c
            .next_message()
            .await
            .with_context(|| format!("waiting for the response to {id}"))?;
        ensure_echo(&m, id, &payload_of(id))
            .with_context(|| format!("responses out of order or wrong at id {id}"))?;
    }
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn hundred_pipelined_requests_answered_in_order() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| pipelined(&server, t, false))
        .await
}

#[tokio::test]
async fn hundred_requests_in_one_write_answered_in_order() -> Result<()> {
    let server = Server::start_default().await?;
    server.each_transport(|t| pipelined(&server, t, true)).await
}

/// A send queue of 4 packets and 100 requests in one write: the host writes responses between
/// the requests it takes (it answers requests in a row only while its send queue is under half
/// full), so the queue never holds more than a few and the client is not disconnected for
/// letting it fill.
#[tokio::test]
async fn pipelined_requests_do_not_fill_a_small_send_queue() -> Result<()> {
    let server = Server::start(
        ServerOptions::default()
            .components(&["echo.wasm"])
            .args("--send-queue", 4),
    )
    .await?;
    server
        .each_transport(|t| pipelined(&server, t, true))
        .await
        .context("with --send-queue 4")
}

/// Handshake and ack (and, with `with_request`, a request) in one TCP write / one WebSocket frame.
async fn handshake_ack_together(server: &Server, t: Transport, with_request: bool) -> Result<()> {
    let mut c = server.connect(t).await?;
    let mut packets = vec![
        codec::encode_packet(codec::HANDSHAKE, PITAYA_HANDSHAKE.as_bytes()),
        codec::encode_packet(codec::HANDSHAKE_ACK, &[]),
    ];
    let id = c.next_id();
    if with_request {
        packets.push(Message::request(id, "echo.echo", br#"{"together":true}"#).to_packet()?);
    }
    c.send_batch(&packets).await?;
    let reply = c.wait_handshake().await?;
    ensure!(reply.code == 200, "handshake refused: {}", reply.json);
    if !with_request {
        c.send_request(id, "echo.echo", br#"{"together":true}"#)
            .await?;
    }
    ensure_echo(&c.wait_response(id).await?, id, br#"{"together":true}"#)?;
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn handshake_and_ack_in_one_write() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| handshake_ack_together(&server, t, false))
        .await
}

#[tokio::test]
async fn handshake_ack_and_request_in_one_write() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| handshake_ack_together(&server, t, true))
        .await
}

/// Several requests, a notify and a heartbeat in one TCP write / one WebSocket frame.
async fn mixed_batch(server: &Server, t: Transport) -> Result<()> {
    let (mut c, reply) = server.connect_ready_with_reply(t).await?;
    let code = reply.code_of("echo.echo")?;
    let packets = vec![
        Message::request(1, "echo.echo", br#"{"n":1}"#).to_packet()?,
        Message::notify("echo.notify", br#"{"n":"notify"}"#).to_packet()?,
        codec::encode_packet(codec::HEARTBEAT, &[]),
        Message::request(2, code, br#"{"n":2}"#).to_packet()?,
        Message::request(3, "echo.fail", br#"{"n":3}"#).to_packet()?,
        Message::request(4, "echo.echo", br#"{"n":4}"#)
            .with_zlib()
            .to_packet()?,
    ];
    c.send_batch(&packets).await?;
    ensure_echo(&c.wait_response(1).await?, 1, br#"{"n":1}"#)?;
    ensure_push(
        &c.wait_push("onEcho").await?,
        "onEcho",
        br#"{"n":"notify"}"#,
    )?;
    ensure_echo(&c.wait_response(2).await?, 2, br#"{"n":2}"#)?;
    ensure!(
        c.wait_response(3).await?.error,
        "echo.fail must answer an error"
    );
    ensure_echo(&c.wait_response(4).await?, 4, br#"{"n":4}"#)?;
    for _ in 0..4 {
        c.next_id();
    }
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn several_requests_in_one_write() -> Result<()> {
    let server = Server::start_default().await?;
    server.each_transport(|t| mixed_batch(&server, t)).await
}

/// Over TCP, handshake, ack, a request, a notify and a zlib request, one byte per write.
async fn bytewise(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect(t).await?;
    let bytes = [
        codec::encode_packet(codec::HANDSHAKE, PITAYA_HANDSHAKE.as_bytes()),
        codec::encode_packet(codec::HANDSHAKE_ACK, &[]),
        Message::request(1, "echo.echo", br#"{"slow":1}"#).to_packet()?,
        Message::notify("echo.notify", br#"{"slow":"notify"}"#).to_packet()?,
        codec::encode_packet(codec::HEARTBEAT, &[]),
        Message::request(300, "connector.echo.echo", br#"{"slow":300}"#)
            .with_zlib()
            .to_packet()?,
    ]
    .concat();
    c.send_bytewise(&bytes).await?;
    let reply = c.wait_handshake().await?;
    ensure!(reply.code == 200, "handshake refused: {}", reply.json);
    ensure_echo(&c.wait_response(1).await?, 1, br#"{"slow":1}"#)?;
    ensure_push(
        &c.wait_push("onEcho").await?,
        "onEcho",
        br#"{"slow":"notify"}"#,
    )?;
    ensure_echo(&c.wait_response(300).await?, 300, br#"{"slow":300}"#)?;
    c.next_id();
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn whole_exchange_one_byte_at_a_time_over_tcp() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .transports(&[Transport::Tcp], |t| bytewise(&server, t))
        .await
}

/// With `--max-packet 1024`: a packet under the limit is served; a header claiming 2000 bytes closes the
/// connection (over TCP without the body ever being sent; over WebSocket the whole 2000-byte packet is sent,
/// since a frame holds whole packets, and the close says 1009).
async fn oversized(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let ok = format!(r#"{{"fits":"{}"}}"#, "y".repeat(880)).into_bytes();
    let id = c.next_id();
    let packet = Message::request(id, "echo.echo", &ok).to_packet()?;
    ensure!(
        packet.len() - 4 < 1024,
        "the control packet must fit the limit"
    );
    c.send_raw(&packet).await?;
    ensure_echo(&c.wait_response(id).await?, id, &ok)
        .context("a packet under --max-packet must be served")?;

    let id = c.next_id();
    let too_big = format!(
        r#"{{"big":"{}"}}"#,
        "z".repeat(2000 - 2 - 1 - "echo.echo".len() - 10)
    )
    .into_bytes();
    let packet = Message::request(id, "echo.echo", &too_big).to_packet()?;
    ensure!(
        packet[1..4] == [0x00, 0x07, 0xd0],
        "the oversized packet must claim 2000 bytes: {:02x?}",
        &packet[..4]
    );
    match t {
        Transport::Tcp => c.send_raw(&packet[..4]).await?,
        Transport::Ws => c.send_raw(&packet).await?,
    }
    let (why, _) = c
        .wait_close(Duration::from_secs(5))
        .await
        .context("a packet over --max-packet must close the connection")?;
    // RFC 6455 section 7.4.1: 1009, a message too big to process.
    ensure!(
        t == Transport::Tcp || why.contains("code: Size"),
        "a packet over --max-packet must end a WebSocket with close code 1009, got {why}"
    );
    ensure!(
        c.unclaimed_messages().iter().all(|m| m.id != id || m.error),
        "the oversized request was answered: {:?}",
        c.unclaimed_messages()
    );
    Ok(())
}

/// A WebSocket frame the host refuses ends the connection with the code a packet over the limit
/// or a protocol error gets (1009, 1002), after the request in the frame before it is answered:
/// a frame over the frame cap (4 × `--max-packet`, at least 64 KiB), and a text frame.
#[tokio::test]
async fn a_refused_websocket_frame_closes_with_its_code_after_earlier_answers() -> Result<()> {
    let server = Server::start(ServerOptions::default().max_packet(1024)).await?;
    for (what, code) in [
        ("a 70,000-byte frame", "code: Size"),
        ("a text frame", "code: Protocol"),
    ] {
        let mut c = server.connect_ready(Transport::Ws).await?;
        let id = c.next_id();
        c.send_raw(&Message::request(id, "echo.echo", b"{}").to_packet()?)
            .await?;
        if code == "code: Size" {
            // Zeros: a frame within the cap would close with 1002 (packet type 0), not 1009.
            c.send_raw(&[0; 70_000]).await?;
        } else {
            c.send_ws_text("{}").await?;
        }
        ensure_echo(&c.wait_response(id).await?, id, b"{}")
            .with_context(|| format!("the request before {what} must be answered"))?;
        let (why, _) = c
            .wait_close(Duration::from_secs(5))
            .await
            .with_context(|| format!("{what} must close the connection"))?;
        ensure!(
            why.contains(code),
            "{what} must close with {code}, got {why}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn oversized_length_header_closes_connection() -> Result<()> {
    let server = Server::start(ServerOptions::default().max_packet(1024)).await?;
    server.each_transport(|t| oversized(&server, t)).await
}

/// With the default limit, which must be smaller than the protocol's 2^24−1, a header claiming 2^24−1 bytes
/// closes the connection before any body is sent.
async fn maximal_header(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    c.send_raw(&codec::packet_header(codec::DATA, codec::MAX_BODY))
        .await?;
    c.wait_closed_within(Duration::from_secs(5))
        .await
        .context("a header claiming 2^24-1 bytes must close")?;
    Ok(())
}

#[tokio::test]
async fn maximal_length_header_is_rejected_by_default() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .transports(&[Transport::Tcp], |t| maximal_header(&server, t))
        .await
}
