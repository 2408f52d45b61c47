//! Retention: attempts, and deliveries that are done (delivered or given
//! up), are kept for `WebhooksConfig::retention` (`WEBHOOKS_RETENTION_DAYS`,
//! 30 days), then purged. Pending deliveries are never purged, whatever their
//! age (an endpoint disabled for weeks still gets them once re-enabled).
//!
//! The purge runs in the process that leads shard 0, when it starts leading
//! and every [`PURGE_INTERVAL`] after, in batches of [`PURGE_BATCH`] rows so
//! that no statement holds many locks or runs long. [`purge`] takes the clock
//! as a parameter, so tests can run it as if days had passed.

use crate::config::{WebhooksConfig, PURGE_INTERVAL};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most rows one purge statement deletes.
pub const PURGE_BATCH: i64 = 5000;

/// What one purge deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub attempts: u64,
    pub deliveries: u64,
}

/// Deletes the attempts made, and the deliveries finished, more than
/// `retention` before `now`.
pub async fn purge(
    pool: &Pool,
    retention: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<Purged, anyhow::Error> {
    let cutoff = now - chrono::TimeDelta::from_std(retention)?;
    let client = pool.get().await?;
    let mut purged = Purged::default();
    loop {
        let deleted = client
            .execute(
                "DELETE FROM webhook_attempts WHERE id IN (
                     SELECT id FROM webhook_attempts WHERE attempted_at < $1 LIMIT $2)",
                &[&cutoff, &PURGE_BATCH],
            )
            .await?;
        purged.attempts += deleted;
        if deleted < PURGE_BATCH as u64 {
            break;
        }
    }
    loop {
        let deleted = client
            .execute(
                "DELETE FROM webhook_deliveries WHERE (endpoint_id, event_id) IN (
                     SELECT endpoint_id, event_id FROM webhook_deliveries
                     WHERE state <> 'pending' AND finished_at < $1 LIMIT $2)",
                &[&cutoff, &PURGE_BATCH],
            )
            .await?;
        purged.deliveries += deleted;
        if deleted < PURGE_BATCH as u64 {
            break;
        }
    }
    Ok(purged)
}

/// Purges while this process leads shard 0 (`leading`), until `shutdown`.
pub(crate) fn spawn(
    pool: Pool,
    config: Arc<WebhooksConfig>,
    leading: Option<watch::Receiver<bool>>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(mut leading) = leading else { return };
        loop {
            // Wait to lead shard 0.
            while !*leading.borrow_and_update() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = leading.changed() => if changed.is_err() { return },
                }
            }
            match purge(&pool, config.retention, Utc::now()).await {
                Ok(purged) => {
                    metrics::counter!("marketing_webhook_purged_total", "table" => "attempts")
                        .increment(purged.attempts);
                    metrics::counter!("marketing_webhook_purged_total", "table" => "deliveries")
                        .increment(purged.deliveries);
                    tracing::debug!(?purged, "purged old webhook attempts and deliveries");
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cannot purge old webhook rows")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PURGE_INTERVAL) => {}
            }
        }
    })
}
