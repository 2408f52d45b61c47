//! When each key was last used, for `marketing api-key list`, without a write
//! per request: a request only notes the time in this process's memory; a
//! background writer stores what was noted every [`FLUSH_INTERVAL`], one
//! statement for all keys used meanwhile, and once more when the process
//! stops. So the listed last use is at most [`FLUSH_INTERVAL`] old (plus the
//! time a failed write is retried; a process killed without a clean stop loses
//! at most its last interval). Several processes may write the same key: the
//! later time wins.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often noted uses are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Default)]
pub(crate) struct Usage {
    /// The latest use of each key since the last write.
    noted: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl Usage {
    pub(crate) fn touch(&self, key_id: Uuid, at: DateTime<Utc>) {
        let mut noted = self.noted.lock().expect("usage lock");
        let latest = noted.entry(key_id).or_insert(at);
        *latest = (*latest).max(at);
    }

    /// Writes what was noted; on failure puts it back for the next attempt.
    pub(crate) async fn flush(&self, pool: &Pool) -> anyhow::Result<()> {
        let noted = std::mem::take(&mut *self.noted.lock().expect("usage lock"));
        if noted.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = noted.iter().map(|(k, t)| (*k, *t)).unzip();
        let written = async {
            let client = pool.get().await?;
            // Keys deleted meanwhile are skipped (the join), not an error.
            client
                .execute(
                    "INSERT INTO api_key_usage (key_id, last_used_at)
                     SELECT u.id, u.at FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
                       JOIN api_keys k ON k.id = u.id
                     ON CONFLICT (key_id) DO UPDATE
                        SET last_used_at = GREATEST(api_key_usage.last_used_at, EXCLUDED.last_used_at)",
                    &[&ids, &times],
                )
                .await?;
            anyhow::Ok(())
        }
        .await;
        if written.is_err() {
            for (id, at) in noted {
                self.touch(id, at);
            }
        }
        written
    }

    pub(crate) fn spawn_writer(self: Arc<Self>, pool: Pool, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stopping = tokio::select! {
                    () = stop.cancelled() => true,
                    _ = ticks.tick() => false,
                };
                if let Err(error) = self.flush(&pool).await {
                    tracing::warn!(%error, "cannot record API key use; will retry");
                }
                if stopping {
                    return;
                }
            }
        })
    }
}
