//! `pitaya-bench`: load, idle-connection and floor tools for measuring pitaya-host over loopback.
//!
//! - `load`: C connections with N requests in flight each; throughput, latency percentiles,
//!   errors, and the server's CPU time per request and memory (from `/proc`).
//! - `idle`: C idle connections held for a while; the server's memory per connection and a probe
//!   session's latency meanwhile.
//! - `broadcast`: M sessions in one group and one session broadcasting to it; pushes delivered
//!   per second, push latency, and the server's CPU time per push.
//! - `floor`: a bare echo server speaking the same protocol, the baseline every figure is
//!   compared with.
//!
//! Every address must be loopback, and every run is bounded in time and count.

mod broadcast;
mod conn;
mod floor;
mod idle;
mod load;
mod procfs;
mod stats;
mod target;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::target::{parse_loopback_addr, parse_url};

/// Most connections one process may hold: the machine allows 20,000 open files per process.
const MAX_CONNECTIONS: usize = 19_900;
/// Most requests in flight on one connection (the host queues at most 1024 packets per client).
const MAX_IN_FLIGHT: usize = 1024;
/// Longest run, hold or floor lifetime, in seconds.
const MAX_SECS: u64 = 3600;
/// Most requests in one run.
const MAX_REQUESTS: u64 = 1_000_000_000;
/// Largest generated payload (`--body-size`): the host's default packet limit is 64 KiB.
const MAX_BODY_SIZE: usize = 1 << 20;

/// Load, idle-connection and floor tools for pitaya-host (loopback only).
#[derive(Debug, Parser)]
#[command(name = "pitaya-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send requests over C connections with N in flight each; report throughput, latency,
    /// errors and the server's CPU and memory.
    Load(LoadArgs),
    /// Open C connections, hold them idle, and report the server's memory per connection and a
    /// probe session's latency.
    Idle(IdleArgs),
    /// Join M sessions to one group (the `lab` component's `lab.join`) and have one more
    /// session broadcast to it (`lab.broadcast`) as fast as the members take the pushes;
    /// report pushes delivered per second, push latency and the server's CPU per push.
    Broadcast(BroadcastArgs),
    /// Serve the floor: a bare echo server (handshake, then each Request's payload back as
    /// its Response). Prints tcp://IP:PORT or ws://IP:PORT once listening.
    Floor(FloorArgs),
}

/// Options shared by `load` and `idle`.
#[derive(Debug, Args)]
struct ClientArgs {
    /// Server URL: tcp://127.0.0.1:PORT or ws://127.0.0.1:PORT[/PATH] (loopback only).
    #[arg(long)]
    url: String,
    /// Number of connections (at most 19,900: one process may open 20,000 files here).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Route of every request.
    #[arg(long, default_value = "echo.echo")]
    route: String,
    /// Payload of every request.
    #[arg(long, default_value = r#"{"a":1}"#, conflicts_with = "body_size")]
    body: String,
    /// Instead of --body, a JSON payload of exactly this many bytes ({"d":"xxx..."}; at least 8).
    #[arg(long, value_name = "BYTES")]
    body_size: Option<usize>,
    /// The server's pid: read its CPU time and memory from /proc.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Seconds allowed for one connect plus handshake.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    connect_timeout: u64,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct LoadArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Requests in flight per connection (1: one at a time; more: pipelined), at most 1024.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Seconds to send requests for (at most 3600).
    #[arg(long, value_name = "SECS")]
    duration: u64,
    /// Stop after this many requests in all, if that comes before --duration.
    #[arg(long, value_name = "TOTAL")]
    requests: Option<u64>,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Seconds to hold the connections once all are open (at most 3600).
    #[arg(long, value_name = "SECS")]
    hold: u64,
    /// Answer the server's heartbeats with heartbeats (otherwise a server with heartbeats on
    /// closes the connections after twice its interval).
    #[arg(long)]
    heartbeat: bool,
}

