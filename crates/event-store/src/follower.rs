//! Following the whole log from a checkpoint, as the one active instance of a
//! named reader. The projector (one [`Follower`] per projection) and the Kafka
//! publisher both run on this; what they do with a batch is their [`Handler`].
//!
//! A follower
//! 1. becomes the active instance by `pg_try_advisory_lock` on a dedicated
//!    connection (taken out of the pool so the lock dies with the process), or
//!    on the process's shared lease connection when it is one of many readers
//!    divided between processes ([`crate::leases`]); others stand by and retry
//!    every `standby_poll`: fail-over without coordination;
//! 2. loads its checkpoint row (table `projection_checkpoints`, one row per
//!    reader name, created on first use);
//! 3. reads commit-safe batches after it ([`EventStore::read_all`], or
//!    [`EventStore::read_all_matching`] for a handler that names its streams),
//!    waking on commits and backing off to polling when idle;
//! 4. hands each batch to the handler, and moves the checkpoint by
//!    compare-and-set ([`Batch::commit_in`] inside the handler's own
//!    transaction, or [`Batch::advance`] on its own statement once the handler's
//!    effects are durable elsewhere), so two instances that both believe they
//!    lead cannot both move it;
//! 5. on a failure, pauses (the handler says how long), reloads the committed
//!    checkpoint and carries on from there; on losing the lock's connection,
//!    stops and stands by again.
//!
//! Each handled batch runs in a `batch` span (the reader's name, the number
//! of events), tied to the traces the events were written in
//! ([`trace_context::follow_events`]).
//!
//! A shard of a reader is a reader of its own: its own name (so its own
//! checkpoint row and lock key) and its own handler.

use crate::leases::{Lease, Leases};
use crate::{EventStore, LogPosition, RecordedEvent, StoreError};
use async_trait::async_trait;
use deadpool_postgres::Pool;
use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How a follower reads and stands by.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// Most events handed over at once. When the reader is behind, full batches
    /// amortise the commit; when it is current, batches are small.
    pub batch_size: usize,
    /// Longest sleep between polls when idle; NOTIFY usually wakes it sooner.
    pub idle_poll: Duration,
    /// How often a standby instance tries to become the active one.
    pub standby_poll: Duration,
}

/// The projector's defaults: batches of up to 2,000 events, idle polls at most
/// every 500 ms, standbys retrying every second.
impl Default for FollowerConfig {
    fn default() -> Self {
        Self {
            batch_size: 2000,
            idle_poll: Duration::from_millis(500),
            standby_poll: Duration::from_secs(1),
        }
    }
}

/// Longest a follower goes without recording skipped batches in its checkpoint
/// row while busy.
const SKIP_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// Shortest time between two records of skipped batches when the follower
/// goes idle. The first idle moment after a quiet spell records at once; under
/// a steady stream of writes a follower goes idle after nearly every commit,
/// and recording each time was one `UPDATE` (a transaction with its WAL
/// flush) per write per follower that does not read the written stream. Only
/// a reader of the checkpoint row waits for this (a separate process waiting
/// for every shard, or an operator's lag query): at most this much longer.
const IDLE_PERSIST_INTERVAL: Duration = Duration::from_millis(50);

/// The advisory-lock key of a reader: FNV-1a of `tag` then `name`, so keys are
/// stable across processes and versions, readers with different tags cannot
/// collide, and none equals the migration lock (keys are non-negative).
pub fn lock_key(tag: &str, name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in tag.bytes().chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash >> 1) as i64
}

/// Creates the checkpoint row `name` if missing, and reads it.
pub async fn load_checkpoint(
    client: &impl GenericClient,
    name: &str,
) -> Result<LogPosition, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            &[&name],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(LogPosition {
        tx_id: row.get(0),
        position: row.get(1),
    })
}

/// Moves the checkpoint row `name` from `from` to `to`, only if it still is at
/// `from`. False if another instance moved it first. Typed parameters: one
/// round trip (no separate prepare) on every batch's commit path.
async fn compare_and_set(
    client: &impl GenericClient,
    name: &str,
    from: LogPosition,
    to: LogPosition,
) -> Result<bool, tokio_postgres::Error> {
    let moved = client
        .execute_typed(
            "UPDATE projection_checkpoints SET tx_id = $4, position = $5, updated_at = now()
             WHERE name = $1 AND tx_id = $2 AND position = $3",
            &[
                (&name, Type::TEXT),
                (&from.tx_id, Type::INT8),
                (&from.position, Type::INT8),
                (&to.tx_id, Type::INT8),
                (&to.position, Type::INT8),
            ],
        )
        .await?;
    Ok(moved == 1)
}

