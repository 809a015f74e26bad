//! Prometheus metrics (the `prometheus-client` crate writes the text format), and the small HTTP
//! endpoint that serves them with `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod latency;

use crate::striped::ReadMostly;
pub use crate::striped::{Striped, StripedCounter};
pub use latency::Latency;

/// A route and how its call ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOutcome {
    /// `component.handler`, or `unknown` for routes nothing serves (so clients cannot grow the
    /// number of series).
    pub route: String,
    /// `ok`, `error`, `timeout`, `trap`, `unavailable`, `not_found`, `bad_request`,
    /// `rate_limited`.
    pub outcome: &'static str,
}

/// A route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// `component.handler`.
    pub route: String,
}

/// A component.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabel {
    /// The component's name.
    pub component: String,
}

/// A handshake's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeOutcome {
    /// `ok` or `refused`.
    pub outcome: &'static str,
}

/// A direction of traffic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    /// `in` or `out`.
    pub direction: &'static str,
}

/// Why a message was dropped or refused, or a connection refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Messages: `rate_limited`, `queue_full`. Connections: `connection_limit` (at the cap),
    /// `out_of_files` (the accept itself failed for lack of file descriptors).
    pub reason: &'static str,
}

/// The series of one served route, looked up once and kept, so that counting a request costs
/// no allocation: the label values are built when the route is first served.
struct RouteSeries {
    route: String,
    latency: Latency,
    ok: OnceLock<StripedCounter>,
    error: OnceLock<StripedCounter>,
}

/// A service the cluster depends on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Service {
    /// `nats` or `etcd`.
    pub service: &'static str,
}

/// How a call to another server of the cluster ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardOutcome {
    /// `ok`, `error`, `timeout`, `no_server`, `unavailable`.
    pub outcome: &'static str,
}

/// Served routes' series: component name, then handler name.
type RouteMap = FxHashMap<String, FxHashMap<String, Arc<RouteSeries>>>;

/// Every metric the host keeps.
pub struct Metrics {
    registry: Registry,
    /// Sessions connected now.
    pub sessions: Gauge,
    /// Handshakes by outcome.
    pub handshakes: Family<HandshakeOutcome, Counter>,
    /// Requests and notifies by route and outcome.
    pub requests: Family<RouteOutcome, StripedCounter>,
    /// Handler latency by route, in seconds.
    pub latency: Family<RouteLabel, Latency>,
    /// Pushes queued for clients.
    pub pushes: StripedCounter,
    /// Bytes read from and written to clients.
    pub bytes: Family<Direction, StripedCounter>,
    /// Instances replaced after a trap or timeout, by component.
    pub restarts: Family<ComponentLabel, Counter>,
    /// Linear memory of each component's current instance, in bytes.
    pub memory: Family<ComponentLabel, Gauge>,
    /// Timer fires that waited for their turn under the component's timer-fire budget.
    pub timer_fires_delayed: Family<ComponentLabel, Counter>,
    /// Messages refused or dropped, by reason.
    pub dropped: Family<Reason, Counter>,
    /// Connections refused, by reason.
    pub connections_refused: Family<Reason, Counter>,
    /// Connections closed because the client went silent.
    pub heartbeat_timeouts: Counter,
    /// Whether the cluster's services (NATS, etcd) are reachable: 1 or 0.
    pub cluster_up: Family<Service, Gauge>,
    /// Calls to other servers of the cluster by outcome.
    pub forwards: Family<ForwardOutcome, Counter>,
    /// Whether the host is serving (components loaded, listeners bound, not shutting down).
    pub ready: AtomicBool,
    bytes_in: OnceLock<StripedCounter>,
    bytes_out: OnceLock<StripedCounter>,
    /// Component name, then handler name. Only served routes are keys (clients cannot add
    /// any), so a fast hash is safe here, and it is looked up for every request.
    routes: ReadMostly<RouteMap>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pitaya");
        let sessions = Gauge::default();
        registry.register("sessions", "Sessions connected", sessions.clone());
        let handshakes = Family::<HandshakeOutcome, Counter>::default();
        registry.register("handshakes", "Handshakes by outcome", handshakes.clone());
        let requests = Family::<RouteOutcome, StripedCounter>::default();
        registry.register(
            "requests",
            "Requests and notifies by route and outcome",
            requests.clone(),
        );
        let latency = Family::<RouteLabel, Latency>::default();
        registry.register(
            "handler_seconds",
            "Handler latency by route",
            latency.clone(),
        );
        let pushes = StripedCounter::default();
        registry.register("pushes", "Pushes queued for clients", pushes.clone());
        let bytes = Family::<Direction, StripedCounter>::default();
        registry.register(
            "bytes",
            "Bytes read from and written to clients",
            bytes.clone(),
        );
        let restarts = Family::<ComponentLabel, Counter>::default();
        registry.register(
            "instance_restarts",
            "Component instances replaced after a fault",
            restarts.clone(),
        );
        let memory = Family::<ComponentLabel, Gauge>::default();
        registry.register(
            "instance_memory_bytes",
            "Linear memory of each component's instance",
            memory.clone(),
        );
        let timer_fires_delayed = Family::<ComponentLabel, Counter>::default();
        registry.register(
            "timer_fires_delayed",
            "Timer fires that waited for their turn under the component's timer-fires budget",
            timer_fires_delayed.clone(),
        );
        let dropped = Family::<Reason, Counter>::default();
        registry.register(
            "dropped",
            "Messages refused or dropped, by reason",
            dropped.clone(),
        );
        let connections_refused = Family::<Reason, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections refused as they were accepted, by reason",
            connections_refused.clone(),
        );
        let heartbeat_timeouts = Counter::default();
        registry.register(
            "heartbeat_timeouts",
            "Connections closed for silence",
            heartbeat_timeouts.clone(),
        );
        let cluster_up = Family::<Service, Gauge>::default();
        registry.register(
            "cluster_up",
            "Whether NATS and etcd are reachable (cluster mode)",
            cluster_up.clone(),
        );
        let forwards = Family::<ForwardOutcome, Counter>::default();
        registry.register(
            "cluster_calls",
            "Calls to other servers of the cluster, by outcome",
            forwards.clone(),
        );
        Self {
            registry,
            sessions,
            handshakes,
            requests,
            latency,
            pushes,
            bytes,
            restarts,
            memory,
            timer_fires_delayed,
            dropped,
            connections_refused,
            heartbeat_timeouts,
            cluster_up,
            forwards,
            ready: AtomicBool::new(false),
            bytes_in: OnceLock::new(),
            bytes_out: OnceLock::new(),
            routes: Default::default(),
        }
    }
}

