//! Request / notify / push tests against the `echo` component (§3, §4, §5): plain and compressed routes, message
//! ids up to 2^32−1, PIT-404 / PIT-400 / ECHO-FAIL errors, notifies that never get a response, zlib payloads.

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::{ensure_echo, ensure_error, ensure_nothing_else, ensure_push};
use pitaya_tests::codec::{self, Message};
use pitaya_tests::{Incoming, MessageType, Server, ServerOptions, Transport};

/// `echo.echo` and `connector.echo.echo` with plain string routes answer the payload unchanged.
async fn plain_routes(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    for (route, payload) in [
        ("echo.echo", &br#"{"hello":"world","n":1}"#[..]),
        (
            "connector.echo.echo",
            br#"{"via":"server type","list":[1,2,3],"nested":{"a":null}}"#,
        ),
        ("echo.echo", br#"{}"#),
        (
            "echo.echo",
            "{\"unicode\":\"h\u{e9}llo \u{4e16}\u{754c}\"}".as_bytes(),
        ),
    ] {
        let id = c.next_id();
        c.send_request(id, route, payload).await?;
        let m = c
            .wait_response(id)
            .await
            .with_context(|| format!("route {route}"))?;
        ensure_echo(&m, id, payload).with_context(|| format!("route {route}"))?;
    }
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn echo_with_plain_routes() -> Result<()> {
    let server = Server::start_default().await?;
    server.each_transport(|t| plain_routes(&server, t)).await
}

/// Requests and notifies with 2-byte route codes taken from the handshake dict.
async fn compressed_routes(server: &Server, t: Transport) -> Result<()> {
    let (mut c, reply) = server.connect_ready_with_reply(t).await?;
    for route in ["echo.echo", "connector.echo.echo"] {
        let code = reply.code_of(route)?;
        let payload = format!(r#"{{"route":"{route}","code":{code}}}"#);
        let id = c.next_id();
        c.send_request(id, code, payload.as_bytes()).await?;
        let m = c
            .wait_response(id)
            .await
            .with_context(|| format!("{route} as code {code}"))?;
        ensure_echo(&m, id, payload.as_bytes())
            .with_context(|| format!("{route} as code {code}"))?;
    }
    for route in ["echo.notify", "connector.echo.notify"] {
        let code = reply.code_of(route)?;
        let payload = format!(r#"{{"notify":"{route}"}}"#);
        c.send_notify(code, payload.as_bytes()).await?;
        let m = c
            .wait_push("onEcho")
            .await
            .with_context(|| format!("notify {route} as code {code}"))?;
        ensure_push(&m, "onEcho", payload.as_bytes())?;
    }
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn echo_with_compressed_routes() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| compressed_routes(&server, t))
        .await
}

/// Ids of 1 to 5 varint bytes, up to 2^32−1, come back on the response.
async fn message_ids(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    for id in [
        1u64,
        2,
        127,
        128,
        129,
        300,
        16383,
        16384,
        1 << 21,
        (1 << 28) + 5,
        (1 << 31) + 7,
        (1 << 32) - 1,
    ] {
        let payload = format!(r#"{{"id":{id}}}"#);
        c.send_request(id, "echo.echo", payload.as_bytes()).await?;
        let m = c.wait_response(id).await?;
        ensure_echo(&m, id, payload.as_bytes())?;
    }
    ensure!(
        c.unclaimed_messages().is_empty(),
        "unexpected messages: {:#?}",
        c.unclaimed_messages()
    );
    Ok(())
}

#[tokio::test]
async fn message_ids_up_to_u32_max() -> Result<()> {
    let server = Server::start_default().await?;
    server.each_transport(|t| message_ids(&server, t)).await
}

/// Unknown handlers answer PIT-404 "pitaya/handler: <route> not found", the route named with the
/// server type as pitaya names it (protocol.md §5: `room.foo` is `connector.room.foo`); the
/// connection stays usable.
async fn unknown_handler(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    for (route, named) in [
        ("echo.nope", "connector.echo.nope"),
        ("connector.echo.nope", "connector.echo.nope"),
        ("nosuch.handler", "connector.nosuch.handler"),
        ("Echo.echo", "connector.Echo.echo"),
        ("echo.Echo", "connector.echo.Echo"),
        ("chat.echo.echo", "chat.echo.echo"),
    ] {
        let id = c.next_id();
        c.send_request(id, route, b"{}").await?;
        let m = c
            .wait_response(id)
            .await
            .with_context(|| format!("route {route}"))?;
        let v = ensure_error(&m, id, "PIT-404").with_context(|| format!("route {route}"))?;
        ensure!(
            v["msg"] == format!("pitaya/handler: {named} not found"),
            "PIT-404 for {route}: {v}"
        );
    }
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn unknown_handler_is_pit_404() -> Result<()> {
    let server = Server::start_default().await?;
    server.each_transport(|t| unknown_handler(&server, t)).await
}

/// A route that is neither `component.handler` nor `serverType.component.handler` is a bad request (PIT-400).
async fn malformed_routes(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    for route in ["echo", "a.b.c.d"] {
        let id = c.next_id();
        c.send_request(id, route, b"{}").await?;
        let m = c
            .wait_response(id)
            .await
            .with_context(|| format!("route {route:?}"))?;
        ensure_error(&m, id, "PIT-400").with_context(|| format!("route {route:?}"))?;
    }
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn malformed_route_is_pit_400() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| malformed_routes(&server, t))
        .await
}

/// A Request sent to a notify-only handler is a bad request (PIT-400).
async fn request_to_notify_handler(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let id = c.next_id();
    c.send_request(id, "echo.notify", br#"{"x":1}"#).await?;
    ensure_error(&c.wait_response(id).await?, id, "PIT-400")?;
    // Nothing else arrives: no success response, no push from the handler.
    ensure_nothing_else(&mut c)
        .await
        .context("after the PIT-400")
}

#[tokio::test]
async fn request_to_notify_handler_is_pit_400() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| request_to_notify_handler(&server, t))
        .await
}

/// `echo.fail` answers an error response (flag 0x20) with code ECHO-FAIL.
async fn echo_fail(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let id = c.next_id();
    c.send_request(id, "echo.fail", br#"{"please":"fail"}"#)
        .await?;
    let m = c.wait_response(id).await?;
    ensure_error(&m, id, "ECHO-FAIL")?;
    ensure!(m.flag() & codec::FLAG_ERROR != 0);
    ensure!(
        m.flag() & !codec::FLAG_ZLIB == codec::FLAG_ERROR | (MessageType::Response as u8) << 1,
        "unexpected flag byte 0x{:02x}",
        m.flag()
    );
    // The connection goes on.
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn echo_fail_is_an_error_response() -> Result<()> {
    let server = Server::start_default().await?;
    server.each_transport(|t| echo_fail(&server, t)).await
}

/// `echo.notify` pushes `onEcho` (plain route) with the same payload and answers nothing.
async fn notify_push(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let payloads: [&[u8]; 3] = [
        br#"{"text":"hello"}"#,
        br#"{}"#,
        br#"{"n":[1,2,3],"s":"x"}"#,
    ];
    for p in payloads {
        c.send_notify("echo.notify", p).await?;
        let m = c.wait_push("onEcho").await?;
        ensure_push(&m, "onEcho", p)?;
    }
    // No response arrives for any of them (checked after a later request's response).
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn notify_pushes_on_echo_without_response() -> Result<()> {
    let server = Server::start_default().await?;
    server.each_transport(|t| notify_push(&server, t)).await
}

/// libpitaya drops a push with an empty payload without a word (protocol.md §7), so with JSON
/// payloads an empty push goes out as `{}`; with protobuf, where empty is a valid message, as it is.
async fn empty_push(server: &Server, t: Transport, expected: &[u8]) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    c.send_notify("echo.notify", b"").await?;
    let m = c.wait_push("onEcho").await?;
    ensure_push(&m, "onEcho", expected)?;
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn an_empty_push_goes_out_as_an_empty_json_object() -> Result<()> {
    let json = Server::start_default().await?;
    json.each_transport(|t| empty_push(&json, t, b"{}")).await?;
    let protobuf = Server::start(ServerOptions::default().args("--serializer", "protobuf")).await?;
    protobuf
        .each_transport(|t| empty_push(&protobuf, t, b""))
        .await
}

/// A Notify never gets a response, not even an error: to an unknown handler, to a request handler, to a failing
/// handler, with a malformed route. The connection stays usable.
async fn notifies_without_response(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    for route in ["echo.nope", "nosuch.handler", "echo.fail", "echo"] {
        c.send_notify(route, b"{}")
            .await
            .with_context(|| format!("notify {route}"))?;
    }
    ensure_nothing_else(&mut c)
        .await
        .context("a notify got an answer")
}

#[tokio::test]
async fn notifies_never_get_a_response() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| notifies_without_response(&server, t))
        .await
}

/// A response's compressed payload must be strictly smaller than the plain one.
fn check_out_compression(m: &Message) -> Result<()> {
    if m.zlib {
        ensure!(
            m.wire_payload_len < m.payload.len(),
            "payload sent deflated although not smaller ({} >= {})",
            m.wire_payload_len,
            m.payload.len()
        );
    }
    Ok(())
}

/// Request and notify payloads deflated with flag 0x10 are inflated by the server and echoed.
async fn zlib_payloads(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let small = br#"{"zlib":"small"}"#.to_vec();
    let big = format!(r#"{{"zlib":"{}"}}"#, "compressible text ".repeat(1000)).into_bytes();
    for payload in [&small, &big] {
        let id = c.next_id();
        c.send_message(&Message::request(id, "echo.echo", payload).with_zlib())
            .await?;
        let m = c.wait_response(id).await?;
        ensure_echo(&m, id, payload)
            .with_context(|| format!("zlib request of {} bytes", payload.len()))?;
        check_out_compression(&m)?;

        c.send_message(&Message::notify("echo.notify", payload).with_zlib())
            .await?;
        let m = c.wait_push("onEcho").await?;
        ensure_push(&m, "onEcho", payload)
            .with_context(|| format!("zlib notify of {} bytes", payload.len()))?;
        check_out_compression(&m)?;
    }
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn zlib_compressed_payloads_are_inflated() -> Result<()> {
    let server = Server::start_default().await?;
    server.each_transport(|t| zlib_payloads(&server, t)).await
}

/// A zlib bomb (32 MiB of zeros, deflated to about 32 KiB so that it fits a modest packet limit) is an error,
/// not an allocation: the server answers an error or closes the connection, and keeps serving others.
async fn zlib_bomb(server: &Server, t: Transport, bomb: &[u8]) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    let body =
        codec::encode_message_raw(codec::FLAG_ZLIB, Some(1), Some(&"echo.echo".into()), bomb)?;
    c.send_raw(&codec::encode_packet(codec::DATA, &body))
        .await?;
    let (outcome, _) = c
        .wait_for("an error response or the close", c.wait, |e| match e {
            Incoming::Data(m) if m.id == 1 => Some(Ok(m.error)),
            Incoming::Closed(_) => Some(Ok(true)),
            Incoming::Violation(v) => Some(Err(anyhow::anyhow!("protocol violation: {v}"))),
            _ => None,
        })
        .await?;
    ensure!(outcome?, "the zlib bomb was answered with a success");
    let mut other = server
        .connect_ready(t)
        .await
        .context("the server must still accept connections")?;
    ensure_nothing_else(&mut other).await
}

#[tokio::test]
async fn zlib_bomb_is_an_error_not_an_allocation() -> Result<()> {
    let bomb = tokio::task::spawn_blocking(|| codec::zlib_compress(&vec![0u8; 32 << 20])).await?;
    ensure!(
        bomb.len() < 40 << 10,
        "the bomb deflated to {} bytes",
        bomb.len()
    );
    let server = Server::start_default().await?;
    server
        .each_transport(|t| zlib_bomb(&server, t, &bomb))
        .await
}