/// One batch handed to a [`Handler`], with the means to move the checkpoint
/// over it.
pub struct Batch<'a> {
    /// The events, in log order; never empty.
    pub events: Vec<RecordedEvent>,
    name: &'a str,
    pool: &'a Pool,
    from: LogPosition,
}

impl Batch<'_> {
    /// Where the checkpoint row stands (the batch follows it).
    pub fn from(&self) -> LogPosition {
        self.from
    }

    /// The position of the batch's last event.
    pub fn last(&self) -> LogPosition {
        self.events.last().expect("a batch is not empty").position
    }

    /// Moves the checkpoint to `to` inside `tx`, by compare-and-set: it commits
    /// with the handler's own writes or not at all. False if another instance
    /// moved it first: the caller must roll `tx` back and answer
    /// [`Handled::Moved`].
    pub async fn commit_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        to: LogPosition,
    ) -> Result<bool, tokio_postgres::Error> {
        compare_and_set(tx, self.name, self.from, to).await
    }

    /// Moves the checkpoint to `to` on a statement of its own, by
    /// compare-and-set, for effects made durable elsewhere. False if another
    /// instance moved it first.
    pub async fn advance(&self, to: LogPosition) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        Ok(compare_and_set(&**client, self.name, self.from, to).await?)
    }
}

/// What a handler did with a batch.
pub enum Handled {
    /// The checkpoint row now says `to` (moved with [`Batch::commit_in`] or
    /// [`Batch::advance`]).
    Committed(LogPosition),
    /// Nothing is done; the same events are read again.
    Nothing,
    /// [`Batch::commit_in`] or [`Batch::advance`] found the checkpoint moved by
    /// another instance: continue from wherever it is now.
    Moved,
}

/// What a reader does with the log. `&mut self`: one follower drives it.
#[async_trait]
pub trait Handler: Send {
    type Error: From<StoreError>
        + From<tokio_postgres::Error>
        + From<deadpool_postgres::PoolError>
        + Display
        + Send;

    /// Keys the checkpoint row.
    fn name(&self) -> &str;

    /// The advisory lock that makes one instance the active one ([`lock_key`]).
    fn lock_key(&self) -> i64;

    /// Whether a missing checkpoint row is created (at the start of the log)
    /// or is an error. A reader whose rows are installed by someone else (a
    /// projection's shards, see the projector's `layout`) must not start
    /// from the beginning over work already done under other names.
    fn creates_checkpoint(&self) -> bool {
        true
    }

    /// The stream id prefixes whose events the handler reads, or `None` for
    /// every stream. Events of other streams still come (so the checkpoint moves
    /// past them), with `null` data ([`EventStore::read_all_matching`]).
    fn stream_prefixes(&self) -> Option<&[&str]> {
        None
    }

    /// Whether the handler has anything to do with `events`. A batch it has
    /// nothing to do with is passed over without calling [`Handler::handle`]
    /// and recorded in the checkpoint row lazily: with the next handled batch,
    /// after a second, or as soon as the follower is idle. A crash loses only
    /// such skipped events, which are skipped again: no effect is lost or doubled.
    fn wants(&self, events: &[RecordedEvent]) -> bool {
        let _ = events;
        true
    }

    /// Called for each batch passed over by [`Handler::wants`].
    fn skipped(&self, events: usize) {
        let _ = events;
    }

    /// This instance now leads, from `checkpoint`.
    fn became_active(&mut self, checkpoint: LogPosition) {
        let _ = checkpoint;
    }

    /// This instance no longer leads (shutdown, lost lock, or an error).
    fn stood_down(&mut self) {}

    /// Starts a session (the publisher's producer), at the start of leadership
    /// and after every failure. `Ok(false)`: shutdown came first.
    async fn begin(&mut self, shutdown: &CancellationToken) -> Result<bool, Self::Error> {
        let _ = shutdown;
        Ok(true)
    }

    /// Ends the session `begin` started; `graceful` unless it ends on a failure.
    async fn end(&mut self, graceful: bool) {
        let _ = graceful;
    }

    /// Does the batch's work and moves the checkpoint over what is done.
    async fn handle(
        &mut self,
        batch: Batch<'_>,
        shutdown: &CancellationToken,
    ) -> Result<Handled, Self::Error>;

