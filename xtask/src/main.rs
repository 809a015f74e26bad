//! Project tasks, run as `cargo xtask <task>`: build the components and the host, start the
//! chat demo, run every test. Each task installs the `wasm32-wasip2` target if it is missing,
//! and the system tools the cluster needs (`nats-server`, `etcd`, `protoc`, from Debian
//! packages), so a machine with only rustup, cargo and apt can run them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const WASM_TARGET: &str = "wasm32-wasip2";

/// The programs the cluster build and tests need: `protoc` builds etcd-client, `nats-server`
/// and `etcd` run in the cluster tests.
const SYSTEM_TOOLS: &[&str] = &["nats-server", "etcd", "protoc"];
/// The Debian packages that provide [`SYSTEM_TOOLS`].
const SYSTEM_PACKAGES: &[&str] = &["nats-server", "etcd-server", "protobuf-compiler"];
/// Where those may be besides `PATH`: Debian installs `nats-server` in `/usr/sbin`, which is
/// not on a normal user's `PATH`.
const SYSTEM_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// Component crates and the file each produces.
const COMPONENTS: &[(&str, &str)] = &[
    ("echo-component", "echo"),
    ("echo-next-component", "echo_next"),
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

/// Whether `name` is an executable on `PATH` or in [`SYSTEM_DIRS`].
fn tool_exists(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .any(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `apt-get ARGS`, through `sudo` unless we are root, without questions.
fn apt_get(args: &[&str]) -> Command {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { geteuid() } == 0;
    let mut command = if root {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("apt-get");
        sudo
    };
    command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    command
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// Installs the Debian packages of [`SYSTEM_TOOLS`] when one of the tools is missing. The
/// package lists are refreshed only when a first install fails (a fresh image often has none).
fn ensure_system_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = SYSTEM_TOOLS
        .iter()
        .copied()
        .filter(|tool| !tool_exists(tool))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: {} missing; installing the Debian packages {}",
        missing.join(", "),
        SYSTEM_PACKAGES.join(" ")
    );
    let mut install = vec!["install", "-y"];
    install.extend_from_slice(SYSTEM_PACKAGES);
    if run_command(&mut apt_get(&install)).is_err() {
        run_command(&mut apt_get(&["update"])).context("apt-get update")?;
        run_command(&mut apt_get(&install)).with_context(|| {
            format!(
                "installing {} with apt-get (the cluster needs {}; install them by hand on a \
                 system without apt)",
                SYSTEM_PACKAGES.join(" "),
                SYSTEM_TOOLS.join(", ")
            )
        })?;
    }
    let still: Vec<&str> = SYSTEM_TOOLS
        .iter()
        .copied()
        .filter(|tool| !tool_exists(tool))
        .collect();
    if !still.is_empty() {
        bail!(
            "{} still missing after installing {}",
            still.join(", "),
            SYSTEM_PACKAGES.join(" ")
        );
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
    ensure_system_tools()?;
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

/// Fails on unformatted code, installing rustfmt first when the toolchain lacks it.
fn check_format() -> anyhow::Result<()> {
    let installed = cargo()
        .args(["fmt", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        run_command(Command::new("rustup").args(["component", "add", "rustfmt"]))?;
    }
    run_command(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("unformatted code: run `cargo fmt --all`")
}

fn test() -> anyhow::Result<()> {
    check_format()?;
    ensure_system_tools()?;
    let components = build_components()?;
    // `cargo test` builds the host binary itself (the host's CLI tests need it) with the
    // test build's feature set; building it separately first would compile wasmtime twice.
    // The hosts the tests start keep their compiled-component cache in the target directory,
    // not in the user's home.
    let cache = target_dir().join("test-cache");
    run_command(
        cargo()
            .args(["test", "--release", "--workspace"])
            .env("PITAYA_HOST_BIN", host_binary())
            .env("PITAYA_COMPONENTS_DIR", &components)
            .env("XDG_CACHE_HOME", &cache),
    )?;
    // The criterion benches, each run once as a test (criterion's test mode): they keep
    // compiling, and what they measure keeps working. Their figures come from `cargo bench`.
    run_command(
        cargo()
            .args([
                "test",
                "--release",
                "-p",
                "pitaya-protocol",
                "-p",
                "pitaya-host",
            ])
            .args(["--bench", "codec", "--bench", "dispatch"])
            .env("PITAYA_COMPONENTS_DIR", &components)
            .env("XDG_CACHE_HOME", &cache),
    )
    .context("the criterion benches, run once")?;
    // The browser test: Debian's chromium driven by playwright-core, both installed by setup.sh.
    let browser = root().join("tests").join("browser");
    run_command(Command::new("bash").arg(browser.join("setup.sh")))
        .context("setting up the browser test")?;
    let node = |script: &str| {
        let mut command = Command::new("node");
        command
            .arg(browser.join(script))
            .env("PITAYA_HOST_BIN", host_binary())
            .env("PITAYA_COMPONENTS_DIR", &components)
            .env("XDG_CACHE_HOME", &cache);
        command
    };
    run_command(&mut node("run.mjs")).context("the browser test")?;
    // A client we did not write: pomelo's web client from npm, in Node.js, set up by setup.sh too.
    run_command(&mut node("pomelo.mjs")).context("the pomelo client test")
}
