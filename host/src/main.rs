//! The `pitaya-host` command line: `pitaya-host serve [OPTIONS] COMPONENT.wasm...`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use pitaya_host::runtime::Limits;
use pitaya_host::{ComponentSpec, Server, ServerConfig};
use pitaya_protocol::{ConnectionConfig, EncodeOptions};

/// A pitaya-protocol game server that runs game logic as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "pitaya-host", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load components and serve clients over TCP and WebSocket.
    Serve(ServeArgs),
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

    /// Seconds a client has to complete the handshake (handshake and ack) before it is closed.
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

    /// Compress response and push payloads with zlib when that makes them smaller.
    #[arg(long)]
    compress: bool,

    /// zlib-compress the handshake reply (older JavaScript clients cannot read it).
    #[arg(long)]
    compress_handshake: bool,

    /// Send push routes as dictionary codes when they are in the dictionary. Off by default:
    /// libpitaya crashes on coded push routes.
    #[arg(long)]
    push_route_codes: bool,

    /// Component files (.wasm) to serve.
    #[arg(value_name = "COMPONENT.wasm", required = true)]
    components: Vec<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = server_config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        if let Some(addr) = server.tcp_addr() {
            println!("tcp://{addr}");
        }
        if let Some(addr) = server.ws_addr() {
            println!("ws://{addr}");
        }
        server.run(shutdown_signal()).await;
        tracing::info!("shutting down");
        anyhow::Ok(())
    })?;
    // Component threads may be mid-call; the process exit ends them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn server_config(args: ServeArgs) -> anyhow::Result<ServerConfig> {
    let (tcp, ws) = match (args.tcp, args.ws) {
        (None, None) => {
            let defaults = ServerConfig::default();
            (defaults.tcp, defaults.ws)
        }
        given => given,
    };
    if args.server_type.is_empty() || args.server_type.contains('.') {
        bail!(
            "--server-type must be non-empty and contain no '.': {:?}",
            args.server_type
        );
    }
    if args.max_packet == 0 {
        bail!("--max-packet must be at least 1");
    }
    Ok(ServerConfig {
        tcp,
        ws,
        server_type: args.server_type,
        connection: ConnectionConfig {
            max_packet_body: args.max_packet,
            max_inflated: args.max_inflated,
            heartbeat: Duration::from_secs(args.heartbeat),
            handshake_timeout: Duration::from_secs(args.handshake_timeout),
            compress_handshake: args.compress_handshake,
            ..ConnectionConfig::default()
        },
        encode: EncodeOptions {
            compress: args.compress,
            push_route_codes: args.push_route_codes,
        },
        send_queue: args.send_queue,
        limits: Limits {
            call_timeout: Duration::from_millis(args.call_timeout_ms),
            max_memory: args.max_memory_mib << 20,
        },
        components: args
            .components
            .into_iter()
            .map(|path| ComponentSpec {
                path,
                config: Vec::new(),
            })
            .collect(),
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
