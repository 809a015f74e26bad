//! Reading a server's CPU time and memory from `/proc` (Linux), and raising our own open-file
//! limit.

use anyhow::{Context, Result, bail};

/// CPU time and memory of a process at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks (`utime + stime` of `/proc/PID/stat`).
    pub cpu_ticks: u64,
    /// The system (kernel) part of `cpu_ticks` (`stime`): for a server over loopback, mostly
    /// the sockets' system calls, which a host and the floor make alike.
    pub system_ticks: u64,
    /// Resident set size (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size (`VmHWM`), in bytes.
    pub hwm_bytes: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat_path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&stat_path)
        .with_context(|| format!("reading {stat_path} (is process {pid} running?)"))?;
    let (user, system) = parse_stat_times(&stat).with_context(|| format!("parsing {stat_path}"))?;
    let status_path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&status_path).with_context(|| format!("reading {status_path}"))?;
    let memory = parse_status_memory(&status).with_context(|| format!("parsing {status_path}"))?;
    Ok(ProcSample {
        cpu_ticks: user.saturating_add(system),
        system_ticks: system,
        rss_bytes: memory.rss_bytes,
        hwm_bytes: memory.hwm_bytes,
    })
}

/// CPU ticks of every thread of a process: (thread id, name, utime + stime).
pub fn thread_ticks(pid: u32) -> Result<Vec<(u32, String, u64)>> {
    let dir = format!("/proc/{pid}/task");
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may end between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Ok(ticks) = parse_stat_cpu_ticks(&stat) else {
            continue;
        };
        let name = std::fs::read_to_string(entry.path().join("comm"))
            .map(|n| n.trim_end().to_owned())
            .unwrap_or_default();
        threads.push((tid, name, ticks));
    }
    Ok(threads)
}

/// The thread that used the most CPU between two [`thread_ticks`] samples: its name and its
/// ticks. Threads born after the first sample count from zero.
pub fn busiest_thread(
    before: &[(u32, String, u64)],
    after: &[(u32, String, u64)],
) -> Option<(String, u64)> {
    after
        .iter()
        .map(|(tid, name, ticks)| {
            let start = before
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0, |(_, _, t)| *t);
            (name.clone(), ticks.saturating_sub(start))
        })
        .max_by_key(|(_, ticks)| *ticks)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 if it cannot be read.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// `utime + stime` from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    let (user, system) = parse_stat_times(stat)?;
    Ok(user.saturating_add(system))
}

/// `utime` and `stime` from the text of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may itself hold spaces and parentheses, so
/// the fields are counted from the last `)`: after it come field 3 (state) onwards, which puts
/// utime (field 14) and stime (field 15) at positions 11 and 12.
pub fn parse_stat_times(stat: &str) -> Result<(u64, u64)> {
    let close = stat.rfind(')').context("no ')' after the command name")?;
    let rest = stat.get(close + 1..).unwrap_or_default();
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let mut next = |name: &str| -> Result<u64> {
        fields
            .next()
            .with_context(|| format!("no {name} field"))?
            .parse::<u64>()
            .with_context(|| format!("{name} is not a number"))
    };
    let utime = next("utime")?;
    let stime = next("stime")?;
    Ok((utime, stime))
}

/// `VmRSS` and `VmHWM` of a `/proc/PID/status` text, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusMemory {
    /// `VmRSS` in bytes.
    pub rss_bytes: u64,
    /// `VmHWM` in bytes.
    pub hwm_bytes: u64,
}

/// Parses `VmRSS` and `VmHWM` (both in kB) from the text of `/proc/PID/status`.
pub fn parse_status_memory(status: &str) -> Result<StatusMemory> {
    let mut rss = None;
    let mut hwm = None;
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "VmRSS" => &mut rss,
            "VmHWM" => &mut hwm,
            _ => continue,
        };
        let kib = value
            .trim()
            .strip_suffix("kB")
            .with_context(|| format!("{key} is not in kB: {line:?}"))?
            .trim()
            .parse::<u64>()
            .with_context(|| format!("bad {key} line {line:?}"))?;
        *slot = Some(kib.saturating_mul(1024));
    }
    match (rss, hwm) {
        (Some(rss_bytes), Some(hwm_bytes)) => Ok(StatusMemory {
            rss_bytes,
            hwm_bytes,
        }),
        _ => bail!("no VmRSS/VmHWM lines (a kernel thread or a zombie?)"),
    }
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_nofile_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let stat = "4242 (pit (a) host) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    731 269 0 0 20 0 9 0 5000 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 \
                    4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat).unwrap(), 1000);
        assert_eq!(parse_stat_times(stat).unwrap(), (731, 269));
    }

    #[test]
    fn stat_errors() {
        assert!(parse_stat_cpu_ticks("").is_err());
        assert!(parse_stat_cpu_ticks("1 (x) S 1 2").is_err());
        assert!(parse_stat_cpu_ticks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 2").is_err());
    }

    #[test]
    fn status_memory() {
        let status = "Name:\tpitaya-host\nVmPeak:\t  999999 kB\nVmHWM:\t   20480 kB\n\
                      VmRSS:\t   10240 kB\nThreads:\t9\n";
        assert_eq!(
            parse_status_memory(status).unwrap(),
            StatusMemory {
                rss_bytes: 10240 * 1024,
                hwm_bytes: 20480 * 1024
            }
        );
        assert!(parse_status_memory("Name:\tkthreadd\nThreads:\t1\n").is_err());
        assert!(parse_status_memory("VmRSS:\t12 MB\nVmHWM:\t1 kB\n").is_err());
    }

    #[test]
    fn busiest_thread_counts_deltas() {
        let before = vec![(1, "main".to_owned(), 500), (2, "worker".to_owned(), 10)];
        let after = vec![
            (1, "main".to_owned(), 520),
            (2, "worker".to_owned(), 90),
            (3, "new".to_owned(), 50),
        ];
        assert_eq!(
            busiest_thread(&before, &after),
            Some(("worker".to_owned(), 80))
        );
        assert_eq!(busiest_thread(&before, &[]), None);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(me.hwm_bytes > 0);
        assert!(!thread_ticks(std::process::id()).unwrap().is_empty());
    }
}
