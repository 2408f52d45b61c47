//! Reads from a Postgres streaming replica (`READ_DATABASE_URL`) without
//! giving up read-after-write (docs/operations.md, "Replica reads").
//!
//! One background watcher per process ([`Replica::spawn`]) looks at the
//! replica every `check_interval` and keeps what it saw in memory, so no
//! request pays a query for it:
//! - it samples the primary's WAL flush position, remembering when each
//!   sample was *sent* (`s`, `F(s)`: everything flushed before `s` is at or
//!   below `F(s)`);
//! - it asks the replica how far it has replayed (`R`), after the sample came
//!   back, and takes the newest sample with `F(s) <= R`: the replica has
//!   everything the primary had flushed by `s` ("covered since `s`").
//!
//! **Reads** ([`ReadPool`]) go to the replica while it answered its last
//! check and is covered since at most `max_lag` ago; otherwise (lagging,
//! unreachable, replay paused, a check that hangs) to the primary, which has
//! everything. A replica connection that cannot be had also sends that read to
//! the primary.
//!
//! **Writes** ([`Replica::wait_replayed`]) that answered their projection wait
//! then take the primary's position with a synchronously committed WAL record
//! (`pg_logical_emit_message`: the projectors commit asynchronously, so their
//! commit is only known to be flushed, hence sendable, once something behind it
//! is), and wait until the replica has replayed it, for at most `max_lag`.
//! Why that bound makes read-after-write exact even when the wait gives up:
//! a write that gave up at `t0 + max_lag` had its record flushed before `t0`
//! and not replayed; a read after the answer may use the replica only if it
//! is covered since some `s` with `g - s <= max_lag`, and a replica missing
//! the record is covered only since before `t0`, so `g - s > max_lag` and the
//! read goes to the primary. Every process must use the same `max_lag`.

use deadpool_postgres::{Object, Pool, PoolError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::types::PgLsn;
use tokio_util::sync::CancellationToken;

/// How often the watcher asks the replica while writes wait for it: their
/// wait is bounded by this plus replication itself.
const WAITED_POLL: Duration = Duration::from_millis(2);

/// The settings of replica reads: `READ_REPLICA_MAX_LAG_MS` and
/// `READ_REPLICA_CHECK_INTERVAL_MS`.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaSettings {
    /// The most the replica may be behind for reads to use it; also the
    /// longest a write waits for it.
    pub max_lag: Duration,
    /// How often the watcher checks the replica when no write waits.
    pub check_interval: Duration,
}

impl ReplicaSettings {
    /// A check interval that is not well below the lag limit would send reads
    /// to the primary between two checks of a healthy replica.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_lag.is_zero() {
            return Err("READ_REPLICA_MAX_LAG_MS must be at least 1".into());
        }
        if self.check_interval.is_zero() || self.check_interval * 2 > self.max_lag {
            return Err(format!(
                "READ_REPLICA_CHECK_INTERVAL_MS ({} ms) must be between 1 and half of \
                 READ_REPLICA_MAX_LAG_MS ({} ms)",
                self.check_interval.as_millis(),
                self.max_lag.as_millis()
            ));
        }
        Ok(())
    }
}

/// What the last check saw.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// The replica answered the last check.
    reachable: bool,
    /// Its replay position then.
    replayed: Option<PgLsn>,
    /// The newest moment the replica is known to have everything the
    /// primary had flushed by.
    covered_since: Option<Instant>,
    /// Bytes of flushed WAL the replica had still to replay at the last check.
    lag_bytes: Option<u64>,
}

/// A streaming replica and its watcher's view of it. Cheap to clone.
#[derive(Clone)]
pub struct Replica(Arc<Inner>);

struct Inner {
    /// Connections for the reads.
    pool: Pool,
    settings: ReplicaSettings,
    seen: watch::Sender<Seen>,
    /// Writes waiting for the replica: while there are any, the watcher polls
    /// it every [`WAITED_POLL`] instead of every check interval.
    waiters: AtomicUsize,
    wake: Notify,
}

impl Replica {
    /// The replica behind `pool` (the reads' connections), checked against
    /// `primary` on connections of the watcher's own (`primary_check`,
    /// `replica_check`: one each), so busy request pools never delay a check.
    /// The watcher stops with `shutdown`.
    pub fn spawn(
        pool: Pool,
        primary_check: Pool,
        replica_check: Pool,
        settings: ReplicaSettings,
        shutdown: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let replica = Self(Arc::new(Inner {
            pool,
            settings,
            seen: watch::channel(Seen::default()).0,
            waiters: AtomicUsize::new(0),
            wake: Notify::new(),
        }));
        let watcher = tokio::spawn(replica.clone().watch(primary_check, replica_check, shutdown));
        (replica, watcher)
    }

