//! The `pitaya-host` command line: `pitaya-host serve [OPTIONS] COMPONENT.wasm...`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use pitaya_host::cluster::{ClusterConfig, ForwardBy};
use pitaya_host::config::{DuplicateLogin, FileConfig, Grant};

use pitaya_host::runtime::{DEFAULT_TIMER_FIRES, MAX_INSTANCES, MAX_TIMER_FIRES};
use pitaya_host::{ComponentOptions, Grants, Limits, Reloader, Server, ServerConfig, Tweak};
use pitaya_protocol::{ConnectionConfig, EncodeOptions, MAX_ROUTE_LEN, Serializer};

// The host allocates and frees per request (a dispatch's future, the decoded message, the
// response); glibc's malloc served the larger of these through its slow bins. Measured in
// docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A pitaya-protocol game server that runs game logic as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "pitaya-host", version, about)]
struct Cli {
    /// Log lines as `text` or as `json` objects (to stderr). RUST_LOG filters them, e.g.
    /// `RUST_LOG=info,pitaya_host=debug`.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load components and serve clients over TCP and WebSocket.
    Serve(Box<ServeArgs>),
    /// Create a new component crate in ./NAME that builds and serves with no edits.
    New {
        /// The component's name (its routes are NAME.handler); letters, digits, '_' and '-'.
        name: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TCP listen address (IP:PORT; port 0 picks a free port). When neither --tcp nor --ws is
    /// given, TCP listens on 127.0.0.1:3250 and WebSocket on 127.0.0.1:3251; when only one is
    /// given, only that one listens.
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,

    /// WebSocket listen address (IP:PORT); any URL path upgrades. See --tcp for the defaults.
    #[arg(long, value_name = "ADDR")]
    ws: Option<SocketAddr>,

    /// Heartbeat interval in whole seconds, advertised in the handshake. A client silent for
    /// twice this long is disconnected. 0 turns heartbeats off.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    heartbeat: u64,

    /// This server's type: routes may be written `TYPE.component.handler`; any other type is
    /// answered with PIT-404.
    #[arg(long, value_name = "NAME", default_value = "connector")]
    server_type: String,

    /// Seconds a client has to complete the handshake (handshake and ack) before it is closed;
    /// 0 waits for ever.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    handshake_timeout: u64,

    /// Largest packet body accepted, in bytes; a bigger length header closes the connection
    /// before the body is read.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    max_packet: usize,

    /// Largest size a zlib-compressed payload may inflate to, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    max_inflated: usize,

    /// Packets queued for one client before it counts as not reading and is disconnected.
    #[arg(long, value_name = "PACKETS", default_value_t = 1024)]
    send_queue: usize,

    /// Wall-clock budget of one call into a component, in milliseconds; past it the call ends
    /// with PIT-503 and the instance is replaced.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    call_timeout_ms: u64,

    /// Linear memory cap of one component instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    max_memory_mib: usize,

    /// Timer fires one component instance may take a second; past it, fires wait their turn,
    /// so a storm of short timers cannot take a core.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TIMER_FIRES)]
    timer_fires: u32,

    /// The payload serializer advertised in the handshake: `json` or `protobuf`. Payloads are
    /// the components' business; the host's own error payloads follow this choice.
    #[arg(long, value_name = "NAME", default_value = "json", value_parser = ["json", "protobuf"])]
    serializer: String,

    /// Compress response and push payloads with zlib when that makes them smaller.
    #[arg(long)]
    compress: bool,

    /// zlib-compress the handshake reply (older JavaScript clients cannot read it).
    #[arg(long)]
    compress_handshake: bool,

    /// Send push routes as dictionary codes when they are in the dictionary (see --push-route).
    /// Off by default: libpitaya crashes on coded push routes.
    #[arg(long)]
    push_route_codes: bool,

    /// A push route (e.g. `onMessage`) to offer in the handshake's dictionary beside the handler
    /// routes, so that clients that read the dictionary can decode it as a code and
    /// --push-route-codes can send it as one. Repeatable; 1 to 255 bytes.
    #[arg(long = "push-route", value_name = "ROUTE")]
    push_routes: Vec<String>,

    /// Bytes queued for one client before it counts as not reading and is disconnected (one
    /// packet, however large, is always taken).
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    send_queue_bytes: usize,

    /// Largest response or push payload a component may produce, in bytes; a larger response
    /// is answered with PIT-500, a larger push is dropped.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_response: usize,

    /// Send kick reasons as a `{"reason":...}` body (pomelo clients read it). Off by default:
    /// pitaya clients expect an empty kick.
    #[arg(long)]
    kick_reasons: bool,

    /// What binding a uid that another session holds does: `kick` the older session (a
    /// duplicate login) or `refuse` the new binding.
    #[arg(long, value_name = "POLICY", default_value = "kick", value_parser = ["kick", "refuse"])]
    duplicate_login: String,

    /// Requests and notifies one session may send per second (burst of the same size); a
    /// request over it is answered with PIT-429, a notify is dropped.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,

    /// Most simultaneous connections; more are closed as soon as they are accepted. The
    /// open-file limit caps it too (the host raises its soft limit to the hard one and keeps
    /// 32 + 1 % of it for other files); the lower cap applies and is logged at start.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Reload a component when its .wasm file changes (SIGHUP reloads every component).
    #[arg(long)]
    watch: bool,

    /// Seconds a graceful shutdown (SIGTERM, SIGINT) may take.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    shutdown_timeout: u64,

    /// Fuel one call may burn (about one unit per wasm instruction), for deterministic budgets
    /// on top of --call-timeout-ms.
    #[arg(long, value_name = "UNITS")]
    fuel: Option<u64>,

    /// TLS certificate chain (PEM): both listeners then speak TLS (TCP+TLS, and WSS). Needs
    /// --tls-key.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Serve this folder over HTTP on the WebSocket port (pages of browser games; HTTPS with
    /// --tls-cert).
    #[arg(long, value_name = "DIR")]
    web: Option<PathBuf>,

    /// Give a component capabilities: NAME=CAP[,CAP...] with CAP one of `clock` (the real
    /// clocks; otherwise time stands at the epoch), `stdio` (prints reach the host's stdout and
    /// stderr), `env:KEY=VALUE` (an environment variable). Repeatable. Files and network are
    /// never granted.
    #[arg(long, value_name = "NAME=CAPS")]
    grant: Vec<String>,

    /// Limits for one component, over the defaults above: NAME=KEY:VALUE[,KEY:VALUE...] with
    /// KEY one of `call-timeout-ms`, `max-memory-mib`, `fuel`, `timer-fires`, or `instances`
    /// (how many instances serve it, each one call at a time, sessions shared out by id;
    /// default 1).
    /// Repeatable.
    #[arg(long, value_name = "NAME=LIMITS")]
    limit: Vec<String>,

    /// Configuration bytes for a component's init: NAME=VALUE. Repeatable.
    #[arg(long = "init", value_name = "NAME=VALUE")]
    init: Vec<String>,

    /// Keep compiled components in DIR, so that the next start loads them instead of compiling
    /// (default: $XDG_CACHE_HOME/pitaya-host, else ~/.cache/pitaya-host).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Compile every component at every start; read and write no cache.
    #[arg(long)]
    no_cache: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics, with /healthz and /readyz.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Join a cluster (pitaya's: servers find each other in etcd and talk over NATS), with
    /// the --server-type given. Go pitaya servers of the same cluster are peers too.
    #[arg(long)]
    cluster: bool,

    /// In a cluster: hold client connections (bind the listeners) and forward routes of other
    /// server types. Without it a cluster host is a backend and binds no listener.
    #[arg(long)]
    frontend: bool,

    /// In a cluster: the NATS server.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,

    /// In a cluster: the etcd endpoint.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:2379")]
    etcd: String,

    /// In a cluster: the etcd key prefix (servers are under PREFIXservers/).
    #[arg(long, value_name = "PREFIX", default_value = "pitaya/")]
    etcd_prefix: String,

    /// In a cluster: how long a call to another server may take, in milliseconds; past it a
    /// forwarded request is answered with PIT-408.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    request_timeout_ms: u64,

    /// In a cluster: how a frontend picks the server of a type for a client's message:
    /// `random`, or `uid` (the same server for a uid while the servers stay the same).
    #[arg(long, value_name = "HOW", default_value = "random", value_parser = ["random", "uid"])]
    forward_by: String,

    /// A TOML configuration file with any of these settings (keys are the flag names, e.g.
    /// `call-timeout-ms = 500`) and `[[component]]` tables; flags given here win over it. See
    /// examples/host.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Component files (.wasm) to serve, after those of the configuration file.
    #[arg(value_name = "COMPONENT.wasm", required_unless_present = "config")]
    components: Vec<PathBuf>,
}

fn main() {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    // rustls warns on every TLS connection that names an IP address as its server name, which
    // libpitaya does whenever it is given one: the line would repeat for each such client.
    let info = || tracing_subscriber::EnvFilter::new("info,rustls=error");
    let (filter, bad_filter) = match std::env::var("RUST_LOG") {
        Ok(spec) => match tracing_subscriber::EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(error) => (info(), Some((spec, error))),
        },
        Err(_) => (info(), None),
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    if let Some((spec, error)) = bad_filter {
        tracing::warn!("RUST_LOG={spec:?} is not a log filter ({error}); logging at info");
    }
    let result = match cli.command {
        Command::Serve(args) => match matches.subcommand_matches("serve") {
            Some(given) => serve(*args, given),
            None => Err(anyhow::anyhow!("serve: no arguments")),
        },
        Command::New { name } => new_component(&name),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn serve(args: ServeArgs, given: &ArgMatches) -> anyhow::Result<()> {
    let config = server_config(args, given)?;
    // Every connection is a descriptor: the soft limit (often 1024) would cap connections far
    // below what the hard limit allows.
    match pitaya_host::server::files::raise_file_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(
                ?before,
                ?after,
                "open-file soft limit raised to the hard limit"
            )
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Before loading, which can take a second or more: a signal then is a graceful
        // shutdown once the server is up, not a kill mid-load.
        let shutdown = shutdown_signal()?;
        let hangups = reload_on_hangup();
        let server = Server::bind(config).await?;
        hangups(server.reloader());
        if let Some(addr) = server.tcp_addr() {
            println!("tcp://{addr}");
        }
        if let Some(addr) = server.ws_addr() {
            println!("ws://{addr}");
        }
        if let Some((server_type, id)) = server.cluster_id() {
            println!("cluster://{server_type}/{id}");
        }
        if let Some(addr) = server.metrics_addr() {
            println!("metrics http://{addr}/metrics");
        }
        server.run(shutdown).await;
        tracing::info!("shut down");
        anyhow::Ok(())
    })?;
    // Component threads may be mid-call; the process exit ends them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn server_config(args: ServeArgs, given: &ArgMatches) -> anyhow::Result<ServerConfig> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let on_command_line = |id: &str| given.value_source(id) == Some(ValueSource::CommandLine);
    // A flag given on the command line wins; then the file; then the flag's default.
    macro_rules! pick {
        ($field:ident) => {
            if on_command_line(stringify!($field)) {
                args.$field
            } else {
                file.$field.clone().unwrap_or(args.$field)
            }
        };
    }
    let (tcp, ws) = match (args.tcp.or(file.tcp), args.ws.or(file.ws)) {
        (None, None) => {
            let defaults = ServerConfig::default();
            (defaults.tcp, defaults.ws)
        }
        given => given,
    };
    let server_type = pick!(server_type);
    let forward_by = match pick!(forward_by).as_str() {
        "random" => ForwardBy::Random,
        "uid" => ForwardBy::Uid,
        other => bail!("forward-by must be `random` or `uid`, got {other:?}"),
    };
    let cluster = if pick!(cluster) {
        Some(ClusterConfig {
            frontend: pick!(frontend),
            nats: pick!(nats),
            etcd: pick!(etcd),
            prefix: pick!(etcd_prefix),
            request_timeout: Duration::from_millis(pick!(request_timeout_ms).max(1)),
            forward_by,
        })
    } else {
        None
    };
    // A backend holds no connections.
    let (tcp, ws) = match &cluster {
        Some(cluster) if !cluster.frontend => (None, None),
        _ => (tcp, ws),
    };
    if server_type.is_empty() || server_type.contains('.') {
        bail!("--server-type must be non-empty and contain no '.': {server_type:?}");
    }
    let serializer_name = pick!(serializer);
    let serializer = Serializer::from_name(&serializer_name)
        .with_context(|| format!("unknown serializer {serializer_name:?}: json or protobuf"))?;
    // A packet's length is three bytes on the wire.
    let max_packet = in_range("--max-packet", pick!(max_packet), 1, 0xFF_FFFF)?;
    let heartbeat = in_range("--heartbeat", pick!(heartbeat), 0, MAX_SECS)?;
    let handshake_timeout = in_range("--handshake-timeout", pick!(handshake_timeout), 0, MAX_SECS)?;
    let shutdown_timeout = in_range("--shutdown-timeout", pick!(shutdown_timeout), 0, MAX_SECS)?;
    let max_inflated = at_least("--max-inflated", pick!(max_inflated), 1)?;
    let send_queue = at_least("--send-queue", pick!(send_queue), 1)?;
    let send_queue_bytes = at_least("--send-queue-bytes", pick!(send_queue_bytes), 1)?;
    let max_response = at_least("--max-response", pick!(max_response), 1)?;
    let max_connections = args.max_connections.or(file.max_connections);
    if let Some(max) = max_connections {
        at_least("--max-connections", max, 1)?;
    }
    let tls = match (
        args.tls_cert.clone().or(file.tls_cert.clone()),
        args.tls_key.clone().or(file.tls_key.clone()),
    ) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => bail!("--tls-cert needs --tls-key (tls-key in the file): no key given"),
        (None, Some(_)) => {
            bail!("--tls-key needs --tls-cert (tls-cert in the file): no certificate given")
        }
    };
    let web = args.web.clone().or(file.web.clone());
    if let Some(web) = &web {
        if !web.is_dir() {
            bail!("--web {}: not a folder", web.display());
        }
        if ws.is_none() {
            bail!("--web serves its folder on the WebSocket port, and no --ws listens");
        }
    }
    let refuse_duplicate_login = if on_command_line("duplicate_login") {
        args.duplicate_login == "refuse"
    } else {
        file.duplicate_login == Some(DuplicateLogin::Refuse)
    };
    let defaults = ComponentOptions {
        config: Vec::new(),
        limits: Limits {
            call_timeout: Duration::from_millis(pick!(call_timeout_ms).max(1)),
            max_memory: max_memory("--max-memory-mib", pick!(max_memory_mib))?,
            fuel: fuel("--fuel", args.fuel.or(file.fuel))?,
            // A value from the file was checked as it was read.
            timer_fires: timer_fires("--timer-fires", pick!(timer_fires).into())?,
        },
        grants: Grants::default(),
        instances: 1,
    };
    let file_options = file
        .component
        .iter()
        .map(|component| {
            let mut options = defaults.clone();
            let table = format!("[[component]] {}:", component.path.display());
            options.config = component.init_bytes();
            if let Some(ms) = component.call_timeout_ms {
                options.limits.call_timeout = Duration::from_millis(ms.max(1));
            }
            if let Some(mib) = component.max_memory_mib {
                options.limits.max_memory = max_memory(&format!("{table} max-memory-mib"), mib)?;
            }
            options.limits.fuel =
                fuel(&format!("{table} fuel"), component.fuel)?.or(options.limits.fuel);
            // The file's value was checked as it was read.
            if let Some(fires) = component.timer_fires {
                options.limits.timer_fires = fires;
            }
            options.instances = component.instances.unwrap_or(options.instances);
            options.grants.clock = component.grants.contains(&Grant::Clock);
            options.grants.stdio = component.grants.contains(&Grant::Stdio);
            options.grants.env = component.env.clone().into_iter().collect();
            Ok((component.path.clone(), options))
        })
        .collect::<anyhow::Result<_>>()?;
    let components = file
        .component
        .iter()
        .map(|component| component.path.clone())
        .chain(args.components.iter().cloned())
        .collect();
    Ok(ServerConfig {
        tcp,
        ws,
        server_type,
        connection: ConnectionConfig {
            max_packet_body: max_packet,
            max_inflated,
            heartbeat: Duration::from_secs(heartbeat),
            handshake_timeout: Duration::from_secs(handshake_timeout),
            compress_handshake: pick!(compress_handshake),
            serializer: serializer.name().to_owned(),
        },
        serializer,
        encode: EncodeOptions {
            compress: pick!(compress),
            push_route_codes: pick!(push_route_codes),
        },
        push_routes: push_routes(&args.push_routes, file.push_routes.as_deref())?,
        send_queue,
        send_queue_bytes,
        max_response,
        kick_reasons: pick!(kick_reasons),
        refuse_duplicate_login,
        rate_limit: args.rate_limit.or(file.rate_limit).filter(|rate| *rate > 0),
        max_connections,
        watch: pick!(watch),
        shutdown_timeout: Duration::from_secs(shutdown_timeout),
        web,
        metrics: args.metrics.or(file.metrics),
        tls,
        cache_dir: if pick!(no_cache) {
            None
        } else {
            args.cache_dir
                .clone()
                .or(file.cache_dir.clone())
                .or_else(pitaya_host::runtime::default_cache_dir)
        },
        component_tweaks: component_tweaks(&args.grant, &args.limit, &args.init)?,
        default_options: defaults,
        file_options,
        components,
        cluster,
    })
}

/// The most seconds a duration setting may name: a day. Longer is a mistake (a heartbeat
/// clients keep in 32-bit milliseconds, a deadline past the clock's range).
const MAX_SECS: u64 = 86_400;

/// `value`, or an error naming the setting when it is outside `low..=high`.
fn in_range<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    low: T,
    high: T,
) -> anyhow::Result<T> {
    if value < low || value > high {
        bail!("{name} must be from {low} to {high}, got {value}");
    }
    Ok(value)
}

