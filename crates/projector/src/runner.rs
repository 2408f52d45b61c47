//! Drives one shard of a projection on the log follower
//! ([`event_store::follower`]): leadership, reading, skipping and checkpoint
//! fail-over come from there; this file is what a projection adds: each batch,
//! cut down to the shard's own events ([`Shard`]), applied in one transaction
//! together with the shard's checkpoint.

use crate::{reads_event, Projection, ProjectionError, Shard};
use async_trait::async_trait;
use deadpool_postgres::Pool;
use event_store::follower::{self, Batch, Follower, FollowerConfig, Handled, Handler};
use event_store::leases::Leases;
use event_store::{EventStore, LogPosition, RecordedEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Batch size and polling of a projection runner (see [`FollowerConfig`]).
pub type RunnerConfig = FollowerConfig;

pub struct ProjectionRunner {
    follower: Follower,
    handler: Projecting,
}

/// The advisory-lock key of a projection: stable across processes and versions
/// (untagged: the keys predate the tags).
fn lock_key(name: &str) -> i64 {
    follower::lock_key("", name)
}

impl ProjectionRunner {
    /// A runner of the whole projection, unsharded.
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: Pool,
        projection: Arc<dyn Projection>,
        config: RunnerConfig,
    ) -> Self {
        Self::shard(store, pool, projection, Shard::WHOLE, config)
    }

    /// A runner of one shard of the projection.
    pub fn shard(
        store: Arc<dyn EventStore>,
        pool: Pool,
        projection: Arc<dyn Projection>,
        shard: Shard,
        config: RunnerConfig,
    ) -> Self {
        let prefixes = projection
            .reads()
            .map(|reads| reads.iter().map(|r| r.stream_prefix).collect());
        let reader = shard.reader_name(projection.name());
        Self {
            follower: Follower::new(store, pool.clone(), config),
            handler: Projecting {
                lock_key: lock_key(&reader),
                reader,
                projection,
                shard,
                pool,
                prefixes,
            },
        }
    }

    /// Leads on the process's shared `leases`, so that the processes running
    /// this projection divide its shards between them.
    pub fn with_leases(mut self, leases: Arc<Leases>) -> Self {
        self.follower = self.follower.with_leases(leases);
        self
    }

    /// True while this process leads the shard; only then does
    /// [`ProjectionRunner::progress`] tick.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.follower.leading()
    }

    /// The shard's reader name: its checkpoint row.
    pub fn reader(&self) -> &str {
        &self.handler.reader
    }

    pub fn shard_of(&self) -> Shard {
        self.handler.shard
    }

    /// Ticks with the checkpoint after every committed batch; feeds read-after-write.
    pub fn progress(&self) -> watch::Receiver<LogPosition> {
        self.follower.progress()
    }

    pub fn name(&self) -> &'static str {
        self.handler.projection.name()
    }

    /// Runs until `shutdown` is cancelled. Errors are logged and retried: a
    /// projection that stops would silently stale every read.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if !self.prepare(&shutdown).await {
            return;
        }
        self.follower.run(&mut self.handler, &shutdown).await;
        tracing::info!(projection = self.name(), "projection runner stopped");
    }
}

impl ProjectionRunner {
    /// Makes sure the projection's checkpoint rows are this shard count's
    /// ([`crate::layout::prepare`]), retrying until they are or shutdown. A
    /// layout of another count stops the shard here, loudly: running it would
    /// apply events twice.
    async fn prepare(&self, shutdown: &CancellationToken) -> bool {
        let name = self.handler.projection.name();
        let count = self.handler.shard.count;
        loop {
            let prepared = match self.handler.pool.get().await {
                Ok(mut client) => crate::layout::prepare(&mut client, name, count).await,
                Err(error) => Err(error.into()),
            };
            match prepared {
                Ok(()) => return true,
                Err(error) => {
                    metrics::counter!("marketing_projection_errors_total", "projection" => name).increment(1);
                    tracing::error!(reader = %self.handler.reader, %error, "cannot start the shard");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.follower.config().standby_poll) => {}
            }
        }
    }
}

