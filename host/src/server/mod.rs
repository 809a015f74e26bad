//! The server: loads components, binds the listeners, accepts connections (up to a cap),
//! reloads components when asked, and shuts down gracefully.

mod connection;
pub mod files;
mod remote;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use pitaya_protocol::{ConnectionConfig, EncodeOptions, Serializer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::cluster::{Cluster, ClusterConfig, ClusterError};
use crate::group::Groups;
use crate::metrics::Metrics;
use crate::router::{Router, RouterError};
use crate::runtime::{ComponentHandle, ComponentOptions, HostContext, LoadError, Runtime, Tweak};
use crate::session::Registry;
use crate::transport::TransportKind;
use crate::transport::tls::{self, TlsError};

/// The least time the components' shutdown hooks get, even when closing the sessions took the
/// whole `--shutdown-timeout`: a hook that saves the game's state matters more than a client
/// that would not close.
const HOOKS_AT_LEAST: Duration = Duration::from_secs(1);

/// Everything the server is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP listen address, or none for no TCP listener.
    pub tcp: Option<SocketAddr>,
    /// WebSocket listen address, or none for no WebSocket listener.
    pub ws: Option<SocketAddr>,
    /// A folder served over plain HTTP on the WebSocket port (browser games' pages).
    pub web: Option<PathBuf>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// TLS certificate chain and private key (PEM files): both listeners then speak TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// This server's type, the optional first part of routes.
    pub server_type: String,
    /// Protocol limits and timers.
    pub connection: ConnectionConfig,
    /// How responses and pushes are encoded.
    pub encode: EncodeOptions,
    /// Push routes (such as `onMessage`) to offer in the handshake's dictionary beside the
    /// handler routes, so that `push_route_codes` can send them as codes.
    pub push_routes: Vec<String>,
    /// The payload serializer advertised in the handshake; the host's own error payloads use it.
    pub serializer: Serializer,
    /// Packets queued for one client before it counts as not reading and is disconnected.
    pub send_queue: usize,
    /// Bytes queued for one client before it counts as not reading and is disconnected.
    pub send_queue_bytes: usize,
    /// Largest response or push payload a component may produce.
    pub max_response: usize,
    /// Whether kicks carry `{"reason":...}`.
    pub kick_reasons: bool,
    /// Whether binding a uid held by another session fails instead of kicking that session.
    pub refuse_duplicate_login: bool,
    /// Requests (and notifies) per second one session may send; over it requests get PIT-429.
    pub rate_limit: Option<u32>,
    /// Most simultaneous connections; more are closed as they are accepted.
    pub max_connections: Option<usize>,
    /// Reload a component when its file changes.
    pub watch: bool,
    /// How long a graceful shutdown may take.
    pub shutdown_timeout: Duration,
    /// The component files to serve.
    pub components: Vec<PathBuf>,
    /// Options for components without options of their own.
    pub default_options: ComponentOptions,
    /// Changes by component name, applied on top of the file options (or the defaults).
    pub component_tweaks: Vec<(String, Tweak)>,
    /// Options by component file.
    pub file_options: HashMap<PathBuf, ComponentOptions>,
    /// How this host takes part in a cluster; none for a standalone host.
    pub cluster: Option<ClusterConfig>,
    /// Where compiled components are kept across starts; none compiles every time. The
    /// command line's default is [`crate::runtime::default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tcp: Some(SocketAddr::from(([127, 0, 0, 1], 3250))),
            ws: Some(SocketAddr::from(([127, 0, 0, 1], 3251))),
            web: None,
            metrics: None,
            tls: None,
            server_type: "connector".into(),
            connection: ConnectionConfig::default(),
            encode: EncodeOptions {
                compress: false,
                push_route_codes: false,
            },
            push_routes: Vec::new(),
            serializer: Serializer::Json,
            send_queue: 1024,
            send_queue_bytes: 4 << 20,
            max_response: 1 << 20,
            kick_reasons: false,
            refuse_duplicate_login: false,
            rate_limit: None,
            max_connections: None,
            watch: false,
            shutdown_timeout: Duration::from_secs(5),
            components: Vec::new(),
            default_options: ComponentOptions::default(),
            component_tweaks: Vec::new(),
            file_options: HashMap::new(),
            cluster: None,
            cache_dir: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A component failed to load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Two components claim the same routes.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A listener could not be bound.
    #[error("cannot listen on {transport} {addr}: {cause}")]
    Bind {
        /// Which listener.
        transport: TransportKind,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        cause: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The metrics endpoint could not be bound.
    #[error("cannot listen for metrics on {addr}: {cause}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        cause: std::io::Error,
    },
    /// Neither TCP nor WebSocket is enabled.
    #[error("no listener: enable TCP, WebSocket or both")]
    NoListener,
    /// The host could not join its cluster.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// What every connection task shares.
struct Shared {
    router: Router,
    registry: Arc<Registry>,
    context: Arc<HostContext>,
    config: ServerConfig,
    connection: Arc<ConnectionConfig>,
    connections: Option<Arc<Semaphore>>,
    /// The cap behind `connections`: `--max-connections` or the open-file limit, the lower.
    max_connections: Option<usize>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    runtime: Arc<Runtime>,
}

/// A loaded, listening server that has not started accepting yet.
pub struct Server {
    shared: Arc<Shared>,
    tcp: Option<TcpListener>,
    ws: Option<TcpListener>,
    metrics: Option<TcpListener>,
    cluster: Option<Arc<Cluster>>,
    /// With `--watch`, each component file's stamp as it was loaded: what a change is
    /// measured against, taken before the addresses are printed so that no change is missed.
    watched: Option<Vec<Stamp>>,
}

impl Server {
    /// Loads every component (compiling them, running their `init`) and binds the listeners.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        let backend = config.cluster.as_ref().is_some_and(|c| !c.frontend);
        if config.tcp.is_none() && config.ws.is_none() && !backend {
            return Err(ServerError::NoListener);
        }
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls::acceptor(cert, key)?),
            None => None,
        };
        let registry = Arc::new(Registry::default());
        let context = Arc::new(HostContext {
            registry: registry.clone(),
            groups: Groups::new(config.components.len()),
            encode: config.encode.clone(),
            json_payloads: config.serializer == Serializer::Json,
            dict: Default::default(),
            kick_reasons: config.kick_reasons,
            refuse_duplicate_login: config.refuse_duplicate_login,
            max_payload: config.max_response,
            runtime: tokio::runtime::Handle::current(),
            metrics: Arc::new(Metrics::default()),
            cluster: Default::default(),
        });
        let paths = config.components.clone();
        tracing::info!(count = paths.len(), "loading components");
        let defaults = config.default_options.clone();
        let tweaks = config.component_tweaks.clone();
        let by_file = config.file_options.clone();
        let cache_dir = config.cache_dir.clone();
        let loader_context = context.clone();
        // Compiling is CPU work that must not stall the async runtime's threads.
        let (runtime, loaded) = tokio::task::spawn_blocking(move || {
            let fuel = std::iter::once(&defaults)
                .chain(by_file.values())
                .any(|options| options.limits.fuel.is_some())
                || tweaks
                    .iter()
                    .any(|(_, tweak)| matches!(tweak, Tweak::Fuel(_)));
            // The most instances alive at a time: each component's own, twice over while a
            // reload starts the new build's beside the old ones, and the one that a load starts
            // to learn what the component declares; and two to spare.
            let tweaked = tweaks
                .iter()
                .filter_map(|(_, tweak)| match tweak {
                    Tweak::Instances(count) => Some(*count),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            let alive = paths
                .iter()
                .map(|path| {
                    let own = by_file.get(path).unwrap_or(&defaults).instances;
                    own.max(tweaked) * 2 + 1
                })
                .sum::<usize>()
                + 2;
            let mut runtime = Runtime::new(loader_context, fuel, Some(alive))?;
            if let Some(dir) = cache_dir {
                runtime = runtime.with_cache(dir);
            }
            let options = |path: &std::path::Path, name: &str| {
                let mut options = by_file.get(path).unwrap_or(&defaults).clone();
                for (_, tweak) in tweaks.iter().filter(|(target, _)| target == name) {
                    options.apply(tweak);
                }
                options
            };
            let loaded = paths
                .into_iter()
                .enumerate()
                .map(|(index, path)| runtime.load(path, index, &options))
                .collect::<Result<Vec<ComponentHandle>, LoadError>>()?;
            Ok::<_, LoadError>((runtime, loaded))
        })
        .await
        .map_err(|e| LoadError::Engine(format!("loader thread failed: {e}")))??;
        for component in &loaded {
            let routes: Vec<String> = component
                .handlers()
                .iter()
                .map(|h| format!("{}.{}", component.name(), h.name))
                .collect();
            tracing::info!(
                component = component.name(),
                path = %component.path.display(),
                instances = component.instances(),
                routes = %routes.join(" "),
                "component loaded"
            );
        }
        // One warning per name, saying which options named it.
        let mut unknown: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
            Default::default();
        for (name, tweak) in &config.component_tweaks {
            if !loaded.iter().any(|component| component.name() == name) {
                unknown.entry(name).or_default().insert(tweak.option());
            }
        }
        for (name, options) in unknown {
            let options = options.into_iter().collect::<Vec<_>>().join(", ");
            tracing::warn!(
                component = name,
                options,
                "options given for a component that is not loaded; check the name"
            );
        }
        let router = Router::new(&config.server_type, loaded, &config.push_routes)?;
        // Host functions encode coded push routes with the dictionary of the start: a reload
        // only adds codes, so every client's dictionary holds these.
        let _ = context.dict.set(router.dict());
        let tcp = match config.tcp {
            Some(addr) => Some(listen(TransportKind::Tcp, addr).await?),
            None => None,
        };
        let ws = match config.ws {
            Some(addr) => Some(listen(TransportKind::WebSocket, addr).await?),
            None => None,
        };
        let metrics = match config.metrics {
            Some(addr) => Some(
                crate::metrics::bind(addr)
                    .await
                    .map_err(|cause| ServerError::Metrics { addr, cause })?,
            ),
            None => None,
        };
        let max_connections = connection_cap(config.max_connections);
        let connections = max_connections.map(|max| Arc::new(Semaphore::new(max)));
        let shared = Arc::new(Shared {
            router,
            registry,
            context,
            connection: Arc::new(config.connection.clone()),
            connections,
            max_connections,
            tls,
            runtime: Arc::new(runtime),
            config,
        });
        let cluster = match shared.config.cluster.clone() {
            Some(cluster_config) => Some(join_cluster(&shared, cluster_config).await?),
            None => None,
        };
        let watched = shared.config.watch.then(|| {
            shared
                .router
                .components()
                .map(|component| stamp(&component.path))
                .collect()
        });
        Ok(Self {
            shared,
            tcp,
            ws,
            metrics,
            cluster,
            watched,
        })
    }

    /// This server's type and id in its cluster, if it is in one.
    pub fn cluster_id(&self) -> Option<(&str, &str)> {
        self.cluster
            .as_ref()
            .map(|cluster| (cluster.me.server_type.as_str(), cluster.me.id.as_str()))
    }

    /// The bound metrics address, if metrics are enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound TCP address, if TCP is enabled.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound WebSocket address, if WebSocket is enabled.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle that reloads components on demand (for a signal or an admin command).
    pub fn reloader(&self) -> Reloader {
        Reloader(self.shared.clone())
    }

    /// Accepts and serves connections until `shutdown` resolves, then shuts down gracefully:
    /// stops accepting, kicks every session with a reason, waits (up to the shutdown timeout)
    /// for the connections to close, and runs the components' shutdown hooks.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut background = Vec::new();
        for (listener, kind) in [
            (self.tcp, TransportKind::Tcp),
            (self.ws, TransportKind::WebSocket),
        ] {
            if let Some(listener) = listener {
                background.push(tokio::spawn(connection::accept_loop(
                    listener,
                    kind,
                    self.shared.clone(),
                )));
            }
        }
        if let Some(watched) = self.watched {
            background.push(tokio::spawn(watch(self.shared.clone(), watched)));
        }
        // Metrics keep answering through the shutdown, so /readyz can say 503.
        let metrics = self.metrics.map(|listener| {
            tokio::spawn(crate::metrics::serve(
                listener,
                self.shared.context.metrics.clone(),
            ))
        });
        self.shared
            .context
            .metrics
            .ready
            .store(true, Ordering::Release);
        shutdown.await;
        self.shared
            .context
            .metrics
            .ready
            .store(false, Ordering::Release);
        if let Some(cluster) = &self.cluster {
            // Peers stop sending work here before the components stop.
            cluster.leave().await;
        }
        for task in background {
            task.abort();
        }
        let shared = self.shared;
        let deadline = tokio::time::Instant::now() + shared.config.shutdown_timeout;
        // Sessions first, so that their `session-closed` calls come before the components'
        // shutdown hooks, which the WIT promises are the last calls.
        let sessions = shared.registry.all();
        tracing::info!(sessions = sessions.len(), "kicking every session");
        let kick = shared.context.kick_packet(Some("server shutting down"));
        for session in sessions {
            let _ = session.send_last(kick.clone());
        }
        // Stand-ins of other frontends' sessions have no connection to wait for.
        for stand_in in shared.registry.remotes(None) {
            shared.registry.remove(stand_in.id());
        }
        let drained = async {
            while !shared.registry.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        // The last ones may have closed at the deadline itself: only a session still open is
        // worth a warning.
        if tokio::time::timeout_at(deadline, drained).await.is_err() && !shared.registry.is_empty()
        {
            tracing::warn!(
                left = shared.registry.len(),
                "sessions still open at the shutdown deadline"
            );
        }
        // The hooks run even when the sessions took the whole deadline: each is bounded by its
        // component's call timeout, and this bounds them all together.
        let hooks = futures_util::future::join_all(
            shared
                .router
                .components()
                .map(|component| component.shutdown()),
        );
        let hooks_deadline = deadline.max(tokio::time::Instant::now() + HOOKS_AT_LEAST);
        if tokio::time::timeout_at(hooks_deadline, hooks)
            .await
            .is_err()
        {
            tracing::warn!("shutdown hooks did not finish in time");
        }
        if let Some(metrics) = metrics {
            metrics.abort();
        }
    }
}

