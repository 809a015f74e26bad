//! Harness that starts the real `pitaya-host` binary on ephemeral 127.0.0.1 ports, learns its addresses from
//! its stdout, forwards its log (stderr) to the test's output, and kills it when dropped. A cluster host
//! ([`ClusterOptions`]) is ready once it printed `cluster://TYPE/ID`; a backend prints no addresses.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::sync::{mpsc, watch};

use crate::client::{Client, HandshakeReply, Transport};
use crate::codec::PITAYA_HANDSHAKE;

/// How long the server may take to print its addresses (it compiles the components first).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Command-line options of `pitaya-host serve`; `None` leaves the server's default.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub heartbeat: Option<u64>,
    pub handshake_timeout: Option<u64>,
    pub max_packet: Option<u64>,
    pub server_type: Option<String>,
    /// Component file names inside the components directory.
    pub components: Vec<String>,
    /// More command-line arguments, before the components.
    pub extra_args: Vec<String>,
    /// Whether to listen on WebSocket too (`--ws 127.0.0.1:0`); when false only `--tcp` is passed and only the
    /// `tcp://` line is awaited.
    pub ws: bool,
    /// Serve metrics (`--metrics 127.0.0.1:0`) and learn their address.
    pub metrics: bool,
    /// The open-file limits (soft, hard) the server starts with.
    pub nofile: Option<(u64, u64)>,
    /// Joins a cluster (`--cluster ...`); `None` for a standalone host.
    pub cluster: Option<ClusterOptions>,
    /// A name for this server in the test output (several run at once in the cluster tests).
    pub label: Option<String>,
}

/// How a host joins a cluster: `serve --cluster --server-type TYPE [--frontend] --nats URL --etcd URL ...`.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub server_type: String,
    /// A frontend listens for clients (and prints its addresses); a backend binds no listener.
    pub frontend: bool,
    /// `nats://127.0.0.1:PORT`
    pub nats: String,
    /// `http://127.0.0.1:PORT`
    pub etcd: String,
    /// `--etcd-prefix`; `None` leaves the default `pitaya/`.
    pub prefix: Option<String>,
    /// `--request-timeout-ms`; `None` leaves the default 5000.
    pub request_timeout_ms: Option<u64>,
    /// `--forward-by random|uid`; `None` leaves the default.
    pub forward_by: Option<String>,
}

impl ClusterOptions {
    pub fn new(server_type: &str, frontend: bool, nats: &str, etcd: &str) -> Self {
        Self {
            server_type: server_type.to_owned(),
            frontend,
            nats: nats.to_owned(),
            etcd: etcd.to_owned(),
            prefix: None,
            request_timeout_ms: None,
            forward_by: None,
        }
    }

    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_owned());
        self
    }

    pub fn request_timeout_ms(mut self, ms: u64) -> Self {
        self.request_timeout_ms = Some(ms);
        self
    }

    pub fn forward_by(mut self, how: &str) -> Self {
        self.forward_by = Some(how.to_owned());
        self
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            heartbeat: None,
            handshake_timeout: None,
            max_packet: None,
            server_type: None,
            components: vec!["echo.wasm".into(), "chat.wasm".into()],
            extra_args: Vec::new(),
            ws: true,
            metrics: false,
            nofile: None,
            cluster: None,
            label: None,
        }
    }
}

impl ServerOptions {
    pub fn heartbeat(mut self, secs: u64) -> Self {
        self.heartbeat = Some(secs);
        self
    }

    pub fn handshake_timeout(mut self, secs: u64) -> Self {
        self.handshake_timeout = Some(secs);
        self
    }

    pub fn max_packet(mut self, bytes: u64) -> Self {
        self.max_packet = Some(bytes);
        self
    }

