//! The tail of the log, read once per process for all of its readers.
//!
//! A process runs a dozen followers of the same log (every projection's
//! shards, the publisher, the webhook dispatcher). Each commit wakes all of
//! them, and each would run its own `read_all`: the same rows selected,
//! their `jsonb` printed, sent and parsed a dozen times, and each query's
//! fixed cost (snapshot, executor start-up) paid a dozen times. That was
//! most of the database's work per write. So the store keeps the last few
//! thousand events it read at the tail, and a reader whose position falls
//! inside them is served from memory; when it is served fewer than it asked
//! for, one read of the tail (not one per reader) is made first.
//!
//! Why an answer from here is one the database could have given:
//!
//! * **Coverage.** The cache holds *every* event whose position lies in
//!   `(lo, hi]`, `hi` being the last event it holds. It grows only by reads
//!   of the form "events after `hi`, below the commit horizon, in order": such
//!   a read returns a prefix of what follows `hi`, and nothing can appear
//!   later at or below its last event, because an event there would belong to
//!   a transaction below the horizon, and those have all finished (see
//!   `crate::horizon`). Trimming drops events from the front and raises `lo`.
//! * **Answers.** A reader at `after` in `[lo, hi]` gets the cached events
//!   after `after`, up to its limit: a prefix of the log after `after`, all
//!   below a valid horizon. That is exactly a `read_all` answer: no event is
//!   skipped, none is given twice, the order is the log's.
//! * **Freshness.** A reader given fewer events than it asked for might be
//!   behind what the database already holds. It is served only after a read
//!   of the tail that *started after it arrived*; if none did, it makes one.
//!   So what a commit made readable before a reader asked is in its answer,
//!   as with a read of its own, and a follower that then waits for the next
//!   wake-up misses nothing (readers woken together share that one read).
//!
//! A reader outside `[lo, hi]` (catching up from far behind, or a replay)
//! reads the database itself; a plain read of its that reached the tail
//! starts the cache afresh when the cache is empty or behind it. Readers of
//! some streams only (`read_all_matching`, every projection) are in the same
//! position: while the cache has not started, or holds nothing up to where
//! they are, their read takes every body, so that it can start the cache,
//! and drops the other streams' bodies in memory. Only a reader behind the
//! cache reads with the bodies left out in the database.

use crate::{LogPosition, RecordedEvent, StoreError};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// Events the cache keeps. Above twice a follower's batch (2,000), so a reader
/// a batch behind the newest is still served; small enough that its memory
/// (a few KiB per event) stays in the tens of MiB.
pub(crate) const CAPACITY: usize = 4_096;

/// Events one read of the tail asks for.
pub(crate) const FETCH: usize = 2_000;

#[derive(Default)]
pub(crate) struct Tail {
    state: tokio::sync::Mutex<State>,
    /// Readers that have asked so far: a reader's ticket is its number.
    arrivals: AtomicU64,
    /// Answers given from memory, and reads of the tail made for them.
    served: AtomicU64,
    fetches: AtomicU64,
}

/// How much the cache saved: answers it gave and the reads of the
/// database it made for them (each shared by every reader waiting for it).
/// Readers it did not cover are in neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailStats {
    pub served: u64,
    pub fetches: u64,
}

#[derive(Default)]
struct State {
    /// False until a read at the tail started the cache.
    started: bool,
    /// Every event after `lo` up to the last one held is held.
    lo: LogPosition,
    events: VecDeque<RecordedEvent>,
    /// The `arrivals` count when the last read of the tail started: readers
    /// with a ticket at or below it asked before that read.
    fetched_for: u64,
}

impl State {
    fn hi(&self) -> LogPosition {
        self.events.back().map_or(self.lo, |e| e.position)
    }

    fn covers(&self, after: LogPosition) -> bool {
        self.started && self.lo <= after && after <= self.hi()
    }

    /// The held events after `after` (which [`State::covers`]), at most
    /// `limit`, each as `present` makes it.
    fn after(
        &self,
        after: LogPosition,
        limit: usize,
        present: &impl Fn(&RecordedEvent) -> RecordedEvent,
    ) -> Vec<RecordedEvent> {
        let start = self.events.partition_point(|e| e.position <= after);
        self.events.range(start..).take(limit).map(present).collect()
    }

    fn extend(&mut self, events: Vec<RecordedEvent>) {
        self.events.extend(events);
        while self.events.len() > CAPACITY {
            if let Some(dropped) = self.events.pop_front() {
                self.lo = dropped.position;
            }
        }
    }
}

