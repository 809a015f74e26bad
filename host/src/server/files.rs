//! Open files: every connection holds a descriptor, so the open-file limit is a connection
//! limit. The host raises its soft limit to the hard one at start and keeps a headroom of
//! descriptors for what is not a connection (listeners, the metrics endpoint and its clients,
//! files served with `--web`, component files on reload, the runtime's own).

use std::io;

/// The open-file limits as the kernel keeps them.
fn read_limit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// A limit value, `None` standing for unlimited.
fn finite(value: libc::rlim_t) -> Option<u64> {
    (value != libc::RLIM_INFINITY).then_some(value)
}

/// Reads the soft and hard open-file limits; `None` stands for unlimited.
pub fn file_limit() -> io::Result<(Option<u64>, Option<u64>)> {
    let limit = read_limit()?;
    Ok((finite(limit.rlim_cur), finite(limit.rlim_max)))
}

/// Raises the soft open-file limit to the hard limit. Returns the soft limit before and after
/// (`None`: unlimited).
pub fn raise_file_limit() -> io::Result<(Option<u64>, Option<u64>)> {
    let limit = read_limit()?;
    let before = finite(limit.rlim_cur);
    if limit.rlim_cur != limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, finite(limit.rlim_max)))
}

/// Descriptors kept for what is not a connection, out of a limit of `limit`.
pub fn headroom(limit: u64) -> u64 {
    32 + limit / 100
}

/// The most connections the host serves: the configured cap, and what the open-file limit
/// leaves after the headroom (at least one), whichever is lower. `None`: no cap at all.
pub fn connection_cap(configured: Option<usize>, soft_limit: Option<u64>) -> Option<usize> {
    let by_files = soft_limit.map(|limit| {
        usize::try_from(limit.saturating_sub(headroom(limit)).max(1)).unwrap_or(usize::MAX)
    });
    match (configured, by_files) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_headroom_and_honours_the_configured_one() {
        assert_eq!(connection_cap(None, Some(20_000)), Some(19_768));
        assert_eq!(connection_cap(Some(5), Some(20_000)), Some(5));
        assert_eq!(connection_cap(Some(50_000), Some(20_000)), Some(19_768));
        assert_eq!(connection_cap(None, Some(100)), Some(67));
        // A limit below the headroom still lets one client in.
        assert_eq!(connection_cap(None, Some(10)), Some(1));
        assert_eq!(connection_cap(None, None), None);
        assert_eq!(connection_cap(Some(7), None), Some(7));
    }

    #[test]
    fn limits_can_be_read() {
        let (soft, hard) = file_limit().unwrap();
        if let (Some(soft), Some(hard)) = (soft, hard) {
            assert!(soft <= hard);
        }
    }
}
