//! Sharded instances (`instances = N` in a `[[component]]` table, `--limit NAME=instances:N`):
//! two sessions' calls land on different instances of `lab`, each session sticks to one
//! instance, a timer fires in the instance that set it, a hot reload hands each instance's state
//! to its successor, and a bad count is refused with a message naming `instances`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pitaya_tests::checks::call;
use pitaya_tests::server::{components_dir, host_binary};
use pitaya_tests::{Client, Server, ServerOptions, TempDir, Transport};
use serde_json::json;

/// Sessions connected per test: enough that a mapping by anything but the session would show.
const SESSIONS: usize = 6;
/// Calls each session makes to `lab.instance`.
const CALLS: usize = 5;

/// Writes a configuration serving lab with `instances` set to `value` (TOML text) and returns
/// its path.
fn lab_config(dir: &TempDir, value: &str) -> Result<std::path::PathBuf> {
    let lab = components_dir().join("lab.wasm");
    ensure!(
        lab.is_file(),
        "the component {} does not exist: run `cargo xtask test` (or build it and set PITAYA_COMPONENTS_DIR)",
        lab.display()
    );
    let path = dir.0.join("host.toml");
    let text = format!(
        "[[component]]\npath = {:?}\ninstances = {value}\n",
        lab.to_str().context("components dir is not UTF-8")?
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The session id and the instance id every call of one session saw.
async fn instances_seen(c: &mut Client) -> Result<(u64, BTreeSet<u64>, Vec<u64>)> {
    let me = call(c, "lab.whoami", &json!({})).await?;
    let session = me["session"].as_u64().context("whoami gave no session")?;
    let mut ids = BTreeSet::new();
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let answer = call(c, "lab.instance", &json!({})).await?;
        ids.insert(answer["instance"].as_u64().context("no instance id")?);
        calls.push(answer["calls"].as_u64().context("no call count")?);
    }
    Ok((session, ids, calls))
}

#[tokio::test]
async fn sessions_are_shared_out_and_stick_to_one_instance() -> Result<()> {
    let dir = TempDir::new("instances")?;
    let config = lab_config(&dir, "2")?;
    let server = Server::start(
        ServerOptions::default()
            .components::<&str>(&[])
            .args("--config", config.display())
            .tcp_only(),
    )
    .await?;

    let mut clients = Vec::new();
    for _ in 0..SESSIONS {
        clients.push(server.connect_ready(Transport::Tcp).await?);
    }
    // One session at a time, so each instance's call count says exactly which calls it served.
    let mut by_instance: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut last_count: BTreeMap<u64, u64> = BTreeMap::new();
    let mut session_of_client = Vec::new();
    for c in &mut clients {
        let (session, ids, calls) = instances_seen(c).await?;
        ensure!(
            ids.len() == 1,
            "session {session}'s calls went to several instances: {ids:?}"
        );
        let instance = *ids.first().context("no calls")?;
        // Every call of this session (whoami and the instance calls) ran here, and nothing else
        // ran here in between: the count goes up by one per call.
        let before = last_count.get(&instance).copied().unwrap_or(0);
        let expected: Vec<u64> = (0..CALLS as u64).map(|i| before + 2 + i).collect();
        ensure!(
            calls == expected,
            "instance {instance} counted {calls:?} for session {session}, expected {expected:?}"
        );
        last_count.insert(instance, *calls.last().context("no calls")?);
        by_instance.entry(instance).or_default().push(session);
        session_of_client.push(session);
    }
    ensure!(
        by_instance.len() == 2,
        "{SESSIONS} sessions used {} instances, expected 2: {by_instance:?}",
        by_instance.len()
    );
    // The documented rule: the session id modulo the instance count picks the instance.
    for sessions in by_instance.values() {
        let parities: BTreeSet<u64> = sessions.iter().map(|s| s % 2).collect();
        ensure!(
            parities.len() == 1,
            "one instance served sessions of both parities: {by_instance:?}"
        );
    }

    // A timer belongs to the instance that set it: lab only pushes for timers it knows.
    for (c, session) in clients.iter_mut().zip(&session_of_client).take(2) {
        call(c, "lab.after", &json!({ "ms": 10 }))
            .await
            .with_context(|| format!("session {session}"))?;
        c.wait_push("onAfter")
            .await
            .with_context(|| format!("session {session}'s timer"))?;
    }
    ensure!(
        server
            .log_line_containing("this instance did not start it")
            .is_none(),
        "a timer fired in an instance that did not set it\n{}",
        server.log_tail(20)
    );
    Ok(())
}

#[tokio::test]
async fn a_reload_hands_each_instance_its_own_state() -> Result<()> {
    let server = Server::start(
        ServerOptions::default()
            .components(&["lab.wasm"])
            .args("--limit", "lab=instances:2")
            .tcp_only(),
    )
    .await?;
    let mut a = server.connect_ready(Transport::Tcp).await?;
    let mut b = server.connect_ready(Transport::Tcp).await?;
    let id_a = call(&mut a, "lab.instance", &json!({})).await?["instance"].clone();
    let id_b = call(&mut b, "lab.instance", &json!({})).await?["instance"].clone();
    ensure!(
        id_a != id_b,
        "two consecutive sessions share instance {id_a} with two instances"
    );
    for _ in 0..3 {
        call(&mut a, "lab.counter", &json!({})).await?;
    }
    call(&mut b, "lab.counter", &json!({})).await?;

    let from = server.log_len();
    server.signal(libc::SIGHUP)?;
    server
        .wait_log_from(from, "component reloaded", Duration::from_secs(30))
        .await?;
    let after_a = call(&mut a, "lab.counter", &json!({})).await?;
    let after_b = call(&mut b, "lab.counter", &json!({})).await?;
    ensure!(
        after_a == json!({"counter": 4, "generation": 2}),
        "session a's instance after the reload: {after_a}"
    );
    ensure!(
        after_b == json!({"counter": 2, "generation": 2}),
        "session b's instance after the reload: {after_b}"
    );
    let new_a = call(&mut a, "lab.instance", &json!({})).await?["instance"].clone();
    ensure!(new_a != id_a, "the reload kept the old instance {id_a}");
    Ok(())
}

/// Runs `pitaya-host serve ARGS` and returns its exit status and stderr.
fn run_host(args: &[&str]) -> Result<(Option<i32>, String)> {
    let output = Command::new(host_binary())
        .arg("serve")
        .args(["--tcp", "127.0.0.1:0"])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .context("running pitaya-host")?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn a_bad_instance_count_is_refused_naming_the_field() -> Result<()> {
    let dir = TempDir::new("bad-instances")?;
    for value in ["0", "\"two\"", "-3", "100000"] {
        let config = lab_config(&dir, value)?;
        let (status, stderr) = run_host(&["--config", config.to_str().context("UTF-8")?])?;
        ensure!(
            status == Some(1),
            "instances = {value}: exit status {status:?}, expected 1\n{stderr}"
        );
        ensure!(
            stderr.contains("host.toml:3: instances: must be a whole number from 1 to 256"),
            "instances = {value}: the message does not name the field: {stderr}"
        );
    }
    let lab = components_dir().join("lab.wasm");
    let lab = lab.to_str().context("UTF-8")?;
    for (value, expected) in [
        ("0", "instances must be a whole number from 1 to 256, got 0"),
        ("two", "instances takes a whole number, got \"two\""),
    ] {
        let limit = format!("lab=instances:{value}");
        let (status, stderr) = run_host(&["--limit", &limit, lab])?;
        ensure!(
            status == Some(1),
            "--limit {limit}: exit status {status:?}, expected 1\n{stderr}"
        );
        ensure!(
            stderr.contains(&format!("--limit {limit}: {expected}")),
            "--limit {limit}: unexpected message: {stderr}"
        );
    }
    Ok(())
}
