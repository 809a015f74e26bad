//! TLS on both listeners: a client that trusts the server's certificate completes the pitaya
//! handshake and gets an echo over TCP+TLS and over WSS, and a `--web` page over HTTPS.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{component, components_dir, packet};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

fn request(id: u8, route: &str, body: &[u8]) -> Vec<u8> {
    let mut message = vec![0x00, id, route.len() as u8];
    message.extend_from_slice(route.as_bytes());
    message.extend_from_slice(body);
    packet(4, &message)
}

const HANDSHAKE: &[u8] = br#"{"sys":{"platform":"test","libVersion":"0.3.5-release"},"user":{}}"#;

fn connector(cert: CertificateDer<'static>) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn read_packet(stream: &mut (impl AsyncReadExt + Unpin)) -> Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let len =
        (usize::from(header[1]) << 16) | (usize::from(header[2]) << 8) | usize::from(header[3]);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok((header[0], body))
}

/// A self-signed certificate for `localhost` and its key, written as `cert.pem` and `key.pem` in
/// a fresh folder named for `test`: the folder, the two files, and the certificate to trust.
fn self_signed(test: &str) -> Result<(PathBuf, PathBuf, PathBuf, CertificateDer<'static>)> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let dir = std::env::temp_dir().join(format!("pitaya-host-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, generated.cert.pem())?;
    std::fs::write(&key_path, generated.signing_key.serialize_pem())?;
    Ok((dir, cert_path, key_path, generated.cert.der().clone()))
}