/// `value`, or an error naming the setting when it is below `low`.
fn at_least(name: &str, value: usize, low: usize) -> anyhow::Result<usize> {
    if value < low {
        bail!("{name} must be at least {low}, got {value}");
    }
    Ok(value)
}

/// A memory cap in MiB, as bytes: wasm32 memories hold at most 4 GiB.
fn max_memory(name: &str, mib: usize) -> anyhow::Result<usize> {
    Ok(in_range(name, mib, 1, 4096)? << 20)
}

/// A fuel budget: none, or at least one unit (0 would trap every call before it began).
fn fuel(name: &str, fuel: Option<u64>) -> anyhow::Result<Option<u64>> {
    match fuel {
        Some(0) => bail!("{name} must be at least 1 (leave it out for no fuel budget), got 0"),
        other => Ok(other),
    }
}

/// A timer-fire budget: at least one a second, and at most [`MAX_TIMER_FIRES`].
fn timer_fires(name: &str, fires: u64) -> anyhow::Result<u32> {
    let fires = in_range(name, fires, 1, MAX_TIMER_FIRES.into())?;
    // In range, so it fits.
    Ok(u32::try_from(fires).unwrap_or(MAX_TIMER_FIRES))
}

/// The push routes for the dictionary: the command line's, else the file's. A route is sent as
/// one length byte and its bytes, so it must be 1 to 255 bytes long.
fn push_routes(args: &[String], file: Option<&[String]>) -> anyhow::Result<Vec<String>> {
    let (routes, field) = if args.is_empty() {
        (file.unwrap_or_default(), "push-routes")
    } else {
        (args, "--push-route")
    };
    for route in routes {
        if route.is_empty() || route.len() > MAX_ROUTE_LEN {
            bail!(
                "{field}: {route:?} is {} bytes; a route is 1 to {} bytes",
                route.len(),
                MAX_ROUTE_LEN
            );
        }
    }
    Ok(routes.to_vec())
}