#[derive(Debug, Args)]
struct BroadcastArgs {
    /// Server URL: tcp://127.0.0.1:PORT or ws://127.0.0.1:PORT[/PATH] (loopback only); the
    /// server must serve the lab component.
    #[arg(long)]
    url: String,
    /// Members of the group (at most 19,900).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Seconds to broadcast for (at most 3600).
    #[arg(long, value_name = "SECS")]
    duration: u64,
    /// Most broadcasts the sender may be ahead of the slowest member (the host queues at most
    /// 1024 packets per client).
    #[arg(long, default_value_t = 64)]
    lag: u64,
    /// Group name.
    #[arg(long, default_value = "bench")]
    group: String,
    /// Filler bytes in each push's payload.
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    filler: usize,
    /// The server's pid: read its CPU time and memory from /proc.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Seconds allowed for one member's connect, handshake and join.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    connect_timeout: u64,
    /// Members opened at once.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct FloorArgs {
    /// Loopback address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Speak WebSocket (one packet per binary frame) instead of raw TCP.
    #[arg(long)]
    ws: bool,
    /// Exit after this many seconds (at most 3600).
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    lifetime: u64,
    /// Connections served at once; more are closed on accept.
    #[arg(long, default_value_t = MAX_CONNECTIONS)]
    max_connections: usize,
    /// WebSocket read buffer per connection, in bytes (tungstenite's default is 128 KiB, which
    /// it zero-fills on every read, so it is resident memory for every connection).
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    ws_read_buffer: usize,
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = real_main(cli) {
        eprintln!("pitaya-bench: {error:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    // Idle and load runs hold thousands of sockets: use every file the hard limit allows.
    let nofile = procfs::raise_nofile_limit().context("raising the open-file limit")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Load(args) => {
            let json = args.client.json;
            let config = load_config(args, nofile)?;
            let report = runtime.block_on(load::run(config))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", format_load(&report));
            }
        }
        Command::Idle(args) => {
            let json = args.client.json;
            let config = idle_config(args, nofile)?;
            let report = runtime.block_on(idle::run(config))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", format_idle(&report));
            }
        }
        Command::Broadcast(args) => {
            let json = args.json;
            let config = broadcast_config(args, nofile)?;
            let report = runtime.block_on(broadcast::run(config))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", format_broadcast(&report));
            }
        }
        Command::Floor(args) => {
            let config = floor_config(args)?;
            runtime.block_on(floor::run(config))?;
        }
    }
    Ok(())
}

