//! The commands: parsing a line and running it against the current connection.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::sync::Notify;

use crate::conn::Conn;
use crate::format;
use crate::output::Output;
use crate::target::Target;
use crate::tls;
use crate::transport::Transport;

/// The command summary printed by `help`.
pub const HELP: &str = "\
commands:
  connect URL             connect and handshake: tcp://host:port, tls://host:port,
                          ws://host:port[/path] or wss://host:port[/path]
  disconnect              close the connection
  sethandshake JSON       the `user` object sent in the next connect's handshake
  request ROUTE [JSON]    send a request (payload {} by default) and print the response
  notify ROUTE [JSON]     send a notify (no response)
  wait SECONDS            wait, printing pushes as they arrive
  help                    this text
  quit, exit              leave
pushes are printed as they arrive; lines starting with # are comments";

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long connecting, the handshake and each request may take.
    pub timeout: Duration,
    /// Extra trusted CA certificates (PEM) for `tls://` and `wss://`.
    pub ca: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure: bool,
    /// Send a pomelo-style handshake instead of pitaya's.
    pub pomelo: bool,
}

/// What the loop does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Leave the REPL.
    Quit,
}

/// The REPL's state: options, the handshake's user data and the connection, if any.
pub struct Repl {
    opts: Options,
    /// The handshake `user` object, as JSON text.
    user: String,
    conn: Option<(Conn, Target)>,
    out: Arc<Output>,
    /// Fired on Ctrl-C in interactive mode: cancels a waiting command.
    interrupt: Option<Arc<Notify>>,
}

impl Repl {
    /// A REPL with no connection yet.
    pub fn new(opts: Options, out: Arc<Output>, interrupt: Option<Arc<Notify>>) -> Self {
        Self {
            opts,
            user: "{}".to_owned(),
            conn: None,
            out,
            interrupt,
        }
    }

    /// The prompt: shows the server when connected.
    pub fn prompt(&self) -> String {
        match &self.conn {
            Some((conn, target)) if conn.closed().is_none() => format!("pitaya {target}> "),
            _ => "pitaya> ".to_owned(),
        }
    }

