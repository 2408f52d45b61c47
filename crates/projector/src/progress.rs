//! Read-after-write: a command waits until the read models include its events
//! before it answers, so a client's next GET sees its write.
//!
//! Only the read models that its events change, and of those only the shard
//! that holds its campaign: each projection states what it reads
//! ([`Projection::reads`]) and each shard which campaigns it holds
//! ([`Shard`]), so a campaign write does not wait for the leads projection,
//! and a lead write does not wait for another campaign's import. The guarantee
//! is unchanged: every read model a GET of the written resource consults has
//! the write.
//!
//! A shard this process leads tells its progress over a channel, with no
//! database round trip; a shard another process leads (or nobody, for a
//! command API without projectors) is read from its checkpoint row.

use crate::{Projection, Reads, Shard};
use async_trait::async_trait;
use deadpool_postgres::Pool;
use event_store::LogPosition;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

/// One kind of event a write appended: its stream, its type, and the campaign
/// it belongs to (`None`: unknown, so every shard is waited for).
#[derive(Debug, Clone, Copy)]
pub struct Written<'a> {
    pub stream_id: &'a str,
    pub event_type: &'a str,
    pub campaign_id: Option<Uuid>,
}

/// A read model (one shard of it) a write may wait for: its reader name, what
/// it reads and which shard it is.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub name: String,
    /// `None`: every event (a projection that names no streams).
    pub reads: Option<&'static [Reads]>,
    pub shard: Shard,
}

impl Consumer {
    /// The whole of an unsharded projection.
    pub fn of(projection: &dyn Projection) -> Self {
        Self::shard_of(projection, Shard::WHOLE)
    }

    pub fn shard_of(projection: &dyn Projection, shard: Shard) -> Self {
        Self {
            name: shard.reader_name(projection.name()),
            reads: projection.reads(),
            shard,
        }
    }

    /// A read model by reader name that consumes everything.
    pub fn everything(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            reads: None,
            shard: Shard::WHOLE,
        }
    }

    /// True if any of `written` changes this read model; everything does when
    /// the write does not say what it wrote (`None`).
    pub fn consumes(&self, written: Option<&[Written<'_>]>) -> bool {
        match (self.reads, written) {
            (Some(reads), Some(written)) => written.iter().any(|w| {
                reads.iter().any(|r| r.matches_type(w.stream_id, w.event_type))
                    && w.campaign_id.is_none_or(|c| self.shard.holds(c))
            }),
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

/// A runner of this process: its progress, and whether it leads (its
/// progress ticks only while it does).
#[derive(Clone)]
pub struct Local {
    pub progress: watch::Receiver<LogPosition>,
    pub leading: watch::Receiver<bool>,
}

impl Local {
    /// A runner taken to lead always (one that nothing else competes with).
    pub fn always_leading(progress: watch::Receiver<LogPosition>) -> Self {
        Self {
            progress,
            leading: watch::channel(true).1,
        }
    }

    fn reached(&self, position: LogPosition) -> bool {
        *self.progress.borrow() >= position
    }

    fn leads(&self) -> bool {
        *self.leading.borrow()
    }
}

/// How long a wait on a local runner goes before looking again at whether it
/// still leads (it may have handed the shard to another process).
const LEADERSHIP_RECHECK: Duration = Duration::from_millis(50);

/// The read models a command waits for, each through its local runner when
/// this process leads it and its checkpoint row otherwise.
pub struct Progress {
    consumers: Vec<(Consumer, Option<Local>)>,
    /// `None`: local runners only (they are told to lead, or the wait times out).
    pool: Option<Pool>,
}

impl Progress {
    pub fn new(pool: Option<Pool>, consumers: Vec<(Consumer, Option<Local>)>) -> Self {
        Self { consumers, pool }
    }

    /// Local runners that consume everything and always lead.
    pub fn in_process(receivers: Vec<watch::Receiver<LogPosition>>) -> Self {
        let consumers = receivers
            .into_iter()
            .map(|r| (Consumer::everything(""), Some(Local::always_leading(r))))
            .collect();
        Self::new(None, consumers)
    }

    /// The checkpoint rows of the named read models, which consume everything.
    pub fn polled(pool: Pool, projections: Vec<String>) -> Self {
        let consumers = projections
            .into_iter()
            .map(|name| (Consumer::everything(name), None))
            .collect();
        Self::new(Some(pool), consumers)
    }

    /// The readers among `names` whose checkpoint has reached `position`.
    async fn reached_in_database(
        &self,
        pool: &Pool,
        position: LogPosition,
        names: &[&str],
    ) -> Result<Vec<String>, deadpool_postgres::PoolError> {
        let client = pool.get().await?;
        let rows = client
            .query(
                "SELECT name FROM projection_checkpoints
                 WHERE name = ANY($1) AND (tx_id, position) >= ($2, $3)",
                &[&names, &position.tx_id, &position.position],
            )
            .await
            .map_err(deadpool_postgres::PoolError::Backend)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

#[async_trait]
impl ReadModelProgress for Progress {
    async fn wait_for_writes(
        &self,
        position: LogPosition,
        written: Option<&[Written<'_>]>,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<&(Consumer, Option<Local>)> = self
            .consumers
            .iter()
            .filter(|(c, _)| c.consumes(written))
            .collect();
        let mut interval = Duration::from_millis(2);
        loop {
            pending.retain(|(_, local)| !local.as_ref().is_some_and(|l| l.reached(position)));
            let remote: Vec<&str> = match &self.pool {
                Some(_) => pending
                    .iter()
                    .filter(|(_, local)| !local.as_ref().is_some_and(Local::leads))
                    .map(|(c, _)| c.name.as_str())
                    .collect(),
                None => Vec::new(),
            };
            if let (Some(pool), false) = (&self.pool, remote.is_empty()) {
                match self.reached_in_database(pool, position, &remote).await {
                    Ok(reached) => pending.retain(|(c, _)| !reached.contains(&c.name)),
                    Err(error) => tracing::warn!(%error, "cannot read projection checkpoints"),
                }
            }
            if pending.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let local = pending.iter().find_map(|(_, local)| local.as_ref());
            if let (true, Some(local)) = (remote.is_empty(), local) {
                // Only runners of this process are left: their channels wake us.
                let mut progress = local.progress.clone();
                let until = deadline.min(now + LEADERSHIP_RECHECK);
                let _ = tokio::time::timeout_at(until, progress.wait_for(|p| *p >= position)).await;
            } else {
                tokio::time::sleep_until(deadline.min(now + interval)).await;
                interval = (interval * 2).min(Duration::from_millis(50));
            }
        }
    }
}
