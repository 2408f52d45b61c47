//! The commit horizon of this database's log, for readers.
//!
//! A reader takes only rows whose inserting transaction is older than every
//! transaction that may still insert (docs/architecture.md, "The event log").
//! The cheap bound is `pg_snapshot_xmin(pg_current_snapshot())`: the oldest
//! transaction still running *anywhere in the cluster*. Transaction ids are
//! cluster-wide, so one long transaction in another database (a report, a
//! dump, another tenant's service, another test) would hold back every reader
//! here, and with them every read-after-write, although it can never write to
//! this log.
//!
//! [`PRECISE_SQL`] leaves those out: the oldest transaction of the
//! statement's snapshot that is *not* known to belong to another database. It
//! reads the backends' status (`pg_stat_get_activity`), which costs a few
//! hundred microseconds with a few hundred connection slots, too much for
//! every read. So a store keeps the last precise value ([`Horizon`]),
//! refreshes it at most every [`REFRESH_INTERVAL`], and each read takes
//! `GREATEST(its own snapshot's xmin, the cached precise value)`.
//!
//! Why that is safe: each bound alone guarantees that every transaction of
//! this database with a lower id has finished, and "finished" stays true, so
//! a value computed earlier is still a valid bound later (only a lower one
//! than it could be), and the greater of two valid bounds is valid. Why the
//! precise value is valid: the backends' status is read *after* the
//! statement's snapshot was taken, so an id in the snapshot that the status
//! names under another database was assigned before the snapshot to a backend
//! of that database (a backend never changes database; an id assigned later
//! is at or above the snapshot's `xmax`, beyond any id the snapshot lists). An
//! id the status does not name (its transaction ended meanwhile, a prepared
//! transaction, a session whose status this role may not see) counts as this
//! database's: conservative, never unsafe.

use crate::StoreError;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How stale the cached precise horizon may be. While a transaction in
/// another database is open, a new event becomes readable at most this much
/// (plus the reader's own wake-up) after its commit; otherwise the snapshot's
/// own xmin is already exact and the cache is not consulted.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// The oldest transaction of the statement's snapshot not known to belong to
/// another database, or the snapshot's `xmax` when there is none (every
/// transaction below it has finished). A STABLE-context expression: it must
/// run in the statement whose snapshot it describes. `backend_xid` is the
/// 32-bit form of an id; every id a snapshot lists lies within 2^31 of the
/// current one, so its low 32 bits identify it among them.
pub const PRECISE_SQL: &str = "
    SELECT coalesce(
        (SELECT min(x::text::bigint)
           FROM pg_snapshot_xip(pg_current_snapshot()) AS x
          WHERE (x::text::bigint % 4294967296) NOT IN (
                SELECT a.backend_xid::text::bigint
                  FROM pg_stat_get_activity(NULL) AS a
                 WHERE a.backend_xid IS NOT NULL
                   AND a.datid IS NOT NULL
                   AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database()))),
        pg_snapshot_xmax(pg_current_snapshot())::text::bigint)";

/// The last precise horizon a store computed, shared by its readers.
#[derive(Debug)]
pub(crate) struct Horizon {
    precise: AtomicI64,
    /// Milliseconds since [`epoch`] after which the next read refreshes.
    due_ms: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Horizon {
    pub(crate) fn new() -> Self {
        Self {
            // 0: nothing known yet, so reads use their own snapshot's xmin.
            precise: AtomicI64::new(0),
            due_ms: AtomicU64::new(0),
        }
    }

    /// The floor a read passes to its query: the cached precise horizon,
    /// refreshed first when it is due. One reader refreshes at a time; the
    /// others use the value they find, which is never unsafe (module docs).
    pub(crate) async fn floor(&self, client: &deadpool_postgres::Client) -> Result<i64, StoreError> {
        let now = now_ms();
        let due = self.due_ms.load(Ordering::Acquire);
        let refresh_ms = u64::try_from(REFRESH_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now >= due
            && self
                .due_ms
                .compare_exchange(
                    due,
                    now.saturating_add(refresh_ms),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            self.refresh(client).await?;
        }
        Ok(self.precise.load(Ordering::Acquire))
    }

    /// Computes the precise horizon now and keeps it if it moved forward.
    pub(crate) async fn refresh(&self, client: &deadpool_postgres::Client) -> Result<i64, StoreError> {
        let statement = client.prepare_cached(PRECISE_SQL).await?;
        let value: i64 = client.query_one(&statement, &[]).await?.get(0);
        Ok(self.precise.fetch_max(value, Ordering::AcqRel).max(value))
    }
}