    /// Runs one line. `Err` is a failed command: the caller prints it and carries on.
    pub async fn execute(&mut self, line: &str) -> Result<Flow> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(Flow::Continue);
        }
        let (command, rest) = split_word(line);
        match command.to_ascii_lowercase().as_str() {
            "help" | "?" => self.out.line(HELP),
            "quit" | "exit" => return Ok(Flow::Quit),
            "connect" => {
                ensure!(!rest.is_empty(), "usage: connect URL");
                self.connect(rest).await?;
            }
            "disconnect" => self.disconnect().await?,
            "sethandshake" => self.set_handshake(rest)?,
            "request" => self.request(rest).await?,
            "notify" => self.notify(rest)?,
            "wait" => self.wait(rest).await?,
            _ => bail!("unknown command {command:?} (try help)"),
        }
        Ok(Flow::Continue)
    }

    /// Sets the handshake's `user` object (the `--handshake` option and `sethandshake`).
    pub fn set_user(&mut self, json: &str) -> Result<()> {
        let json = json.trim();
        let value: Value = serde_json::from_str(json)
            .with_context(|| format!("the handshake data is not valid JSON: {json}"))?;
        ensure!(
            value.is_object(),
            "the handshake data must be a JSON object, like {{\"name\":\"bob\"}}"
        );
        self.user = json.to_owned();
        Ok(())
    }

    /// Waits for requests still in flight (at most the timeout) and then `linger` for late
    /// pushes, then closes the connection.
    pub async fn finish(&mut self, linger: Duration) {
        if let Some((conn, _)) = self.conn.take() {
            let deadline = tokio::time::Instant::now() + self.opts.timeout;
            while conn.closed().is_none()
                && conn.in_flight() > 0
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if conn.closed().is_none() {
                tokio::time::sleep(linger).await;
            }
            conn.close().await;
        }
    }

    fn handshake_json(&self) -> String {
        let user = &self.user;
        if self.opts.pomelo {
            format!(
                r#"{{"sys":{{"type":"js-websocket","version":"0.0.1","rsa":{{}}}},"user":{user}}}"#
            )
        } else {
            let version = env!("CARGO_PKG_VERSION");
            format!(
                r#"{{"sys":{{"platform":"repl","libVersion":"{version}","clientBuildNumber":"1","clientVersion":"{version}"}},"user":{user}}}"#
            )
        }
    }

    async fn connect(&mut self, url: &str) -> Result<()> {
        let target = Target::parse(url).with_context(|| format!("bad address {url:?}"))?;
        if self.conn.is_some() {
            self.disconnect().await?;
        }
        let tls = if target.scheme.is_tls() {
            Some(tls::client_config(
                self.opts.ca.as_deref(),
                self.opts.insecure,
            )?)
        } else {
            None
        };
        let timeout = self.opts.timeout;
        let handshake = self.handshake_json();
        let out = Arc::clone(&self.out);
        let opening = async {
            let transport = Transport::connect(&target, tls, timeout).await?;
            Conn::open(transport, handshake.as_bytes(), timeout, out)
                .await
                .with_context(|| format!("handshake with {target}"))
        };
        let conn = self.interruptible(opening).await?;
        if conn.handshake.serializer != "json" {
            self.out.line(format!(
                "note: the server's serializer is {}: payloads are sent as typed, answers shown as bytes",
                conn.handshake.serializer
            ));
        }
        self.out.line(format!("connected to {target}"));
        self.conn = Some((conn, target));
        Ok(())
    }

    async fn disconnect(&mut self) -> Result<()> {
        let (conn, target) = self.conn.take().context("not connected")?;
        let was_open = conn.closed().is_none();
        conn.close().await;
        if was_open {
            self.out.line(format!("disconnected from {target}"));
        }
        Ok(())
    }

    fn set_handshake(&mut self, json: &str) -> Result<()> {
        ensure!(!json.is_empty(), "usage: sethandshake JSON");
        self.set_user(json)?;
        self.out
            .line("handshake data set; it is sent on the next connect");
        Ok(())
    }

    /// The live connection, or why there is none.
    fn live(&mut self) -> Result<&mut Conn> {
        if let Some((conn, _)) = &self.conn
            && let Some(reason) = conn.closed()
        {
            self.conn = None;
            bail!("not connected ({reason})");
        }
        match &mut self.conn {
            Some((conn, _)) => Ok(conn),
            None => bail!("not connected (use connect URL)"),
        }
    }

    async fn request(&mut self, args: &str) -> Result<()> {
        let (route, payload) = route_and_payload(args, "request")?;
        let timeout = self.opts.timeout;
        let conn = self.live()?;
        let (id, reply) = conn.request(route, payload.as_bytes())?;
        let waited = match &self.interrupt {
            Some(interrupt) => tokio::select! {
                waited = tokio::time::timeout(timeout, reply) => Some(waited),
                () = interrupt.notified() => None,
            },
            None => Some(tokio::time::timeout(timeout, reply).await),
        };
        let message = match waited {
            Some(Ok(Ok(message))) => message,
            Some(Ok(Err(_))) => {
                let reason = self
                    .conn
                    .as_ref()
                    .and_then(|(conn, _)| conn.closed())
                    .unwrap_or_else(|| "connection closed".to_owned());
                bail!("request #{id} {route}: no response ({reason})");
            }
            Some(Err(_)) => {
                self.forget(id);
                bail!(
                    "request #{id} {route} timed out after {} s",
                    timeout.as_secs_f64()
                );
            }
            None => {
                self.forget(id);
                bail!("request #{id} {route} interrupted");
            }
        };
        if message.error {
            self.out.line(format::error_response(&message.payload));
        } else {
            self.out.line(format!(
                "response {route} {}",
                format::body(&message.payload)
            ));
        }
        Ok(())
    }

    fn forget(&self, id: u64) {
        if let Some((conn, _)) = &self.conn {
            conn.forget(id);
        }
    }

    fn notify(&mut self, args: &str) -> Result<()> {
        let (route, payload) = route_and_payload(args, "notify")?;
        self.live()?.notify(route, payload.as_bytes())
    }

    async fn wait(&mut self, args: &str) -> Result<()> {
        let secs: f64 = args
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && (0.0..=86_400.0).contains(s))
            .with_context(|| format!("usage: wait SECONDS (0 to 86400), got {args:?}"))?;
        self.interruptible(async {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            Ok(())
        })
        .await
    }

    /// Runs `work`, or gives up on Ctrl-C in interactive mode.
    async fn interruptible<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        match &self.interrupt {
            Some(interrupt) => tokio::select! {
                result = work => result,
                () = interrupt.notified() => bail!("interrupted"),
            },
            None => work.await,
        }
    }
}

