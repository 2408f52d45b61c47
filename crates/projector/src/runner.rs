//! Drives one projection: leadership, reading, batching, checkpointing.

use crate::{Projection, ProjectionError};
use deadpool_postgres::Pool;
use event_store::{EventStore, LogPosition, RecordedEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most events applied in one transaction. When the projection is behind,
    /// full batches amortise the commit; when it is current, batches are small.
    pub batch_size: usize,
    /// Longest sleep between polls when idle; NOTIFY usually wakes it sooner.
    pub idle_poll: Duration,
    /// How often a standby instance tries to become the active one.
    pub standby_poll: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_size: 2000,
            idle_poll: Duration::from_millis(500),
            standby_poll: Duration::from_secs(1),
        }
    }
}

pub struct ProjectionRunner {
    store: Arc<dyn EventStore>,
    pool: Pool,
    projection: Arc<dyn Projection>,
    config: RunnerConfig,
    progress: watch::Sender<LogPosition>,
}

enum BatchError {
    /// Another instance moved the checkpoint: our view is stale.
    CheckpointMoved(LogPosition),
    Failed(ProjectionError),
}

impl<E: Into<ProjectionError>> From<E> for BatchError {
    fn from(error: E) -> Self {
        BatchError::Failed(error.into())
    }
}

/// Longest a runner goes without recording skipped events in its checkpoint row
/// while busy (it records them at once when idle).
const SKIP_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// The advisory-lock key of a projection: stable across processes and versions.
fn lock_key(name: &str) -> i64 {
    // FNV-1a, folded into the high bits with a fixed tag so keys do not collide
    // with the migration lock.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash >> 1) as i64
}

