//! The descriptor limit, and the connection cap that follows it by default.
//!
//! The crate's only `unsafe`: std has no call to read or raise a resource
//! limit, so `getrlimit` and `setrlimit` are called through `libc`.

#![allow(unsafe_code)]

/// The cap is at most this, whatever the descriptor limit.
pub(super) const MOST: u64 = 1 << 20;

/// The connection cap: `max_connections` when set, else the descriptor limit
/// less a reserve for everything else the process opens (an eighth, 16 to
/// 1,024 descriptors), so that a connection beyond the cap can still be
/// accepted and answered `503`. Either way the descriptor limit is raised to
/// its hard limit first, where allowed.
pub(crate) fn max_connections(set: Option<usize>) -> usize {
    let descriptors = raise_descriptor_limit().unwrap_or(1024);
    if let Some(set) = set {
        return set;
    }
    let reserve = (descriptors / 8).clamp(16, 1024);
    let cap = descriptors.saturating_sub(reserve).clamp(16, MOST);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, where the system allows
/// it, and returns the soft limit now in force (`None`: unknown).
#[cfg(unix)]
pub(crate) fn raise_descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through the pointer it is given,
    // here to a live, aligned, writable value on our stack; nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit` through the pointer it is
        // given, here to a live, aligned value on our stack. Raising the
        // soft limit up to the hard one is always permitted (macOS refuses
        // more than OPEN_MAX: then the call fails and nothing changes).
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    // `rlim_t` is u64 on Linux, but not on every Unix.
    #[allow(clippy::useless_conversion)]
    u64::try_from(limit.rlim_cur).ok()
}

#[cfg(not(unix))]
pub(crate) fn raise_descriptor_limit() -> Option<u64> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    // `rlim_t` is u64 on Linux, but not on every Unix.
    #[allow(clippy::useless_conversion)]
    fn the_default_cap_follows_the_raised_descriptor_limit() {
        let soft = raise_descriptor_limit().expect("getrlimit");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_descriptor_limit`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(u64::from(limit.rlim_cur), soft);
        if limit.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(limit.rlim_cur, limit.rlim_max, "raised to the hard limit");
        }
        let cap = max_connections(None) as u64;
        assert!(
            cap < soft && cap + 1024 >= soft.min(MOST),
            "{cap} of {soft}"
        );
    }
}
