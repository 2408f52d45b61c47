//! Drives one projection on the log follower ([`event_store::follower`]):
//! leadership, reading, skipping and checkpoint fail-over come from there; this
//! file is what a projection adds: each batch applied in one transaction
//! together with its checkpoint.

use crate::{reads_event, Projection, ProjectionError};
use async_trait::async_trait;
use deadpool_postgres::Pool;
use event_store::follower::{self, Batch, Follower, FollowerConfig, Handled, Handler};
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
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: Pool,
        projection: Arc<dyn Projection>,
        config: RunnerConfig,
    ) -> Self {
        let prefixes = projection
            .reads()
            .map(|reads| reads.iter().map(|r| r.stream_prefix).collect());
        Self {
            follower: Follower::new(store, pool.clone(), config),
            handler: Projecting {
                projection,
                pool,
                prefixes,
            },
        }
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
        self.follower.run(&mut self.handler, &shutdown).await;
        tracing::info!(projection = self.name(), "projection runner stopped");
    }
}

/// A projection as the follower's handler.
struct Projecting {
    projection: Arc<dyn Projection>,
    pool: Pool,
    /// The stream prefixes of `Projection::reads`.
    prefixes: Option<Vec<&'static str>>,
}

#[async_trait]
impl Handler for Projecting {
    type Error = ProjectionError;

    fn name(&self) -> &str {
        self.projection.name()
    }

    fn lock_key(&self) -> i64 {
        lock_key(self.projection.name())
    }

    fn stream_prefixes(&self) -> Option<&[&str]> {
        self.prefixes.as_deref()
    }

    fn wants(&self, events: &[RecordedEvent]) -> bool {
        events.iter().any(|e| reads_event(self.projection.as_ref(), e))
    }

    fn skipped(&self, events: usize) {
        metrics::counter!("marketing_projection_events_skipped_total", "projection" => self.projection.name())
            .increment(events as u64);
    }

    fn became_active(&mut self, _: LogPosition) {
        tracing::info!(projection = self.projection.name(), "became the active instance");
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
    async fn handle(&mut self, batch: Batch<'_>, _: &CancellationToken) -> Result<Handled, ProjectionError> {
        let name = self.projection.name();
        let started = Instant::now();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        self.projection.apply(&tx, &batch.events).await?;
        let to = batch.last();
        if !batch.commit_in(&tx, to).await? {
            return Ok(Handled::Moved);
        }
        tx.commit().await?;
        metrics::counter!("marketing_projection_events_total", "projection" => name)
            .increment(batch.events.len() as u64);
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
