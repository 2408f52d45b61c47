//! The event log.
//!
//! [`EventStore`] is what the rest of the system sees: append to a stream with an
//! expected version, read one stream, and follow the whole log in a stable order.
//! [`PgEventStore`] implements it on Postgres and upholds the log's invariants
//! (docs/architecture.md, "The event log"):
//!
//! * optimistic concurrency by a unique `(stream_id, version)` index, not locks;
//! * idempotent appends by a unique `event_id`;
//! * a whole-log read that never misses an event under concurrent writers
//!   (see [`PgEventStore::read_all`] for why sequence order is not enough);
//! * `LISTEN/NOTIFY` wake-ups ([`Wakeups`]) with polling as the fallback;
//! * upcasting of old schema versions on every read path.
//!
//! The trait speaks in stream revisions and an ordered two-part [`LogPosition`],
//! which is also what KurrentDB/EventStoreDB offers (commit and prepare
//! positions): [`KurrentEventStore`] (feature `kurrentdb`, on by default)
//! implements it on KurrentDB, with the differences docs/kurrentdb.md lists.

pub mod chain;
mod feed;
pub mod follower;
mod history;
pub mod horizon;
#[cfg(feature = "kurrentdb")]
mod kurrent;
pub mod leases;
mod listener;
mod log_reader;
mod postgres;
mod tail;
mod verify;

pub use feed::{read_events, read_project};
pub use follower::{lock_key, Batch, Follower, FollowerConfig, Handled, Handler};
pub use history::{read_correlated, HistoryFilter};
#[cfg(feature = "kurrentdb")]
pub use kurrent::{KurrentEventStore, StoredMetadata};
pub use listener::{spawn_listener, wait, Wakeups, EVENTS_CHANNEL};
pub use log_reader::{LogReader, LOG_INDEX};
pub use postgres::{
    append_in_transaction, connect_pool, migrate, PgEventStore, POOL_CREATE_TIMEOUT, POOL_RECYCLE_TIMEOUT,
    POOL_WAIT_TIMEOUT,
};
pub use tail::TailStats;
pub use verify::{verify, verify_campaign, verify_with_progress, ChainBreak, VerifyReport};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use uuid::Uuid;

/// A point in the whole-log order. Ordered lexicographically; `START` is before
/// every event. On Postgres: (inserting transaction id, sequence position). On
/// KurrentDB: (commit position, prepare position) of the event in `$all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct LogPosition {
    pub tx_id: i64,
    pub position: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition {
        tx_id: 0,
        position: 0,
    };
}

/// What the writer believes the stream looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's state.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have this version.
    Exact(i64),
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Unique forever. Retrying an append with the same ids appends nothing.
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    /// Who and why: project, API key id, request id, correlation/causation ids,
    /// idempotency key. Free-form JSON to the store.
    pub metadata: Value,
    /// Set by the writer (use [`now`]), so the command side knows the timestamp
    /// it returns without a second round trip.
    pub recorded_at: DateTime<Utc>,
}

/// The current time at the precision Postgres stores (microseconds). Use it for
/// `NewEvent::recorded_at`, so what a writer returns equals what readers load.
pub fn now() -> DateTime<Utc> {
    use chrono::DurationRound;
    Utc::now()
        .duration_trunc(chrono::TimeDelta::microseconds(1))
        .expect("current time is representable")
}

/// An event as stored, already upcast to its current schema version.
///
/// The bodies are shared (`Arc`): a process hands the same event to a dozen
/// readers (crate::tail), and a deep copy of a JSON body for each was a
/// seventh of the server's work per write. `&event.data` still reads as a
/// `&Value`; an owner that needs a value of its own takes it with
/// `Arc::unwrap_or_clone` (a move when it is the only holder, as a reader of
/// one stream is).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: LogPosition,
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Arc<Value>,
    pub metadata: Arc<Value>,
    pub recorded_at: DateTime<Utc>,
}

/// The body of an event given without its bodies: one shared `null`.
pub fn null_body() -> Arc<Value> {
    static NULL: std::sync::LazyLock<Arc<Value>> = std::sync::LazyLock::new(|| Arc::new(Value::Null));
    NULL.clone()
}

/// Where one event is: its stream and its version there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamVersion {
    pub stream_id: String,
    pub version: i64,
}

/// One stream's part of an atomic append.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// The result of appending to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Version of the last event of the append (the stream's new version).
    pub last_version: i64,
    /// Log position of the last event of the append.
    pub last_position: LogPosition,
    /// True when every event was already stored (a retried append): nothing new
    /// was written.
    pub already_stored: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The stream's version was not what the writer expected.
    #[error("stream {stream_id} was modified concurrently (expected {expected:?})")]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
    },
    /// An event id is already stored for different content: a caller bug.
    #[error("event id {0} already used by another event")]
    EventIdReused(Uuid),
    #[error("append must contain at least one event")]
    Empty,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("connection pool error: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A KurrentDB request failed (unreachable, deadline, server error).
    #[error("KurrentDB error: {0}")]
    Kurrent(String),
    #[error("{0}")]
    Other(String),
}

