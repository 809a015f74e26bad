//! Handshake tests (§2): pitaya-style and pomelo-style handshakes over TCP and WebSocket, the reply's code,
//! heartbeat, serializer and dict, and the refusal of an invalid handshake.

use std::collections::HashSet;

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::{ensure_echo, ensure_nothing_else};
use pitaya_tests::codec::{PITAYA_HANDSHAKE, POMELO_HANDSHAKE};
use pitaya_tests::{Client, HandshakeReply, Incoming, Server, Transport};

/// Every handler route of the echo and room components, in both forms.
const HANDLER_ROUTES: &[&str] = &[
    "echo.echo",
    "echo.notify",
    "echo.fail",
    "room.join",
    "room.message",
];

/// Checks a default server's handshake reply: code 200, heartbeat 30, serializer json, not compressed, and a
/// dict that holds every handler route in both forms with distinct codes.
fn check_reply(reply: &HandshakeReply) -> Result<()> {
    ensure!(reply.code == 200, "code is not 200: {}", reply.json);
    ensure!(
        reply.heartbeat == Some(30),
        "sys.heartbeat is not the default 30: {}",
        reply.json
    );
    ensure!(
        reply.serializer.as_deref() == Some("json"),
        "sys.serializer is not \"json\": {}",
        reply.json
    );
    ensure!(
        !reply.compressed,
        "the handshake reply is zlib-compressed although compression is off by default"
    );
    ensure!(
        reply.json["sys"]["dict"].is_object(),
        "sys.dict is not an object: {}",
        reply.json
    );
    for route in HANDLER_ROUTES {
        reply.code_of(route)?;
        reply.code_of(&format!("connector.{route}"))?;
    }
    let codes: HashSet<u16> = reply.dict.values().copied().collect();
    ensure!(
        codes.len() == reply.dict.len(),
        "dict codes are not distinct: {:?}",
        reply.dict
    );
    Ok(())
}

/// Handshakes with `json`, checks the reply, then makes a request with a plain and a coded route.
async fn handshake_scenario(server: &Server, t: Transport, json: &str) -> Result<()> {
    let mut c = server.connect(t).await?;
    let reply = c.handshake(json).await?;
    check_reply(&reply)?;
    let id = c.next_id();
    c.send_request(id, "echo.echo", br#"{"after":"handshake"}"#)
        .await?;
    ensure_echo(&c.wait_response(id).await?, id, br#"{"after":"handshake"}"#)?;
    let id = c.next_id();
    c.send_request(id, reply.code_of("echo.echo")?, br#"{"coded":true}"#)
        .await?;
    ensure_echo(&c.wait_response(id).await?, id, br#"{"coded":true}"#)?;
    Ok(())
}

#[tokio::test]
async fn pitaya_style_handshake() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| handshake_scenario(&server, t, PITAYA_HANDSHAKE))
        .await
}

#[tokio::test]
async fn pomelo_style_handshake() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| handshake_scenario(&server, t, POMELO_HANDSHAKE))
        .await
}

/// Unknown keys are ignored ("parsed leniently").
#[tokio::test]
async fn handshake_with_unknown_keys_is_accepted() -> Result<()> {
    let server = Server::start_default().await?;
    let json = r#"{"sys":{"platform":"linux","libVersion":"9.9.9","extra":[1,2,3]},"user":{"name":"x"},"more":{"k":"v"}}"#;
    server
        .each_transport(|t| handshake_scenario(&server, t, json))
        .await
}

/// A handshake of `null` is valid JSON, and pitaya takes it as an empty handshake, so do we.
#[tokio::test]
async fn a_null_handshake_is_taken_as_an_empty_one() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| handshake_scenario(&server, t, "null"))
        .await
}