/// The payload: `--body` as given, or a JSON object of exactly `--body-size` bytes.
fn body_of(client: &ClientArgs) -> Result<Vec<u8>> {
    let Some(size) = client.body_size else {
        return Ok(client.body.as_bytes().to_vec());
    };
    // {"d":""} is 8 bytes; the rest is filler.
    if !(8..=MAX_BODY_SIZE).contains(&size) {
        bail!("--body-size must be between 8 and {MAX_BODY_SIZE} bytes, not {size}");
    }
    let mut body = br#"{"d":""#.to_vec();
    body.resize(size - 2, b'x');
    body.extend_from_slice(br#""}"#);
    Ok(body)
}

/// Checks the options `load` and `idle` share.
fn check_client(client: &ClientArgs, nofile: u64) -> Result<()> {
    if client.connections == 0 || client.connections > MAX_CONNECTIONS {
        bail!(
            "--connections must be between 1 and {MAX_CONNECTIONS}, not {}",
            client.connections
        );
    }
    // The probe, stdio and the runtime need a few descriptors of their own.
    let needed = client.connections as u64 + 64;
    if needed > nofile {
        bail!(
            "--connections {} needs about {needed} open files but this process may open {nofile}",
            client.connections
        );
    }
    if client.batch == 0 || client.batch > 10_000 {
        bail!("--batch must be between 1 and 10000, not {}", client.batch);
    }
    if client.connect_timeout == 0 || client.connect_timeout > 60 {
        bail!(
            "--connect-timeout must be between 1 and 60 seconds, not {}",
            client.connect_timeout
        );
    }
    if client.route.is_empty() {
        bail!("--route must not be empty");
    }
    Ok(())
}

fn load_config(args: LoadArgs, nofile: u64) -> Result<load::LoadConfig> {
    check_client(&args.client, nofile)?;
    let target = parse_url(&args.client.url)?;
    if args.in_flight == 0 || args.in_flight > MAX_IN_FLIGHT {
        bail!(
            "--in-flight must be between 1 and {MAX_IN_FLIGHT}, not {}",
            args.in_flight
        );
    }
    if args.duration == 0 || args.duration > MAX_SECS {
        bail!(
            "--duration must be between 1 and {MAX_SECS} seconds, not {}",
            args.duration
        );
    }
    if let Some(total) = args.requests
        && (total == 0 || total > MAX_REQUESTS)
    {
        bail!("--requests must be between 1 and {MAX_REQUESTS}, not {total}");
    }
    let body = body_of(&args.client)?;
    // Fails now, with a clear message, if the route or payload cannot be sent.
    conn::RequestEncoder::new(&args.client.route, &body)?;
    Ok(load::LoadConfig {
        target,
        connections: args.client.connections,
        in_flight: args.in_flight,
        route: args.client.route,
        body,
        duration: Duration::from_secs(args.duration),
        requests: args.requests,
        server_pid: args.client.server_pid,
        connect_timeout: Duration::from_secs(args.client.connect_timeout),
        batch: args.client.batch,
    })
}

fn idle_config(args: IdleArgs, nofile: u64) -> Result<idle::IdleConfig> {
    check_client(&args.client, nofile)?;
    let target = parse_url(&args.client.url)?;
    if args.hold == 0 || args.hold > MAX_SECS {
        bail!(
            "--hold must be between 1 and {MAX_SECS} seconds, not {}",
            args.hold
        );
    }
    let body = body_of(&args.client)?;
    conn::RequestEncoder::new(&args.client.route, &body)?;
    Ok(idle::IdleConfig {
        target,
        connections: args.client.connections,
        hold: Duration::from_secs(args.hold),
        server_pid: args.client.server_pid,
        heartbeat: args.heartbeat,
        route: args.client.route,
        body,
        connect_timeout: Duration::from_secs(args.client.connect_timeout),
        batch: args.client.batch,
    })
}

fn broadcast_config(args: BroadcastArgs, nofile: u64) -> Result<broadcast::BroadcastConfig> {
    let target = parse_url(&args.url)?;
    if args.members == 0 || args.members > MAX_CONNECTIONS {
        bail!(
            "--members must be between 1 and {MAX_CONNECTIONS}, not {}",
            args.members
        );
    }
    let needed = args.members as u64 + 64;
    if needed > nofile {
        bail!(
            "--members {} needs about {needed} open files but this process may open {nofile}",
            args.members
        );
    }
    if args.duration == 0 || args.duration > MAX_SECS {
        bail!(
            "--duration must be between 1 and {MAX_SECS} seconds, not {}",
            args.duration
        );
    }
    if args.lag == 0 || args.lag > 1000 {
        bail!("--lag must be between 1 and 1000, not {}", args.lag);
    }
    if args.group.is_empty()
        || !args
            .group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("--group must be letters, digits, '_' or '-'");
    }
    if args.filler > 60_000 {
        bail!("--filler must be at most 60000 bytes");
    }
    if args.batch == 0 || args.batch > 10_000 {
        bail!("--batch must be between 1 and 10000, not {}", args.batch);
    }
    if args.connect_timeout == 0 || args.connect_timeout > 60 {
        bail!(
            "--connect-timeout must be between 1 and 60 seconds, not {}",
            args.connect_timeout
        );
    }
    Ok(broadcast::BroadcastConfig {
        target,
        members: args.members,
        duration: Duration::from_secs(args.duration),
        lag: args.lag,
        group: args.group,
        filler: args.filler,
        server_pid: args.server_pid,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        batch: args.batch,
    })
}

fn format_broadcast(r: &broadcast::BroadcastReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "target        {}  members {} of {} joined",
        r.url, r.joined, r.members
    );
    let _ = writeln!(
        out,
        "broadcasts    {} sent, {} answered ok, {:.0}/s  (push payload {} B)",
        r.broadcasts, r.broadcasts_ok, r.broadcasts_per_sec, r.push_payload_bytes
    );
    let _ = writeln!(
        out,
        "pushes        {} delivered of {} expected in {:.2} s: {:.0} pushes/s  (members closed {})",
        r.pushes_delivered, r.pushes_expected, r.elapsed_secs, r.pushes_per_sec, r.members_closed
    );
    let l = &r.latency;
    let _ = writeln!(
        out,
        "push latency µs  p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
        l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
    );
    if let Some(s) = &r.server {
        let _ = writeln!(
            out,
            "server pid {}  cpu {:.2} s  {:.2} µs/push  RSS {:.1} MiB",
            s.pid,
            s.cpu_secs,
            s.cpu_us_per_push,
            mib(s.rss_bytes)
        );
    }
    out
}