    pub fn server_type(mut self, name: &str) -> Self {
        self.server_type = Some(name.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Two arguments, such as a flag and its value.
    pub fn args(mut self, flag: &str, value: impl ToString) -> Self {
        self.extra_args.push(flag.to_owned());
        self.extra_args.push(value.to_string());
        self
    }

    /// Serves exactly these components: file names inside the components directory, or absolute paths.
    pub fn components<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.components = names.iter().map(|n| n.as_ref().to_owned()).collect();
        self
    }

    /// Listens on TCP only.
    pub fn tcp_only(mut self) -> Self {
        self.ws = false;
        self
    }

    /// Serves metrics on an ephemeral port ([`Server::metrics_text`]).
    pub fn with_metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Starts the server with these open-file limits (`setrlimit` in the child before exec).
    pub fn open_files(mut self, soft: u64, hard: u64) -> Self {
        self.nofile = Some((soft, hard));
        self
    }

    /// Joins a cluster.
    pub fn cluster(mut self, cluster: ClusterOptions) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Names this server in the test output.
    pub fn label(mut self, label: &str) -> Self {
        self.label = Some(label.to_owned());
        self
    }
}

/// The workspace root (this crate lives in `<workspace>/tests`).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `PITAYA_HOST_BIN`, else `<workspace>/target/release/pitaya-host`.
pub fn host_binary() -> PathBuf {
    std::env::var_os("PITAYA_HOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/release/pitaya-host"))
}

/// `PITAYA_COMPONENTS_DIR`, else `<workspace>/target/wasm32-wasip2/release/`.
pub fn components_dir() -> PathBuf {
    std::env::var_os("PITAYA_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/wasm32-wasip2/release"))
}