/// The first word and the rest, trimmed.
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

/// `ROUTE [JSON]`: the route and the payload text, `{}` when none is given.
fn route_and_payload<'a>(args: &'a str, command: &str) -> Result<(&'a str, &'a str)> {
    let (route, payload) = split_word(args);
    ensure!(!route.is_empty(), "usage: {command} ROUTE [JSON]");
    ensure!(
        route.len() <= pitaya_protocol::MAX_ROUTE_LEN,
        "the route is longer than 255 bytes"
    );
    let payload = if payload.is_empty() { "{}" } else { payload };
    serde_json::from_str::<IgnoredAny>(payload)
        .with_context(|| format!("the payload is not valid JSON: {payload}"))?;
    Ok((route, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repl() -> Repl {
        let opts = Options {
            timeout: Duration::from_secs(1),
            ca: None,
            insecure: false,
            pomelo: false,
        };
        Repl::new(opts, Arc::new(Output::direct()), None)
    }

    #[test]
    fn arguments() {
        assert_eq!(split_word("  "), ("", ""));
        assert_eq!(split_word("a"), ("a", ""));
        assert_eq!(split_word("a  b c "), ("a", "b c"));
        assert_eq!(
            route_and_payload("room.join", "request").unwrap(),
            ("room.join", "{}")
        );
        assert_eq!(
            route_and_payload("room.join {\"a\": [1, 2]}", "request").unwrap(),
            ("room.join", "{\"a\": [1, 2]}")
        );
        assert!(route_and_payload("", "request").is_err());
        assert!(route_and_payload("room.join {", "request").is_err());
        assert!(route_and_payload(&"r".repeat(256), "request").is_err());
    }

    #[test]
    fn handshake_documents() {
        let mut repl = repl();
        let doc: Value = serde_json::from_str(&repl.handshake_json()).unwrap();
        assert_eq!(doc["sys"]["platform"], "repl");
        assert_eq!(doc["user"], serde_json::json!({}));
        repl.set_user(r#" {"age": 30} "#).unwrap();
        assert!(repl.handshake_json().ends_with(r#""user":{"age": 30}}"#));
        assert!(repl.set_user("[1]").is_err());
        assert!(repl.set_user("{").is_err());
        repl.opts.pomelo = true;
        let doc: Value = serde_json::from_str(&repl.handshake_json()).unwrap();
        assert_eq!(doc["sys"]["type"], "js-websocket");
        assert_eq!(doc["user"]["age"], 30);
    }

    #[tokio::test]
    async fn commands_without_a_connection() {
        let mut repl = repl();
        assert_eq!(repl.execute("").await.unwrap(), Flow::Continue);
        assert_eq!(repl.execute("# note").await.unwrap(), Flow::Continue);
        assert_eq!(repl.execute("EXIT").await.unwrap(), Flow::Quit);
        for bad in [
            "frobnicate",
            "connect",
            "connect ftp://x:1",
            "disconnect",
            "request",
            "request a.b",
            "notify a.b {}",
            "wait",
            "wait -1",
            "wait NaN",
            "sethandshake",
            "sethandshake 3",
        ] {
            assert!(repl.execute(bad).await.is_err(), "{bad:?} succeeded");
        }
        assert_eq!(repl.execute("wait 0").await.unwrap(), Flow::Continue);
        assert_eq!(repl.prompt(), "pitaya> ");
    }
}