impl From<migrations::MigrationError> for StoreError {
    fn from(error: migrations::MigrationError) -> Self {
        match error {
            migrations::MigrationError::Database(error) => StoreError::Database(error),
            failed @ migrations::MigrationError::Failed(_) => StoreError::Other(failed.to_string()),
        }
    }
}

/// `(event_type, from_version, step)`: turns data of `from_version` into data of
/// `from_version + 1`. The same shape as `domain::upcast::UpcastStep`, so the
/// domain's table plugs in without this crate knowing domain types.
pub type Upcaster = (&'static str, i32, fn(Value) -> Value);

/// Applies `table` to one event until no step matches.
pub fn upcast(table: &[Upcaster], event_type: &str, mut version: i32, mut data: Value) -> (i32, Value) {
    while let Some((_, _, step)) = table
        .iter()
        .find(|(ty, from, _)| *ty == event_type && *from == version)
    {
        data = step(data);
        version += 1;
    }
    (version, data)
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends to one stream atomically.
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, AppendError> {
        let mut outcomes = self
            .append_many(vec![StreamAppend {
                stream_id: stream_id.to_owned(),
                expected,
                events,
            }])
            .await?;
        Ok(outcomes.remove(0))
    }

    /// Appends to several streams in one transaction: all or nothing. Used by
    /// bulk operations (imports) so they need not pay one commit per row.
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendOutcome>, AppendError>;

    /// Every event of one stream, oldest first.
    async fn read_stream(&self, stream_id: &str) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The events at these places, upcast, in log order. A place that holds
    /// no event is left out. How the readers of the log index
    /// ([`LogReader`]) load the bodies the index does not keep.
    async fn read_versions(&self, places: &[StreamVersion]) -> Result<Vec<RecordedEvent>, StoreError>;

    /// How the parts that query the log by what its events say (campaign
    /// history, the event feed, webhooks) read this log: the `events` table
    /// itself on Postgres, a Postgres index of it plus this store elsewhere.
    fn log_reader(self: std::sync::Arc<Self>) -> LogReader;

    /// Up to `limit` events strictly after `after` in whole-log order. Never
    /// returns an event that a later call could place before one already returned.
    async fn read_all(&self, after: LogPosition, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Like [`EventStore::read_all`], for a reader that only needs the events
    /// of streams whose id starts with one of `stream_prefixes`: every event
    /// is still returned, in the same order (so the reader's position moves
    /// past all of them), but the others come with `data` and `metadata` set
    /// to `null`. A backend that cannot leave them out returns them whole.
    async fn read_all_matching(
        &self,
        after: LogPosition,
        limit: usize,
        stream_prefixes: &[&str],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let _ = stream_prefixes;
        self.read_all(after, limit).await
    }

    /// The position of the newest readable event, if any.
    async fn head(&self) -> Result<Option<LogPosition>, StoreError>;

    /// A hint channel that ticks when new events may be readable.
    fn wakeups(&self) -> Wakeups;

    /// True when the log is the `events` table of the Postgres database the
    /// process's pool connects to: only then can an append join a Postgres
    /// transaction ([`append_in_transaction`]) or SQL read the log. False for
    /// KurrentDB, whose writers take the designs of docs/kurrentdb.md.
    fn in_postgres(&self) -> bool {
        false
    }

    /// Tells readers, in this process and others, that events were committed.
    /// `append` does it; a caller that appends inside its own transaction calls
    /// it after committing.
    fn notify_committed(&self) {
        self.wakeups().notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rename_title(mut v: Value) -> Value {
        if let Some(title) = v.as_object_mut().and_then(|o| o.remove("title")) {
            v["name"] = title;
        }
        v
    }

    fn add_currency(mut v: Value) -> Value {
        v["currency"] = json!("USD");
        v
    }

    #[test]
    fn upcasting_applies_steps_in_sequence_until_current() {
        let table: &[Upcaster] = &[("Thing", 1, rename_title), ("Thing", 2, add_currency)];
        let (version, data) = upcast(table, "Thing", 1, json!({"title": "x"}));
        assert_eq!(version, 3);
        assert_eq!(data, json!({"name": "x", "currency": "USD"}));
        let (version, data) = upcast(table, "Other", 1, json!({"title": "x"}));
        assert_eq!((version, data), (1, json!({"title": "x"})));
    }

    #[test]
    fn positions_order_by_transaction_then_sequence() {
        let a = LogPosition {
            tx_id: 5,
            position: 100,
        };
        let b = LogPosition {
            tx_id: 6,
            position: 1,
        };
        assert!(LogPosition::START < a && a < b);
    }
}
