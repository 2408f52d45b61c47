//! `marketing media-gc`: deletes media files that no event references.
//!
//! The retention rule: a stored file stays as long as any event in the log names
//! it, even if the content item has since moved on to another file or was
//! deleted (the history still points at it, and auditors may download it). Since
//! the log is immutable, every file an accepted write attached is kept forever;
//! only files that never made it into an event (an append that failed after the
//! file was moved into place) and uploads abandoned mid-way by a crash are
//! garbage. Both are deleted only after a grace period, because a file is moved
//! into place just before its event is appended.

use crate::config::Config;
use crate::progress::{Progress, Unit};
use domain::content::{ContentEvent, STREAM_PREFIX};
use domain::DomainEvent;
use event_store::{connect_pool, EventStore, LogPosition, Wakeups};
use std::collections::HashSet;
use std::time::Duration;

/// Every media hash named by any content event, read from the whole log.
pub async fn referenced_media(store: &dyn EventStore) -> anyhow::Result<HashSet<String>> {
    referenced_media_with_progress(store, |_| {}).await
}

/// [`referenced_media`], calling `progress` with the events read so far after
/// each batch.
pub async fn referenced_media_with_progress(
    store: &dyn EventStore,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<HashSet<String>> {
    const BATCH: usize = 1000;
    let mut referenced = HashSet::new();
    let mut after = LogPosition::START;
    let mut read = 0u64;
    loop {
        let batch = store.read_all(after, BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(referenced);
        };
        after = last.position;
        read += batch.len() as u64;
        progress(read);
        for recorded in batch.iter().filter(|e| e.stream_id.starts_with(STREAM_PREFIX)) {
            let event = ContentEvent::from_data_ref(&recorded.event_type, &recorded.data)?;
            if let Some(media) = event.attached_media() {
                referenced.insert(media.sha256.clone());
            }
        }
    }
}

/// Runs one collection against the configured database and media store.
pub async fn run(config: &Config, grace: Duration, dry_run: bool) -> anyhow::Result<media::GcReport> {
    let pool = connect_pool(&config.database_url, 2)?;
    let store = config.event_store(pool.clone(), Wakeups::new())?;
    let total = store.clone().log_reader().count(&pool).await?;
    let mut progress = Progress::new(config, "media-gc: reading the log", Unit::Events, Some(total));
    let referenced = referenced_media_with_progress(store.as_ref(), |read| progress.set(read)).await?;
    progress.finish();
    let media = config.media_store()?;
    Ok(media
        .collect_garbage(|sha| referenced.contains(sha), grace, dry_run)
        .await?)
}
