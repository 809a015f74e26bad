//! The scripted REPL against the real host: requests, notifies with pushes, error responses,
//! over TCP and WebSocket; failures give an error line and a non-zero exit status.

mod common;

use std::ffi::OsStr;

use anyhow::{Result, ensure};
use common::{Host, LiveCli, run_cli};

/// The brief's script: a request, a notify whose push arrives during `wait`, an error response.
fn echo_script(url: &str) -> String {
    format!(
        "connect {url}\nrequest echo.echo {{\"a\":1}}\nnotify echo.notify {{\"b\":2}}\nwait 0.5\nrequest echo.fail {{}}\nquit\n"
    )
}

fn check_echo_run(url: &str) -> Result<()> {
    let run = run_cli(&[], &echo_script(url))?;
    ensure!(run.status.success(), "exit status: {run}");
    let out = &run.stdout;
    ensure!(
        out.contains("handshake: code 200, heartbeat 30 s, serializer json"),
        "no handshake summary: {run}"
    );
    ensure!(out.contains(&format!("connected to {url}")), "{run}");
    ensure!(
        out.contains("response echo.echo {\n  \"a\": 1\n}\n"),
        "no pretty response: {run}"
    );
    ensure!(
        out.contains("push onEcho {\n  \"b\": 2\n}\n"),
        "no push: {run}"
    );
    ensure!(
        out.contains("error ECHO-FAIL: "),
        "no error response: {run}"
    );
    // The push (sent during `wait`) comes before the failing request's answer.
    let push = out.find("push onEcho").unwrap_or(usize::MAX);
    let fail = out.find("error ECHO-FAIL").unwrap_or(0);
    ensure!(push < fail, "out of order: {run}");
    ensure!(run.stderr.is_empty(), "unexpected errors: {run}");
    Ok(())
}

#[test]
fn echo_over_tcp() -> Result<()> {
    let host = Host::start(&[])?;
    check_echo_run(&host.tcp)
}

#[test]
fn echo_over_websocket() -> Result<()> {
    let host = Host::start(&[])?;
    // Any path upgrades; the client sends it.
    check_echo_run(&format!("{}/game", host.ws))
}

#[test]
fn connect_and_handshake_options() -> Result<()> {
    let host = Host::start(&[])?;
    let script = "request echo.echo [1, \"x\"]\nsethandshake {\"name\":\"bob\"}\nrequest nope.nothing\nrequest echo.echo\n";
    let args: [&OsStr; 4] = [
        "--connect".as_ref(),
        host.ws.as_ref(),
        "--handshake".as_ref(),
        r#"{"age":30}"#.as_ref(),
    ];
    let run = run_cli(&args, script)?;
    ensure!(run.status.success(), "{run}");
    ensure!(
        run.stdout
            .contains("response echo.echo [\n  1,\n  \"x\"\n]\n"),
        "{run}"
    );
    ensure!(
        run.stdout
            .contains("error PIT-404: pitaya/handler: connector.nope.nothing not found"),
        "{run}"
    );
    ensure!(run.stdout.contains("response echo.echo {}\n"), "{run}");
    Ok(())
}

#[test]
fn bad_command_fails_the_script_but_not_the_session() -> Result<()> {
    let host = Host::start(&[])?;
    let script = format!(
        "connect {}\nfrobnicate now\nrequest echo.echo {{\"still\":\"here\"}}\n",
        host.tcp
    );
    let run = run_cli(&[], &script)?;
    ensure!(
        !run.status.success(),
        "a bad command must fail the run: {run}"
    );
    ensure!(
        run.stderr.contains("error: unknown command \"frobnicate\""),
        "{run}"
    );
    ensure!(
        run.stdout
            .contains("response echo.echo {\n  \"still\": \"here\"\n}"),
        "the commands after the bad one must run: {run}"
    );
    Ok(())
}

#[test]
fn connect_failure_and_bad_payload_fail_the_script() -> Result<()> {
    let host = Host::start(&[])?;
    // A port that was just free: connect is refused.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    for script in [
        format!("connect tcp://{closed}\n"),
        format!("connect {}\nrequest echo.echo {{not json\n", host.tcp),
        "request echo.echo {}\n".to_owned(),
        "wait soon\n".to_owned(),
    ] {
        let run = run_cli(&[], &script)?;
        ensure!(!run.status.success(), "{script:?} must fail: {run}");
        ensure!(run.stderr.starts_with("error: "), "{script:?}: {run}");
    }
    Ok(())
}

#[test]
fn request_timeout_fails_the_script() -> Result<()> {
    // A server that accepts the handshake and then never answers: a plain listener that replies
    // to the handshake by hand.
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> Result<()> {
        let (mut socket, _) = listener.accept()?;
        let mut header = [0u8; 4];
        socket.read_exact(&mut header)?;
        let len =
            usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
        let mut body = vec![0; len];
        socket.read_exact(&mut body)?;
        ensure!(header[0] == 1, "expected a handshake");
        let doc: serde_json::Value = serde_json::from_slice(&body)?;
        ensure!(doc["sys"]["platform"] == "repl", "handshake {doc}");
        let reply = br#"{"code":200,"sys":{"heartbeat":0}}"#;
        let mut packet = vec![1, 0, 0, reply.len() as u8];
        packet.extend_from_slice(reply);
        socket.write_all(&packet)?;
        // Read until the client hangs up; never answer.
        let mut sink = Vec::new();
        let _ = socket.read_to_end(&mut sink);
        Ok(())
    });
    let args: [&OsStr; 2] = ["--timeout".as_ref(), "0.3".as_ref()];
    let run = run_cli(&args, &format!("connect tcp://{addr}\nrequest a.b {{}}\n"))?;
    ensure!(!run.status.success(), "{run}");
    ensure!(
        run.stdout.contains("heartbeat off") && run.stderr.contains("timed out"),
        "{run}"
    );
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the fake server panicked"))??;
    Ok(())
}

/// A kick (the host kicks every session when it shuts down) is printed as it arrives, while the
/// client waits for input, and ends the connection: the next request fails.
#[test]
fn kick_is_printed_and_disconnects() -> Result<()> {
    let host = Host::start(&[])?;
    let mut cli = LiveCli::start(&[])?;
    cli.send(&format!("connect {}", host.tcp))?;
    cli.expect("connected to")?;
    cli.send("request echo.echo {\"before\":1}")?;
    cli.expect("\"before\": 1")?;
    host.terminate()?;
    cli.expect("kicked")?;
    cli.send("request echo.echo {}")?;
    let (status, stderr) = cli.finish()?;
    ensure!(!status.success(), "{status}");
    ensure!(
        stderr.contains("error: not connected (kicked"),
        "stderr: {stderr}"
    );
    Ok(())
}

/// The client sends heartbeats: with a 1 s interval the host drops a client silent for 2 s, so
/// a request after 3 s of `wait` only works if the client kept beating.
#[test]
fn heartbeats_keep_the_session_alive() -> Result<()> {
    let host = Host::start(&["--heartbeat".as_ref(), "1".as_ref()])?;
    let script = format!(
        "connect {}\nwait 3\nrequest echo.echo {{\"alive\":true}}\n",
        host.tcp
    );
    let run = run_cli(&[], &script)?;
    ensure!(run.status.success(), "{run}");
    ensure!(run.stdout.contains("heartbeat 1 s"), "{run}");
    ensure!(run.stdout.contains("\"alive\": true"), "{run}");
    ensure!(!run.stdout.contains("disconnected"), "{run}");
    Ok(())
}
