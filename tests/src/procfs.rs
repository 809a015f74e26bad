//! Reading the server's state from `/proc` (Linux): its resident memory, and the TCP state of one connection.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, Result, bail};

/// `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .with_context(|| format!("bad VmRSS line {line:?}"))?;
            return Ok(kib);
        }
    }
    bail!("no VmRSS in {path} (a zombie?)")
}

/// TCP states as numbered in `/proc/net/tcp`.
pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_FIN_WAIT1: u8 = 0x04;
pub const TCP_CLOSE_WAIT: u8 = 0x08;

/// The name of a `/proc/net/tcp` state number.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        _ => "unknown",
    }
}

fn parse_v4(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    if addr.len() != 8 {
        return None;
    }
    let raw = u32::from_str_radix(addr, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints the network-order address as a host-order number.
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(raw.to_ne_bytes()),
        port,
    )))
}

/// The state of the IPv4 TCP socket whose local address is `local` and peer is `remote`, as seen in this
/// network namespace's `/proc/net/tcp`; `None` when there is no such socket (closed and gone).
pub fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Result<Option<u8>> {
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    for line in table.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(_sl), Some(l), Some(r), Some(st)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if parse_v4(l) == Some(local) && parse_v4(r) == Some(remote) {
            return Ok(Some(u8::from_str_radix(st, 16).context("bad state field")?));
        }
    }
    Ok(None)
}