#[tokio::test]
async fn echo_over_tls_and_wss_and_a_page_over_https() -> Result<()> {
    let (dir, cert_path, key_path, cert) = self_signed("tls")?;
    let web = dir.join("web");
    std::fs::create_dir_all(&web)?;
    std::fs::write(web.join("hello.txt"), "hello over https")?;
    let echo = component("echo.wasm")?;
    let host = common::start(
        &[
            "--tcp".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--ws".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--tls-cert".as_ref(),
            cert_path.as_os_str(),
            "--tls-key".as_ref(),
            key_path.as_os_str(),
            "--web".as_ref(),
            web.as_os_str(),
            echo.as_os_str(),
        ],
        2,
    )?;
    let (tcp, ws) = (
        host.tcp.clone().unwrap_or_default(),
        host.ws.clone().unwrap_or_default(),
    );
    let connector = connector(cert)?;
    let name = ServerName::try_from("localhost")?.to_owned();

    // TCP + TLS.
    let socket = TcpStream::connect(&tcp).await?;
    let mut tls = connector
        .connect(name.clone(), socket)
        .await
        .context("tls handshake over tcp")?;
    tls.write_all(&packet(1, HANDSHAKE)).await?;
    let (kind, body) =
        tokio::time::timeout(Duration::from_secs(10), read_packet(&mut tls)).await??;
    ensure!(
        kind == 1 && body.starts_with(br#"{"code":200"#),
        "handshake reply {kind} {body:?}"
    );
    let mut batch = packet(2, b"");
    batch.extend(request(1, "echo.echo", br#"{"over":"tls"}"#));
    tls.write_all(&batch).await?;
    let (kind, body) =
        tokio::time::timeout(Duration::from_secs(10), read_packet(&mut tls)).await??;
    ensure!(
        kind == 4 && body == b"\x04\x01{\"over\":\"tls\"}",
        "tls echo answered {kind} {body:?}"
    );

    // WebSocket over TLS.
    let socket = TcpStream::connect(&ws).await?;
    let tls = connector
        .connect(name.clone(), socket)
        .await
        .context("tls handshake over ws")?;
    let url = format!(
        "wss://localhost:{}/",
        ws.rsplit(':').next().unwrap_or_default()
    );
    let (mut socket, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .context("websocket upgrade")?;
    socket
        .send(Message::Binary(packet(1, HANDSHAKE).into()))
        .await?;
    socket.send(Message::Binary(packet(2, b"").into())).await?;
    socket
        .send(Message::Binary(
            request(1, "echo.echo", br#"{"over":"wss"}"#).into(),
        ))
        .await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await? {
            Some(Ok(Message::Binary(frame))) => seen.push(frame.to_vec()),
            Some(Ok(_)) => {}
            other => bail!("websocket ended early: {other:?}"),
        }
    }
    ensure!(
        seen[0].starts_with(b"\x01") && seen[0][4..].starts_with(br#"{"code":200"#),
        "wss handshake reply {:?}",
        seen[0]
    );
    ensure!(
        seen[1] == packet(4, b"\x04\x01{\"over\":\"wss\"}"),
        "wss echo answered {:?}",
        seen[1]
    );

    // A page from the web folder, over HTTPS on the same port.
    let socket = TcpStream::connect(&ws).await?;
    let mut tls = connector
        .connect(name, socket)
        .await
        .context("tls handshake for https")?;
    tls.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nhello over https"),
        "https answered {answer:?}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn an_unreadable_certificate_is_one_clear_line() -> Result<()> {
    let output = Command::new(env!("CARGO_BIN_EXE_pitaya-host"))
        .args([
            "serve",
            "--tcp",
            "127.0.0.1:0",
            "--tls-cert",
            "no/cert.pem",
            "--tls-key",
            "no/key.pem",
        ])
        .arg(components_dir().join("echo.wasm"))
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success(),
        "the host started without its certificate"
    );
    ensure!(
        stderr.contains("cannot read the TLS certificate no/cert.pem"),
        "{stderr}"
    );
    Ok(())
}

/// A TLS ClientHello that names the server `name` (server_name extension, RFC 6066) and offers
/// one TLS 1.3 cipher suite: enough for the server to read it, and then to refuse it.
fn client_hello(name: &str) -> Vec<u8> {
    let name = name.as_bytes();
    let with_len = |prefix: &[u8], body: &[u8]| {
        let mut out = prefix.to_vec();
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    };
    let server_name = with_len(&[0], name); // host_name, then the name
    let server_name_list = with_len(&[], &server_name);
    let extensions = with_len(&[0, 0], &server_name_list); // extension 0: server_name
    let mut hello = vec![3, 3]; // legacy version TLS 1.2
    hello.extend_from_slice(&[7; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    hello.extend_from_slice(&[1, 0]); // no compression
    hello.extend(with_len(&[], &extensions));
    let len = hello.len() as u32;
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&len.to_be_bytes()[1..]);
    handshake.extend(hello);
    with_len(&[0x16, 3, 1], &handshake) // a handshake record
}

/// libpitaya names the server by the host it was given, an IP address too, and rustls warns of
/// each such hello: the host's default log filter keeps those lines out of its log.
#[test]
fn an_ip_address_as_the_tls_server_name_is_not_logged_for_each_connection() -> Result<()> {
    use std::io::{Read, Write};

    let (dir, cert_path, key_path, _) = self_signed("sni")?;
    let echo = component("echo.wasm")?;
    let (host, log) = common::start_with_default_log(
        &[
            "--tcp".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--tls-cert".as_ref(),
            cert_path.as_os_str(),
            "--tls-key".as_ref(),
            key_path.as_os_str(),
            echo.as_os_str(),
        ],
        1,
    )?;
    let mut socket = std::net::TcpStream::connect(host.tcp.clone().unwrap_or_default())?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    socket.write_all(&client_hello("127.0.0.1"))?;
    // The server's answer (a TLS alert: the hello offers too little) shows it has read the hello.
    let mut answer = [0; 2];
    socket.read_exact(&mut answer)?;
    ensure!(answer[0] == 0x15, "not a TLS alert: {answer:?}");
    drop(host);
    let log = log
        .join()
        .map_err(|_| anyhow::anyhow!("the log reader panicked"))?;
    ensure!(log.contains("component loaded"), "no info lines: {log}");
    ensure!(!log.contains("Illegal SNI"), "{log}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