/// Reloads components while the server runs.
#[derive(Clone)]
pub struct Reloader(Arc<Shared>);

impl Reloader {
    /// Reloads every component from its file, one after the other; a build that fails leaves
    /// the old one serving, and the failure is logged.
    pub async fn reload_all(&self) {
        for component in self.0.router.components() {
            reload(&self.0, component.clone()).await;
        }
    }
}

async fn reload(shared: &Arc<Shared>, component: Arc<ComponentHandle>) {
    let runtime = shared.runtime.clone();
    let name = component.name().to_owned();
    let path = component.path.clone();
    let outcome = tokio::task::spawn_blocking(move || runtime.reload(&component)).await;
    match outcome {
        Ok(Ok(())) => {
            let coded = shared.router.extend_dict();
            tracing::info!(component = name, path = %path.display(), new_routes_coded = coded, "component reloaded")
        }
        Ok(Err(error)) => tracing::error!(
            component = name,
            "reload failed, the old build keeps serving: {error}"
        ),
        Err(error) => tracing::error!(
            component = name,
            "reload failed, the old build keeps serving: {error}"
        ),
    }
}

/// A file's modification time, length and inode, or `None` when it cannot be read: what
/// identifies a version of it (a rename over it changes at least one of these).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

/// Polls the component files and reloads one once its new version has stayed the same for
/// one poll (a file still being written would fail to load).
async fn watch(shared: Arc<Shared>, mut served: Vec<Stamp>) {
    const POLL: Duration = Duration::from_millis(200);
    let components: Vec<Arc<ComponentHandle>> = shared.router.components().cloned().collect();
    let mut seen = served.clone();
    loop {
        tokio::time::sleep(POLL).await;
        for (index, component) in components.iter().enumerate() {
            let now = stamp(&component.path);
            if now.is_none() && seen[index].is_some() {
                // Often a build replacing the file, and the next poll finds the new one; said all
                // the same, so that a file removed by mistake is not a silent mystery.
                tracing::info!(component = component.name(), path = %component.path.display(), "file gone; the loaded build keeps serving until it comes back");
            }
            if now.is_some() && now == seen[index] && now != served[index] {
                served[index] = now;
                tracing::info!(component = component.name(), path = %component.path.display(), "file changed, reloading");
                reload(&shared, component.clone()).await;
            }
            seen[index] = now;
        }
    }
}