/// Invalid JSON (an empty body included), or JSON that is not an object: the server answers
/// `{"code":400,...}` and closes.
async fn invalid_handshake(server: &Server, t: Transport) -> Result<()> {
    for body in ["{this is not json", "", "[]", r#"{"sys":1}"#] {
        let mut c = server.connect(t).await?;
        c.send_handshake(body).await?;
        let reply = c
            .wait_handshake()
            .await
            .with_context(|| format!("the server must answer the handshake {body:?}"))?;
        ensure!(
            reply.code == 400,
            "expected code 400 for the handshake {body:?}, got {}",
            reply.json
        );
        c.wait_closed()
            .await
            .with_context(|| format!("the server must close after refusing {body:?}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn invalid_handshake_json_is_refused_with_400_and_closed() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| invalid_handshake(&server, t))
        .await
}

/// The client's own heartbeats are accepted at any time after the handshake.
async fn client_heartbeats(server: &Server, t: Transport) -> Result<()> {
    let mut c = server.connect_ready(t).await?;
    for _ in 0..3 {
        c.send_heartbeat().await?;
    }
    let id = c.next_id();
    c.send_request(id, "echo.echo", b"{}").await?;
    ensure_echo(&c.wait_response(id).await?, id, b"{}")?;
    let unexpected: Vec<_> = c
        .backlog()
        .iter()
        .filter(|e| !matches!(e.what, Incoming::Heartbeat))
        .map(|e| format!("{:?}", e.what))
        .collect();
    ensure!(unexpected.is_empty(), "unexpected packets: {unexpected:?}");
    Ok(())
}

#[tokio::test]
async fn client_heartbeats_are_accepted() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .each_transport(|t| client_heartbeats(&server, t))
        .await
}

/// Any URL path upgrades to WebSocket, without a subprotocol (§1).
#[tokio::test]
async fn websocket_upgrades_at_any_path() -> Result<()> {
    let server = Server::start_default().await?;
    server
        .transports(&[Transport::Ws], |t| async move {
            for path in ["/", "/ws", "/some/deep/path?token=abc"] {
                let mut c = Client::connect_at(t, server.ws, path).await?;
                c.handshake(PITAYA_HANDSHAKE)
                    .await
                    .with_context(|| format!("path {path}"))?;
                ensure_nothing_else(&mut c)
                    .await
                    .with_context(|| format!("path {path}"))?;
            }
            Ok(())
        })
        .await
}

/// Sends one raw HTTP request to `addr`, reads the answer up to the server's close, and checks
/// that its status line starts with `status`.
async fn http_answer(addr: std::net::SocketAddr, request: &str, status: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    // Reading to the end also checks that the server closes.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .with_context(|| format!("no close after {request:?}"))??;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    ensure!(
        answer.starts_with(status),
        "{request:?} got {answer:?}, not {status}"
    );
    Ok(answer)
}

/// A request on the WebSocket port that is not an acceptable upgrade gets an HTTP error saying
/// why, then the close, and the port goes on upgrading others (RFC 6455 §4.2.1, §4.4).
#[tokio::test]
async fn a_request_that_is_not_an_upgrade_gets_an_http_error() -> Result<()> {
    let server = Server::start_default().await?;
    let upgrade = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let cases = [
        (
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            "HTTP/1.1 400 ",
        ),
        (upgrade.replacen("GET", "POST", 1), "HTTP/1.1 405 "),
        (
            upgrade.replacen("Version: 13", "Version: 8", 1),
            "HTTP/1.1 426 ",
        ),
        (
            upgrade.replacen("dGhlIHNhbXBsZSBub25jZQ==", "short", 1),
            "HTTP/1.1 400 ",
        ),
        (
            "\x16\x03\x01\x00\x05hello\r\n\r\n".to_owned(),
            "HTTP/1.1 400 ",
        ),
    ];
    for (request, status) in cases {
        let answer = http_answer(server.ws, &request, status).await?;
        if status.contains("426") {
            ensure!(
                answer.contains("\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"),
                "a 426 names the protocol and its version: {answer:?}"
            );
        }
    }
    let mut c = Client::connect_at(Transport::Ws, server.ws, "/").await?;
    c.handshake(PITAYA_HANDSHAKE).await?;
    ensure_nothing_else(&mut c).await
}

/// With `--web DIR`, a plain GET on the WebSocket port gets a file from DIR (or 404, never one
/// outside it nor a hidden one), a HEAD its headers, another method 405, and an upgrade on the same port still
/// upgrades.
#[tokio::test]
async fn the_websocket_port_serves_web_pages_with_web() -> Result<()> {
    use pitaya_tests::ServerOptions;
    use pitaya_tests::tempdir::TempDir;

    let dir = TempDir::new("web")?;
    std::fs::write(dir.0.join("index.html"), "<p>lobby</p>")?;
    std::fs::write(dir.0.join("a b.html"), "<p>spaced</p>")?;
    std::fs::write(dir.0.join(".env"), "SECRET=1")?;
    let server = Server::start(ServerOptions::default().args("--web", dir.0.display())).await?;
    let cases = [
        (
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "HTTP/1.1 200 OK\r\n",
            Some("<p>lobby</p>"),
        ),
        (
            "GET /index.html?v=2 HTTP/1.1\r\n\r\n",
            "HTTP/1.1 200 OK\r\n",
            Some("<p>lobby</p>"),
        ),
        // Browsers percent-encode a space.
        (
            "GET /a%20b.html HTTP/1.1\r\n\r\n",
            "HTTP/1.1 200 OK\r\n",
            Some("<p>spaced</p>"),
        ),
        ("GET /missing.js HTTP/1.1\r\n\r\n", "HTTP/1.1 404 ", None),
        ("GET /../Cargo.toml HTTP/1.1\r\n\r\n", "HTTP/1.1 404 ", None),
        // A hidden file is no page, even in the folder.
        ("GET /.env HTTP/1.1\r\n\r\n", "HTTP/1.1 404 ", None),
        ("DELETE / HTTP/1.1\r\n\r\n", "HTTP/1.1 405 ", None),
        // HEAD: a GET's headers, no body.
        ("HEAD / HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\n", Some("")),
    ];
    for (request, status, body) in cases {
        let answer = http_answer(server.ws, request, status).await?;
        if let Some(body) = body {
            ensure!(
                answer.ends_with(&format!("\r\n\r\n{body}")),
                "{request:?} got {answer:?}"
            );
            // HEAD gets no body, and index.html's length.
            let length = if body.is_empty() {
                "<p>lobby</p>".len()
            } else {
                body.len()
            };
            ensure!(
                answer.contains(&format!("\r\nContent-Length: {length}\r\n")),
                "{request:?} got {answer:?}: not the file's length"
            );
        }
        if status.contains("405") {
            ensure!(
                answer.contains("\r\nAllow: GET, HEAD\r\n"),
                "a 405 says what is allowed: {answer:?}"
            );
        }
    }
    let mut c = Client::connect_at(Transport::Ws, server.ws, "/").await?;
    c.handshake(PITAYA_HANDSHAKE).await?;
    ensure_nothing_else(&mut c).await
}

/// A browser game's folder: a file the browser has already is answered 304 while it is
/// unchanged, a range gets that part (206) or 416 past the end, and a precompressed build file
/// (as Unity's WebGL builds ship them) goes out with its content coding and the type of what it
/// compresses to a client that accepts the coding, as the compressed file it is to others
/// (RFC 9110 §12.5.3, §13, §14).
#[tokio::test]
async fn web_pages_are_revalidated_ranged_and_precompressed() -> Result<()> {
    use pitaya_tests::ServerOptions;
    use pitaya_tests::tempdir::TempDir;

    let dir = TempDir::new("web-cache")?;
    let build: String = (0..200)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    std::fs::create_dir_all(dir.0.join("Build"))?;
    std::fs::write(dir.0.join("Build/game.wasm.br"), &build)?;
    std::fs::write(dir.0.join("saves.tar.gz"), "not inflated")?;
    let server = Server::start(ServerOptions::default().args("--web", dir.0.display())).await?;
    let get = |extra: &str| {
        format!(
            "GET /Build/game.wasm.br HTTP/1.1\r\nHost: a\r\n\
             Accept-Encoding: gzip, deflate, br\r\n{extra}\r\n"
        )
    };
    let header = |answer: &str, name: &str| {
        answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .split("\r\n")
            .find_map(|line| line.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };

    let whole = http_answer(server.ws, &get(""), "HTTP/1.1 200 OK\r\n").await?;
    ensure!(whole.ends_with(&format!("\r\n\r\n{build}")), "{whole:?}");
    for (name, value) in [
        ("Content-Type", "application/wasm"),
        ("Content-Encoding", "br"),
        ("Content-Length", "200"),
        ("Accept-Ranges", "bytes"),
        ("Vary", "Accept-Encoding"),
    ] {
        ensure!(
            header(&whole, name).as_deref() == Some(value),
            "{name} is not {value}: {whole:?}"
        );
    }
    let etag = header(&whole, "ETag").context("no ETag")?;
    let modified = header(&whole, "Last-Modified").context("no Last-Modified")?;

    // The browser's copy is current: 304, and no body.
    for condition in [
        format!("If-None-Match: {etag}\r\n"),
        format!("If-None-Match: \"stale\", W/{etag}\r\n"),
        format!("If-Modified-Since: {modified}\r\n"),
    ] {
        let answer = http_answer(server.ws, &get(&condition), "HTTP/1.1 304 ").await?;
        ensure!(
            answer.ends_with("\r\n\r\n"),
            "{condition:?}: a body: {answer:?}"
        );
        ensure!(header(&answer, "ETag") == Some(etag.clone()), "{answer:?}");
    }
    // It is not: the whole file again.
    let stale = get("If-None-Match: \"stale\"\r\n");
    let answer = http_answer(server.ws, &stale, "HTTP/1.1 200 OK\r\n").await?;
    ensure!(answer.ends_with(&build), "{answer:?}");

    // Ranges: a part, the last bytes, a part while the file is the one named, and past the end.
    for (range, status, part) in [
        ("Range: bytes=10-19\r\n", "HTTP/1.1 206 ", Some((10, 19))),
        ("Range: bytes=-5\r\n", "HTTP/1.1 206 ", Some((195, 199))),
        (
            &*format!("Range: bytes=190-\r\nIf-Range: {etag}\r\n"),
            "HTTP/1.1 206 ",
            Some((190, 199)),
        ),
        (
            "Range: bytes=190-\r\nIf-Range: \"stale\"\r\n",
            "HTTP/1.1 200 ",
            None,
        ),
        ("Range: bytes=200-\r\n", "HTTP/1.1 416 ", None),
    ] {
        let answer = http_answer(server.ws, &get(range), status).await?;
        match part {
            Some((start, end)) => {
                ensure!(
                    answer.ends_with(&format!("\r\n\r\n{}", &build[start..=end])),
                    "{range:?}: {answer:?}"
                );
                ensure!(
                    header(&answer, "Content-Range") == Some(format!("bytes {start}-{end}/200")),
                    "{range:?}: {answer:?}"
                );
            }
            None if status.contains("416") => ensure!(
                header(&answer, "Content-Range").as_deref() == Some("bytes */200"),
                "{answer:?}"
            ),
            None => ensure!(answer.ends_with(&build), "{range:?}: {answer:?}"),
        }
    }

    // A client that does not inflate brotli (a browser over plain HTTP) gets the compressed
    // bytes as they are, which Unity's loader inflates itself.
    let plain = "GET /Build/game.wasm.br HTTP/1.1\r\nAccept-Encoding: gzip, deflate\r\n\r\n";
    let answer = http_answer(server.ws, plain, "HTTP/1.1 200 OK\r\n").await?;
    ensure!(
        header(&answer, "Content-Type").as_deref() == Some("application/octet-stream")
            && header(&answer, "Content-Encoding").is_none()
            && answer.ends_with(&build),
        "{answer:?}"
    );
    // Another representation of the file, so another entity tag.
    ensure!(
        header(&answer, "ETag").is_some_and(|tag| tag != etag),
        "{answer:?}"
    );

    // A compressed file of no page type is a download, not inflated by the browser.
    let archive = "GET /saves.tar.gz HTTP/1.1\r\n\r\n";
    let answer = http_answer(server.ws, archive, "HTTP/1.1 200 OK\r\n").await?;
    ensure!(
        header(&answer, "Content-Type").as_deref() == Some("application/gzip")
            && header(&answer, "Content-Encoding").is_none(),
        "{answer:?}"
    );
    Ok(())
}

/// A page larger than the sockets can buffer, read slowly for longer than the handshake timeout,
/// arrives whole: the timeout bounds the request head, not the download of a game's assets.
#[tokio::test]
async fn a_large_page_read_slowly_arrives_whole() -> Result<()> {
    use std::time::{Duration, Instant};

    use pitaya_tests::ServerOptions;
    use pitaya_tests::tempdir::TempDir;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SIZE: usize = 16 << 20;
    let dir = TempDir::new("web-large")?;
    let file: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.0.join("big.bin"), &file)?;
    let server = Server::start(
        ServerOptions::default()
            .args("--web", dir.0.display())
            .args("--handshake-timeout", 1),
    )
    .await?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    // A small receive buffer, so that most of the file waits on the host's side.
    socket.set_recv_buffer_size(64 * 1024)?;
    let mut stream = socket.connect(server.ws).await?;
    stream.write_all(b"GET /big.bin HTTP/1.1\r\n\r\n").await?;
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut piece = vec![0; 64 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut piece))
            .await
            .context("the host stopped sending")??;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&piece[..n]);
        // At most 64 KiB per 10 ms: the 16 MiB take over 2.5 s, more than twice the timeout.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the answer's head")?;
    let (head, body) = (
        String::from_utf8_lossy(&answer[..split]),
        &answer[split + 4..],
    );
    ensure!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    ensure!(
        head.contains(&format!("\r\nContent-Length: {SIZE}")),
        "{head}"
    );
    ensure!(
        body.len() == SIZE && body == &file[..],
        "{} of {SIZE} bytes came, in {took:?}, with the handshake timeout at 1 s",
        body.len()
    );
    Ok(())
}

/// With `--handshake-timeout 0` (no timeout), an upgrade whose request comes a while after the
/// connect is still answered: zero must not mean "at once".
#[tokio::test]
async fn no_handshake_timeout_waits_for_a_late_upgrade() -> Result<()> {
    use std::time::Duration;

    use pitaya_tests::ServerOptions;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::start(ServerOptions::default().args("--handshake-timeout", 0)).await?;
    let mut stream = tokio::net::TcpStream::connect(server.ws).await?;
    // The host is waiting for the head by the time it comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await?;
    let mut answer = Vec::new();
    let mut byte = [0u8];
    while !answer.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .context("no answer to the upgrade")??;
        ensure!(
            n == 1,
            "closed after {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.push(byte[0]);
    }
    ensure!(
        answer.starts_with(b"HTTP/1.1 101 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}