/// A projection as the follower's handler.
struct Projecting {
    projection: Arc<dyn Projection>,
    shard: Shard,
    /// The shard's reader name and lock key.
    reader: String,
    lock_key: i64,
    pool: Pool,
    /// The stream prefixes of `Projection::reads`.
    prefixes: Option<Vec<&'static str>>,
}

#[async_trait]
impl Handler for Projecting {
    type Error = ProjectionError;

    fn name(&self) -> &str {
        &self.reader
    }

    fn lock_key(&self) -> i64 {
        self.lock_key
    }

    /// The rows are the layout's ([`crate::layout`]), made by
    /// [`ProjectionRunner::run`] before it follows.
    fn creates_checkpoint(&self) -> bool {
        false
    }

    fn stream_prefixes(&self) -> Option<&[&str]> {
        self.prefixes.as_deref()
    }

    fn wants(&self, events: &[RecordedEvent]) -> bool {
        events
            .iter()
            .any(|e| reads_event(self.projection.as_ref(), e) && self.shard.holds_event(e))
    }

    fn skipped(&self, events: usize) {
        metrics::counter!("marketing_projection_events_skipped_total", "projection" => self.projection.name())
            .increment(events as u64);
    }

    fn became_active(&mut self, _: LogPosition) {
        tracing::info!(reader = %self.reader, "became the active instance");
    }

    /// Applies the batch and moves the checkpoint over it, in one transaction.
    /// The checkpoint moves by compare-and-set: if another instance (one that
    /// also believes it leads) moved it first, this update matches no row and
    /// the whole batch rolls back, so no batch is applied twice.
    ///
    /// The transaction commits without waiting for its WAL flush
    /// (`synchronous_commit = off`): read models are derived, and the checkpoint
    /// commits with them, so a database crash can only lose the last few batches
    /// *together with* their checkpoint, which are then simply re-applied from the
    /// log. This takes an fsync off the read-after-write path of every write.
    async fn handle(
        &mut self,
        mut batch: Batch<'_>,
        _: &CancellationToken,
    ) -> Result<Handled, ProjectionError> {
        let name = self.projection.name();
        let started = Instant::now();
        let to = batch.last();
        let mut events = std::mem::take(&mut batch.events);
        if self.shard.count > 1 {
            events.retain(|e| self.shard.holds_event(e));
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Pipelined ahead of the batch's first statement rather than waited
        // for: one round trip less per batch. `join!` polls it first, so it
        // is sent first, and a failure aborts the transaction either way.
        let (asynchronous, applied) = tokio::join!(
            tx.batch_execute("SET LOCAL synchronous_commit = off"),
            self.projection.apply(&tx, &events)
        );
        asynchronous?;
        applied?;
        if !batch.commit_in(&tx, to).await? {
            return Ok(Handled::Moved);
        }
        tx.commit().await?;
        metrics::counter!("marketing_projection_events_total", "projection" => name)
            .increment(events.len() as u64);
        metrics::histogram!("marketing_projection_batch_seconds", "projection" => name)
            .record(started.elapsed().as_secs_f64());
        Ok(Handled::Committed(to))
    }

    fn failed(&self, error: &ProjectionError, failures: u32) -> Duration {
        let name = self.projection.name();
        metrics::counter!("marketing_projection_errors_total", "projection" => name).increment(1);
        tracing::error!(projection = name, %error, failures, "batch failed; will retry it");
        Duration::from_millis(50 * u64::from(failures.min(40)))
    }

    fn lost(&self, error: &ProjectionError) {
        let name = self.projection.name();
        tracing::error!(projection = name, %error, "projection runner failed; retrying");
        metrics::counter!("marketing_projection_errors_total", "projection" => name).increment(1);
    }

    fn moved(&self, actual: LogPosition) {
        tracing::warn!(
            projection = self.projection.name(),
            ?actual,
            "checkpoint moved by another instance"
        );
    }
}