/// Splits `NAME=REST` (the component name, then its value).
fn named<'a>(flag: &str, value: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    match value.split_once('=') {
        Some((name, rest)) if !name.is_empty() => Ok((name, rest)),
        _ => bail!("{flag} takes NAME=VALUE, got {value:?}"),
    }
}

fn component_tweaks(
    grants: &[String],
    limits: &[String],
    inits: &[String],
) -> anyhow::Result<Vec<(String, Tweak)>> {
    let mut tweaks = Vec::new();
    for limit in limits {
        let (name, settings) = named("--limit", limit)?;
        for setting in settings.split(',') {
            let (key, value) = setting
                .split_once(':')
                .with_context(|| format!("--limit {limit}: {setting:?} is not KEY:VALUE"))?;
            let number: u64 = value.parse().with_context(|| {
                format!("--limit {limit}: {key} takes a whole number, got {value:?}")
            })?;
            let tweak = match key {
                "call-timeout-ms" => Tweak::CallTimeout(Duration::from_millis(number.max(1))),
                "max-memory-mib" => Tweak::MaxMemory(max_memory(
                    &format!("--limit {limit}: max-memory-mib"),
                    usize::try_from(number).unwrap_or(usize::MAX),
                )?),
                "fuel" => {
                    fuel(&format!("--limit {limit}: fuel"), Some(number))?;
                    Tweak::Fuel(number)
                }
                "timer-fires" => Tweak::TimerFires(timer_fires(
                    &format!("--limit {limit}: timer-fires"),
                    number,
                )?),
                "instances" => match usize::try_from(number) {
                    Ok(count) if (1..=MAX_INSTANCES).contains(&count) => Tweak::Instances(count),
                    _ => bail!(
                        "--limit {limit}: instances must be a whole number from 1 to {MAX_INSTANCES}, got {number}"
                    ),
                },
                _ => bail!(
                    "--limit {limit}: unknown limit {key:?} (call-timeout-ms, max-memory-mib, fuel, timer-fires or instances)"
                ),
            };
            tweaks.push((name.to_owned(), tweak));
        }
    }
    for grant in grants {
        let (name, caps) = named("--grant", grant)?;
        for cap in caps.split(',') {
            let tweak = match cap {
                "clock" => Tweak::Clock,
                "stdio" => Tweak::Stdio,
                _ => match cap.strip_prefix("env:").and_then(|kv| kv.split_once('=')) {
                    Some((key, value)) if !key.is_empty() => {
                        Tweak::Env(key.to_owned(), value.to_owned())
                    }
                    _ => bail!(
                        "--grant {grant}: unknown capability {cap:?} (clock, stdio or env:KEY=VALUE)"
                    ),
                },
            };
            tweaks.push((name.to_owned(), tweak));
        }
    }
    for init in inits {
        let (name, value) = named("--init", init)?;
        tweaks.push((name.to_owned(), Tweak::Init(value.as_bytes().to_vec())));
    }
    Ok(tweaks)
}

