//! `/metrics` after real traffic shows the counters with the right values; `/healthz` and
//! `/readyz` answer.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{component, packet, start};

fn read_packet(socket: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    socket.read_exact(&mut header)?;
    let len =
        (usize::from(header[1]) << 16) | (usize::from(header[2]) << 8) | usize::from(header[3]);
    let mut body = vec![0; len];
    socket.read_exact(&mut body)?;
    Ok((header[0], body))
}

fn request(id: u8, route: &str) -> Vec<u8> {
    let mut message = vec![0x00, id, route.len() as u8];
    message.extend_from_slice(route.as_bytes());
    message.extend_from_slice(b"{}");
    packet(4, &message)
}

fn get(addr: &str, path: &str) -> Result<String> {
    send(addr, "GET", path)
}

fn send(addr: &str, method: &str, path: &str) -> Result<String> {
    let mut socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Written in two pieces on purpose: the endpoint must wait for the whole request head.
    socket
        .write_all(format!("{method} {path} HTTP/1.1\r\n").as_bytes())
        .context("sending a request")?;
    socket
        .write_all(b"Host: x\r\n\r\n")
        .context("sending a request")?;
    let mut response = String::new();
    socket
        .read_to_string(&mut response)
        .context("reading the answer")?;
    Ok(response)
}

/// The value of one sample line, by its exact name and labels.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn metrics_count_what_happened() -> Result<()> {
    let echo = component("echo.wasm")?;
    let host = start(
        &[
            "--tcp".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--metrics".as_ref(),
            "127.0.0.1:0".as_ref(),
            echo.as_os_str(),
        ],
        2,
    )?;
    let metrics = host.metrics.clone().context("no metrics address printed")?;
    let mut client = TcpStream::connect(host.tcp.as_deref().unwrap_or_default())?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    client.write_all(&packet(1, br#"{"sys":{},"user":{}}"#))?;
    read_packet(&mut client)?;
    client.write_all(&packet(2, b""))?;
    for (id, route) in [
        (1, "echo.echo"),
        (2, "echo.echo"),
        (3, "echo.echo"),
        (4, "echo.fail"),
        (5, "echo.nope"),
        // A request to a notify handler: PIT-400, counted under the route it names.
        (6, "echo.notify"),
    ] {
        client
            .write_all(&request(id, route))
            .context("sending a request")?;
        let (kind, _) = read_packet(&mut client).context("reading a response")?;
        ensure!(kind == 4, "expected a response to {route}");
    }

    let text = get(&metrics, "/metrics")?;
    ensure!(text.starts_with("HTTP/1.1 200"), "{text}");
    let expect = [
        (
            r#"pitaya_requests_total{route="echo.echo",outcome="ok"}"#,
            3.0,
        ),
        (
            r#"pitaya_requests_total{route="echo.fail",outcome="error"}"#,
            1.0,
        ),
        (
            r#"pitaya_requests_total{route="unknown",outcome="not_found"}"#,
            1.0,
        ),
        (
            r#"pitaya_requests_total{route="echo.notify",outcome="bad_request"}"#,
            1.0,
        ),
        (r#"pitaya_handler_seconds_count{route="echo.echo"}"#, 3.0),
        (r#"pitaya_handshakes_total{outcome="ok"}"#, 1.0),
        ("pitaya_sessions", 1.0),
    ];
    for (series, value) in expect {
        ensure!(
            sample(&text, series) == Some(value),
            "{series} should be {value}:\n{text}"
        );
    }
    ensure!(
        sample(&text, r#"pitaya_bytes_total{direction="in"}"#).is_some_and(|n| n > 0.0),
        "{text}"
    );
    ensure!(
        sample(&text, r#"pitaya_bytes_total{direction="out"}"#).is_some_and(|n| n > 0.0),
        "{text}"
    );
    ensure!(
        sample(&text, r#"pitaya_instance_memory_bytes{component="echo"}"#).is_some_and(|n| n > 0.0),
        "{text}"
    );

    ensure!(get(&metrics, "/healthz")?.starts_with("HTTP/1.1 200"));
    ensure!(get(&metrics, "/readyz")?.starts_with("HTTP/1.1 200"));
    ensure!(get(&metrics, "/other")?.starts_with("HTTP/1.1 404"));
    ensure!(send(&metrics, "POST", "/metrics")?.starts_with("HTTP/1.1 405"));
    Ok(())
}
