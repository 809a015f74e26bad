//! The configuration file: it and the flags configure the same server, flags win over it, and
//! a bad key, a bad type or a bad path each give one line naming what is wrong.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{component, packet, start};

/// The handshake reply a fresh client gets.
fn handshake_reply(addr: &str) -> Result<String> {
    let mut socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    socket.write_all(&packet(1, br#"{"sys":{},"user":{}}"#))?;
    let mut header = [0u8; 4];
    socket.read_exact(&mut header)?;
    let len =
        (usize::from(header[1]) << 16) | (usize::from(header[2]) << 8) | usize::from(header[3]);
    let mut body = vec![0; len];
    socket.read_exact(&mut body)?;
    Ok(String::from_utf8(body)?)
}

fn write_config(dir: &Path, name: &str, text: &str) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

fn temp_dir(test: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pitaya-host-config-{test}-{}", std::process::id()))
}

#[test]
fn the_file_and_the_flags_configure_the_same_server() -> Result<()> {
    let echo = component("echo.wasm")?;
    let dir = temp_dir("same");
    let config = write_config(
        &dir,
        "host.toml",
        &format!(
            "tcp = \"127.0.0.1:0\"\nheartbeat = 7\nserver-type = \"game\"\n\n[[component]]\npath = {:?}\n",
            echo.display().to_string()
        ),
    )?;
    let from_file = start(&["--config".as_ref(), config.as_os_str()], 1)?;
    let by_file = handshake_reply(from_file.tcp.as_deref().unwrap_or_default())?;
    let from_flags = start(
        &[
            "--tcp",
            "127.0.0.1:0",
            "--heartbeat",
            "7",
            "--server-type",
            "game",
        ]
        .map(AsRef::as_ref)
        .iter()
        .copied()
        .chain([echo.as_os_str()])
        .collect::<Vec<_>>(),
        1,
    )?;
    let by_flags = handshake_reply(from_flags.tcp.as_deref().unwrap_or_default())?;
    ensure!(by_file == by_flags, "file: {by_file}\nflags: {by_flags}");
    ensure!(
        by_file.contains(r#""heartbeat":7"#) && by_file.contains("game.echo.echo"),
        "{by_file}"
    );

    // A flag wins over the file.
    let both = start(
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--heartbeat".as_ref(),
            "9".as_ref(),
        ],
        1,
    )?;
    let reply = handshake_reply(both.tcp.as_deref().unwrap_or_default())?;
    ensure!(
        reply.contains(r#""heartbeat":9"#) && reply.contains("game.echo.echo"),
        "{reply}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Runs the host on a config file that must be refused, and returns its error lines.
fn refused(test: &str, text: &str) -> Result<Vec<String>> {
    let dir = temp_dir(test);
    let config = write_config(&dir, "host.toml", text)?;
    let output = Command::new(env!("CARGO_BIN_EXE_pitaya-host"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()?;
    std::fs::remove_dir_all(&dir)?;
    ensure!(!output.status.success(), "the host accepted {text:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Ok(stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_owned)
        .collect())
}

#[test]
fn an_unknown_key_is_named_with_its_line() -> Result<()> {
    let lines = refused("key", "tcp = \"127.0.0.1:0\"\nheartbat = 5\n")?;
    ensure!(
        lines.len() == 1
            && lines[0].contains("host.toml:2: ")
            && lines[0].contains("unknown field `heartbat`"),
        "{lines:?}"
    );
    Ok(())
}

#[test]
fn a_wrong_type_is_named_with_its_key_and_line() -> Result<()> {
    let lines = refused("type", "tcp = \"127.0.0.1:0\"\n\nheartbeat = \"often\"\n")?;
    ensure!(
        lines.len() == 1 && lines[0].contains("host.toml:3: heartbeat: invalid type"),
        "{lines:?}"
    );
    Ok(())
}

/// A timer-fire budget outside 1 ..= 1,000,000 is named with its key and line, at the top of
/// the file and in a component's table alike.
#[test]
fn a_timer_fires_budget_out_of_range_is_named_with_its_line() -> Result<()> {
    let top = refused("fires-top", "tcp = \"127.0.0.1:0\"\ntimer-fires = 0\n")?;
    let table = refused(
        "fires-table",
        "tcp = \"127.0.0.1:0\"\n[[component]]\npath = \"game.wasm\"\ntimer-fires = 2000000\n",
    )?;
    for (lines, at) in [
        (top, "host.toml:2: timer-fires"),
        (table, "host.toml:4: timer-fires"),
    ] {
        ensure!(
            lines.len() == 1
                && lines[0].contains(at)
                && lines[0].contains("must be a whole number from 1 to 1000000"),
            "{lines:?}"
        );
    }
    Ok(())
}

#[test]
fn a_missing_component_path_is_named() -> Result<()> {
    let lines = refused(
        "path",
        "tcp = \"127.0.0.1:0\"\n[[component]]\npath = \"nowhere/game.wasm\"\n",
    )?;
    ensure!(
        lines.len() == 1
            && lines[0].contains("cannot read component")
            && lines[0].contains("nowhere/game.wasm"),
        "{lines:?}"
    );
    Ok(())
}

/// A `--limit` (or `--grant`, `--init`) for a component adds to its `[[component]]` settings.
#[test]
fn command_line_tweaks_layer_on_the_file_settings() -> Result<()> {
    let hostile = component("hostile.wasm")?;
    let dir = temp_dir("layer");
    let config = write_config(
        &dir,
        "host.toml",
        &format!(
            "tcp = \"127.0.0.1:0\"\n\n[[component]]\npath = {:?}\ngrants = [\"clock\"]\nenv = {{ MODE = \"ranked\" }}\n",
            hostile.display().to_string()
        ),
    )?;
    let host = start(
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--limit".as_ref(),
            "hostile=call-timeout-ms:900".as_ref(),
        ],
        1,
    )?;
    let mut socket = TcpStream::connect(host.tcp.as_deref().unwrap_or_default())?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    socket.write_all(&packet(1, br#"{"sys":{},"user":{}}"#))?;
    let mut header = [0u8; 4];
    socket.read_exact(&mut header)?;
    let mut reply = vec![0; (usize::from(header[2]) << 8) | usize::from(header[3])];
    socket.read_exact(&mut reply)?;
    let mut request = packet(2, b"");
    let route = b"hostile.peek";
    let mut message = vec![0x00, 0x01, route.len() as u8];
    message.extend_from_slice(route);
    message.extend_from_slice(b"{}");
    request.extend(packet(4, &message));
    socket.write_all(&request)?;
    socket.read_exact(&mut header)?;
    let mut body = vec![0; (usize::from(header[2]) << 8) | usize::from(header[3])];
    socket.read_exact(&mut body)?;
    let seen: serde_json::Value = serde_json::from_slice(&body[2..])?;
    std::fs::remove_dir_all(&dir)?;
    ensure!(
        seen["env"] == 1 && seen["clockSecs"].as_u64().is_some_and(|s| s > 0),
        "the file's grants were lost: {seen}"
    );
    Ok(())
}

/// `push-routes` in the file puts those push routes in the handshake's dictionary.
#[test]
fn push_routes_in_the_file_join_the_dict() -> Result<()> {
    let echo = component("echo.wasm")?;
    let dir = temp_dir("push-routes");
    let config = write_config(
        &dir,
        "host.toml",
        &format!(
            "tcp = \"127.0.0.1:0\"\npush-routes = [\"onEcho\", \"onMembers\"]\n\n[[component]]\npath = {:?}\n",
            echo.display().to_string()
        ),
    )?;
    let host = start(&["--config".as_ref(), config.as_os_str()], 1)?;
    let reply = handshake_reply(host.tcp.as_deref().unwrap_or_default())?;
    std::fs::remove_dir_all(&dir)?;
    let reply: serde_json::Value = serde_json::from_str(&reply)?;
    let dict = &reply["sys"]["dict"];
    ensure!(
        dict["onEcho"].is_u64() && dict["onMembers"].is_u64() && dict["echo.echo"].is_u64(),
        "the push routes or the handler routes are missing from the dict: {dict}"
    );
    Ok(())
}

#[test]
fn an_empty_push_route_is_named() -> Result<()> {
    let lines = refused(
        "empty-push-route",
        "tcp = \"127.0.0.1:0\"\npush-routes = [\"\"]\n",
    )?;
    ensure!(
        lines.len() == 1 && lines[0].contains("push-routes: \"\" is 0 bytes"),
        "{lines:?}"
    );
    Ok(())
}
