//! Helpers shared by the host's own integration tests: start the binary, read its addresses.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, ensure};

/// The host, killed when dropped.
pub struct Host {
    child: Child,
    /// The `tcp://` address it printed, if any.
    pub tcp: Option<String>,
    /// The `ws://` address it printed, if any.
    pub ws: Option<String>,
    /// The metrics address it printed, if any.
    pub metrics: Option<String>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the test build's components are.
pub fn components_dir() -> PathBuf {
    std::env::var_os("PITAYA_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
        })
}

/// A component file, which must exist.
pub fn component(file: &str) -> Result<PathBuf> {
    let path = components_dir().join(file);
    ensure!(
        path.exists(),
        "{} is missing: run `cargo xtask test`, which builds the components first",
        path.display()
    );
    Ok(path)
}

/// Starts `pitaya-host serve ARGS` and waits until it has printed `listeners` address lines.
pub fn start(args: &[&std::ffi::OsStr], listeners: usize) -> Result<Host> {
    spawn(args, listeners, |_| ())
}

/// Like [`start`], with no `RUST_LOG` (the host's default log filter), and a thread that reads
/// its log until it exits: join it, once the host is dropped, for everything it logged.
#[allow(dead_code)] // not every test binary that shares this module reads the log
pub fn start_with_default_log(
    args: &[&std::ffi::OsStr],
    listeners: usize,
) -> Result<(Host, std::thread::JoinHandle<String>)> {
    let mut host = spawn(args, listeners, |command| {
        command.env_remove("RUST_LOG").stderr(Stdio::piped());
    })?;
    let mut stderr = host.child.stderr.take().context("no stderr")?;
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
        log
    });
    Ok((host, log))
}

fn spawn(
    args: &[&std::ffi::OsStr],
    listeners: usize,
    configure: impl FnOnce(&mut Command),
) -> Result<Host> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pitaya-host"));
    command
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    configure(&mut command);
    let mut child = command.spawn().context("cannot start pitaya-host")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut host = Host {
        child,
        tcp: None,
        ws: None,
        metrics: None,
    };
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..listeners {
        let line = lines.next().context("the host exited before listening")??;
        if let Some(addr) = line.strip_prefix("tcp://") {
            host.tcp = Some(addr.to_owned());
        } else if let Some(addr) = line.strip_prefix("ws://") {
            host.ws = Some(addr.to_owned());
        } else if let Some(url) = line.strip_prefix("metrics http://") {
            host.metrics = url.strip_suffix("/metrics").map(str::to_owned);
        }
    }
    Ok(host)
}

/// A packet: type, 3-byte big-endian length, body.
pub fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len();
    let mut out = vec![kind, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    out.extend_from_slice(body);
    out
}
