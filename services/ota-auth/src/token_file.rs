//! Writing a secret to a file only its owner reads, without ever writing
//! through whatever already sits at the path: the data directory may be
//! shared, and a symlink planted at `admin.token` must not send the admin
//! secret into a file of the planter's choosing (or truncate one of ours).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// Writes `content` and a newline to `path`, mode 0600. The content goes into
/// a new file next to it, created exclusively and without following links
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`), which is then renamed over `path`: an
/// earlier file, or a symlink, at `path` is replaced as a directory entry,
/// never opened. Returns whether something was there before.
pub(crate) fn write_private(path: &Path, content: &str) -> io::Result<bool> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = opts.open(&tmp)?;
    let written = (|| {
        writeln!(file, "{content}")?;
        // The creation mode passes through the umask; this makes it exact.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.sync_all()?;
        let existed = std::fs::symlink_metadata(path).is_ok();
        std::fs::rename(&tmp, path)?;
        Ok(existed)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    // Makes the rename itself durable; a failure here loses nothing written.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    written
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn replaces_a_wide_open_file_with_a_private_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "old secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(write_private(&path, "new").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(mode(&path), 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_directory_at_the_path_is_an_error_and_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::create_dir(&path).unwrap();
        assert!(write_private(&path, "new").is_err());
        assert!(path.is_dir());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the temporary file is removed");
    }
}
