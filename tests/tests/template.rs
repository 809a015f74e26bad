//! The project template: `pitaya-host new demo` creates ./demo, which builds with
//! `cargo build --release --target wasm32-wasip2` into demo.wasm, which `pitaya-host serve` serves:
//! `demo.hello` {"name":"x"} answers {"greeting":"hello x"}.
//!
//! The build uses `<workspace>/target/template-build` as its target directory, so repeated runs are
//! incremental.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use pitaya_tests::checks::call;
use pitaya_tests::server::{host_binary, workspace_dir};
use pitaya_tests::{Server, ServerOptions, TempDir, Transport};
use serde_json::json;

/// Runs `cmd` to completion, killing it after `within`; returns its output whatever its status.
fn run(mut cmd: Command, within: Duration) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {shown}"))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_thread.join().unwrap_or_default();
            bail!(
                "{shown} did not finish within {within:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    })
}

fn ensure_ok(what: &str, out: &Output) -> Result<()> {
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 60)
    );
    Ok(())
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

fn list(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|e| format!("({e})"))
}

/// Serves the component at `wasm`, over TCP only.
async fn serve(wasm: &Path, what: &str) -> Result<Server> {
    Server::start(
        ServerOptions::default()
            .tcp_only()
            .components(&[wasm.to_str().context("path is not UTF-8")?]),
    )
    .await
    .with_context(|| format!("serving {what}"))
}

/// Runs `pitaya-host new NAME` in `dir`: the project's folder.
async fn new_project(dir: &Path, name: &str) -> Result<PathBuf> {
    let mut new = Command::new(host_binary());
    new.args(["new", name]).current_dir(dir);
    let out = tokio::task::spawn_blocking(move || run(new, Duration::from_secs(60))).await??;
    ensure_ok(&format!("`pitaya-host new {name}`"), &out)?;
    Ok(dir.join(name))
}

#[tokio::test]
async fn new_project_builds_and_serves_hello() -> Result<()> {
    let bin = host_binary();
    ensure!(
        bin.is_file(),
        "the server binary {} does not exist",
        bin.display()
    );
    let tmp = TempDir::new("template")?;

    let project = new_project(&tmp.0, "demo").await?;
    ensure!(
        project.join("Cargo.toml").is_file(),
        "`pitaya-host new demo` did not create demo/Cargo.toml; the directory holds: {}",
        list(&tmp.0)
    );
    let ignored = std::fs::read_to_string(project.join(".gitignore"))
        .context("`pitaya-host new demo` must write demo/.gitignore")?;
    ensure!(
        ignored.lines().any(|line| line == "/target"),
        "demo/.gitignore must leave the build out: {ignored:?}"
    );

    let target_dir = workspace_dir().join("target/template-build");
    let mut build = Command::new(cargo());
    build
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target_dir);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || run(build, Duration::from_secs(240))).await??;
    ensure_ok(
        "`cargo build --release --target wasm32-wasip2` of the new project",
        &out,
    )?;
    eprintln!("template build took {:.1?}", started.elapsed());
    let release = target_dir.join("wasm32-wasip2/release");
    let wasm = release.join("demo.wasm");
    ensure!(
        wasm.is_file(),
        "the build produced no {}; {} holds: {}",
        wasm.display(),
        release.display(),
        list(&release)
    );

    let server = serve(&wasm, "the template's demo.wasm").await?;
    let mut c = server.connect_ready(Transport::Tcp).await?;
    let r = call(&mut c, "demo.hello", &json!({"name": "x"})).await?;
    ensure!(
        r == json!({"greeting": "hello x"}),
        "demo.hello {{\"name\":\"x\"}} answered {r}"
    );
    Ok(())
}

