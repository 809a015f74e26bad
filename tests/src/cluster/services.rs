//! Starts a real `nats-server` and `etcd` for one test, each on a free 127.0.0.1 port with its own temporary
//! directory, waits until each answers a real client, and kills both when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::tempdir::TempDir;

/// How long a service may take to accept a client (etcd elects itself leader first).
pub const SERVICE_STARTUP: Duration = Duration::from_secs(20);

/// Where Debian and friends put these binaries, besides `PATH` (`nats-server` is in `/usr/sbin` on Debian, which
/// is not on a normal user's `PATH`).
const EXTRA_DIRS: &[&str] = &[
    "/usr/sbin",
    "/usr/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/sbin",
];

/// The path of the executable `name`, from `PATH` or the usual system folders.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = path_dirs
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from));
    for dir in candidates {
        let p = dir.join(name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    bail!(
        "`{name}` was not found on PATH nor in {EXTRA_DIRS:?}: the cluster tests need nats-server and etcd; \
         `cargo xtask test` installs them (Debian packages nats-server etcd-server)"
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A port that was free a moment ago. The service binds it right after; a lost race shows as a failed start,
/// which [`Services::start`] retries with another port.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(l.local_addr()?.port())
}

/// One child process, killed and reaped on drop; its output goes to a log file in its own directory.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// Removed after the process is gone (declared after `child` so it drops later).
    _dir: TempDir,
}

impl Proc {
    fn spawn(name: &'static str, bin: &Path, args: &[String], dir: TempDir) -> Result<Self> {
        let log = dir.0.join(format!("{name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {} {args:?}", bin.display()))?;
        Ok(Self {
            name,
            child,
            log,
            _dir: dir,
        })
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("exited: {status}")),
            Ok(None) => None,
            Err(e) => Some(format!("status unknown: {e}")),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(20);
        format!(
            "--- {} log (last lines) ---\n{}",
            self.name,
            lines[start..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `nats-server`.
pub struct Nats {
    proc: Proc,
    /// `nats://127.0.0.1:PORT`
    pub url: String,
}

impl Nats {
    async fn start() -> Result<Self> {
        let bin = find_binary("nats-server")?;
        let port = free_port()?;
        let dir = TempDir::new("nats")?;
        let args = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-P".into(),
            dir.0.join("nats.pid").display().to_string(),
        ];
        let mut proc = Proc::spawn("nats-server", &bin, &args, dir)?;
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + SERVICE_STARTUP;
        loop {
            // A real client round trip: connect, then flush (a PING answered by a PONG).
            let attempt = async {
                let c = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_millis(500))
                    .connect(url.as_str())
                    .await?;
                c.flush().await?;
                anyhow::Ok(())
            };
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                return Ok(Self { proc, url });
            }
            if let Some(status) = proc.exited() {
                bail!(
                    "nats-server on {url} {status} before accepting clients\n{}",
                    proc.log_tail()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "nats-server on {url} did not accept a client within {SERVICE_STARTUP:?}\n{}",
                    proc.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A new client connection.
    pub async fn client(&self) -> Result<async_nats::Client> {
        async_nats::connect(self.url.as_str())
            .await
            .with_context(|| format!("connecting to NATS at {}", self.url))
    }

    /// The log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }
}

/// A running single-member `etcd`.
pub struct Etcd {
    proc: Proc,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Etcd {
    async fn start() -> Result<Self> {
        let bin = find_binary("etcd")?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let dir = TempDir::new("etcd")?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let args: Vec<String> = vec![
            "--name".into(),
            "test".into(),
            "--data-dir".into(),
            dir.0.join("data").display().to_string(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url.clone(),
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            peer_url.clone(),
            "--initial-cluster".into(),
            format!("test={peer_url}"),
            "--log-level".into(),
            "warn".into(),
            "--logger".into(),
            "zap".into(),
        ];
        let mut proc = Proc::spawn("etcd", &bin, &args, dir)?;
        let deadline = tokio::time::Instant::now() + SERVICE_STARTUP;
        loop {
            // A real read: it succeeds only once the member is leader and serving.
            let attempt = async {
                let mut c = etcd_client::Client::connect([client_url.as_str()], None).await?;
                c.get("pitaya-tests/ready", None).await?;
                anyhow::Ok(())
            };
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                return Ok(Self {
                    proc,
                    url: client_url,
                });
            }
            if let Some(status) = proc.exited() {
                bail!(
                    "etcd on {client_url} {status} before serving\n{}",
                    proc.log_tail()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "etcd on {client_url} did not serve a read within {SERVICE_STARTUP:?}\n{}",
                    proc.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new client.
    pub async fn client(&self) -> Result<etcd_client::Client> {
        etcd_client::Client::connect([self.url.as_str()], None)
            .await
            .with_context(|| format!("connecting to etcd at {}", self.url))
    }

    /// The log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }
}

/// NATS and etcd for one test.
pub struct Services {
    pub nats: Nats,
    pub etcd: Etcd,
}

impl Services {
    /// Starts both (in parallel), each retried once on another port if it fails to start (a port taken between
    /// the probe and the bind).
    pub async fn start() -> Result<Self> {
        let (nats, etcd) = tokio::join!(retry(Nats::start), retry(Etcd::start));
        Ok(Self {
            nats: nats.context("starting nats-server")?,
            etcd: etcd.context("starting etcd")?,
        })
    }
}

async fn retry<T, F, Fut>(start: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match start().await {
        Ok(t) => Ok(t),
        Err(first) => start()
            .await
            .with_context(|| format!("second attempt (the first failed: {first:#})")),
    }
}
