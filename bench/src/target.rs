//! Where to connect or listen: `tcp://` and `ws://` URLs and listen addresses, loopback only.
//!
//! Every address this tool talks to must be on this machine (127.0.0.0/8 or ::1): a load test
//! must never leave the host it runs on. Host names other than `localhost` are refused rather
//! than resolved, so no lookup can send us elsewhere.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Result, bail};

/// The transport of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Raw pitaya packets over TCP.
    Tcp,
    /// One packet per binary WebSocket frame.
    Ws,
}

/// A parsed, loopback-checked server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// TCP or WebSocket.
    pub transport: Transport,
    /// The loopback address to connect to.
    pub addr: SocketAddr,
    /// The WebSocket path (always starts with `/`); `/` for TCP.
    pub path: String,
}

impl Target {
    /// The URL for a WebSocket handshake (`ws://ADDR/PATH`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, self.path)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transport {
            Transport::Tcp => write!(f, "tcp://{}", self.addr),
            Transport::Ws => write!(f, "ws://{}{}", self.addr, self.path),
        }
    }
}

/// Parses `tcp://HOST:PORT` or `ws://HOST:PORT[/PATH]`, where HOST is a loopback IP literal
/// (`127.x.y.z`, `[::1]`) or `localhost`.
pub fn parse_url(url: &str) -> Result<Target> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("{url:?} is not a URL: expected tcp://127.0.0.1:PORT or ws://127.0.0.1:PORT");
    };
    let transport = match scheme.to_ascii_lowercase().as_str() {
        "tcp" => Transport::Tcp,
        "ws" => Transport::Ws,
        "wss" => bail!("wss:// is not supported (no TLS): use ws:// on loopback"),
        other => bail!("unsupported scheme {other:?}: expected tcp or ws"),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    if transport == Transport::Tcp && path != "/" {
        bail!("a tcp:// URL has no path: {url:?}");
    }
    let addr = parse_loopback_addr(authority)?;
    Ok(Target {
        transport,
        addr,
        path: path.to_owned(),
    })
}

/// Parses `IP:PORT` or `localhost:PORT` and refuses anything but a loopback address.
pub fn parse_loopback_addr(text: &str) -> Result<SocketAddr> {
    let addr = match text.strip_prefix("localhost:") {
        Some(port) => {
            let Ok(port) = port.parse::<u16>() else {
                bail!("bad port in {text:?}");
            };
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        }
        None => match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                bail!("{text:?} is not IP:PORT (host names other than localhost are not resolved)")
            }
        },
    };
    if !is_loopback(addr.ip()) {
        bail!(
            "{} is not a loopback address: this tool only talks to 127.0.0.0/8 or ::1",
            addr.ip()
        );
    }
    Ok(addr)
}

/// Whether `ip` is on this machine's loopback (an IPv4-mapped 127.x address counts).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_urls() {
        let t = parse_url("tcp://127.0.0.1:3250").unwrap();
        assert_eq!(t.transport, Transport::Tcp);
        assert_eq!(t.addr, "127.0.0.1:3250".parse().unwrap());
        assert_eq!(t.to_string(), "tcp://127.0.0.1:3250");

        let t = parse_url("ws://[::1]:3251/game").unwrap();
        assert_eq!(t.transport, Transport::Ws);
        assert_eq!(t.path, "/game");
        assert_eq!(t.ws_url(), "ws://[::1]:3251/game");

        let t = parse_url("WS://localhost:80").unwrap();
        assert_eq!(t.addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(t.path, "/");
        assert!(parse_url("tcp://127.8.9.10:1").is_ok());
        assert!(parse_url("tcp://[::ffff:127.0.0.1]:1").is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "127.0.0.1:3250",
            "http://127.0.0.1:80",
            "wss://127.0.0.1:443",
            "tcp://10.0.0.1:3250",
            "tcp://192.168.1.2:3250",
            "ws://0.0.0.0:3251",
            "tcp://[::]:3250",
            "tcp://[::ffff:10.0.0.1]:1",
            "tcp://example.com:3250",
            "tcp://localhost:99999",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:3250/path",
            "",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_loopback_addr("8.8.8.8:53").is_err());
        assert!(parse_loopback_addr("127.0.0.1:0").is_ok());
    }
}