    pub fn settings(&self) -> ReplicaSettings {
        self.0.settings
    }

    /// True if reads should go to the replica now: it answered the last check
    /// and is covered since at most `max_lag` ago. No query: what the watcher saw.
    pub fn in_use(&self) -> bool {
        let seen = *self.0.seen.borrow();
        seen.reachable
            && seen
                .covered_since
                .is_some_and(|since| since.elapsed() <= self.0.settings.max_lag)
    }

    /// How far behind the replica is known to be at most: the time since it
    /// was last covered (`None`: not covered within the lag limit).
    pub fn lag(&self) -> Option<Duration> {
        self.0.seen.borrow().covered_since.map(|since| since.elapsed())
    }

    /// Sets the replica's gauges from what the watcher saw (at scrape time, so
    /// each process reports its own view).
    pub fn record_gauges(&self) {
        let seen = *self.0.seen.borrow();
        metrics::gauge!("marketing_read_replica_in_use").set(if self.in_use() { 1.0 } else { 0.0 });
        metrics::gauge!("marketing_read_replica_reachable").set(if seen.reachable { 1.0 } else { 0.0 });
        // Unknown lag is reported as the limit's double, so an alert on
        // "lag above the limit" fires for it too.
        let lag = self.lag().unwrap_or(self.0.settings.max_lag * 2);
        metrics::gauge!("marketing_read_replica_lag_seconds").set(lag.as_secs_f64());
        if let Some(bytes) = seen.lag_bytes {
            metrics::gauge!("marketing_read_replica_lag_bytes").set(bytes as f64);
        }
    }

    /// The primary's position right now, made durable: a transactional WAL
    /// record, committed synchronously, so it and everything before it (the
    /// projectors' asynchronous commits among them) is flushed and so sent to
    /// the replica. On the primary's pool.
    pub async fn primary_position(primary: &Pool) -> Result<PgLsn, PoolError> {
        let client = primary.get().await?;
        let row = client
            .query_one(
                "SELECT pg_logical_emit_message(true, 'marketing', 'read-after-write')",
                &[],
            )
            .await
            .map_err(PoolError::Backend)?;
        Ok(row.get(0))
    }