/// The connection cap, from `--max-connections` and the open-file limit, logged.
fn connection_cap(configured: Option<usize>) -> Option<usize> {
    let soft = match files::file_limit() {
        Ok((soft, _)) => soft,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit");
            None
        }
    };
    let cap = files::connection_cap(configured, soft);
    match (soft, cap) {
        (Some(limit), Some(cap)) if configured.is_none_or(|configured| configured > cap) => {
            if configured.is_some() {
                tracing::warn!(
                    max_connections = configured,
                    open_files = limit,
                    "--max-connections is more than the open-file limit allows; lowered"
                );
            }
            tracing::info!(
                open_files = limit,
                headroom = files::headroom(limit),
                max_connections = cap,
                "open-file limit {limit}: at most {cap} connections"
            );
        }
        (_, Some(cap)) => {
            tracing::info!(max_connections = cap, "at most {cap} connections")
        }
        (_, None) => tracing::info!("no open-file limit and no connection cap"),
    }
    cap
}

/// Connects to NATS and etcd, starts answering this server's subjects, then registers (so
/// nobody calls before the answers are ready).
async fn join_cluster(
    shared: &Arc<Shared>,
    config: ClusterConfig,
) -> Result<Arc<Cluster>, ServerError> {
    let (cluster, subscriptions) =
        Cluster::connect(&shared.config.server_type, config, shared.context.clone()).await?;
    let _ = shared.context.cluster.set(cluster.clone());
    tokio::spawn(remote::serve_requests(
        shared.clone(),
        cluster.clone(),
        subscriptions.requests,
    ));
    if let Some(bindings) = subscriptions.bindings {
        tokio::spawn(remote::serve_bindings(
            shared.clone(),
            cluster.clone(),
            bindings,
        ));
    }
    tokio::spawn(remote::sweep_stand_ins(shared.clone(), cluster.clone()));
    cluster.register().await?;
    Ok(cluster)
}

async fn listen(transport: TransportKind, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| ServerError::Bind {
            transport,
            addr,
            cause,
        })
}
