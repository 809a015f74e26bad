//! Server addresses: `tcp://host:port`, `tls://host:port`, `ws://host:port[/path]` and
//! `wss://host:port[/path]` (a bare `host:port` means TCP).

use std::fmt;

use anyhow::{Context, Result, bail, ensure};

/// How to reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP.
    Tcp,
    /// TCP with TLS.
    Tls,
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Scheme {
    /// Whether the connection is encrypted.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    /// Whether the connection is a WebSocket.
    pub fn is_ws(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }
}

/// A parsed server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Transport.
    pub scheme: Scheme,
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    /// Port.
    pub port: u16,
    /// WebSocket request path with its query, starting with `/`; `/` for TCP and TLS.
    pub path: String,
}

impl Target {
    /// Parses an address. WebSocket ports default to 80 (ws) and 443 (wss); TCP and TLS need one.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = match scheme.to_ascii_lowercase().as_str() {
                    "tcp" => Scheme::Tcp,
                    "tls" | "tcps" => Scheme::Tls,
                    "ws" => Scheme::Ws,
                    "wss" => Scheme::Wss,
                    other => bail!("unknown scheme {other:?}: use tcp://, tls://, ws:// or wss://"),
                };
                (scheme, rest)
            }
            None => (Scheme::Tcp, text),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        };
        if !scheme.is_ws() {
            ensure!(
                path == "/",
                "{}:// addresses have no path (got {path:?})",
                scheme.name()
            );
        }
        let (host, port) = split_host_port(authority)?;
        let port = match (port, scheme) {
            (Some(port), _) => port,
            (None, Scheme::Ws) => 80,
            (None, Scheme::Wss) => 443,
            (None, _) => bail!("{text:?} has no port: write {}://host:port", scheme.name()),
        };
        Ok(Self {
            scheme,
            host,
            port,
            path,
        })
    }

    /// `host:port` with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL of the WebSocket upgrade request.
    pub fn ws_url(&self) -> String {
        let scheme = if self.scheme.is_tls() { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.name(), self.authority())?;
        if self.scheme.is_ws() && self.path != "/" {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>)> {
    ensure!(!authority.is_empty(), "the address has no host");
    ensure!(
        !authority.contains('@'),
        "user names in addresses are not supported"
    );
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .context("an IPv6 address needs a closing ']'")?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .context("expected ':' and a port after ']'")?,
                ),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => {
                ensure!(
                    !port.contains(':'),
                    "write an IPv6 address in brackets: [::1]:3250"
                );
                (host, Some(port))
            }
            None => (authority, None),
        }
    };
    ensure!(!host.is_empty(), "the address has no host");
    let port = port
        .map(|port| {
            port.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .with_context(|| format!("bad port {port:?}"))
        })
        .transpose()?;
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Target {
        Target::parse(text).unwrap()
    }

    #[test]
    fn schemes_and_defaults() {
        let t = parse("tcp://127.0.0.1:3250");
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port, t.path.as_str()),
            (Scheme::Tcp, "127.0.0.1", 3250, "/")
        );
        assert_eq!(parse("localhost:1").scheme, Scheme::Tcp);
        assert_eq!(parse("tls://example.com:3250").scheme, Scheme::Tls);
        let w = parse("ws://example.com");
        assert_eq!(
            (w.port, w.ws_url()),
            (80, "ws://example.com:80/".to_owned())
        );
        let w = parse("wss://example.com/game?x=1");
        assert_eq!(w.port, 443);
        assert_eq!(w.ws_url(), "wss://example.com:443/game?x=1");
        assert_eq!(w.to_string(), "wss://example.com:443/game?x=1");
        let w = parse("ws://h:9?t=1");
        assert_eq!(w.path, "/?t=1");
        let v6 = parse("tcp://[::1]:3250");
        assert_eq!(
            (v6.host.as_str(), v6.authority()),
            ("::1", "[::1]:3250".to_owned())
        );
    }

    #[test]
    fn bad_addresses() {
        for bad in [
            "",
            "tcp://",
            "tcp://host",
            "tcp://host:0",
            "tcp://host:99999",
            "tcp://host:12/path",
            "http://host:1",
            "tcp://::1:3250",
            "tcp://[::1",
            "tcp://:3250",
            "ws://user@host:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