    /// Logs and counts a failure of a session (`failures` in a row, counting
    /// this one) and says how long to pause before the next session.
    fn failed(&self, error: &Self::Error, failures: u32) -> Duration;

    /// Logs and counts a failure that cost the leadership; the follower stands
    /// by and tries to lead again.
    fn lost(&self, error: &Self::Error);

    /// The checkpoint moved under this instance (by another instance, or an
    /// operator rewinding it).
    fn moved(&self, actual: LogPosition) {
        tracing::warn!(
            reader = self.name(),
            ?actual,
            "checkpoint moved by another instance; continuing from it"
        );
    }
}

/// Where a term of leadership stands.
struct Cursor {
    /// How far this instance has got.
    checkpoint: LogPosition,
    /// What the checkpoint row says. Differs from `checkpoint` only after
    /// batches the handler did not want.
    persisted: LogPosition,
    persisted_at: Instant,
}

/// How one pass of the read loop ended.
enum Pass<E> {
    /// Shutdown, or the lock's connection is gone.
    Stop,
    Moved,
    Failed(E),
}

pub struct Follower {
    store: Arc<dyn EventStore>,
    pool: Pool,
    config: FollowerConfig,
    progress: watch::Sender<LogPosition>,
    leading: watch::Sender<bool>,
    leases: Option<Arc<Leases>>,
}

/// How a follower holds its reader's lock.
enum Held {
    /// On a connection of its own.
    Own(deadpool_postgres::ClientWrapper),
    /// On the process's lease connection.
    Lease(Lease),
}

impl Held {
    fn is_lost(&self) -> bool {
        match self {
            Held::Own(lock) => lock.is_closed(),
            Held::Lease(lease) => lease.is_lost(),
        }
    }

    async fn should_yield(&mut self) -> bool {
        match self {
            Held::Own(_) => false,
            Held::Lease(lease) => lease.should_yield().await,
        }
    }

    async fn release(self) {
        match self {
            // Dropping the connection ends its session and the lock.
            Held::Own(lock) => drop(lock),
            Held::Lease(lease) => lease.release().await,
        }
    }
}

impl Follower {
    pub fn new(store: Arc<dyn EventStore>, pool: Pool, config: FollowerConfig) -> Self {
        let (progress, _) = watch::channel(LogPosition::START);
        let (leading, _) = watch::channel(false);
        Self {
            store,
            pool,
            config,
            progress,
            leading,
            leases: None,
        }
    }

