//! The content-addressed media store and the upload pipeline.

use crate::sniff::{sniff, SNIFF_LEN};
use bytes::Bytes;
use chrono::Utc;
use domain::content::MediaRef;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Where finished files live: `sha256/<first two hex digits>/<hex>`. The fan-out
/// keeps directories small on a local disk.
const FILES_PREFIX: &str = "sha256";
/// Where uploads in progress live until they are accepted and moved into place.
const STAGING_PREFIX: &str = "staging";
/// Part size for a local directory: small, so little is buffered per upload.
const LOCAL_CHUNK: usize = 1024 * 1024;
/// Part size for S3: its multipart minimum (every part but the last).
#[cfg(feature = "s3")]
const REMOTE_CHUNK: usize = 5 * 1024 * 1024;
/// Parts in flight per upload beyond the one being filled: bounds memory.
pub(crate) const MAX_PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(
        "media must be one of image/png, image/jpeg, image/gif, image/webp, application/pdf, video/mp4 \
         (decided from the file's bytes, not its name or declared type)"
    )]
    UnsupportedType,
    #[error("media file is empty")]
    Empty,
    #[error("media not found")]
    NotFound,
    #[error("media storage failed: {0}")]
    Store(#[from] object_store::Error),
    #[error("invalid media storage configuration: {0}")]
    Config(String),
}

/// What a garbage collection found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub files_kept: u64,
    pub files_deleted: u64,
    pub bytes_freed: u64,
    pub staging_deleted: u64,
}

/// Cheap to clone: one shared store.
#[derive(Clone)]
pub struct MediaStore {
    pub(crate) store: Arc<dyn ObjectStore>,
    max_bytes: u64,
    pub(crate) chunk_size: usize,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStore")
            .field("store", &self.store.to_string())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

fn file_path(sha256: &str) -> StorePath {
    StorePath::from(format!("{FILES_PREFIX}/{}/{sha256}", &sha256[..2]))
}

fn is_sha256_hex(raw: &str) -> bool {
    raw.len() == 64 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl MediaStore {
    /// A store in a local directory, created if missing.
    pub fn local(dir: &std::path::Path, max_bytes: u64) -> Result<Self, MediaError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| MediaError::Config(format!("cannot create MEDIA_DIR {}: {e}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            max_bytes,
            chunk_size: LOCAL_CHUNK,
        })
    }

    /// A store named by a URL: `s3://bucket[/prefix]` (credentials, region and an
    /// S3-compatible endpoint come from the usual `AWS_*` variables), or
    /// `file:///absolute/dir`.
    pub fn from_url(url: &str, max_bytes: u64) -> Result<Self, MediaError> {
        if let Some(dir) = url.strip_prefix("file://") {
            return Self::local(std::path::Path::new(dir), max_bytes);
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return Self::s3(rest, max_bytes);
        }
        Err(MediaError::Config(format!(
            "MEDIA_STORE_URL must start with s3:// or file://, got {url:?}"
        )))
    }

    #[cfg(feature = "s3")]
    fn s3(bucket_and_prefix: &str, max_bytes: u64) -> Result<Self, MediaError> {
        let (bucket, prefix) = bucket_and_prefix
            .split_once('/')
            .unwrap_or((bucket_and_prefix, ""));
        if bucket.is_empty() {
            return Err(MediaError::Config("MEDIA_STORE_URL names no bucket".into()));
        }
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        };
        Ok(Self {
            store,
            max_bytes,
            chunk_size: REMOTE_CHUNK,
        })
    }

    #[cfg(not(feature = "s3"))]
    fn s3(_: &str, _: u64) -> Result<Self, MediaError> {
        Err(MediaError::Config(
            "this build has no S3 support; rebuild with the `s3` feature".into(),
        ))
    }

    /// The largest file accepted, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Starts an upload into a fresh staging object.
    pub async fn begin(&self, file_name: Option<String>) -> Result<Upload, MediaError> {
        let staging = StorePath::from(format!("{STAGING_PREFIX}/{}", uuid::Uuid::new_v4()));
        let upload = self.store.put_multipart(&staging).await?;
        Ok(Upload {
            store: self.store.clone(),
            staging,
            writer: Some(WriteMultipart::new_with_chunk_size(upload, self.chunk_size)),
            hasher: Sha256::new(),
            size: 0,
            head: Vec::with_capacity(SNIFF_LEN),
            media_type: None,
            limit: self.max_bytes,
            file_name,
        })
    }

    /// The stored file with this hash: its size and a stream of its bytes.
    pub async fn open(
        &self,
        sha256: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, MediaError>>), MediaError> {
        if !is_sha256_hex(sha256) {
            return Err(MediaError::NotFound);
        }
        match self.store.get(&file_path(sha256)).await {
            Ok(result) => {
                let size = result.meta.size;
                Ok((size, result.into_stream().map_err(MediaError::Store).boxed()))
            }
            Err(object_store::Error::NotFound { .. }) => Err(MediaError::NotFound),
            Err(other) => Err(other.into()),
        }
    }

