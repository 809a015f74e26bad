//! `pitaya-cli`: a REPL client for the pitaya/pomelo wire protocol, like Go pitaya's `pitaya repl`.
//!
//! With a terminal on stdin it offers line editing and history (rustyline, `~/.pitaya_cli_history`)
//! and prints pushes above the prompt as they arrive. With anything else on stdin it runs the
//! commands line by line, each `request` waiting for its answer, and exits at the end of input
//! with a non-zero status if any command failed (an error response from the server is not a
//! failure).
//!
//! The protocol itself (packets, messages, handshake) comes from the sans-IO `pitaya-protocol`
//! crate; this crate adds the transports (TCP, TLS, WebSocket) and the REPL.

mod conn;
mod format;
mod output;
mod repl;
mod target;
mod tls;
mod transport;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;

use crate::output::Output;
use crate::repl::{Flow, Options, Repl};

/// A REPL client for pitaya / pomelo servers (TCP, TLS, WebSocket).
///
/// Type `help` at the prompt for the commands. When stdin is not a terminal, commands are read
/// from it line by line and the exit status says whether all of them succeeded.
#[derive(Debug, Parser)]
#[command(name = "pitaya-cli", version)]
struct Args {
    /// Connect to this server first: tcp://host:port, tls://host:port, ws://host:port[/path]
    /// or wss://host:port[/path].
    #[arg(long, value_name = "URL")]
    connect: Option<String>,
    /// The `user` object of the handshake, as JSON (like the `sethandshake` command).
    #[arg(long, value_name = "JSON")]
    handshake: Option<String>,
    /// Seconds to wait for a connection, the handshake reply and each response.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    timeout: Duration,
    /// A PEM file of CA certificates to trust for tls:// and wss:// (besides the usual roots); a
    /// server presenting one of these very certificates is trusted too (self-signed dev certs).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Accept any TLS certificate (self-signed development certificates). Not for production.
    #[arg(long)]
    insecure: bool,
    /// Send a pomelo-style handshake (`{"sys":{"type":"js-websocket",...}}`) instead of pitaya's.
    #[arg(long)]
    pomelo: bool,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("expected seconds between 0 and 86400, got {text:?}"))
}

/// How long the scripted mode lets pushes arrive after the last command, at end of input.
const LINGER: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args));
    // The stdin reader may still sit in a blocking read: do not wait for it.
    runtime.shutdown_background();
    code
}

async fn run(args: Args) -> ExitCode {
    let opts = Options {
        timeout: args.timeout,
        ca: args.ca.clone(),
        insecure: args.insecure,
        pomelo: args.pomelo,
    };
    let interactive = std::io::stdin().is_terminal();
    let result = if interactive {
        interactive_loop(&args, opts).await
    } else {
        scripted_loop(&args, opts).await
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Applies `--handshake` and `--connect`; `false` if one of them failed.
async fn startup(args: &Args, repl: &mut Repl, out: &Output) -> bool {
    let mut ok = true;
    if let Some(user) = &args.handshake
        && let Err(error) = repl.set_user(user)
    {
        out.error(format!("--handshake: {error:#}"));
        ok = false;
    }
    if let Some(url) = &args.connect
        && let Err(error) = repl.execute(&format!("connect {url}")).await
    {
        out.error(format!("{error:#}"));
        ok = false;
    }
    ok
}

/// Commands from a pipe or file: run in order, stop at end of input. `Ok(false)` if any failed.
async fn scripted_loop(args: &Args, opts: Options) -> Result<bool> {
    let out = Arc::new(Output::direct());
    let mut repl = Repl::new(opts, Arc::clone(&out), None);
    let mut ok = startup(args, &mut repl, &out).await;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut at_eof = false;
    loop {
        line.clear();
        let read = stdin
            .read_until(b'\n', &mut line)
            .await
            .context("reading commands from stdin")?;
        if read == 0 {
            at_eof = true;
            break;
        }
        let text = String::from_utf8_lossy(&line);
        match repl.execute(&text).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(error) => {
                out.error(format!("{error:#}"));
                ok = false;
            }
        }
    }
    repl.finish(if at_eof { LINGER } else { Duration::ZERO })
        .await;
    Ok(ok)
}

/// Commands typed at a terminal, with line editing and history. Always `Ok(true)` at the end:
/// a failed command is reported and the session goes on.
async fn interactive_loop(args: &Args, opts: Options) -> Result<bool> {
    let mut editor = DefaultEditor::new().context("setting up line editing")?;
    let history =
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pitaya_cli_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let out = Arc::new(match editor.create_external_printer() {
        Ok(printer) => Output::with_printer(printer),
        Err(_) => Output::direct(),
    });
    // Ctrl-C while a command waits cancels the command (at the prompt, rustyline handles it).
    let interrupt = Arc::new(Notify::new());
    let notifier = Arc::clone(&interrupt);
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            notifier.notify_waiters();
        }
    });
    let mut repl = Repl::new(opts, Arc::clone(&out), Some(interrupt));
    out.line("pitaya-cli: type help for the commands, quit to leave");
    startup(args, &mut repl, &out).await;
    loop {
        let prompt = repl.prompt();
        let (returned, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(&prompt);
            (editor, line)
        })
        .await
        .context("the line editor thread failed")?;
        editor = returned;
        match line {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                match repl.execute(&line).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Quit) => break,
                    Err(error) => out.error(format!("{error:#}")),
                }
            }
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => break,
            Err(error) => {
                out.error(format!("reading the command line: {error}"));
                break;
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    repl.finish(Duration::ZERO).await;
    out.shutdown();
    Ok(true)
}