/// Listens for SIGHUP now; the returned function, given the started server, reloads every
/// component on each one.
fn reload_on_hangup() -> impl FnOnce(Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed now, before loading, for the same reason as the shutdown's: a SIGHUP
        // then reloads once the server is up instead of killing the process mid-load.
        let hangups = signal(SignalKind::hangup());
        move |reloader: Reloader| {
            let Ok(mut hangups) = hangups else {
                tracing::warn!("cannot listen for SIGHUP; reload by file change only (--watch)");
                return;
            };
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading every component");
                    reloader.reload_all().await;
                }
            });
        }
    }
    #[cfg(not(unix))]
    |_: Reloader| {}
}

/// The files of a new component crate, from guest-sdk/template.
const TEMPLATE: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../guest-sdk/template/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../guest-sdk/template/src/lib.rs.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../guest-sdk/template/README.md.tmpl"),
    ),
    // Named without its dot in the SDK, where it would apply to the template itself.
    (
        ".gitignore",
        include_str!("../../guest-sdk/template/gitignore.tmpl"),
    ),
];

fn new_component(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphabetic());
    if !valid {
        bail!(
            "invalid component name {name:?}: start with a letter; use letters, digits, '_' and '-'"
        );
    }
    if name.len() > pitaya_host::runtime::MAX_NAME {
        bail!(
            "invalid component name: {} bytes, and the host serves names of at most {}",
            name.len(),
            pitaya_host::runtime::MAX_NAME
        );
    }
    let dir = PathBuf::from(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    // The SDK is found where this binary was built from; a published SDK would be a version.
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    let sdk = sdk.canonicalize().unwrap_or(sdk);
    for (file, template) in TEMPLATE {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = template
            .replace("{{name}}", name)
            .replace("{{sdk_path}}", &sdk.display().to_string());
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("created component {name} in ./{name}");
    println!("build it:  cd {name} && cargo build --release --target wasm32-wasip2");
    println!(
        "serve it:  pitaya-host serve target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    );
    Ok(())
}

/// Listens for SIGINT and SIGTERM. The handlers are installed when this is called, not when
/// the returned future is first polled: a signal that arrives just after the addresses are
/// printed must start a graceful shutdown, not kill the process.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        Ok(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!("{name}: shutting down");
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: shutting down");
    })
}
