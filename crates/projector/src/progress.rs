//! Read-after-write: a command waits until the read models include its events
//! before it answers, so a client's next GET sees its write.
//!
//! Only the read models that its events change: each projection states what
//! it reads ([`Projection::reads`]), so a campaign write does not wait for the
//! leads projection, however far behind an import has put it. The guarantee
//! is unchanged: every read model a GET of the written resource consults has
//! the write.

use crate::{Projection, Reads};
use async_trait::async_trait;
use deadpool_postgres::Pool;
use event_store::LogPosition;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One kind of event a write appended: its stream and its type.
#[derive(Debug, Clone, Copy)]
pub struct Written<'a> {
    pub stream_id: &'a str,
    pub event_type: &'a str,
}

/// A read model a write may wait for: its name and what it reads.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub name: String,
    /// `None`: every event (a projection that names no streams).
    pub reads: Option<&'static [Reads]>,
}

impl Consumer {
    pub fn of(projection: &dyn Projection) -> Self {
        Self {
            name: projection.name().to_owned(),
            reads: projection.reads(),
        }
    }

    /// True if any of `written` changes this read model; everything does when
    /// the write does not say what it wrote (`None`).
    pub fn consumes(&self, written: Option<&[Written<'_>]>) -> bool {
        match (self.reads, written) {
            (Some(reads), Some(written)) => written
                .iter()
                .any(|w| reads.iter().any(|r| r.matches_type(w.stream_id, w.event_type))),
            _ => true,
        }
    }
}

#[async_trait]
pub trait ReadModelProgress: Send + Sync + 'static {
    /// True once every read model has applied the event at `position`; false if
    /// `timeout` passed first.
    async fn wait_for(&self, position: LogPosition, timeout: Duration) -> bool {
        self.wait_for_writes(position, None, timeout).await
    }

    /// True once every read model that consumes one of `written` (all of them
    /// for `None`) has applied the event at `position`; false if `timeout`
    /// passed first.
    async fn wait_for_writes(
        &self,
        position: LogPosition,
        written: Option<&[Written<'_>]>,
        timeout: Duration,
    ) -> bool;
}

/// For `marketing serve`, where the projectors run in the same process: waits on
/// their progress channels, with no database round trip.
pub struct InProcessProgress {
    receivers: Vec<(Consumer, watch::Receiver<LogPosition>)>,
}

impl InProcessProgress {
    /// Progress of read models that consume everything.
    pub fn new(receivers: Vec<watch::Receiver<LogPosition>>) -> Self {
        let everything = Consumer {
            name: String::new(),
            reads: None,
        };
        Self::scoped(receivers.into_iter().map(|r| (everything.clone(), r)).collect())
    }

    /// Progress of read models that say what they consume.
    pub fn scoped(receivers: Vec<(Consumer, watch::Receiver<LogPosition>)>) -> Self {
        Self { receivers }
    }
}

#[async_trait]
impl ReadModelProgress for InProcessProgress {
    async fn wait_for_writes(
        &self,
        position: LogPosition,
        written: Option<&[Written<'_>]>,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        for (_, receiver) in self.receivers.iter().filter(|(c, _)| c.consumes(written)) {
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
    consumers: Vec<Consumer>,
}

impl PolledProgress {
    /// Progress of the named read models, which consume everything.
    pub fn new(pool: Pool, projections: Vec<String>) -> Self {
        let consumers = projections
            .into_iter()
            .map(|name| Consumer { name, reads: None })
            .collect();
        Self::scoped(pool, consumers)
    }

    /// Progress of read models that say what they consume.
    pub fn scoped(pool: Pool, consumers: Vec<Consumer>) -> Self {
        Self { pool, consumers }
    }

    async fn reached(
        &self,
        position: LogPosition,
        projections: &[&str],
    ) -> Result<bool, deadpool_postgres::PoolError> {
        if projections.is_empty() {
            return Ok(true);
        }
        let client = self.pool.get().await?;
        let count: i64 = client
            .query_one(
                "SELECT count(*) FROM projection_checkpoints
                 WHERE name = ANY($1) AND (tx_id, position) >= ($2, $3)",
                &[&projections, &position.tx_id, &position.position],
            )
            .await
            .map_err(deadpool_postgres::PoolError::Backend)?
            .get(0);
        Ok(count as usize == projections.len())
    }
}

#[async_trait]
impl ReadModelProgress for PolledProgress {
    async fn wait_for_writes(
        &self,
        position: LogPosition,
        written: Option<&[Written<'_>]>,
        timeout: Duration,
    ) -> bool {
        let projections: Vec<&str> = self
            .consumers
            .iter()
            .filter(|c| c.consumes(written))
            .map(|c| c.name.as_str())
            .collect();
        let deadline = Instant::now() + timeout;
        let mut interval = Duration::from_millis(2);
        loop {
            match self.reached(position, &projections).await {
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
