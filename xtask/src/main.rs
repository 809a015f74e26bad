//! Project tasks, run as `cargo xtask <task>`: build the components and the host, start the
//! chat demo, run every test. Each task installs the `wasm32-wasip2` target if it is missing,
//! so a machine with only rustup and cargo can run them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const WASM_TARGET: &str = "wasm32-wasip2";

/// Component crates and the file each produces.
const COMPONENTS: &[(&str, &str)] = &[
    ("echo-component", "echo"),
    ("chat-component", "chat"),
    ("hostile-component", "hostile"),
];

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  build    build the components (wasm32-wasip2) and the host (release)
  demo     build, then serve the chat and echo components on tcp 127.0.0.1:3250 and ws 127.0.0.1:3251
  test     build, then run every test of the workspace";

fn main() {
    if let Err(error) = run() {
        eprintln!("xtask: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "build" => build().map(|_| ()),
        "demo" => demo(),
        "test" => test(),
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown task {task:?}");
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one folder below the workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

fn run_command(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn ensure_wasm_target() -> anyhow::Result<()> {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("cannot run rustup: the wasm32-wasip2 target is installed with rustup")?;
    let installed = String::from_utf8_lossy(&output.stdout);
    if !installed.lines().any(|line| line.trim() == WASM_TARGET) {
        eprintln!("xtask: installing the {WASM_TARGET} target");
        run_command(Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
    }
    Ok(())
}

/// Paths of what `build` produced.
struct Built {
    host: PathBuf,
    components: PathBuf,
}

fn build() -> anyhow::Result<Built> {
    ensure_wasm_target()?;
    let mut components = cargo();
    components.args(["build", "--release", "--target", WASM_TARGET]);
    // The host keeps line tables for backtraces; components need none, and without them a
    // component is about 80 KB instead of 3 MB.
    components.env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    for (package, _) in COMPONENTS {
        components.args(["-p", package]);
    }
    run_command(&mut components).context("building the components")?;
    run_command(cargo().args(["build", "--release", "-p", "pitaya-host"]))
        .context("building the host")?;
    let built = Built {
        host: target_dir().join("release").join("pitaya-host"),
        components: target_dir().join(WASM_TARGET).join("release"),
    };
    for (_, file) in COMPONENTS {
        let path = built.components.join(format!("{file}.wasm"));
        if !path.exists() {
            bail!("the build did not produce {}", path.display());
        }
    }
    Ok(built)
}

fn demo() -> anyhow::Result<()> {
    let built = build()?;
    eprintln!("xtask: serving the chat demo (Ctrl-C stops it)");
    run_command(
        Command::new(&built.host)
            .args(["serve", "--tcp", "127.0.0.1:3250", "--ws", "127.0.0.1:3251"])
            .arg(built.components.join("chat.wasm"))
            .arg(built.components.join("echo.wasm")),
    )
}

fn test() -> anyhow::Result<()> {
    let built = build()?;
    run_command(
        cargo()
            .args([
                "test",
                "--release",
                "--workspace",
                "--exclude",
                "echo-component",
                "--exclude",
                "chat-component",
            ])
            .env("PITAYA_HOST_BIN", &built.host)
            .env("PITAYA_COMPONENTS_DIR", &built.components),
    )
}
