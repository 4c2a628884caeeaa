//! The open-files limit (`RLIMIT_NOFILE`) and the connection cap that fits in it.
//!
//! Every connection is a file descriptor, and a client connection on the public listener may
//! hold a second one: its own connection to the upstream (or one to Slack's API). The soft
//! limit is often 1024 while the hard limit is far higher, so at start [`fit_connections`]
//! raises the soft limit to the hard one (which needs no privilege) and checks that
//! `server.max_connections` fits in it. If it does not, the cap is lowered to what fits, with
//! a warning naming the key and both numbers: with more connections than descriptors, accepts
//! would fail (and so would upstream connections and the store's files) while the cap still
//! let clients in, so past that point the cap would not protect anything.
//!
//! Clamped rather than refused: the default cap (10 000) needs 30 128 descriptors, more than
//! many hosts allow (hard limits of 4096 or 20 000 are common), and a gateway that will not
//! start with its defaults on such a host helps nobody, while a lower cap is the safe
//! direction.

/// Descriptors left to everything but connections: the listeners, the store's files, the
/// config watcher, the runtime's own (epoll, wakers, signals), idle connections to Slack's
/// API, stdio.
pub const RESERVED_FILES: u64 = 128;
/// Descriptors one unit of `server.max_connections` may take: on the public listener a client
/// connection and its connection to the upstream (or to Slack's API), and on the admin
/// listener, which has a cap of the same size, a client connection.
pub const FILES_PER_CONNECTION: u64 = 3;

/// The process's open-files limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub soft: u64,
    pub hard: u64,
}

impl OpenFiles {
    /// The limits now; `None` where they cannot be read.
    pub fn current() -> Option<OpenFiles> {
        let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
        Some(OpenFiles { soft, hard })
    }
}

/// Raises the soft open-files limit to the hard one and returns the connection cap per
/// listener to use: `configured` (`server.max_connections`) when it fits in the limit, else
/// the most that fits, with a warning.
pub fn fit_connections(configured: usize) -> usize {
    let before = OpenFiles::current();
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-files limit");
    }
    let Some(now) = OpenFiles::current() else {
        tracing::warn!(
            "could not read the open-files limit; server.max_connections is not checked against it"
        );
        return configured;
    };
    tracing::info!(
        soft_before = before.map(|b| b.soft),
        soft = now.soft,
        hard = now.hard,
        "open-files limit"
    );
    let cap = connection_cap(configured, now.soft);
    if cap < configured {
        tracing::warn!(
            key = "server.max_connections",
            configured,
            open_files = now.soft,
            serving = cap,
            "{}",
            lowered(configured, now.soft, cap)
        );
    }
    cap
}

/// What `check` reports: the warning the gateway would give at start in this environment,
/// where its soft limit would be raised to `limits.hard`.
pub fn check(configured: usize, limits: OpenFiles) -> Option<String> {
    let cap = connection_cap(configured, limits.hard);
    (cap < configured).then(|| lowered(configured, limits.hard, cap))
}

/// The warning for a cap lowered from `configured` to `cap` under `open_files`.
fn lowered(configured: usize, open_files: u64, cap: usize) -> String {
    format!(
        "server.max_connections = {configured} does not fit in the open-files limit of \
         {open_files} (each connection may take {FILES_PER_CONNECTION} descriptors, \
         {RESERVED_FILES} are kept for the rest): lowered to {cap} connections per listener. \
         Raise the hard limit (LimitNOFILE=, ulimit -Hn, docker --ulimit nofile) or \
         lower server.max_connections"
    )
}

/// The connection cap per listener under a soft limit of `open_files`: `configured`, or less
/// when that many connections could run out of descriptors. At least one.
pub fn connection_cap(configured: usize, open_files: u64) -> usize {
    let fits = open_files.saturating_sub(RESERVED_FILES) / FILES_PER_CONNECTION;
    let fits = usize::try_from(fits).unwrap_or(usize::MAX).max(1);
    configured.min(fits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_that_fits_is_kept() {
        assert_eq!(connection_cap(10_000, 1_048_576), 10_000);
        assert_eq!(connection_cap(100, 1024), 100);
        // Exactly enough.
        assert_eq!(connection_cap(10_000, 30_128), 10_000);
    }

    #[test]
    fn a_cap_that_does_not_fit_is_lowered() {
        assert_eq!(connection_cap(10_000, 30_127), 9_999);
        assert_eq!(connection_cap(10_000, 1024), 298);
        assert_eq!(connection_cap(10_000, 20_000), 6_624);
        // Never to nothing.
        assert_eq!(connection_cap(10_000, 64), 1);
    }
}