/// The `arena` listing of docs/design-patterns.md's appendix, put into a crate from
/// `pitaya-host new arena` as the page says: it builds, passes its own test, and answers the
/// session the page shows (the same response and push), and a handshake without a token is
/// refused with code 400.
#[tokio::test]
async fn the_design_patterns_arena_builds_passes_and_answers_as_shown() -> Result<()> {
    let page = std::fs::read_to_string(workspace_dir().join("docs/design-patterns.md"))?;
    let appendix = &page[page
        .find("## Appendix: the arena component")
        .context("the appendix")?..];
    let block = |after: &str, fence: &str| -> Result<String> {
        let start = appendix.find(after).with_context(|| format!("{after:?}"))? + after.len();
        let start = start + appendix[start..].find(fence).context("fence")? + fence.len();
        let end = start + appendix[start..].find("\n```").context("closing fence")?;
        Ok(appendix[start..end].to_owned())
    };
    let listing = block("`src/lib.rs`:", "```rust\n")?;
    // The output block after the pitaya-cli session: `response ROUTE {json}`, `push ROUTE {json}`.
    let shown = block("\nEOF\n```\n", "```\n")?;
    let mut expected = Vec::new();
    for entry in shown.split("\nresponse ").skip(1) {
        for (i, part) in entry.split("\npush ").enumerate() {
            let (route, json) = part.split_once(' ').context("route and JSON")?;
            let json: serde_json::Value = serde_json::from_str(json)
                .with_context(|| format!("the page's JSON for {route}"))?;
            expected.push((
                if i == 0 { "response" } else { "push" },
                route.to_owned(),
                json,
            ));
        }
    }
    ensure!(
        expected.len() == 2,
        "the page's session output: {expected:?}"
    );

    let tmp = TempDir::new("arena")?;
    let project = new_project(&tmp.0, "arena").await?;
    std::fs::write(project.join("src/lib.rs"), listing)?;
    let target_dir = workspace_dir().join("target/template-build");
    for args in [
        &["build", "--release", "--target", "wasm32-wasip2"][..],
        &["test"][..],
    ] {
        let mut cmd = Command::new(cargo());
        cmd.args(args)
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target_dir);
        let out = tokio::task::spawn_blocking(move || run(cmd, Duration::from_secs(300))).await??;
        ensure_ok(
            &format!("`cargo {}` of the arena listing", args.join(" ")),
            &out,
        )?;
    }
    let wasm = target_dir.join("wasm32-wasip2/release/arena.wasm");
    let server = serve(&wasm, "arena.wasm").await?;

    let mut c = server.connect(Transport::Tcp).await?;
    c.handshake(r#"{"sys":{"platform":"cli"},"user":{"token":"ana"}}"#)
        .await?;
    let enter = c.request("arena.enter", br#"{"room":"red"}"#).await?;
    ensure!(!enter.error, "arena.enter failed: {:?}", enter.json());
    c.send_notify("arena.score", b"{}").await?;
    let scores = c.wait_push(&expected[1].1).await?;
    for ((kind, route, want), mut got) in expected.iter().zip([enter.json()?, scores.json()?]) {
        // `ticks` counts the room's 10 Hz ticks: 1 unless a tick passed between the answer
        // and the notify (a stalled machine), so any count is taken for the page's.
        if let (Some(ticks), Some(shown)) =
            (got.get("ticks").and_then(|t| t.as_u64()), want.get("ticks"))
        {
            ensure!(ticks >= 1, "{kind} {route}: ticks {ticks}");
            got["ticks"] = shown.clone();
        }
        ensure!(
            got == *want,
            "{kind} {route}: the page shows {want}, the host sent {got}"
        );
    }

    let mut stranger = server.connect(Transport::Tcp).await?;
    stranger
        .send_handshake(r#"{"sys":{"platform":"cli"},"user":{}}"#)
        .await?;
    let refused = stranger.wait_handshake().await?;
    ensure!(
        refused.code == 400 && page.contains(&refused.json.to_string()),
        "a handshake without a token: {} (the page quotes the refusal)",
        refused.json
    );
    Ok(())
}