impl Metrics {
    /// Counts a request or notify and, for calls that reached a handler, its latency.
    pub fn request(&self, route: &str, outcome: &'static str, elapsed: Option<Duration>) {
        let route = route.to_owned();
        if let Some(elapsed) = elapsed {
            self.latency
                .get_or_create(&RouteLabel {
                    route: route.clone(),
                })
                .observe(elapsed);
        }
        self.requests
            .get_or_create(&RouteOutcome { route, outcome })
            .inc();
    }

    /// Counts a call that reached `component.handler`, without allocating once the route has
    /// been served before.
    pub fn served(
        &self,
        component: &str,
        handler: &str,
        outcome: &'static str,
        elapsed: Option<Duration>,
    ) {
        // Counted under the read lock: no clone of the series' Arc (two atomic operations on
        // a cache line every worker thread shares) for every request.
        {
            let routes = self.routes.read();
            if let Some(series) = routes.get(component).and_then(|h| h.get(handler)) {
                self.count(series, outcome, elapsed);
                return;
            }
        }
        let series = self.route_series(component, handler);
        self.count(&series, outcome, elapsed);
    }

    fn count(&self, series: &RouteSeries, outcome: &'static str, elapsed: Option<Duration>) {
        if let Some(elapsed) = elapsed {
            series.latency.observe(elapsed);
        }
        let cached = match outcome {
            "ok" => Some(&series.ok),
            "error" => Some(&series.error),
            _ => None,
        };
        match cached {
            Some(slot) => slot
                .get_or_init(|| {
                    self.requests
                        .get_or_create(&RouteOutcome {
                            route: series.route.clone(),
                            outcome,
                        })
                        .clone()
                })
                .inc(),
            None => self
                .requests
                .get_or_create(&RouteOutcome {
                    route: series.route.clone(),
                    outcome,
                })
                .inc(),
        };
    }

    /// The series of a route [`Self::served`] did not find. Another thread may have added it
    /// since: the entry keeps that one.
    fn route_series(&self, component: &str, handler: &str) -> Arc<RouteSeries> {
        let route = format!("{component}.{handler}");
        let latency = self
            .latency
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .clone();
        let new = Arc::new(RouteSeries {
            route,
            latency,
            ok: OnceLock::new(),
            error: OnceLock::new(),
        });
        let mut kept = None;
        self.routes.update(|copy| {
            let series = copy
                .entry(component.to_owned())
                .or_default()
                .entry(handler.to_owned())
                .or_insert_with(|| new.clone());
            kept.get_or_insert_with(|| series.clone());
        });
        kept.unwrap_or(new)
    }

    /// Records whether a cluster service is reachable.
    pub fn cluster_up(&self, service: &'static str, up: bool) {
        self.cluster_up
            .get_or_create(&Service { service })
            .set(i64::from(up));
    }

    /// Counts a call to another server of the cluster.
    pub fn forward(&self, outcome: &'static str) {
        self.forwards
            .get_or_create(&ForwardOutcome { outcome })
            .inc();
    }

    /// Counts something dropped.
    pub fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&Reason { reason }).inc();
    }

    /// Counts a refused connection.
    pub fn refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// Counts traffic. Inlined, so that the direction, a constant at every call, picks its
    /// counter at compile time: out of line it was about 30 instructions a call, twice a request.
    #[inline]
    pub fn bytes(&self, direction: &'static str, n: usize) {
        let slot = match direction {
            "in" => &self.bytes_in,
            "out" => &self.bytes_out,
            _ => {
                self.bytes
                    .get_or_create(&Direction { direction })
                    .inc_by(n as u64);
                return;
            }
        };
        slot.get_or_init(|| self.bytes.get_or_create(&Direction { direction }).clone())
            .inc_by(n as u64);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Binds the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics`, `/healthz` (the process answers) and `/readyz` (it is serving).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let Ok(Ok(head)) =
                tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream)).await
            else {
                return;
            };
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            let (method, path) = match request.parse(&head) {
                Ok(_) => (
                    request.method.unwrap_or(""),
                    request.path.unwrap_or("/").split('?').next().unwrap_or("/"),
                ),
                Err(_) => ("", ""),
            };
            let (status, content_type, body) = match path {
                // Read-only endpoints: GET, as scrapers and probes send.
                "/metrics" | "/healthz" | "/readyz" if method != "GET" => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "GET only\n".to_owned(),
                ),
                "/metrics" => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics.render(),
                ),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                "/readyz" if metrics.ready.load(Ordering::Acquire) => {
                    ("200 OK", "text/plain", "ready\n".to_owned())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".to_owned(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Reads until the end of an HTTP request head (or 4 KiB): a request may arrive in pieces.
async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 4096 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}
