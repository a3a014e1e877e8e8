//! Open files: every vehicle connection is one. A process starts with the
//! soft limit of its shell or unit (often 1,024), far below what a broker
//! for a fleet needs, so `ota serve` raises it to the hard limit, and keeps
//! the embedded broker below it: a broker that took every descriptor would
//! leave none for the HTTP API, the database or the health checks, and the
//! whole server would stop answering.
//!
//! Also the data directory, which holds secrets and is created private.

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
/// open files: all but the reserve and the HTTP listener's connection cap,
/// and never less than half of them.
pub fn broker_sessions(files: Option<u64>, http_connections: usize) -> usize {
    match files {
        None => 0,
        Some(rlimit::INFINITY) => 0,
        Some(n) => {
            let others = RESERVED.saturating_add(http_connections as u64);
            usize::try_from(n.saturating_sub(others).max(n / 2)).unwrap_or(0)
        }
    }
}

/// Creates the data directory (database, artifacts, the bootstrap token)
/// readable by this user only. An existing one is left as it is, with a
/// warning when others may read it.
pub fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let created = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
        created.with_context(|| {
            format!(
                "cannot create the data directory {} (data_dir / OTA_DATA_DIR)",
                dir.display()
            )
        })?;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "the data directory is open to other users; it holds the database and the bootstrap admin token (chmod 700 it)");
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_leaves_a_reserve_of_descriptors() {
        assert_eq!(broker_sessions(Some(20_000), 1024), 18_464);
        assert_eq!(broker_sessions(Some(20_000), 0), 19_488);
        assert_eq!(broker_sessions(Some(1_024), 1024), 512);
        assert_eq!(broker_sessions(Some(600), 0), 300);
        assert_eq!(broker_sessions(None, 1024), 0, "unknown: no limit");
        assert_eq!(broker_sessions(Some(rlimit::INFINITY), 1024), 0);
    }

    #[cfg(unix)]
    #[test]
    fn the_data_dir_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/ota-data");
        private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{mode:o}");
        private_dir(&dir).unwrap();
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        let now = raise_limit().unwrap();
        assert!(now <= hard && now > 0, "{now} of {hard}");
        assert_eq!(rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().0, now);
    }
}
