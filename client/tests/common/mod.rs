//! Test harness: starts the real `pitaya-host` binary on ephemeral loopback ports (learning the
//! addresses from its stdout), runs `pitaya-cli` with a script on stdin, and kills the host when
//! dropped.

#![allow(dead_code)] // each test file uses its own part of the harness

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// How long the host may take to print its addresses (it compiles the components first).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one run of the client may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (this crate lives in `<workspace>/client`).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `PITAYA_HOST_BIN`, else `<workspace>/target/release/pitaya-host`.
pub fn host_binary() -> PathBuf {
    std::env::var_os("PITAYA_HOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/release/pitaya-host"))
}

/// A component file: `PITAYA_COMPONENTS_DIR`, else `<workspace>/target/wasm32-wasip2/release`.
pub fn component(name: &str) -> Result<PathBuf> {
    let dir = std::env::var_os("PITAYA_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/wasm32-wasip2/release"));
    let path = dir.join(name);
    ensure!(
        path.is_file(),
        "the component {} does not exist: run `cargo xtask test` (or build it and set PITAYA_COMPONENTS_DIR)",
        path.display()
    );
    Ok(path)
}

/// A running `pitaya-host serve`.
pub struct Host {
    child: Child,
    /// The first listener's address line, e.g. `tcp://127.0.0.1:41234` (or `tls://` with TLS).
    pub tcp: String,
    /// The second listener's address line, e.g. `ws://127.0.0.1:41235` (or `wss://`).
    pub ws: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// `pitaya-host serve --tcp 127.0.0.1:0 --ws 127.0.0.1:0 EXTRA... echo.wasm`, once it printed
    /// both addresses.
    pub fn start(extra: &[&OsStr]) -> Result<Self> {
        let bin = host_binary();
        ensure!(
            bin.is_file(),
            "the host binary {} does not exist: run `cargo xtask test` (or build it and set PITAYA_HOST_BIN)",
            bin.display()
        );
        let mut command = Command::new(&bin);
        command
            .args(["serve", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
            .args(extra)
            .arg(component("echo.wasm")?)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let stdout = child.stdout.take().context("the host's stdout")?;
        let (tx, rx) = mpsc::channel();
        // Reading goes on after the addresses so that the host never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut host = Self {
            child,
            tcp: String::new(),
            ws: String::new(),
            log,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while host.tcp.is_empty() || host.ws.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "the host printed no addresses within {STARTUP_TIMEOUT:?}\n{}",
                    host.log()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "the host closed its stdout before printing both addresses\n{}",
                    host.log()
                ),
            };
            let line = line.trim().trim_end_matches('/').to_owned();
            if line.starts_with("tcp://") || line.starts_with("tls://") {
                host.tcp = line;
            } else if line.starts_with("ws://") || line.starts_with("wss://") {
                host.ws = line;
            }
        }
        Ok(host)
    }

    /// Asks the host to shut down gracefully (SIGTERM): it kicks every session.
    pub fn terminate(&self) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid")?;
        // SAFETY: kill(2) on our own child's pid, which is not reaped before Drop.
        let result = unsafe { libc::kill(pid, libc::SIGTERM) };
        ensure!(
            result == 0,
            "kill failed: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// The host's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `host:port` of an address line such as `tcp://127.0.0.1:41234`.
pub fn authority(line: &str) -> &str {
    line.split_once("://").map_or(line, |(_, rest)| rest)
}

/// A client whose stdin the test feeds line by line while reading its stdout as it comes.
pub struct LiveCli {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for LiveCli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LiveCli {
    /// Starts `pitaya-cli ARGS` with piped stdin.
    pub fn start(args: &[&OsStr]) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pitaya-cli"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting pitaya-cli")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stderr_pipe = child.stderr.take().context("stderr")?;
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        })
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}").context("writing to pitaya-cli")?;
        stdin.flush().context("writing to pitaya-cli")
    }

    /// Waits (bounded) for a stdout line containing `needle`.
    pub fn expect(&mut self, needle: &str) -> Result<()> {
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return Ok(());
                    }
                }
                Err(_) => bail!(
                    "no line with {needle:?}; stdout so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Closes stdin and waits (bounded) for the exit; returns the status and stderr.
    pub fn finish(mut self) -> Result<(ExitStatus, String)> {
        drop(self.stdin.take());
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            ensure!(Instant::now() < deadline, "pitaya-cli did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self
            .stderr
            .take()
            .map(|thread| thread.join().unwrap_or_default())
            .unwrap_or_default();
        Ok((status, stderr))
    }
}

/// What one run of the client printed, and how it ended.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `pitaya-cli ARGS` with `script` on stdin and waits (bounded) for it to exit.
pub fn run_cli(args: &[&OsStr], script: &str) -> Result<Run> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pitaya-cli"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pitaya-cli")?;
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .context("writing the script")?;
    } // dropped: end of input
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for pitaya-cli")? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "pitaya-cli did not exit within {RUN_TIMEOUT:?}\n--- stdout ---\n{}--- stderr ---\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Run {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}
