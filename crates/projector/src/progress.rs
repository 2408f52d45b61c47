//! Read-after-write: a command waits until the read models include its events
//! before it answers, so a client's next GET sees its write.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use event_store::LogPosition;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

#[async_trait]
pub trait ReadModelProgress: Send + Sync + 'static {
    /// True once every read model has applied the event at `position`; false if
    /// `timeout` passed first.
    async fn wait_for(&self, position: LogPosition, timeout: Duration) -> bool;
}

/// For `marketing serve`, where the projectors run in the same process: waits on
/// their progress channels, with no database round trip.
pub struct InProcessProgress {
    receivers: Vec<watch::Receiver<LogPosition>>,
}

impl InProcessProgress {
    pub fn new(receivers: Vec<watch::Receiver<LogPosition>>) -> Self {
        Self { receivers }
    }
}

#[async_trait]
impl ReadModelProgress for InProcessProgress {
    async fn wait_for(&self, position: LogPosition, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        for receiver in &self.receivers {
            let mut receiver = receiver.clone();
            let reached = tokio::time::timeout_at(deadline, receiver.wait_for(|p| *p >= position)).await;
            if !matches!(reached, Ok(Ok(_))) {
                return false;
            }
        }
        true
    }
}

/// For a command API running apart from the projectors: polls the checkpoint
/// table with a short, growing interval.
pub struct PolledProgress {
    pool: Pool,
    projections: Vec<String>,
}

impl PolledProgress {
    pub fn new(pool: Pool, projections: Vec<String>) -> Self {
        Self { pool, projections }
    }

    async fn reached(&self, position: LogPosition) -> Result<bool, deadpool_postgres::PoolError> {
        let client = self.pool.get().await?;
        let count: i64 = client
            .query_one(
                "SELECT count(*) FROM projection_checkpoints
                 WHERE name = ANY($1) AND (tx_id, position) >= ($2, $3)",
                &[&self.projections, &position.tx_id, &position.position],
            )
            .await
            .map_err(deadpool_postgres::PoolError::Backend)?
            .get(0);
        Ok(count as usize == self.projections.len())
    }
}

#[async_trait]
impl ReadModelProgress for PolledProgress {
    async fn wait_for(&self, position: LogPosition, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut interval = Duration::from_millis(2);
        loop {
            match self.reached(position).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "cannot read projection checkpoints"),
            }
            if Instant::now() + interval > deadline {
                return false;
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_millis(50));
        }
    }
}