impl Tail {
    /// The events after `after` (at most `limit`), each as `present` makes
    /// it (a reader of some streams gets the others without bodies), or
    /// `None` when the cache does not cover `after`: then the caller reads
    /// the database. `fetch(from, n)` is the store's `read_all`.
    pub(crate) async fn read<F, Fut>(
        &self,
        after: LogPosition,
        limit: usize,
        present: impl Fn(&RecordedEvent) -> RecordedEvent,
        fetch: F,
    ) -> Result<Option<Vec<RecordedEvent>>, StoreError>
    where
        F: FnOnce(LogPosition, usize) -> Fut,
        Fut: Future<Output = Result<Vec<RecordedEvent>, StoreError>>,
    {
        let ticket = self.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
        // Held across the read of the tail: readers woken by the same commit
        // queue here and are then served by that one read.
        let mut state = self.state.lock().await;
        if !state.covers(after) {
            return Ok(None);
        }
        self.served.fetch_add(1, Ordering::Relaxed);
        let served = state.after(after, limit, &present);
        if served.len() >= limit || state.fetched_for >= ticket {
            return Ok(Some(served));
        }
        state.fetched_for = self.arrivals.load(Ordering::SeqCst);
        let from = state.hi();
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = fetch(from, FETCH).await?;
        state.extend(fetched);
        // The read may have trimmed the events this reader is at (one that
        // asks for more than the cache keeps past it): what is held would
        // then skip some, so it reads the database.
        if !state.covers(after) {
            return Ok(None);
        }
        Ok(Some(state.after(after, limit, &present)))
    }

    /// True if a plain read at `after` that reaches the tail could start the
    /// cache ([`Tail::offer`]): it has not started, or holds nothing up to
    /// `after`. False for a reader behind it. Only a hint for which query to
    /// make: the cache may have moved by the time the read returns.
    pub(crate) async fn could_start_at(&self, after: LogPosition) -> bool {
        let state = self.state.lock().await;
        !state.started || after > state.hi()
    }

    pub(crate) fn stats(&self) -> TailStats {
        TailStats {
            served: self.served.load(Ordering::Relaxed),
            fetches: self.fetches.load(Ordering::Relaxed),
        }
    }

