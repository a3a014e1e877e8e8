//! Open files: every vehicle connection is one. A process starts with the
//! soft limit of its shell or unit (often 1,024), far below what a broker
//! for a fleet needs, so `ota serve` raises it to the hard limit, and keeps
//! the embedded broker below it: a broker that took every descriptor would
//! leave none for the HTTP API, the database or the health checks, and the
//! whole server would stop answering.

/// Descriptors kept for everything but MQTT vehicles: the broker's
/// handshakes in flight (at most 128, which can overrun the session cap),
/// listeners, database and Redis connections, HTTP clients, files. `ota
/// serve` with every role holds about 100 of its own under a full broker.
const RESERVED: u64 = 512;

/// Raises the soft limit on open files to the hard one; returns the limit
/// now in force (None where it cannot be read).
pub fn raise_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the limit on open files");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// Sessions the embedded broker takes by default under a limit of `files`
/// open files: all but the reserve, and never less than half of them.
pub fn broker_sessions(files: Option<u64>) -> usize {
    match files {
        None => 0,
        Some(rlimit::INFINITY) => 0,
        Some(n) => usize::try_from(n.saturating_sub(RESERVED).max(n / 2)).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_leaves_a_reserve_of_descriptors() {
        assert_eq!(broker_sessions(Some(20_000)), 19_488);
        assert_eq!(broker_sessions(Some(1_024)), 512);
        assert_eq!(broker_sessions(Some(600)), 300);
        assert_eq!(broker_sessions(None), 0, "unknown: no limit");
        assert_eq!(broker_sessions(Some(rlimit::INFINITY)), 0);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        let now = raise_limit().unwrap();
        assert!(now <= hard && now > 0, "{now} of {hard}");
        assert_eq!(rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().0, now);
    }
}
