//! Server options that change the wire: `--server-type` (§4: `serverType.component.handler` routes), and the
//! optional outgoing compression of §2 and §3 (`--compress`, `--compress-handshake`, flags as printed by
//! `pitaya-host serve --help`).

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::{ensure_echo, ensure_error, ensure_nothing_else, ensure_push};
use pitaya_tests::{MessageType, Route, Server, ServerOptions, Transport};

/// With `--server-type game`, `game.echo.echo` and `echo.echo` are the same handler and are in the dict;
/// `connector.echo.echo` names another server type and is not found.
async fn server_type(server: &Server, t: Transport) -> Result<()> {
    let (mut c, reply) = server.connect_ready_with_reply(t).await?;
    for route in ["game.echo.echo", "echo.echo"] {
        let code = reply.code_of(route)?;
        for r in [pitaya_tests::Route::from(route), code.into()] {
            let id = c.next_id();
            let payload = format!(r#"{{"route":"{route}","id":{id}}}"#);
            c.send_request(id, r.clone(), payload.as_bytes()).await?;
            ensure_echo(&c.wait_response(id).await?, id, payload.as_bytes())
                .with_context(|| format!("route {r}"))?;
        }
    }
    ensure!(
        !reply.dict.contains_key("connector.echo.echo"),
        "the dict lists connector.echo.echo although the server type is game: {:?}",
        reply.dict
    );
    let id = c.next_id();
    c.send_request(id, "connector.echo.echo", b"{}").await?;
    ensure_error(&c.wait_response(id).await?, id, "PIT-404")?;
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn server_type_prefixes_routes() -> Result<()> {
    let server = Server::start(ServerOptions::default().server_type("game")).await?;
    server.each_transport(|t| server_type(&server, t)).await
}

/// With compression on: the handshake reply is zlib (magic byte 0x78) and still says code 200; a large
/// compressible payload comes back with flag 0x10 and smaller on the wire; a tiny one comes back plain, since
/// deflating it would not make it strictly smaller.
async fn compression(server: &Server, t: Transport) -> Result<()> {
    let (mut c, reply) = server.connect_ready_with_reply(t).await?;
    ensure!(
        reply.compressed,
        "the handshake reply is not zlib-compressed with --compress-handshake"
    );
    ensure!(
        reply.code == 200 && reply.serializer.as_deref() == Some("json"),
        "bad reply {}",
        reply.json
    );

    let big = format!(r#"{{"text":"{}"}}"#, "all work and no play ".repeat(200)).into_bytes();
    let id = c.next_id();
    c.send_request(id, "echo.echo", &big).await?;
    let m = c.wait_response(id).await?;
    ensure_echo(&m, id, &big)?;
    ensure!(
        m.zlib,
        "a large compressible response was not compressed with --compress"
    );
    ensure!(
        m.wire_payload_len < big.len(),
        "compressed payload not smaller"
    );

    c.send_notify("echo.notify", &big).await?;
    let m = c.wait_push("onEcho").await?;
    ensure_push(&m, "onEcho", &big)?;
    ensure!(
        m.zlib,
        "a large compressible push was not compressed with --compress"
    );

    let id = c.next_id();
    c.send_request(id, "echo.echo", b"{}").await?;
    let m = c.wait_response(id).await?;
    ensure_echo(&m, id, b"{}")?;
    ensure!(
        !m.zlib,
        "a 2-byte payload was sent deflated although that is not smaller"
    );
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn outgoing_compression_when_configured() -> Result<()> {
    let server = Server::start(
        ServerOptions::default()
            .arg("--compress")
            .arg("--compress-handshake"),
    )
    .await?;
    server.each_transport(|t| compression(&server, t)).await
}

/// `--push-route onEcho` offers the push route in the handshake's dict, beside the handler routes.
/// With `--push-route-codes` the push that `echo.notify` sends back carries flag 0x01 and that
/// code; without it the push still goes out as the string (libpitaya's default).
async fn push_route_in_dict(server: &Server, t: Transport, coded: bool) -> Result<()> {
    let (mut c, reply) = server.connect_ready_with_reply(t).await?;
    let code = reply.code_of("onEcho")?;
    reply.code_of("echo.echo")?;
    c.send_notify("echo.notify", br#"{"x":1}"#).await?;
    let m = c.next_message().await?;
    let expected = if coded {
        Route::Code(code)
    } else {
        Route::from("onEcho")
    };
    ensure!(
        m.kind == MessageType::Push
            && m.route.as_ref() == Some(&expected)
            && m.payload == br#"{"x":1}"#,
        "expected the push onEcho {{\"x\":1}} with the route {expected:?}, got {m:?}"
    );
    ensure_nothing_else(&mut c).await
}

#[tokio::test]
async fn push_routes_join_the_dict_and_are_coded_only_with_push_route_codes() -> Result<()> {
    for coded in [false, true] {
        let mut opts = ServerOptions::default()
            .args("--push-route", "onEcho")
            .args("--push-route", "onMembers");
        if coded {
            opts = opts.arg("--push-route-codes");
        }
        let server = Server::start(opts).await?;
        server
            .each_transport(|t| push_route_in_dict(&server, t, coded))
            .await
            .with_context(|| format!("with --push-route-codes {coded}"))?;
    }
    Ok(())
}