impl ProjectionRunner {
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: Pool,
        projection: Arc<dyn Projection>,
        config: RunnerConfig,
    ) -> Self {
        let (progress, _) = watch::channel(LogPosition::START);
        Self {
            store,
            pool,
            projection,
            config,
            progress,
        }
    }

    /// Ticks with the checkpoint after every committed batch; feeds read-after-write.
    pub fn progress(&self) -> watch::Receiver<LogPosition> {
        self.progress.subscribe()
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// Runs until `shutdown` is cancelled. Errors are logged and retried: a
    /// projection that stops would silently stale every read.
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.projection.name();
        while !shutdown.is_cancelled() {
            match self.lead(&shutdown).await {
                Ok(()) => {}
                Err(error) => {
                    tracing::error!(projection = name, %error, "projection runner failed; retrying");
                    metrics::counter!("marketing_projection_errors_total", "projection" => name).increment(1);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.config.standby_poll) => {}
            }
        }
        tracing::info!(projection = name, "projection runner stopped");
    }

    /// Becomes the active instance if no other process is, then projects until
    /// shutdown or until the lock's connection is lost.
    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), ProjectionError> {
        let name = self.projection.name();
        // A connection taken out of the pool: the session-level advisory lock lives
        // and dies with it, so a crashed process releases leadership by itself.
        let lock_connection = deadpool_postgres::Object::take(self.pool.get().await?);
        let acquired: bool = lock_connection
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(name)])
            .await?
            .get(0);
        if !acquired {
            return Ok(());
        }
        tracing::info!(projection = name, "became the active instance");
        // `checkpoint`: how far this instance has got. `persisted`: what the
        // checkpoint row says. They differ only after batches with nothing this
        // projection handles, which are skipped without a transaction and
        // recorded with the next batch that writes, after SKIP_PERSIST_INTERVAL,
        // or as soon as the runner is idle. A crash loses only skipped events,
        // which are skipped again: no effect is lost or doubled.
        let mut checkpoint = self.load_checkpoint().await?;
        let mut persisted = checkpoint;
        let mut persisted_at = Instant::now();
        self.progress.send_replace(checkpoint);
        let mut wakeups = self.store.wakeups().subscribe();
        let mut backoff = Duration::from_millis(1);
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() || lock_connection.is_closed() {
                return Ok(());
            }
            wakeups.borrow_and_update();
            let events = match self.projection.stream_prefixes() {
                Some(prefixes) => {
                    self.store
                        .read_all_matching(checkpoint, self.config.batch_size, prefixes)
                        .await?
                }
                None => self.store.read_all(checkpoint, self.config.batch_size).await?,
            };
            if events.is_empty() {
                if checkpoint != persisted {
                    // Idle: record the skipped events now, so processes that
                    // poll the checkpoint table (a separate command API) see them.
                    match self.move_checkpoint(persisted, checkpoint).await? {
                        true => {
                            persisted = checkpoint;
                            persisted_at = Instant::now();
                        }
                        false => {
                            checkpoint = self.load_checkpoint().await?;
                            persisted = checkpoint;
                            self.progress.send_replace(checkpoint);
                        }
                    }
                    continue;
                }
                // Nothing readable. A wake-up means a commit happened; its events
                // may still sit behind an older open transaction, so re-poll
                // quickly at first and back off towards the idle interval.
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    changed = wakeups.changed() => {
                        if changed.is_ok() { backoff = Duration::from_millis(1); }
                    }
                    _ = tokio::time::sleep(backoff) => {
                        backoff = (backoff * 2).min(self.config.idle_poll);
                    }
                }
                continue;
            }
            backoff = Duration::from_millis(1);
            let last = events.last().expect("batch is not empty").position;
            let relevant = events.iter().any(|e| self.projection.handles(&e.event_type));
            if !relevant && persisted_at.elapsed() < SKIP_PERSIST_INTERVAL {
                checkpoint = last;
                self.progress.send_replace(checkpoint);
                metrics::counter!("marketing_projection_events_skipped_total", "projection" => name)
                    .increment(events.len() as u64);
                continue;
            }
            let started = Instant::now();
            match self.apply_batch(persisted, &events).await {
                Ok(next) => {
                    failures = 0;
                    checkpoint = next;
                    persisted = next;
                    persisted_at = Instant::now();
                    self.progress.send_replace(checkpoint);
                    metrics::counter!("marketing_projection_events_total", "projection" => name)
                        .increment(events.len() as u64);
                    metrics::histogram!("marketing_projection_batch_seconds", "projection" => name)
                        .record(started.elapsed().as_secs_f64());
                }
                Err(BatchError::CheckpointMoved(actual)) => {
                    tracing::warn!(projection = name, ?actual, "checkpoint moved by another instance");
                    checkpoint = actual;
                    persisted = actual;
                    self.progress.send_replace(checkpoint);
                }
                Err(BatchError::Failed(error)) => {
                    failures += 1;
                    metrics::counter!("marketing_projection_errors_total", "projection" => name).increment(1);
                    tracing::error!(projection = name, %error, failures, "batch failed; will retry it");
                    let pause = Duration::from_millis(50 * u64::from(failures.min(40)));
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(pause) => {}
                    }
                    // Another instance may have applied this batch meanwhile (and
                    // made it fail here, e.g. on a unique key): resume from where
                    // the committed checkpoint really is.
                    checkpoint = self.load_checkpoint().await?;
                    persisted = checkpoint;
                    self.progress.send_replace(checkpoint);
                }
            }
        }
    }

    /// Moves the checkpoint row from `from` to `to` by compare-and-set, for
    /// skipped events only (no read-model writes). False if another instance
    /// moved it first.
    async fn move_checkpoint(&self, from: LogPosition, to: LogPosition) -> Result<bool, ProjectionError> {
        let client = self.pool.get().await?;
        let moved = client
            .execute(
                "UPDATE projection_checkpoints SET tx_id = $4, position = $5, updated_at = now()
                 WHERE name = $1 AND tx_id = $2 AND position = $3",
                &[
                    &self.projection.name(),
                    &from.tx_id,
                    &from.position,
                    &to.tx_id,
                    &to.position,
                ],
            )
            .await?;
        Ok(moved == 1)
    }

    async fn load_checkpoint(&self) -> Result<LogPosition, ProjectionError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                &[&self.projection.name()],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1",
                &[&self.projection.name()],
            )
            .await?;
        Ok(LogPosition {
            tx_id: row.get(0),
            position: row.get(1),
        })
    }

    /// Applies `events` and moves the checkpoint from `from` to the last event, in
    /// one transaction. The checkpoint moves by compare-and-set: if another
    /// instance (one that also believes it leads) moved it first, this update
    /// matches no row and the whole batch rolls back, so no batch is applied twice.
    ///
    /// The transaction commits without waiting for its WAL flush
    /// (`synchronous_commit = off`): read models are derived, and the checkpoint
    /// commits with them, so a database crash can only lose the last few batches
    /// *together with* their checkpoint, which are then simply re-applied from the
    /// log. This takes an fsync off the read-after-write path of every write.
    async fn apply_batch(
        &self,
        from: LogPosition,
        events: &[RecordedEvent],
    ) -> Result<LogPosition, BatchError> {
        let name = self.projection.name();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        self.projection.apply(&tx, events).await?;
        let to = events.last().expect("batch is not empty").position;
        let moved = tx
            .execute(
                "UPDATE projection_checkpoints SET tx_id = $4, position = $5, updated_at = now()
                 WHERE name = $1 AND tx_id = $2 AND position = $3",
                &[&name, &from.tx_id, &from.position, &to.tx_id, &to.position],
            )
            .await?;
        if moved != 1 {
            drop(tx);
            let actual = self.load_checkpoint().await?;
            return Err(BatchError::CheckpointMoved(actual));
        }
        tx.commit().await?;
        Ok(to)
    }
}
