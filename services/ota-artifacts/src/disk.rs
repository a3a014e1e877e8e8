//! The embedded store: one file per artifact under `<data_dir>/artifacts/`,
//! named by its SHA-256, with its other hashes in a `.json` beside it.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::{is_sha256, ArtifactError, ArtifactStore, ByteStream, StoredArtifact};

/// Largest artifact accepted unless configured: the same 4 GiB as imports.
pub const DEFAULT_MAX_SIZE: u64 = 4 * 1024 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct DiskStore {
    root: PathBuf,
    max_size: u64,
}

impl DiskStore {
    /// A store under `<data_dir>/artifacts/` (created on first write).
    pub fn new(data_dir: impl AsRef<Path>) -> Self {
        Self {
            root: data_dir.as_ref().join("artifacts"),
            max_size: DEFAULT_MAX_SIZE,
        }
    }

    pub fn with_max_size(mut self, max_size: u64) -> Self {
        self.max_size = max_size;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Two-character fan-out keeps directories small at many artifacts.
    fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    fn meta_path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(format!("{sha256}.json"))
    }

    async fn write_temp(
        &self,
        mut body: ByteStream,
        tmp: &Path,
    ) -> Result<StoredArtifact, ArtifactError> {
        let mut file = tokio::fs::File::create(tmp).await?;
        let (mut s256, mut s1, mut m5) = (Sha256::new(), Sha1::new(), Md5::new());
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(ArtifactError::Body)?;
            size += chunk.len() as u64;
            if size > self.max_size {
                return Err(ArtifactError::TooLarge(self.max_size));
            }
            s256.update(&chunk);
            s1.update(&chunk);
            m5.update(&chunk);
            file.write_all(&chunk).await?;
        }
        // Durable before the rename makes it visible: a crash must not leave
        // a truncated file under a valid hash.
        file.sync_all().await?;
        Ok(StoredArtifact {
            sha256: hex::encode(s256.finalize()),
            sha1: hex::encode(s1.finalize()),
            md5: hex::encode(m5.finalize()),
            size,
        })
    }
}

#[async_trait]
impl ArtifactStore for DiskStore {
    async fn put(&self, body: ByteStream) -> Result<StoredArtifact, ArtifactError> {
        let tmp_dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir).await?;
        let tmp = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
        let written = self.write_temp(body, &tmp).await;
        let meta = match written {
            Ok(meta) => meta,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let dest = self.path(&meta.sha256);
        tokio::fs::create_dir_all(dest.parent().expect("has a parent")).await?;
        // The data first, then the metadata: `stat` only finds an artifact
        // whose metadata exists, so it never announces a missing file.
        // Renaming over an existing copy is fine: same hash, same bytes.
        tokio::fs::rename(&tmp, &dest).await?;
        let meta_tmp = tmp_dir.join(format!("{}.json", uuid::Uuid::new_v4().simple()));
        let json = serde_json::to_vec(&meta).expect("metadata serializes");
        tokio::fs::write(&meta_tmp, json).await?;
        tokio::fs::rename(&meta_tmp, self.meta_path(&meta.sha256)).await?;
        tracing::info!(sha256 = %meta.sha256, size = meta.size, "artifact stored");
        Ok(meta)
    }

    async fn stat(&self, sha256: &str) -> Result<Option<StoredArtifact>, ArtifactError> {
        if !is_sha256(sha256) {
            return Err(ArtifactError::BadHash(sha256.to_owned()));
        }
        let bytes = match tokio::fs::read(self.meta_path(sha256)).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta: StoredArtifact =
            serde_json::from_slice(&bytes).map_err(|e| ArtifactError::Corrupt {
                sha256: sha256.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Some(meta))
    }

    async fn read(
        &self,
        sha256: &str,
        range: Range<u64>,
    ) -> Result<Option<ByteStream>, ArtifactError> {
        if !is_sha256(sha256) {
            return Err(ArtifactError::BadHash(sha256.to_owned()));
        }
        let mut file = match tokio::fs::File::open(self.path(sha256)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        file.seek(SeekFrom::Start(range.start)).await?;
        let limited = file.take(range.end.saturating_sub(range.start));
        Ok(Some(
            ReaderStream::with_capacity(limited, 64 * 1024).boxed(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        let parts: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures::stream::iter(parts).boxed()
    }

    async fn read_all(store: &DiskStore, sha: &str, r: Range<u64>) -> Vec<u8> {
        let mut s = store.read(sha, r).await.unwrap().unwrap();
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn put_then_read_with_known_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::new(dir.path());
        // "The quick brown fox jumps over the lazy dog", split mid-word so
        // the hashes are computed across chunk boundaries.
        let meta = store
            .put(body(&[b"The quick brown f", b"ox jumps over the lazy dog"]))
            .await
            .unwrap();
        assert_eq!(
            meta.sha256,
            "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
        );
        assert_eq!(meta.sha1, "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12");
        assert_eq!(meta.md5, "9e107d9d372bb6826bd81d3542a419d6");
        assert_eq!(meta.size, 43);
        assert_eq!(store.stat(&meta.sha256).await.unwrap(), Some(meta.clone()));
        assert_eq!(
            read_all(&store, &meta.sha256, 0..43).await,
            b"The quick brown fox jumps over the lazy dog"
        );
        assert_eq!(read_all(&store, &meta.sha256, 4..9).await, b"quick");
        assert!(dir.path().join("artifacts/d7").join(&meta.sha256).exists());
        // The same content again is the same artifact.
        let again = store
            .put(body(&[b"The quick brown fox jumps over the lazy dog"]))
            .await
            .unwrap();
        assert_eq!(again, meta);
        // Nothing is left behind in the temporary directory.
        let tmp = std::fs::read_dir(dir.path().join("artifacts/tmp")).unwrap();
        assert_eq!(tmp.count(), 0);
    }

    #[tokio::test]
    async fn empty_artifact_has_the_empty_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let meta = DiskStore::new(dir.path()).put(body(&[])).await.unwrap();
        assert_eq!(
            meta.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(meta.sha1, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(meta.md5, "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[tokio::test]
    async fn missing_and_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::new(dir.path());
        let sha = "ab".repeat(32);
        assert_eq!(store.stat(&sha).await.unwrap(), None);
        assert!(store.read(&sha, 0..1).await.unwrap().is_none());
        assert!(matches!(
            store.stat("../../etc/passwd").await,
            Err(ArtifactError::BadHash(_))
        ));
    }

    #[tokio::test]
    async fn over_the_limit_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::new(dir.path()).with_max_size(10);
        let err = store.put(body(&[b"0123456", b"789ab"])).await.unwrap_err();
        assert!(matches!(err, ArtifactError::TooLarge(10)), "{err}");
        let tmp = std::fs::read_dir(dir.path().join("artifacts/tmp")).unwrap();
        assert_eq!(tmp.count(), 0);
        // Exactly at the limit is fine.
        store.put(body(&[b"0123456789"])).await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_body_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::new(dir.path());
        let parts: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("client went away")),
        ];
        let err = store
            .put(futures::stream::iter(parts).boxed())
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::Body(_)), "{err}");
    }
}