    /// Waits until the replica has replayed `target`, for at most the lag
    /// limit; false if it had not by then (the read that follows then goes to
    /// the primary, see the module docs).
    pub async fn wait_replayed(&self, target: PgLsn) -> bool {
        let deadline = Instant::now() + self.0.settings.max_lag;
        let mut seen = self.0.seen.subscribe();
        let replayed = |seen: &Seen| seen.replayed.is_some_and(|r| r >= target);
        if replayed(&seen.borrow_and_update()) {
            return true;
        }
        let _waiting = Waiting::start(&self.0);
        loop {
            match tokio::time::timeout_at(deadline, seen.changed()).await {
                Ok(Ok(())) => {
                    if replayed(&seen.borrow_and_update()) {
                        return true;
                    }
                }
                // The deadline, or the watcher stopped (shutdown).
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    async fn watch(self, primary: Pool, replica: Pool, shutdown: CancellationToken) {
        let ReplicaSettings {
            max_lag,
            check_interval,
        } = self.0.settings;
        // A check that takes longer than the lag limit cannot make the replica
        // usable anyway.
        let bound = max_lag;
        let mut samples: VecDeque<(Instant, PgLsn)> = VecDeque::new();
        let mut was_in_use = false;
        let mut last_sample: Option<Instant> = None;
        loop {
            if last_sample.is_none_or(|at| at.elapsed() >= check_interval) {
                let sent = Instant::now();
                last_sample = Some(sent);
                match tokio::time::timeout(bound, lsn(&primary, "SELECT pg_current_wal_flush_lsn()")).await {
                    Ok(Ok(Some(flushed))) => samples.push_back((sent, flushed)),
                    Ok(Ok(None)) => {}
                    Ok(Err(error)) => tracing::debug!(%error, "cannot read the primary's WAL position"),
                    Err(_) => tracing::debug!("the primary's WAL position took longer than the lag limit"),
                }
            }
            // Older samples could only say the replica is further behind than allowed.
            while samples.front().is_some_and(|(at, _)| at.elapsed() > max_lag) {
                samples.pop_front();
            }
            let replayed = tokio::time::timeout(bound, lsn(&replica, REPLAYED)).await;
            self.0.seen.send_modify(|seen| match replayed {
                Ok(Ok(Some(replayed))) => {
                    seen.reachable = true;
                    seen.replayed = Some(replayed);
                    // Recomputed from the window each time, so a replica that
                    // went back (restarted from an older restart point) is
                    // covered only as far as it now is.
                    seen.covered_since = samples
                        .iter()
                        .rev()
                        .find(|(_, flushed)| *flushed <= replayed)
                        .map(|(at, _)| *at);
                    seen.lag_bytes = samples
                        .back()
                        .map(|(_, flushed)| u64::from(*flushed).saturating_sub(u64::from(replayed)));
                }
                // NULL: not a replica at all (a primary, or promoted).
                Ok(Ok(None)) => {
                    seen.reachable = false;
                    seen.replayed = None;
                }
                Ok(Err(_)) | Err(_) => seen.reachable = false,
            });
            if let Ok(Ok(None)) = replayed {
                tracing::warn!("READ_DATABASE_URL is not a replica in recovery: reads stay on the primary");
            }
            let in_use = self.in_use();
            if in_use != was_in_use {
                if in_use {
                    tracing::info!("reads go to the replica");
                } else {
                    let reason = match replayed {
                        Ok(Ok(Some(_))) => "it lags beyond READ_REPLICA_MAX_LAG_MS".to_owned(),
                        Ok(Ok(None)) => "it is not in recovery".to_owned(),
                        Ok(Err(error)) => format!("it cannot be reached: {error}"),
                        Err(_) => "it does not answer".to_owned(),
                    };
                    tracing::warn!(reason, "reads go to the primary");
                }
                was_in_use = in_use;
            }
            let pause = if self.0.waiters.load(Ordering::SeqCst) > 0 {
                WAITED_POLL
            } else {
                check_interval
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                () = self.0.wake.notified() => {}
            }
        }
    }
}

/// A write waiting for the replica, counted while it waits.
struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    fn start(inner: &'a Inner) -> Self {
        inner.waiters.fetch_add(1, Ordering::SeqCst);
        // Stored as a permit if the watcher is busy, so it looks again at once.
        inner.wake.notify_one();
        Self(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The replica's replay position; NULL unless it is in recovery (a promoted
/// replica keeps answering its last replayed position, which would look like
/// a replica that stopped replaying).
const REPLAYED: &str = "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() END";

async fn lsn(pool: &Pool, sql: &str) -> Result<Option<PgLsn>, PoolError> {
    let client = pool.get().await?;
    let row = client.query_one(sql, &[]).await.map_err(PoolError::Backend)?;
    Ok(row.get(0))
}

/// Where the query API's reads go: the replica while it is in use, else the
/// primary.
#[derive(Clone)]
pub struct ReadPool {
    primary: Pool,
    replica: Option<Replica>,
}

impl ReadPool {
    /// `replica`: `None` sends every read to the primary.
    pub fn with_replica(primary: Pool, replica: Option<Replica>) -> Self {
        Self { primary, replica }
    }

    /// A connection for one read: the replica's if it is in use and one can be
    /// had, else the primary's.
    pub async fn get(&self) -> Result<Object, PoolError> {
        let Some(replica) = &self.replica else {
            // No replica: nothing to count, and the primary-key read is the
            // hot path of the query API, where every lookup shows.
            return self.primary.get().await;
        };
        if replica.in_use() {
            match replica.0.pool.get().await {
                Ok(client) => {
                    metrics::counter!("marketing_reads_total", "database" => "replica").increment(1);
                    return Ok(client);
                }
                Err(error) => {
                    tracing::warn!(%error, "no replica connection: reads go to the primary");
                    // Until the watcher's next check reaches it again.
                    replica.0.seen.send_modify(|seen| seen.reachable = false);
                }
            }
        }
        metrics::counter!("marketing_reads_total", "database" => "primary").increment(1);
        self.primary.get().await
    }

    /// The pool reads use now, for code that takes a pool (without the
    /// fallback of [`ReadPool::get`] when no replica connection can be had).
    pub fn pool(&self) -> &Pool {
        match &self.replica {
            Some(replica) if replica.in_use() => &replica.0.pool,
            _ => &self.primary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_lag_ms: u64, check_interval_ms: u64) -> ReplicaSettings {
        ReplicaSettings {
            max_lag: Duration::from_millis(max_lag_ms),
            check_interval: Duration::from_millis(check_interval_ms),
        }
    }

    #[test]
    fn the_check_interval_must_be_at_most_half_the_lag_limit() {
        assert!(settings(1_000, 100).validate().is_ok());
        assert!(settings(1_000, 500).validate().is_ok());
        let error = settings(1_000, 501).validate().unwrap_err();
        assert!(
            error.contains("READ_REPLICA_CHECK_INTERVAL_MS (501 ms)"),
            "{error}"
        );
        assert!(error.contains("READ_REPLICA_MAX_LAG_MS (1000 ms)"), "{error}");
        assert!(settings(1_000, 0).validate().is_err());
        assert!(settings(0, 0)
            .validate()
            .unwrap_err()
            .contains("READ_REPLICA_MAX_LAG_MS"));
    }
}
