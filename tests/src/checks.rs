//! Assertions shared by the integration tests, each returning an `anyhow` error that says what was received.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::time::Duration;

use crate::client::Client;
use crate::codec::{Message, MessageType, Route};

/// `m` is a successful Response to request `id` (no error flag, no route).
pub fn ensure_success(m: &Message, id: u64) -> Result<()> {
    ensure!(
        m.kind == MessageType::Response,
        "expected a Response, got {m:?}"
    );
    ensure!(
        m.id == id,
        "expected the response to request {id}, got id {}",
        m.id
    );
    ensure!(m.route.is_none(), "a Response carries no route: {m:?}");
    ensure!(
        !m.error,
        "expected a success, got an error response: {}",
        m.text()
    );
    Ok(())
}

/// `m` is a successful Response to `id` whose payload is exactly `payload`.
pub fn ensure_echo(m: &Message, id: u64, payload: &[u8]) -> Result<()> {
    ensure_success(m, id)?;
    ensure!(
        m.payload == payload,
        "echoed payload differs: sent {:?}, got {:?}",
        String::from_utf8_lossy(payload),
        m.text()
    );
    Ok(())
}

/// `m` is an error Response (flag 0x20) to `id` whose JSON payload has the string `code` and a string `msg`;
/// returns the payload.
pub fn ensure_error(m: &Message, id: u64, code: &str) -> Result<Value> {
    ensure!(
        m.kind == MessageType::Response,
        "expected a Response, got {m:?}"
    );
    ensure!(
        m.id == id,
        "expected the response to request {id}, got id {}",
        m.id
    );
    ensure!(
        m.error,
        "expected the error flag 0x20 on the response, got a success: {}",
        m.text()
    );
    let v = m.json().context("error payload")?;
    ensure!(v["code"] == code, "expected error code {code:?}, got {v}");
    ensure!(
        v["msg"].is_string(),
        "error payload without a string msg: {v}"
    );
    if let Some(md) = v.get("metadata") {
        ensure!(md.is_object(), "error metadata is not an object: {v}");
    }
    Ok(v)
}

/// `m` is a Push with the plain route `route` and exactly `payload`.
pub fn ensure_push(m: &Message, route: &str, payload: &[u8]) -> Result<()> {
    ensure!(m.kind == MessageType::Push, "expected a Push, got {m:?}");
    ensure!(
        m.route == Some(Route::Plain(route.into())),
        "expected the plain push route {route:?}, got {:?}",
        m.route
    );
    ensure!(
        m.payload == payload,
        "push payload differs: expected {:?}, got {:?}",
        String::from_utf8_lossy(payload),
        m.text()
    );
    Ok(())
}

/// Sends an `echo.echo` request and waits for its answer: since the host keeps a session's messages in order,
/// everything the server sent because of earlier messages is in by then. Then fails if any Data message other
/// than those already claimed arrived (a stray response, a duplicate push...).
pub async fn ensure_nothing_else(c: &mut Client) -> Result<()> {
    let id = c.next_id();
    let payload = format!(r#"{{"barrier":{id}}}"#);
    c.send_request(id, "echo.echo", payload.as_bytes()).await?;
    let m = c.wait_response(id).await.context("barrier request")?;
    ensure_echo(&m, id, payload.as_bytes())?;
    let extra = c.unclaimed_messages();
    ensure!(extra.is_empty(), "unexpected messages received: {extra:#?}");
    Ok(())
}

/// Fails when the server closed the connection or broke the protocol so far.
pub fn ensure_open(c: &mut Client) -> Result<()> {
    c.ensure_open()
}

/// Sends a Request to `route` with the JSON `body`, waits for the answer, requires a success and returns its
/// JSON payload.
pub async fn call(c: &mut Client, route: &str, body: &Value) -> Result<Value> {
    let id = c.next_id();
    c.send_request(id, route, body.to_string().as_bytes())
        .await
        .with_context(|| format!("sending {route} {body}"))?;
    let m = c
        .wait_response(id)
        .await
        .with_context(|| format!("waiting for the answer to {route} {body}"))?;
    ensure_success(&m, id).with_context(|| format!("{route} {body}"))?;
    m.json()
        .with_context(|| format!("answer to {route} {body}"))
}

/// Like [`call`] with a timeout of its own.
pub async fn call_within(
    c: &mut Client,
    route: &str,
    body: &Value,
    within: Duration,
) -> Result<Value> {
    let id = c.next_id();
    c.send_request(id, route, body.to_string().as_bytes())
        .await
        .with_context(|| format!("sending {route} {body}"))?;
    let m = c
        .wait_response_within(id, within)
        .await
        .with_context(|| format!("waiting for the answer to {route} {body}"))?;
    ensure_success(&m, id).with_context(|| format!("{route} {body}"))?;
    m.json()
        .with_context(|| format!("answer to {route} {body}"))
}

/// Sends a Request to `route` with the JSON `body` and requires an error response with `code`; returns the
/// error payload.
pub async fn call_error(c: &mut Client, route: &str, body: &Value, code: &str) -> Result<Value> {
    let id = c.next_id();
    c.send_request(id, route, body.to_string().as_bytes())
        .await
        .with_context(|| format!("sending {route} {body}"))?;
    let m = c
        .wait_response(id)
        .await
        .with_context(|| format!("waiting for the answer to {route} {body}"))?;
    ensure_error(&m, id, code).with_context(|| format!("{route} {body}"))
}