    /// Deletes stored files that `is_referenced` does not know and staging objects
    /// (uploads abandoned by a crash), both only when older than `grace`: a file
    /// moved into place a moment ago may belong to an event being appended now.
    pub async fn collect_garbage(
        &self,
        is_referenced: impl Fn(&str) -> bool,
        grace: Duration,
        dry_run: bool,
    ) -> Result<GcReport, MediaError> {
        let cutoff = Utc::now() - chrono::TimeDelta::from_std(grace).unwrap_or(chrono::TimeDelta::MAX);
        let mut report = GcReport::default();
        let mut files = self.store.list(Some(&StorePath::from(FILES_PREFIX)));
        while let Some(meta) = files.next().await {
            let meta = meta?;
            let name = meta.location.filename().unwrap_or_default().to_owned();
            if is_referenced(&name) || meta.last_modified > cutoff {
                report.files_kept += 1;
                continue;
            }
            if !dry_run {
                self.store.delete(&meta.location).await?;
            }
            report.files_deleted += 1;
            report.bytes_freed += meta.size;
        }
        let mut staging = self.store.list(Some(&StorePath::from(STAGING_PREFIX)));
        while let Some(meta) = staging.next().await {
            let meta = meta?;
            if meta.last_modified <= cutoff {
                if !dry_run {
                    self.store.delete(&meta.location).await?;
                }
                report.staging_deleted += 1;
            }
        }
        Ok(report)
    }
}

/// An upload in progress. Feed it with [`Upload::write`], then [`Upload::finish`]
/// it; on any error, [`Upload::abort`] it (dropping it aborts too, in the background).
pub struct Upload {
    store: Arc<dyn ObjectStore>,
    staging: StorePath,
    writer: Option<WriteMultipart>,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
    media_type: Option<&'static str>,
    limit: u64,
    file_name: Option<String>,
}

impl Upload {
    /// Adds the next chunk. Fails as soon as the file is over the limit, or its
    /// first bytes show a type that is not allowed, so nothing more is stored.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), MediaError> {
        let size = self.size + chunk.len() as u64;
        if size > self.limit {
            return Err(MediaError::TooLarge { limit: self.limit });
        }
        self.size = size;
        self.hasher.update(&chunk);
        if self.head.len() < SNIFF_LEN {
            let wanted = (SNIFF_LEN - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..wanted]);
            if self.head.len() == SNIFF_LEN {
                self.media_type = Some(sniff(&self.head).ok_or(MediaError::UnsupportedType)?);
            }
        }
        let writer = self
            .writer
            .as_mut()
            .expect("an upload is written before it finishes");
        writer.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
        writer.put(chunk);
        Ok(())
    }

    /// Completes the staging object and returns it with its metadata.
    pub async fn finish(mut self) -> Result<StagedMedia, MediaError> {
        if self.size == 0 {
            self.abort_writer().await;
            return Err(MediaError::Empty);
        }
        // A file shorter than SNIFF_LEN is decided now, on all its bytes.
        let Some(media_type) = self.media_type.or_else(|| sniff(&self.head)) else {
            self.abort_writer().await;
            return Err(MediaError::UnsupportedType);
        };
        let writer = self.writer.take().expect("an upload finishes once");
        writer.finish().await?;
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        Ok(StagedMedia {
            store: self.store.clone(),
            staging: Some(self.staging.clone()),
            media: MediaRef {
                sha256,
                size: self.size,
                media_type: media_type.to_owned(),
                file_name: self.file_name.take(),
            },
        })
    }

    /// Drops everything written so far.
    pub async fn abort(mut self) {
        self.abort_writer().await;
    }

    async fn abort_writer(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Err(error) = writer.abort().await {
                tracing::warn!(%error, "cannot abort a media upload; garbage collection will remove it");
            }
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let (Some(writer), Ok(runtime)) = (self.writer.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}

/// A complete, accepted file waiting in staging. [`StagedMedia::commit`] moves it
/// under its hash; [`StagedMedia::discard`] (or dropping it) deletes it.
pub struct StagedMedia {
    store: Arc<dyn ObjectStore>,
    staging: Option<StorePath>,
    media: MediaRef,
}

impl StagedMedia {
    pub fn media(&self) -> &MediaRef {
        &self.media
    }

    /// Moves the file into place. Idempotent. If a file with the same hash is
    /// already stored, that one is kept (the bytes are equal) and the staged copy
    /// deleted.
    pub async fn commit(&mut self) -> Result<(), MediaError> {
        let Some(staging) = self.staging.take() else {
            return Ok(());
        };
        let target = file_path(&self.media.sha256);
        let outcome = match self.store.head(&target).await {
            Ok(_) => self.store.delete(&staging).await,
            Err(object_store::Error::NotFound { .. }) => self.store.rename(&staging, &target).await,
            Err(other) => Err(other),
        };
        if let Err(error) = outcome {
            self.staging = Some(staging);
            return Err(error.into());
        }
        Ok(())
    }

    /// Deletes the staged file (nothing happens if it was committed).
    pub async fn discard(mut self) {
        if let Some(staging) = self.staging.take() {
            if let Err(error) = self.store.delete(&staging).await {
                tracing::warn!(%error, "cannot delete a staged media file; garbage collection will remove it");
            }
        }
    }
}

impl Drop for StagedMedia {
    fn drop(&mut self) {
        if let (Some(staging), Ok(runtime)) = (self.staging.take(), tokio::runtime::Handle::try_current()) {
            let store = self.store.clone();
            runtime.spawn(async move {
                let _ = store.delete(&staging).await;
            });
        }
    }
}
