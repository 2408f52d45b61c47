//! Spooled files: uploads kept whole for later processing (the asynchronous
//! lead import), under `spool/<name>`, beside the media but never content
//! addressed, sniffed or collected by `media-gc`: their owner deletes them.

use crate::store::{MediaError, MediaStore, MAX_PARTS_IN_FLIGHT};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, WriteMultipart};

const SPOOL_PREFIX: &str = "spool";

fn spool_path(name: &str) -> StorePath {
    StorePath::from(format!("{SPOOL_PREFIX}/{name}"))
}

/// A spooled file being written: [`SpoolWriter::write`] its chunks, then
/// [`SpoolWriter::finish`]; dropping it unfinished aborts the object.
pub struct SpoolWriter {
    writer: Option<WriteMultipart>,
    size: u64,
    limit: u64,
}

impl MediaStore {
    /// Starts writing the spooled file `name` (a plain name: letters, digits,
    /// `-`), at most `limit` bytes.
    pub async fn spool(&self, name: &str, limit: u64) -> Result<SpoolWriter, MediaError> {
        let upload = self.store.put_multipart(&spool_path(name)).await?;
        Ok(SpoolWriter {
            writer: Some(WriteMultipart::new_with_chunk_size(upload, self.chunk_size)),
            size: 0,
            limit,
        })
    }

    /// The spooled file `name`, as a stream of its bytes.
    pub async fn open_spooled(
        &self,
        name: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, MediaError>>, MediaError> {
        match self.store.get(&spool_path(name)).await {
            Ok(result) => Ok(result.into_stream().map_err(MediaError::Store).boxed()),
            Err(object_store::Error::NotFound { .. }) => Err(MediaError::NotFound),
            Err(other) => Err(other.into()),
        }
    }

    /// Deletes the spooled file `name`; one already gone is not an error.
    pub async fn delete_spooled(&self, name: &str) -> Result<(), MediaError> {
        match self.store.delete(&spool_path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// Every spooled file's name and when it was written, for a sweep of
    /// files whose owner is gone.
    pub async fn spooled_names(&self) -> Result<Vec<(String, DateTime<Utc>)>, MediaError> {
        let mut names = Vec::new();
        let mut listing = self.store.list(Some(&StorePath::from(SPOOL_PREFIX)));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            if let Some(name) = meta.location.filename() {
                names.push((name.to_owned(), meta.last_modified));
            }
        }
        Ok(names)
    }
}

impl SpoolWriter {
    /// Adds the next chunk; past the limit nothing more is stored.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), MediaError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(MediaError::TooLarge { limit: self.limit });
        }
        let writer = self
            .writer
            .as_mut()
            .expect("a spool is written before it finishes");
        writer.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
        writer.put(chunk);
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Completes the object: from now on it can be opened.
    pub async fn finish(mut self) -> Result<u64, MediaError> {
        let writer = self.writer.take().expect("a spool finishes once");
        writer.finish().await?;
        Ok(self.size)
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if let (Some(writer), Ok(runtime)) = (self.writer.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}