/// A running `pitaya-host`.
pub struct Server {
    child: Mutex<Child>,
    /// The server's process id.
    pub pid: u32,
    pub tcp: SocketAddr,
    /// The WebSocket listener (0.0.0.0:0 when started with [`ServerOptions::tcp_only`]).
    pub ws: SocketAddr,
    /// The metrics endpoint, when started [`ServerOptions::with_metrics`].
    pub metrics: Option<SocketAddr>,
    /// A cluster host's server id and type, from its `cluster://TYPE/ID` line.
    pub cluster_id: Option<String>,
    pub cluster_type: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
    /// Counts the stderr lines read so far; `true` in the second field once stderr reached EOF.
    log_lines: watch::Receiver<(usize, bool)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Server {
    /// Starts a server with the default options (components echo and chat).
    pub async fn start_default() -> Result<Self> {
        Self::start(ServerOptions::default()).await
    }

    /// Starts `pitaya-host serve --tcp 127.0.0.1:0 --ws 127.0.0.1:0 ...` and waits until it printed both
    /// addresses.
    pub async fn start(opts: ServerOptions) -> Result<Self> {
        let bin = host_binary();
        if !bin.is_file() {
            bail!(
                "the server binary {} does not exist: run `cargo xtask test` (or build it and set PITAYA_HOST_BIN)",
                bin.display()
            );
        }
        let dir = components_dir();
        let mut components = Vec::new();
        for name in &opts.components {
            let path = dir.join(name);
            if !path.is_file() {
                bail!(
                    "the component {} does not exist: run `cargo xtask test` (or build it and set PITAYA_COMPONENTS_DIR)",
                    path.display()
                );
            }
            components.push(path);
        }

        let mut cmd = Command::new(&bin);
        cmd.arg("serve");
        // A cluster backend binds no listener and prints no address.
        let listens = opts.cluster.as_ref().is_none_or(|c| c.frontend);
        if let Some(c) = &opts.cluster {
            ensure!(
                opts.server_type.is_none(),
                "give a cluster host its type in ClusterOptions, not ServerOptions::server_type"
            );
            cmd.args(["--cluster", "--server-type", &c.server_type]);
            if c.frontend {
                cmd.arg("--frontend");
            }
            cmd.args(["--nats", &c.nats, "--etcd", &c.etcd]);
            if let Some(p) = &c.prefix {
                cmd.args(["--etcd-prefix", p]);
            }
            if let Some(ms) = c.request_timeout_ms {
                cmd.args(["--request-timeout-ms", &ms.to_string()]);
            }
            if let Some(f) = &c.forward_by {
                cmd.args(["--forward-by", f]);
            }
        }
        if listens {
            cmd.args(["--tcp", "127.0.0.1:0"]);
            if opts.ws {
                cmd.args(["--ws", "127.0.0.1:0"]);
            }
        }
        if let Some(h) = opts.heartbeat {
            cmd.args(["--heartbeat", &h.to_string()]);
        }
        if let Some(t) = opts.handshake_timeout {
            cmd.args(["--handshake-timeout", &t.to_string()]);
        }
        if let Some(m) = opts.max_packet {
            cmd.args(["--max-packet", &m.to_string()]);
        }
        if let Some(s) = &opts.server_type {
            cmd.args(["--server-type", s]);
        }
        if opts.metrics {
            cmd.args(["--metrics", "127.0.0.1:0"]);
        }
        if let Some((soft, hard)) = opts.nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setrlimit, which is async-signal-safe, on a value copied into it.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd.args(&opts.extra_args);
        // Plain log lines in the test output.
        cmd.env("NO_COLOR", "1");
        cmd.args(&components)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("{cmd:?}");
        let mut child = cmd.spawn().with_context(|| format!("spawning {shown}"))?;

        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, log_lines) = watch::channel((0usize, false));
        // stderr: forwarded line by line to the test's stderr (shown when a test fails) and kept.
        let stderr = child.stderr.take().context("child stderr")?;
        let log2 = Arc::clone(&log);
        let name = match &opts.label {
            Some(l) => format!("pitaya-host {l}"),
            None => "pitaya-host".to_owned(),
        };
        let name2 = name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{name2}] {line}");
                log2.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                lines_tx.send_modify(|(n, _)| *n += 1);
            }
            lines_tx.send_modify(|(_, eof)| *eof = true);
        });
        // stdout: address lines go to the channel; reading goes on so the server never blocks on a full pipe.
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{name} stdout] {line}");
                let _ = tx.send(line);
            }
        });

        let pid = child.id();
        let mut server = Server {
            child: Mutex::new(child),
            pid,
            tcp: SocketAddr::from(([0, 0, 0, 0], 0)),
            ws: SocketAddr::from(([0, 0, 0, 0], 0)),
            metrics: None,
            cluster_id: None,
            cluster_type: None,
            log,
            log_lines,
        };
        let unused = SocketAddr::from(([0, 0, 0, 0], 0));
        let (mut tcp, mut ws) = match (listens, opts.ws) {
            (false, _) => (Some(unused), Some(unused)),
            (true, true) => (None, None),
            (true, false) => (None, Some(unused)),
        };
        let mut cluster = if opts.cluster.is_some() {
            None
        } else {
            Some((String::new(), String::new()))
        };
        let awaited = match (&opts.cluster, listens) {
            (None, _) => "both listener addresses",
            (Some(_), true) => "its listener addresses and its cluster:// line",
            (Some(_), false) => "its cluster:// line",
        };
        let mut metrics = if opts.metrics { None } else { Some(unused) };
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        while tcp.is_none() || ws.is_none() || cluster.is_none() || metrics.is_none() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => bail!(
                    "{shown} did not print {awaited} within {STARTUP_TIMEOUT:?}\n{}",
                    server.log_tail(40)
                ),
                Ok(None) => {
                    let status = server.exit_status();
                    bail!(
                        "{shown} closed its stdout ({status}) before printing {awaited}\n{}",
                        server.log_tail(40)
                    )
                }
                Ok(Some(line)) => {
                    let line = line.trim();
                    if let Some(rest) = line.strip_prefix("cluster://") {
                        let (ty, id) = rest
                            .split_once('/')
                            .with_context(|| format!("bad cluster line {line:?}: no TYPE/ID"))?;
                        let want = opts.cluster.as_ref().map(|c| c.server_type.as_str());
                        ensure!(
                            Some(ty) == want,
                            "cluster line {line:?} names type {ty:?}, the host was started as {want:?}"
                        );
                        ensure!(
                            !id.is_empty() && !id.contains('/'),
                            "bad server id in {line:?}"
                        );
                        cluster = Some((ty.to_owned(), id.to_owned()));
                    } else if let Some(a) = line.strip_prefix("tcp://") {
                        tcp = Some(
                            a.parse::<SocketAddr>()
                                .with_context(|| format!("bad address line {line:?}"))?,
                        );
                    } else if let Some(a) = line
                        .strip_prefix("metrics http://")
                        .and_then(|a| a.strip_suffix("/metrics"))
                    {
                        metrics = Some(
                            a.parse::<SocketAddr>()
                                .with_context(|| format!("bad metrics line {line:?}"))?,
                        );
                    } else if let Some(a) = line.strip_prefix("ws://") {
                        let a = a.trim_end_matches('/');
                        ws = Some(
                            a.parse::<SocketAddr>()
                                .with_context(|| format!("bad address line {line:?}"))?,
                        );
                    }
                }
            }
        }
        server.tcp = tcp.expect("loop ends when set");
        server.ws = ws.expect("loop ends when set");
        server.metrics = metrics.filter(|_| opts.metrics);
        if opts.cluster.is_some() {
            let (ty, id) = cluster.expect("loop ends when set");
            server.cluster_type = Some(ty);
            server.cluster_id = Some(id);
        }
        Ok(server)
    }

    /// A cluster host's server id (from its `cluster://TYPE/ID` line).
    pub fn id(&self) -> Result<&str> {
        self.cluster_id
            .as_deref()
            .context("this host was not started in a cluster")
    }

    /// The text of `/metrics` (the server must have been started [`ServerOptions::with_metrics`]).
    pub async fn metrics_text(&self) -> Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self
            .metrics
            .context("the server was started without metrics")?;
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
                .await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
        };
        let response = tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .context("fetching /metrics timed out")??;
        ensure!(
            response.starts_with("HTTP/1.1 200"),
            "/metrics answered {:?}",
            response.lines().next()
        );
        Ok(response)
    }

    /// The value of the metric line starting with `series` (name and labels), if present.
    pub async fn metric(&self, series: &str) -> Result<Option<f64>> {
        let text = self.metrics_text().await?;
        Ok(text.lines().find_map(|line| {
            let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
            rest.trim().parse().ok()
        }))
    }

    /// Descriptors the server process has open, from `/proc/PID/fd`.
    pub fn open_files(&self) -> Result<usize> {
        let dir = format!("/proc/{}/fd", self.pid);
        Ok(std::fs::read_dir(&dir)
            .with_context(|| format!("listing {dir}"))?
            .count())
    }

    /// The listener of `transport`.
    pub fn addr(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Tcp => self.tcp,
            Transport::Ws => self.ws,
        }
    }

    /// A new connection, not handshaken.
    pub async fn connect(&self, transport: Transport) -> Result<Client> {
        Client::connect(transport, self.addr(transport)).await
    }

    /// A new connection after a pitaya-style handshake and the ack: ready for requests.
    pub async fn connect_ready(&self, transport: Transport) -> Result<Client> {
        let mut c = self.connect(transport).await?;
        c.handshake(PITAYA_HANDSHAKE)
            .await
            .with_context(|| format!("handshake over {transport}"))?;
        Ok(c)
    }

    /// Like [`Server::connect_ready`], also returning the handshake reply.
    pub async fn connect_ready_with_reply(
        &self,
        transport: Transport,
    ) -> Result<(Client, HandshakeReply)> {
        let c = self.connect_ready(transport).await?;
        let reply = c.handshake.clone().context("handshake reply kept")?;
        Ok((c, reply))
    }

    /// Sends the signal `sig` (such as `libc::SIGTERM`) to the server process.
    pub fn signal(&self, sig: i32) -> Result<()> {
        // The child is not reaped before `wait_exit` or drop, so the pid still names it.
        let pid = i32::try_from(self.pid).context("pid out of range")?;
        // SAFETY: kill(2) has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, sig) };
        ensure!(
            rc == 0,
            "kill({pid}, {sig}) failed: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// The exit status, once the process has exited.
    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        child.try_wait().ok().flatten()
    }

    /// Waits until the process exits (checking every 10 ms), at most `within`.
    pub async fn wait_exit(&self, within: Duration) -> Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            if let Some(status) = self.try_exit_status() {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the server did not exit within {within:?}\n{}",
                    self.log_tail(30)
                );
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        self.try_exit_status().is_none()
    }

    /// `VmRSS` of the server process, in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> Result<u64> {
        crate::procfs::rss_kib(self.pid)
    }

    /// The first stderr line (so far) containing `needle`.
    pub fn log_line_containing(&self, needle: &str) -> Option<String> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().find(|l| l.contains(needle)).cloned()
    }

    /// Every stderr line read so far, in order.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Number of stderr lines read so far.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until a stderr line at index `from` or later contains `needle`; returns it. Fails after `within`,
    /// or when stderr ends without such a line.
    pub async fn wait_log_from(
        &self,
        from: usize,
        needle: &str,
        within: Duration,
    ) -> Result<String> {
        let mut rx = self.log_lines.clone();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let eof = rx.borrow_and_update().1;
            {
                let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(l) = log.iter().skip(from).find(|l| l.contains(needle)) {
                    return Ok(l.clone());
                }
            }
            if eof {
                bail!(
                    "the server's stderr ended without a line containing {needle:?} ({})\n{}",
                    self.exit_status(),
                    self.log_tail(30)
                );
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => bail!(
                    "no stderr line containing {needle:?} within {within:?} ({})\n{}",
                    self.exit_status(),
                    self.log_tail(30)
                ),
                Ok(Err(_)) => {
                    // The reader thread is gone: one last look happens at the top of the loop.
                    let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(l) = log.iter().skip(from).find(|l| l.contains(needle)) {
                        return Ok(l.clone());
                    }
                    bail!(
                        "the server's stderr ended without a line containing {needle:?}\n{}",
                        self.log_tail(30)
                    );
                }
                Ok(Ok(())) => {}
            }
        }
    }

    /// Waits until any stderr line contains `needle`.
    pub async fn wait_log(&self, needle: &str, within: Duration) -> Result<String> {
        self.wait_log_from(0, needle, within).await
    }

    /// "still running", or how the server exited.
    pub fn exit_status(&self) -> String {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match child.try_wait() {
            Ok(None) => "still running".into(),
            Ok(Some(status)) => format!("exited: {status}"),
            Err(e) => format!("status unknown: {e}"),
        }
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let start = log.len().saturating_sub(n);
        let mut s = format!(
            "--- pitaya-host log (last {} of {} lines) ---",
            log.len() - start,
            log.len()
        );
        for line in &log[start..] {
            s.push('\n');
            s.push_str(line);
        }
        s
    }

    /// Runs `scenario` over TCP, then over WebSocket (both even when the first fails), and reports every
    /// failure, each with its transport and the server's state.
    pub async fn each_transport<F, Fut>(&self, scenario: F) -> Result<()>
    where
        F: Fn(Transport) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        self.transports(&Transport::ALL, scenario).await
    }

    /// Runs `scenario` for each of `transports`; see [`Server::each_transport`].
    pub async fn transports<F, Fut>(&self, transports: &[Transport], scenario: F) -> Result<()>
    where
        F: Fn(Transport) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let mut failures = Vec::new();
        for &t in transports {
            if let Err(e) = scenario(t).await {
                failures.push(format!("over {t}: {e:#}"));
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        bail!(
            "{}\n(server {})\n{}",
            failures.join("\n\n"),
            self.exit_status(),
            self.log_tail(30)
        )
    }
}