fn floor_config(args: FloorArgs) -> Result<floor::FloorConfig> {
    let listen = parse_loopback_addr(&args.listen)?;
    if args.lifetime == 0 || args.lifetime > MAX_SECS {
        bail!(
            "--lifetime must be between 1 and {MAX_SECS} seconds, not {}",
            args.lifetime
        );
    }
    if args.max_connections == 0 || args.max_connections > MAX_CONNECTIONS {
        bail!("--max-connections must be between 1 and {MAX_CONNECTIONS}");
    }
    if !(1024..=1 << 20).contains(&args.ws_read_buffer) {
        bail!(
            "--ws-read-buffer must be between 1024 and 1048576 bytes, not {}",
            args.ws_read_buffer
        );
    }
    Ok(floor::FloorConfig {
        listen,
        ws: args.ws,
        lifetime: Duration::from_secs(args.lifetime),
        max_connections: args.max_connections,
        ws_read_buffer: args.ws_read_buffer,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn format_load(r: &load::LoadReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "target        {}  route {}  body {} B",
        r.url, r.route, r.body_bytes
    );
    let _ = writeln!(
        out,
        "connections   {} of {}  in flight {}/conn",
        r.connected, r.connections, r.in_flight
    );
    let _ = writeln!(
        out,
        "elapsed       {:.2} s  sent {}  ok {}",
        r.elapsed_secs, r.sent, r.ok
    );
    let _ = writeln!(out, "throughput    {:.0} req/s", r.requests_per_sec);
    let l = &r.latency;
    let _ = writeln!(
        out,
        "latency µs    p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  mean {:.0}",
        l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us
    );
    let _ = writeln!(
        out,
        "errors        {}  (error responses {}, unexpected {}, unanswered {}, connect failures {}, closed early {})",
        r.errors,
        r.error_responses,
        r.unexpected_responses,
        r.timed_out,
        r.connect_failures,
        r.closed_early
    );
    if let Some(s) = &r.server {
        let _ = writeln!(
            out,
            "server pid {}  cpu {:.2} s ({:.0}% of a core)  {:.1} µs/request (user {:.2}, system {:.2})",
            s.pid,
            s.cpu_secs,
            s.cpu_percent,
            s.cpu_us_per_request,
            s.user_us_per_request,
            s.system_us_per_request
        );
        if !s.busiest_thread.is_empty() {
            let _ = writeln!(
                out,
                "server busiest thread {:?} at {:.0}% of a core",
                s.busiest_thread, s.busiest_thread_percent
            );
        }
        let _ = writeln!(
            out,
            "server memory RSS {:.1} MiB before, {:.1} MiB after, peak (VmHWM) {:.1} MiB",
            mib(s.rss_before_bytes),
            mib(s.rss_bytes),
            mib(s.hwm_bytes)
        );
    }
    let _ = writeln!(out, "client cpu    {:.2} s", r.client_cpu_secs);
    out
}

fn format_idle(r: &idle::IdleReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "target        {}  heartbeat answered: {}  server heartbeat {} s",
        r.url, r.heartbeat, r.server_heartbeat_secs
    );
    let _ = writeln!(
        out,
        "connections   {} of {} in {:.2} s ({} failed)",
        r.connected, r.connections, r.connect_secs, r.connect_failures
    );
    let _ = writeln!(
        out,
        "hold          {:.1} s  closed by the server during it {}  heartbeats received {}",
        r.hold_secs, r.closed_during_hold, r.heartbeats_received
    );
    if let Some(s) = &r.server {
        let _ = writeln!(
            out,
            "server RSS    before {:.1} MiB  connected {:.1} MiB  end {:.1} MiB  peak {:.1} MiB",
            mib(s.rss_before_bytes),
            mib(s.rss_connected_bytes),
            mib(s.rss_end_bytes),
            mib(s.hwm_bytes)
        );
        let _ = writeln!(
            out,
            "per conn      {:.0} bytes ({:.1} KiB)",
            s.bytes_per_connection,
            s.bytes_per_connection / 1024.0
        );
        let _ = writeln!(
            out,
            "server CPU    {:.2} s during the hold",
            s.hold_cpu_secs
        );
    }
    let p = &r.probe;
    let _ = writeln!(
        out,
        "probe µs      p50 {:.0}  p99 {:.0}  max {:.0}  ({} requests, {} errors)",
        p.p50_us, p.p99_us, p.max_us, p.samples, r.probe_errors
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pitaya-bench").chain(args.iter().copied()))
    }

    fn load(args: &[&str]) -> Result<load::LoadConfig> {
        match parse(args)?.command {
            Command::Load(a) => load_config(a, 20_000),
            other => bail!("not load: {other:?}"),
        }
    }

    #[test]
    fn load_arguments() {
        let ok = load(&[
            "load",
            "--url",
            "tcp://127.0.0.1:3250",
            "--connections",
            "50",
            "--in-flight",
            "8",
            "--duration",
            "10",
            "--requests",
            "1000",
        ])
        .unwrap();
        assert_eq!(ok.connections, 50);
        assert_eq!(ok.in_flight, 8);
        assert_eq!(ok.requests, Some(1000));
        assert_eq!(ok.body, br#"{"a":1}"#);

        let base = ["load", "--url", "tcp://127.0.0.1:1", "--duration", "1"];
        let with = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            load(&args)
        };
        assert!(with(&[]).is_ok());
        for bad in [
            &["--connections", "0"][..],
            &["--connections", "19901"],
            &["--in-flight", "0"],
            &["--in-flight", "1025"],
            &["--requests", "0"],
            &["--route", ""],
            &["--route", &"r".repeat(256)],
            &["--body-size", "7"],
            &["--body", "x", "--body-size", "100"],
            &["--connect-timeout", "0"],
        ] {
            assert!(with(bad).is_err(), "{bad:?} accepted");
        }
        assert!(load(&["load", "--url", "tcp://10.1.2.3:1", "--duration", "1"]).is_err());
        assert!(load(&["load", "--url", "tcp://127.0.0.1:1", "--duration", "0"]).is_err());
        assert!(load(&["load", "--url", "tcp://127.0.0.1:1", "--duration", "3601"]).is_err());
        assert!(load(&["load", "--url", "tcp://127.0.0.1:1"]).is_err()); // no duration
        // Fewer open files than connections.
        let Command::Load(a) = parse(&[
            "load",
            "--url",
            "tcp://127.0.0.1:1",
            "--duration",
            "1",
            "--connections",
            "5000",
        ])
        .unwrap()
        .command
        else {
            panic!("not load");
        };
        assert!(load_config(a, 1024).is_err());
    }

    #[test]
    fn generated_body_has_the_exact_size() {
        let config = load(&[
            "load",
            "--url",
            "ws://127.0.0.1:1",
            "--duration",
            "1",
            "--body-size",
            "4096",
        ])
        .unwrap();
        assert_eq!(config.body.len(), 4096);
        let value: serde_json::Value = serde_json::from_slice(&config.body).unwrap();
        assert!(value.get("d").is_some());
    }

    #[test]
    fn idle_and_floor_arguments() {
        let idle = |args: &[&str]| match parse(args)?.command {
            Command::Idle(a) => idle_config(a, 20_000),
            other => bail!("not idle: {other:?}"),
        };
        assert!(idle(&["idle", "--url", "tcp://127.0.0.1:1", "--hold", "5"]).is_ok());
        assert!(idle(&["idle", "--url", "tcp://127.0.0.1:1", "--hold", "0"]).is_err());
        assert!(idle(&["idle", "--url", "tcp://1.1.1.1:1", "--hold", "5"]).is_err());

        let floor = |args: &[&str]| match parse(args)?.command {
            Command::Floor(a) => floor_config(a),
            other => bail!("not floor: {other:?}"),
        };
        assert!(floor(&["floor"]).is_ok());
        assert!(floor(&["floor", "--listen", "127.0.0.1:3300", "--ws"]).is_ok());
        assert!(floor(&["floor", "--listen", "0.0.0.0:3300"]).is_err());
        assert!(floor(&["floor", "--lifetime", "0"]).is_err());
        assert!(floor(&["floor", "--ws", "--ws-read-buffer", "100"]).is_err());
        assert!(floor(&["floor", "--ws", "--ws-read-buffer", "131072"]).is_ok());
    }
}