    /// A plain read the caller made of the database (`after`, `limit`,
    /// what it returned): if it reached the tail (fewer events than asked
    /// for) and the cache is empty or behind it, it starts the cache.
    pub(crate) async fn offer(&self, after: LogPosition, limit: usize, events: &[RecordedEvent]) {
        if events.len() >= limit || events.len() > CAPACITY {
            return;
        }
        let mut state = self.state.lock().await;
        let last = events.last().map_or(after, |e| e.position);
        if state.started && last <= state.hi() {
            return;
        }
        *state = State {
            started: true,
            lo: after,
            events: events.iter().cloned().collect(),
            fetched_for: state.fetched_for,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn event(position: i64) -> RecordedEvent {
        RecordedEvent {
            position: LogPosition { tx_id: 1, position },
            event_id: uuid::Uuid::nil(),
            stream_id: format!("s-{position}"),
            version: 0,
            event_type: "E".into(),
            schema_version: 1,
            data: serde_json::json!({ "n": position }).into(),
            metadata: crate::null_body(),
            recorded_at: chrono::DateTime::<chrono::Utc>::MIN_UTC,
        }
    }

    fn at(position: i64) -> LogPosition {
        LogPosition { tx_id: 1, position }
    }

    /// A log of `len` events readable so far; counts the reads made of it.
    struct Log {
        len: Mutex<i64>,
        reads: Mutex<usize>,
    }

    impl Log {
        fn new(len: i64) -> Self {
            Self {
                len: Mutex::new(len),
                reads: Mutex::new(0),
            }
        }
        async fn read_all(&self, after: LogPosition, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
            *self.reads.lock().unwrap() += 1;
            // A round trip: other readers run meanwhile.
            tokio::task::yield_now().await;
            let len = *self.len.lock().unwrap();
            Ok((after.position + 1..=len).take(limit).map(event).collect())
        }
        fn reads(&self) -> usize {
            *self.reads.lock().unwrap()
        }
    }

    async fn read(tail: &Tail, log: &Log, after: i64, limit: usize) -> Option<Vec<i64>> {
        let events = tail
            .read(at(after), limit, RecordedEvent::clone, |from, n| {
                log.read_all(from, n)
            })
            .await
            .unwrap()?;
        Some(events.iter().map(|e| e.position.position).collect())
    }

    #[tokio::test]
    async fn an_unstarted_cache_sends_readers_to_the_database() {
        let (tail, log) = (Tail::default(), Log::new(5));
        assert_eq!(read(&tail, &log, 0, 10).await, None);
        assert_eq!(log.reads(), 0);
    }

    #[tokio::test]
    async fn readers_inside_the_cache_get_exactly_what_follows_them() {
        let (tail, log) = (Tail::default(), Log::new(5));
        tail.offer(at(0), 10, &log.read_all(at(0), 10).await.unwrap())
            .await;
        assert_eq!(read(&tail, &log, 0, 10).await, Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(read(&tail, &log, 3, 10).await, Some(vec![4, 5]));
        assert_eq!(read(&tail, &log, 1, 2).await, Some(vec![2, 3]));
        // Commits since: a short answer reads the tail first, once.
        *log.len.lock().unwrap() = 8;
        let reads = log.reads();
        assert_eq!(read(&tail, &log, 5, 10).await, Some(vec![6, 7, 8]));
        assert_eq!(log.reads(), reads + 1);
    }

    #[tokio::test]
    async fn a_reader_is_served_only_by_a_read_that_started_after_it_asked() {
        let (tail, log) = (Tail::default(), Log::new(2));
        tail.offer(at(0), 10, &log.read_all(at(0), 10).await.unwrap())
            .await;
        let before = log.reads();
        assert_eq!(read(&tail, &log, 2, 10).await, Some(vec![]));
        assert_eq!(read(&tail, &log, 2, 10).await, Some(vec![]));
        // Each of the two asked after the other's read: two reads.
        assert_eq!(log.reads(), before + 2);
    }

    #[tokio::test]
    async fn readers_woken_together_share_reads_of_the_tail() {
        let (tail, log) = (Tail::default(), Log::new(1));
        tail.offer(at(0), 10, &log.read_all(at(0), 10).await.unwrap())
            .await;
        *log.len.lock().unwrap() = 3;
        let before = log.reads();
        let got = futures::future::join_all((0..5).map(|n| read(&tail, &log, n % 2, 10))).await;
        for (n, got) in got.into_iter().enumerate() {
            let expected: Vec<i64> = (n as i64 % 2 + 1..=3).collect();
            assert_eq!(got, Some(expected));
        }
        // The first reader's read started before the others asked, so they
        // cannot rely on it; the second's started after all of them had.
        assert_eq!(log.reads(), before + 2);
    }

    #[tokio::test]
    async fn trimming_raises_the_floor_and_sends_laggards_to_the_database() {
        let (tail, log) = (Tail::default(), Log::new(0));
        tail.offer(at(0), 10, &[]).await;
        let total = (CAPACITY + FETCH) as i64;
        *log.len.lock().unwrap() = total;
        let mut position = 0;
        while position < total {
            let got = read(&tail, &log, position, FETCH).await.unwrap();
            assert_eq!(got.first(), Some(&(position + 1)), "no event skipped");
            position = *got.last().unwrap();
        }
        assert_eq!(read(&tail, &log, 0, 10).await, None);
        let floor = total - CAPACITY as i64;
        assert_eq!(
            read(&tail, &log, floor, 2).await,
            Some(vec![floor + 1, floor + 2])
        );
        assert_eq!(read(&tail, &log, floor - 1, 2).await, None);
    }

    #[tokio::test]
    async fn a_reader_the_read_of_the_tail_trims_past_is_sent_to_the_database() {
        let (tail, log) = (Tail::default(), Log::new(5));
        tail.offer(at(0), 10, &log.read_all(at(0), 10).await.unwrap())
            .await;
        *log.len.lock().unwrap() = (2 * CAPACITY) as i64;
        // A reader at the cache's floor asking for more than it keeps: each
        // short answer reads the tail, until a read trims events after it.
        let limit = CAPACITY + 1;
        while let Some(got) = read(&tail, &log, 0, limit).await {
            assert_eq!(got.first(), Some(&1), "no event skipped");
            assert!(got.len() < limit);
        }
    }

    #[tokio::test]
    async fn only_a_reader_behind_the_cache_is_told_it_cannot_start_it() {
        let (tail, log) = (Tail::default(), Log::new(5));
        assert!(tail.could_start_at(at(3)).await, "nothing started yet");
        tail.offer(at(2), 10, &log.read_all(at(2), 10).await.unwrap())
            .await;
        assert!(!tail.could_start_at(at(1)).await, "behind");
        assert!(!tail.could_start_at(at(2)).await, "covered");
        assert!(!tail.could_start_at(at(5)).await, "covered");
        assert!(tail.could_start_at(at(6)).await, "ahead of what it holds");
    }

    #[tokio::test]
    async fn a_plain_read_that_did_not_reach_the_tail_starts_nothing() {
        let (tail, log) = (Tail::default(), Log::new(5));
        tail.offer(at(0), 2, &log.read_all(at(0), 2).await.unwrap()).await;
        assert_eq!(read(&tail, &log, 0, 10).await, None);
    }
}
