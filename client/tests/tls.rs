//! TLS: `tls://` and `wss://` with `--ca` (a self-signed certificate made with rcgen) and with
//! `--insecure`, and the refusal of an untrusted certificate. The server is a small pitaya echo
//! server written here (rustls, and tungstenite for WSS), so each case can shape the certificate;
//! the last test runs the echo script against the real host with `--tls-cert`.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail, ensure};
use bytes::BytesMut;
use pitaya_protocol::{
    EncodeOptions, MessageType, PacketDecoder, PacketType, RouteDict, decode_message,
    encode_response, packet_bytes,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage, WebSocket};

use common::{Host, authority, run_cli};

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM files.
struct Cert {
    dir: PathBuf,
    cert_pem: PathBuf,
    key_pem: PathBuf,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cert {
    fn new(tag: &str) -> Result<Self> {
        Self::make(tag, false)
    }

    /// `ca`: marked as a CA (basicConstraints CA:TRUE), as `openssl req -x509` makes them.
    fn make(tag: &str, ca: bool) -> Result<Self> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let key = rcgen::KeyPair::generate()?;
        let cert = params
            .self_signed(&key)
            .context("generating a certificate")?;
        let dir = std::env::temp_dir().join(format!("pitaya-cli-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_pem, cert.pem())?;
        std::fs::write(&key_pem, key.serialize_pem())?;
        Ok(Self {
            dir,
            cert_pem,
            key_pem,
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(vec![self.cert_der.clone()], key)?;
        Ok(Arc::new(config))
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

/// The server side of one connection: raw TLS or WebSocket over TLS.
enum Wire {
    Stream(Box<Tls>),
    Ws(Box<WebSocket<Tls>>),
}

impl Wire {
    /// Reads more bytes into `buf`; `false` at the end of the connection.
    fn fill(&mut self, buf: &mut BytesMut) -> Result<bool> {
        match self {
            Self::Stream(tls) => {
                let mut chunk = [0u8; 4096];
                match tls.read(&mut chunk) {
                    Ok(0) | Err(_) => Ok(false),
                    Ok(n) => {
                        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                        Ok(true)
                    }
                }
            }
            Self::Ws(ws) => loop {
                match ws.read() {
                    Ok(WsMessage::Binary(data)) => {
                        buf.extend_from_slice(&data);
                        return Ok(true);
                    }
                    Ok(WsMessage::Close(_)) | Err(_) => return Ok(false),
                    Ok(_) => {}
                }
            },
        }
    }

    fn send(&mut self, packet: &[u8]) -> Result<()> {
        match self {
            Self::Stream(tls) => {
                tls.write_all(packet)?;
                tls.flush()?;
            }
            Self::Ws(ws) => ws.send(WsMessage::Binary(packet.to_vec().into()))?,
        }
        Ok(())
    }
}

/// A one-connection pitaya echo server over TLS (or WSS): handshake, then every request is
/// answered with its own payload. Returns the route of each request it answered.
fn fake_server(
    cert: &Cert,
    websocket: bool,
) -> Result<(SocketAddr, JoinHandle<Result<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let config = cert.server_config()?;
    let thread = std::thread::spawn(move || -> Result<Vec<String>> {
        let (socket, _) = listener.accept()?;
        let tls = StreamOwned::new(ServerConnection::new(config)?, socket);
        let mut wire = if websocket {
            match tungstenite::accept(tls) {
                Ok(ws) => Wire::Ws(Box::new(ws)),
                // The client refused the certificate: nothing more to serve.
                Err(_) => return Ok(Vec::new()),
            }
        } else {
            Wire::Stream(Box::new(tls))
        };
        let decoder = PacketDecoder::default();
        let mut buf = BytesMut::new();
        let mut routes = Vec::new();
        loop {
            let packet = match decoder.decode(&mut buf)? {
                Some(packet) => packet,
                None if wire.fill(&mut buf)? => continue,
                None => return Ok(routes),
            };
            match packet.kind {
                PacketType::Handshake => {
                    let reply =
                        br#"{"code":200,"sys":{"dict":{},"heartbeat":30,"serializer":"json"}}"#;
                    wire.send(&packet_bytes(PacketType::Handshake, reply)?)?;
                }
                PacketType::Data => {
                    let message = decode_message(&packet.body, &RouteDict::default(), 1 << 20)?;
                    ensure!(message.kind == MessageType::Request, "{message:?}");
                    let mut out = BytesMut::new();
                    encode_response(
                        message.id,
                        &message.payload,
                        false,
                        &EncodeOptions::default(),
                        &mut out,
                    )?;
                    wire.send(&out)?;
                    routes.push(message.route);
                }
                _ => {}
            }
        }
    });
    Ok((addr, thread))
}

fn script(url: &str) -> String {
    format!("connect {url}\nrequest secure.echo {{\"tls\":true}}\nquit\n")
}

fn expect_echo(args: &[&OsStr], url: &str) -> Result<()> {
    let run = run_cli(args, &script(url))?;
    ensure!(run.status.success(), "{run}");
    ensure!(run.stdout.contains(&format!("connected to {url}")), "{run}");
    ensure!(
        run.stdout
            .contains("response secure.echo {\n  \"tls\": true\n}"),
        "{run}"
    );
    Ok(())
}

#[test]
fn tls_with_a_custom_ca() -> Result<()> {
    let cert = Cert::new("ca")?;
    let (addr, server) = fake_server(&cert, false)?;
    expect_echo(
        &["--ca".as_ref(), cert.cert_pem.as_os_str()],
        &format!("tls://localhost:{}", addr.port()),
    )?;
    let routes = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    ensure!(routes == ["secure.echo"], "{routes:?}");
    Ok(())
}

/// A self-signed certificate marked as a CA is trusted as the server's own with `--ca` (webpki
/// alone refuses it as `CaUsedAsEndEntity`).
#[test]
fn ca_flagged_self_signed_certificate_with_ca() -> Result<()> {
    let cert = Cert::make("ca-flagged", true)?;
    let (addr, server) = fake_server(&cert, false)?;
    expect_echo(
        &["--ca".as_ref(), cert.cert_pem.as_os_str()],
        &format!("tls://localhost:{}", addr.port()),
    )?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    Ok(())
}

#[test]
fn wss_with_a_custom_ca() -> Result<()> {
    let cert = Cert::new("wss")?;
    let (addr, server) = fake_server(&cert, true)?;
    expect_echo(
        &["--ca".as_ref(), cert.cert_pem.as_os_str()],
        &format!("wss://127.0.0.1:{}/pitaya", addr.port()),
    )?;
    let routes = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    ensure!(routes == ["secure.echo"], "{routes:?}");
    Ok(())
}

#[test]
fn insecure_accepts_a_self_signed_certificate() -> Result<()> {
    let cert = Cert::new("insecure")?;
    let (addr, server) = fake_server(&cert, false)?;
    expect_echo(
        &["--insecure".as_ref()],
        &format!("tls://127.0.0.1:{}", addr.port()),
    )?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    Ok(())
}

#[test]
fn an_untrusted_certificate_is_refused() -> Result<()> {
    let cert = Cert::new("untrusted")?;
    let (addr, server) = fake_server(&cert, false)?;
    let run = run_cli(&[], &script(&format!("tls://localhost:{}", addr.port())))?;
    ensure!(!run.status.success(), "{run}");
    ensure!(
        run.stderr.contains("TLS handshake") && run.stderr.contains("certificate"),
        "{run}"
    );
    let routes = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    ensure!(routes.is_empty(), "{routes:?}");
    // A CA file that is not PEM is an error too.
    let run = run_cli(
        &[
            "--ca".as_ref(),
            cert.key_pem
                .parent()
                .unwrap_or(&cert.dir)
                .join("nope.pem")
                .as_os_str(),
        ],
        "connect tls://localhost:1\n",
    )?;
    ensure!(
        !run.status.success() && run.stderr.contains("CA file"),
        "{run}"
    );
    Ok(())
}

/// Against the real host (`--tls-cert`/`--tls-key`): the brief's script over TLS and WSS.
#[test]
fn tls_and_wss_against_the_host() -> Result<()> {
    let cert = Cert::new("host")?;
    let host = Host::start(&[
        "--tls-cert".as_ref(),
        cert.cert_pem.as_os_str(),
        "--tls-key".as_ref(),
        cert.key_pem.as_os_str(),
    ])?;
    let ca: [&OsStr; 2] = ["--ca".as_ref(), cert.cert_pem.as_os_str()];
    for url in [
        format!("tls://{}", authority(&host.tcp)),
        format!("wss://{}", authority(&host.ws)),
    ] {
        let script = format!(
            "connect {url}\nrequest echo.echo {{\"a\":1}}\nnotify echo.notify {{\"b\":2}}\nwait 0.5\nrequest echo.fail {{}}\nquit\n"
        );
        let run = run_cli(&ca, &script)?;
        ensure!(run.status.success(), "{url}: {run}\n{}", host.log());
        for expected in [
            "response echo.echo {\n  \"a\": 1\n}",
            "push onEcho {\n  \"b\": 2\n}",
            "error ECHO-FAIL: ",
        ] {
            if !run.stdout.contains(expected) {
                bail!("{url}: no {expected:?} in {run}");
            }
        }
    }
    Ok(())
}