    /// Takes the reader's lock on `leases` (shared by every reader of this
    /// process, which then leads at most its share of them) instead of on a
    /// connection of its own.
    pub fn with_leases(mut self, leases: Arc<Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// True while this instance is the active one. Its [`Follower::progress`]
    /// is current only then; otherwise the checkpoint row is.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Ticks with the checkpoint: every event at or before it is done.
    pub fn progress(&self) -> watch::Receiver<LogPosition> {
        self.progress.subscribe()
    }

    pub fn config(&self) -> &FollowerConfig {
        &self.config
    }

    /// Runs `handler` until `shutdown` is cancelled: stands by while another
    /// process leads, leads while it holds the lock. Errors are logged and
    /// retried: a reader that gave up would fall silently behind.
    pub async fn run<H: Handler>(&self, handler: &mut H, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(error) = self.lead(handler, shutdown).await {
                handler.lost(&error);
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.config.standby_poll) => {}
            }
        }
    }

    /// Becomes the active instance if no other process is, then follows the log
    /// until shutdown, until the lock's connection is lost, or (with
    /// [`Leases`]) until this process leads more than its share.
    async fn lead<H: Handler>(&self, handler: &mut H, shutdown: &CancellationToken) -> Result<(), H::Error> {
        let Some(mut held) = self.acquire(handler.lock_key()).await? else {
            return Ok(());
        };
        let led = match self.first_load(handler).await {
            Ok(checkpoint) => {
                handler.became_active(checkpoint);
                self.leading.send_replace(true);
                let led = self.term(handler, shutdown, &mut held, checkpoint).await;
                self.leading.send_replace(false);
                handler.stood_down();
                led
            }
            Err(error) => Err(error.into()),
        };
        held.release().await;
        led
    }

    /// Takes the reader's lock: on the process's lease connection, or on a
    /// connection of its own taken out of the pool, so that the session-level
    /// advisory lock lives and dies with it and a crashed process releases
    /// leadership by itself.
    async fn acquire(&self, key: i64) -> Result<Option<Held>, StoreError> {
        if let Some(leases) = &self.leases {
            return Ok(leases.try_acquire(key).await?.map(Held::Lease));
        }
        let lock = deadpool_postgres::Object::take(self.pool.get().await?);
        let acquired: bool = lock
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?
            .get(0);
        Ok(acquired.then_some(Held::Own(lock)))
    }

    /// Sessions, one after the other, until shutdown or lost leadership.
    async fn term<H: Handler>(
        &self,
        handler: &mut H,
        shutdown: &CancellationToken,
        held: &mut Held,
        checkpoint: LogPosition,
    ) -> Result<(), H::Error> {
        let mut cursor = Cursor {
            checkpoint,
            persisted: checkpoint,
            persisted_at: Instant::now(),
        };
        // Owned: the handler is borrowed mutably while a batch refers to it.
        let name = handler.name().to_owned();
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() || held.is_lost() {
                return Ok(());
            }
            let before = cursor.persisted;
            let pass = match handler.begin(shutdown).await {
                Ok(true) => {
                    self.follow(handler, (&name, shutdown), held, &mut cursor, &mut failures)
                        .await
                }
                Ok(false) => Pass::Stop,
                Err(error) => Pass::Failed(error),
            };
            handler.end(matches!(pass, Pass::Stop)).await;
            let pause = match pass {
                Pass::Stop => return Ok(()),
                Pass::Moved => None,
                Pass::Failed(error) if held.is_lost() => return Err(error),
                Pass::Failed(error) => {
                    if cursor.persisted != before {
                        failures = 0;
                    }
                    failures += 1;
                    Some(handler.failed(&error, failures))
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            // Another instance may have moved the checkpoint (or handled this
            // batch, and made it fail here, e.g. on a unique key), or the handler
            // committed part of a batch before failing: resume from where the
            // committed checkpoint really is.
            let actual = self.reload(&name).await?;
            if pause.is_none() {
                handler.moved(actual);
            }
            cursor = Cursor {
                checkpoint: actual,
                persisted: actual,
                persisted_at: Instant::now(),
            };
        }
    }

    /// Reads batches and hands them over until something stops the session.
    async fn follow<H: Handler>(
        &self,
        handler: &mut H,
        (name, shutdown): (&str, &CancellationToken),
        held: &mut Held,
        cursor: &mut Cursor,
        failures: &mut u32,
    ) -> Pass<H::Error> {
        let mut wakeups = self.store.wakeups().subscribe();
        let mut backoff = Duration::from_millis(1);
        loop {
            if shutdown.is_cancelled() || held.is_lost() {
                return Pass::Stop;
            }
            // Between batches, never inside one: what a handler committed is
            // whole, and the next leader starts from its checkpoint.
            if held.should_yield().await {
                tracing::info!(reader = name, "over this process's share; standing down");
                return Pass::Stop;
            }
            wakeups.borrow_and_update();
            let read = match handler.stream_prefixes() {
                Some(prefixes) => {
                    self.store
                        .read_all_matching(cursor.checkpoint, self.config.batch_size, prefixes)
                        .await
                }
                None => {
                    self.store
                        .read_all(cursor.checkpoint, self.config.batch_size)
                        .await
                }
            };
            let events = match read {
                Ok(events) => events,
                Err(error) => return Pass::Failed(error.into()),
            };
            if events.is_empty() {
                match self
                    .idle(name, shutdown, cursor, &mut wakeups, &mut backoff)
                    .await
                {
                    Ok(()) => continue,
                    Err(pass) => return pass,
                }
            }
            backoff = Duration::from_millis(1);
            match self.hand_over(handler, (name, shutdown), cursor, events).await {
                Ok(true) => *failures = 0,
                Ok(false) => {}
                Err(pass) => return pass,
            }
        }
    }

    /// Nothing was readable: records the skipped events in the checkpoint
    /// row, so that processes that poll it (a separate command API) see them,
    /// or, if the last record is too recent, waits for a commit or the
    /// backoff, ending in time for the next record. `Err`: stop following.
    async fn idle<E>(
        &self,
        name: &str,
        shutdown: &CancellationToken,
        cursor: &mut Cursor,
        wakeups: &mut watch::Receiver<u64>,
        backoff: &mut Duration,
    ) -> Result<(), Pass<E>>
    where
        E: From<StoreError>,
    {
        let mut sleep = *backoff;
        if cursor.checkpoint != cursor.persisted {
            let since = cursor.persisted_at.elapsed();
            if since >= IDLE_PERSIST_INTERVAL {
                return match self.record_skipped(name, cursor).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(Pass::Moved),
                    Err(error) => Err(Pass::Failed(error.into())),
                };
            }
            sleep = sleep.min(IDLE_PERSIST_INTERVAL - since);
        }
        // A wake-up means a commit happened; its events may still sit behind
        // an older open transaction, so re-poll quickly at first and back off
        // towards the idle interval.
        tokio::select! {
            _ = shutdown.cancelled() => return Err(Pass::Stop),
            changed = wakeups.changed() => {
                if changed.is_ok() { *backoff = Duration::from_millis(1); }
            }
            _ = tokio::time::sleep(sleep) => {
                *backoff = (*backoff * 2).min(self.config.idle_poll);
            }
        }
        Ok(())
    }

    /// Hands one non-empty batch to the handler (or passes over it) and moves
    /// the cursor.
    async fn hand_over<H: Handler>(
        &self,
        handler: &mut H,
        (name, shutdown): (&str, &CancellationToken),
        cursor: &mut Cursor,
        events: Vec<RecordedEvent>,
    ) -> Result<bool, Pass<H::Error>> {
        let last = events.last().expect("batch is not empty").position;
        if !handler.wants(&events) && cursor.persisted_at.elapsed() < SKIP_PERSIST_INTERVAL {
            cursor.checkpoint = last;
            self.progress.send_replace(last);
            handler.skipped(events.len());
            return Ok(false);
        }
        // The batch's span: with traces exported, it continues the trace of
        // the request that wrote the events (or links the traces of several).
        let span = tracing::info_span!("batch", reader = name, events = events.len());
        let left_out = trace_context::follow_events(&span, events.iter().map(|e| &*e.metadata));
        if left_out > 0 {
            tracing::debug!(
                reader = name,
                left_out,
                "batch spans more traces than a span links"
            );
        }
        let batch = Batch {
            events,
            name,
            pool: &self.pool,
            from: cursor.persisted,
        };
        match handler.handle(batch, shutdown).instrument(span).await {
            Ok(Handled::Committed(to)) => {
                *cursor = Cursor {
                    checkpoint: to,
                    persisted: to,
                    persisted_at: Instant::now(),
                };
                self.progress.send_replace(to);
                Ok(true)
            }
            Ok(Handled::Nothing) => Ok(false),
            Ok(Handled::Moved) => Err(Pass::Moved),
            Err(error) => Err(Pass::Failed(error)),
        }
    }

    /// Records passed-over batches in the checkpoint row. False if another
    /// instance moved it first.
    async fn record_skipped(&self, name: &str, cursor: &mut Cursor) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        if !compare_and_set(&**client, name, cursor.persisted, cursor.checkpoint).await? {
            return Ok(false);
        }
        cursor.persisted = cursor.checkpoint;
        cursor.persisted_at = Instant::now();
        Ok(true)
    }

    /// The checkpoint a term starts from, created if the handler allows it.
    async fn first_load<H: Handler>(&self, handler: &H) -> Result<LogPosition, StoreError> {
        if handler.creates_checkpoint() {
            return self.reload(handler.name()).await;
        }
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1",
                &[&handler.name()],
            )
            .await?
            .ok_or_else(|| StoreError::Other(format!("no checkpoint row for reader {}", handler.name())))?;
        let checkpoint = LogPosition {
            tx_id: row.get(0),
            position: row.get(1),
        };
        self.progress.send_replace(checkpoint);
        Ok(checkpoint)
    }

    /// The committed checkpoint, also told to `progress`.
    async fn reload(&self, name: &str) -> Result<LogPosition, StoreError> {
        let client = self.pool.get().await?;
        let checkpoint = load_checkpoint(&**client, name).await?;
        self.progress.send_replace(checkpoint);
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys that processes of earlier versions take: a change here would
    /// let an old and a new process lead the same reader at once.
    #[test]
    fn lock_keys_match_the_keys_of_earlier_versions() {
        assert_eq!(lock_key("", "campaigns"), 930_989_578_513_247_152);
        assert_eq!(lock_key("", "leads"), 3_057_122_284_133_635_914);
        assert_eq!(lock_key("publisher:", "publisher"), 641_023_049_004_911_544);
    }
}
