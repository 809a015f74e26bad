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
    ("lab-component", "lab"),
    ("tadpole-component", "tadpole"),
];

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  build    build the components (wasm32-wasip2) and the host (release)
  demo     build, then serve the chat, tadpole and echo components on tcp 127.0.0.1:3250 and
           ws 127.0.0.1:3251, with the demo pages at http://127.0.0.1:3251/
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

/// Builds the components for wasm32-wasip2 and returns the folder holding them.
fn build_components() -> anyhow::Result<PathBuf> {
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
    let folder = target_dir().join(WASM_TARGET).join("release");
    for (_, file) in COMPONENTS {
        let path = folder.join(format!("{file}.wasm"));
        if !path.exists() {
            bail!("the build did not produce {}", path.display());
        }
    }
    Ok(folder)
}

fn host_binary() -> PathBuf {
    target_dir().join("release").join("pitaya-host")
}

fn build() -> anyhow::Result<PathBuf> {
    let components = build_components()?;
    run_command(cargo().args(["build", "--release", "-p", "pitaya-host"]))
        .context("building the host")?;
    Ok(components)
}

fn demo() -> anyhow::Result<()> {
    let components = build()?;
    eprintln!(
        "xtask: open http://127.0.0.1:3251/chat.html (and tadpole.html) in two tabs; Ctrl-C stops"
    );
    run_command(
        Command::new(host_binary())
            .args([
                "serve",
                "--tcp",
                "127.0.0.1:3250",
                "--ws",
                "127.0.0.1:3251",
                "--web",
            ])
            .arg(root().join("examples").join("web"))
            .arg(components.join("chat.wasm"))
            .arg(components.join("tadpole.wasm"))
            .arg(components.join("echo.wasm")),
    )
}

fn test() -> anyhow::Result<()> {
    let components = build_components()?;
    // `cargo test` builds the host binary itself (the host's CLI tests need it) with the
    // test build's feature set; building it separately first would compile wasmtime twice.
    run_command(
        cargo()
            .args(["test", "--release", "--workspace"])
            .env("PITAYA_HOST_BIN", host_binary())
            .env("PITAYA_COMPONENTS_DIR", &components),
    )?;
    // The browser test: Debian's chromium driven by playwright-core, both installed by setup.sh.
    let browser = root().join("tests").join("browser");
    run_command(Command::new("bash").arg(browser.join("setup.sh")))
        .context("setting up the browser test")?;
    run_command(
        Command::new("node")
            .arg(browser.join("run.mjs"))
            .env("PITAYA_HOST_BIN", host_binary())
            .env("PITAYA_COMPONENTS_DIR", &components),
    )
    .context("the browser test")
}
