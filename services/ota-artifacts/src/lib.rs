//! Artifact storage: content-addressed by SHA-256, behind [`ArtifactStore`]
//! so an object store can replace the embedded [`DiskStore`]. [`serve`]
//! answers an HTTP download with single-range support.

mod disk;
mod error;
mod serve;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use disk::{DiskStore, DEFAULT_MAX_SIZE};
pub use error::ArtifactError;
pub use serve::{parse_range, serve, ByteRange};

/// A body streamed into or out of a store.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Where hosted artifacts live on this server: `{base_url}/artifacts/{sha256}`,
/// optionally followed by `/{filename}`.
pub const ARTIFACTS_PATH: &str = "/artifacts";

/// What a store holds for one artifact. The three hashes cover every DDI
/// client: SWUpdate and rauc-hawkbit-updater verify SHA-1, others MD5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArtifact {
    pub sha256: String,
    pub sha1: String,
    pub md5: String,
    pub size: u64,
}

#[async_trait]
pub trait ArtifactStore: Send + Sync + 'static {
    /// Stores the body and returns its hashes. Storing content that is
    /// already there is not an error; the result is the same.
    async fn put(&self, body: ByteStream) -> Result<StoredArtifact, ArtifactError>;

    /// The artifact's hashes and size, `None` when it is not stored.
    async fn stat(&self, sha256: &str) -> Result<Option<StoredArtifact>, ArtifactError>;

    /// The bytes in `range` (already clamped to the size), `None` when it is
    /// not stored. A range rather than a reader because object stores serve
    /// ranges natively.
    async fn read(
        &self,
        sha256: &str,
        range: Range<u64>,
    ) -> Result<Option<ByteStream>, ArtifactError>;
}

/// The URL under which this server hosts an artifact.
pub fn hosted_url(base_url: &str, sha256: &str, filename: Option<&str>) -> String {
    let base = base_url.trim_end_matches('/');
    match filename {
        Some(f) => format!("{base}{ARTIFACTS_PATH}/{sha256}/{f}"),
        None => format!("{base}{ARTIFACTS_PATH}/{sha256}"),
    }
}

/// The SHA-256 of an artifact URL that this server hosts (made by
/// [`hosted_url`] with the same `base_url`, or a bare `/artifacts/...` path),
/// `None` for an external URL.
pub fn hosted_sha256<'a>(base_url: &str, url: &'a str) -> Option<&'a str> {
    let base = base_url.trim_end_matches('/');
    let rest = if url.starts_with(ARTIFACTS_PATH) {
        url
    } else if !base.is_empty() {
        url.strip_prefix(base)?
    } else {
        return None;
    };
    let rest = rest.strip_prefix(ARTIFACTS_PATH)?.strip_prefix('/')?;
    let sha = rest.split('/').next()?;
    is_sha256(sha).then_some(sha)
}

/// 64 lowercase hex characters.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosted_urls_round_trip() {
        let sha = "ab".repeat(32);
        let base = "https://ota.example/";
        let url = hosted_url(base, &sha, Some("fw.bin"));
        assert_eq!(url, format!("https://ota.example/artifacts/{sha}/fw.bin"));
        assert_eq!(hosted_sha256(base, &url), Some(sha.as_str()));
        assert_eq!(
            hosted_sha256(base, &hosted_url(base, &sha, None)),
            Some(sha.as_str())
        );
        assert_eq!(
            hosted_sha256("", &format!("/artifacts/{sha}")),
            Some(sha.as_str())
        );
        assert_eq!(
            hosted_sha256(base, &format!("https://cdn.example/artifacts/{sha}")),
            None
        );
        assert_eq!(
            hosted_sha256(base, "https://ota.example/artifacts/notahash"),
            None
        );
    }
}
