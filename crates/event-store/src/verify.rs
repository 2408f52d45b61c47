//! `marketing verify`: re-checks every stream's hash chain.
//!
//! What it proves: no stored event was altered, removed from the middle of its
//! stream, or reordered since it was written, unless whoever did it also
//! rewrote every later hash of that stream. What it cannot prove on its own: that
//! the newest events of a stream were not cut off, or that someone with full
//! database access did not rewrite a whole chain. For that, keep the
//! `log_digest` it prints somewhere the database administrator cannot write
//! (a ticket, a signed mail): a later digest that differs for the same events
//! shows the log was rewritten.

use crate::StoreError;
use deadpool_postgres::Pool;
use futures::{pin_mut, TryStreamExt};
use sha2::{Digest, Sha256};

/// The first place a chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub stream_id: String,
    pub version: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub streams: u64,
    pub events: u64,
    /// SHA-256 over every stream id and its last hash, in stream order.
    pub log_digest: String,
    pub first_break: Option<ChainBreak>,
}

/// Streams the whole log once, in `(stream_id, version)` order, recomputing each
/// hash from the stored content and the previous stored hash with the same SQL
/// function the insert trigger uses. Memory stays flat whatever the log size.
pub async fn verify(pool: &Pool) -> Result<VerifyReport, StoreError> {
    verify_with_progress(pool, |_| {}).await
}

/// Events checked between two calls of a [`verify_with_progress`] callback.
pub const PROGRESS_EVERY: u64 = 1024;

/// [`verify`], calling `progress` with the number of events checked so far
/// every [`PROGRESS_EVERY`] events (the CLI's progress bar).
pub async fn verify_with_progress(
    pool: &Pool,
    progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query_raw(&chain_query("true"), std::iter::empty::<&str>())
        .await?;
    check_chains(rows, progress).await
}

/// [`verify`] for the streams of one campaign: every stream with an event
/// that carries its id (its own stream and its tasks', content's, leads' and
/// analytics'), each checked whole from version 0, as `marketing verify`
/// checks it. The digest covers those streams only.
pub async fn verify_campaign(pool: &Pool, campaign_id: &str) -> Result<VerifyReport, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query_raw(
            &chain_query(
                "stream_id IN (SELECT DISTINCT stream_id FROM events
                               WHERE data ? 'campaign_id' AND data->>'campaign_id' = $1)",
            ),
            [campaign_id],
        )
        .await?;
    check_chains(rows, |_| {}).await
}

/// Every event of the streams `filter` selects, with its stored hash and the
/// hash recomputed from its content and its predecessor's stored hash (the SQL
/// function the insert trigger uses), in `(stream_id, version)` order.
fn chain_query(filter: &str) -> String {
    format!(
        "SELECT stream_id, version, hash,
                event_hash(coalesce(lag(hash) OVER w, event_hash_genesis()), event_id, stream_id,
                           version, event_type, schema_version, data, metadata, recorded_at),
                lag(version) OVER w
         FROM events
         WHERE {filter}
         WINDOW w AS (PARTITION BY stream_id ORDER BY version)
         ORDER BY stream_id, version"
    )
}

async fn check_chains(
    rows: tokio_postgres::RowStream,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    pin_mut!(rows);
    let mut report = VerifyReport {
        streams: 0,
        events: 0,
        log_digest: String::new(),
        first_break: None,
    };
    let mut digest = Sha256::new();
    let mut current: Option<(String, Vec<u8>)> = None;
    while let Some(row) = rows.try_next().await? {
        let stream_id: String = row.get(0);
        let version: i64 = row.get(1);
        let stored: Vec<u8> = row.get(2);
        let expected: Vec<u8> = row.get(3);
        let previous_version: Option<i64> = row.get(4);
        report.events += 1;
        if report.events.is_multiple_of(PROGRESS_EVERY) {
            progress(report.events);
        }
        if current.as_ref().is_none_or(|(s, _)| *s != stream_id) {
            if let Some((stream, head)) = current.take() {
                digest.update(stream.as_bytes());
                digest.update([0]);
                digest.update(&head);
            }
            report.streams += 1;
        }
        if report.first_break.is_none() {
            let reason = match previous_version {
                None if version != 0 => Some(format!("stream starts at version {version}, not 0")),
                Some(p) if version != p + 1 => Some(format!("version {version} follows version {p}")),
                _ if stored != expected => Some("hash does not match the event's content and chain".into()),
                _ => None,
            };
            if let Some(reason) = reason {
                report.first_break = Some(ChainBreak {
                    stream_id: stream_id.clone(),
                    version,
                    reason,
                });
            }
        }
        current = Some((stream_id, stored));
    }
    if let Some((stream, head)) = current {
        digest.update(stream.as_bytes());
        digest.update([0]);
        digest.update(&head);
    }
    report.log_digest = hex::encode(digest.finalize());
    Ok(report)
}
