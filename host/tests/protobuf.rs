//! `--serializer protobuf`: advertised in the handshake, a protobuf request gets a protobuf
//! response, and errors (the component's and the host's own) come as pitaya's protobuf `Error`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{component, packet, start};
use pitaya_protocol::ErrorPayload;
use prost::Message as _;

fn read_packet(socket: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    socket.read_exact(&mut header)?;
    let len =
        (usize::from(header[1]) << 16) | (usize::from(header[2]) << 8) | usize::from(header[3]);
    let mut body = vec![0; len];
    socket.read_exact(&mut body)?;
    Ok((header[0], body))
}

/// Sends a request and returns the response message's flag byte and payload.
fn call(socket: &mut TcpStream, id: u8, route: &str, payload: &[u8]) -> Result<(u8, Vec<u8>)> {
    let mut message = vec![0x00, id, route.len() as u8];
    message.extend_from_slice(route.as_bytes());
    message.extend_from_slice(payload);
    socket.write_all(&packet(4, &message))?;
    let (kind, body) = read_packet(socket)?;
    ensure!(
        kind == 4 && body.len() >= 2 && body[1] == id,
        "not the response to {id}: {kind} {body:?}"
    );
    Ok((body[0], body[2..].to_vec()))
}

#[test]
fn protobuf_requests_responses_and_errors() -> Result<()> {
    let lab = component("lab.wasm")?;
    let host = start(
        &[
            "--tcp".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--serializer".as_ref(),
            "protobuf".as_ref(),
            lab.as_os_str(),
        ],
        1,
    )?;
    let mut socket = TcpStream::connect(host.tcp.as_deref().unwrap_or_default())?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    socket.write_all(&packet(1, br#"{"sys":{},"user":{}}"#))?;
    let (_, reply) = read_packet(&mut socket)?;
    let reply = String::from_utf8(reply)?;
    ensure!(reply.contains(r#""serializer":"protobuf""#), "{reply}");
    socket.write_all(&packet(2, b""))?;

    // AddRequest{a: 2, b: 3} -> AddResponse{sum: 5}.
    let (flag, payload) = call(&mut socket, 1, "lab.protoAdd", &[0x08, 0x02, 0x10, 0x03])?;
    ensure!(
        flag == 0x04 && payload == [0x08, 0x05],
        "protoAdd answered {flag:#x} {payload:?}"
    );

    // The component's own error, in protobuf.
    let (flag, payload) = call(
        &mut socket,
        2,
        "lab.protoAdd",
        &[0x08, 0x7f, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f],
    )?;
    ensure!(flag == 0x24, "a negative b should fail, got flag {flag:#x}");
    let error = ErrorPayload::decode(&payload[..])?;
    ensure!(
        error.code == "LAB-NEGATIVE"
            && error.metadata.get("field").map(String::as_str) == Some("b"),
        "{error:?}"
    );

    // The host's own error, in protobuf too.
    let (flag, payload) = call(&mut socket, 3, "lab.nothing", b"")?;
    ensure!(
        flag == 0x24,
        "an unknown route should fail, got flag {flag:#x}"
    );
    let error = ErrorPayload::decode(&payload[..])?;
    ensure!(
        error.code == "PIT-404" && error.msg == "pitaya/handler: connector.lab.nothing not found",
        "{error:?}"
    );
    Ok(())
}
