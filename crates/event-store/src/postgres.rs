//! The Postgres event log.

use crate::horizon::Horizon;
use crate::tail::Tail;
use crate::{
    upcast, AppendError, AppendOutcome, EventStore, ExpectedVersion, LogPosition, LogReader, RecordedEvent,
    StoreError, StreamAppend, StreamVersion, Upcaster, Wakeups,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::Value;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How many times an `ExpectedVersion::Any` append re-reads the stream's version
/// after losing a race before giving up with a conflict.
const ANY_VERSION_ATTEMPTS: usize = 5;

/// Longest wait for a free pooled connection when all are in use. Beyond it the
/// caller gets `PoolError::Timeout` (the API answers 503 with `Retry-After`)
/// instead of queueing without bound behind a database that stopped answering.
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time to open a new connection (TCP connect, startup, authentication).
/// Postgres on the same network answers in milliseconds; a server that does not
/// is treated as down.
pub const POOL_CREATE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time to recycle an idle connection before handing it out.
pub const POOL_RECYCLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Builds a connection pool from a Postgres URL.
///
/// An idle connection is handed out again unless it is closed
/// (`RecyclingMethod::Fast`): when Postgres restarts it closes every session,
/// each connection's task sees the socket end and marks it closed, and the
/// next checkout opens a fresh one, so the first request after the database is
/// back succeeds. Not `Verified`, which sends a query at every checkout: one
/// more round trip for every request, a quarter of the throughput of a
/// primary-key read.
pub fn connect_pool(database_url: &str, max_size: usize) -> Result<Pool, StoreError> {
    let mut config = tokio_postgres::Config::from_str(database_url)
        .map_err(|e| StoreError::Other(format!("invalid DATABASE_URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_CREATE_TIMEOUT);
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(POOL_CREATE_TIMEOUT))
        .recycle_timeout(Some(POOL_RECYCLE_TIMEOUT))
        .build()
        .map_err(|e| StoreError::Other(format!("cannot build connection pool: {e}")))
}

/// Creates or upgrades the event log's tables.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    migrations::run_migrations(client, embedded::migrations::runner(), "event_store_migrations").await?;
    Ok(())
}

pub struct PgEventStore {
    pool: Pool,
    upcasters: &'static [Upcaster],
    wakeups: Wakeups,
    notifier: Arc<Notifier>,
    /// The precise commit horizon its readers share (crate::horizon).
    horizon: Arc<Horizon>,
    /// The log's tail, read once for every reader of this process (crate::tail).
    tail: Arc<Tail>,
}

/// Wakes readers in other processes after commits: one `NOTIFY` on its own
/// connection, outside the appending transactions, coalescing every append that
/// happens while one is being sent. (A NOTIFY inside an append would hold the
/// global notification lock through that append's WAL flush, serialising all
/// commits.) A hint only: readers also poll.
struct Notifier {
    signal: tokio::sync::Notify,
    started: std::sync::Once,
}

impl Notifier {
    fn hint(self: &Arc<Self>, pool: &Pool) {
        self.started.call_once(|| {
            let notifier = Arc::clone(self);
            let pool = pool.clone();
            tokio::spawn(async move {
                loop {
                    notifier.signal.notified().await;
                    match pool.get().await {
                        Ok(client) => {
                            let sent = client
                                .execute(&format!("NOTIFY {}", crate::EVENTS_CHANNEL), &[])
                                .await;
                            if let Err(error) = sent {
                                tracing::warn!(%error, "cannot send NOTIFY; readers fall back to polling");
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "cannot send NOTIFY; readers fall back to polling")
                        }
                    }
                }
            });
        });
        self.signal.notify_one();
    }
}

impl PgEventStore {
    /// `wakeups` is shared with the LISTEN task and every reader in this process.
    pub fn new(pool: Pool, upcasters: &'static [Upcaster], wakeups: Wakeups) -> Self {
        Self {
            pool,
            upcasters,
            wakeups,
            notifier: Arc::new(Notifier {
                signal: tokio::sync::Notify::new(),
                started: std::sync::Once::new(),
            }),
            horizon: Arc::new(Horizon::new()),
            tail: Arc::new(Tail::default()),
        }
    }

    /// The log's commit horizon now, computed precisely (crate::horizon):
    /// every transaction of this database with a lower id has finished, so
    /// every event below it is readable and no more can appear there.
    pub async fn commit_horizon(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        self.horizon.refresh(&client).await
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// What the shared tail has served so far (crate::tail).
    pub fn tail_stats(&self) -> crate::TailStats {
        self.tail.stats()
    }

    fn decode(&self, row: &Row) -> RecordedEvent {
        decode_row(self.upcasters, row)
    }

    /// `read_all` from the database itself: the events after `after` whose
    /// transactions are below the commit horizon, in log order.
    async fn read_log(&self, after: LogPosition, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT position, tx_id, event_id, stream_id, version, event_type, schema_version,
                        data, metadata, recorded_at
                 FROM events
                 WHERE (tx_id, position) > ($1, $2)
                   AND tx_id < GREATEST(pg_snapshot_xmin(pg_current_snapshot())::text::bigint, $4)
                 ORDER BY tx_id, position
                 LIMIT $3",
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let floor = self.horizon.floor(&client).await?;
        let rows = client
            .query(&statement, &[&after.tx_id, &after.position, &limit, &floor])
            .await?;
        Ok(rows.iter().map(|row| self.decode(row)).collect())
    }

    /// [`PgEventStore::read_log`], offered to the tail cache, which it starts
    /// if it reached the tail (crate::tail).
    async fn read_log_and_offer(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.read_log(after, limit).await?;
        self.tail.offer(after, limit, &events).await;
        Ok(events)
    }

    async fn current_version(&self, stream_id: &str) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached("SELECT max(version) FROM events WHERE stream_id = $1")
            .await?;
        Ok(client.query_one(&statement, &[&stream_id]).await?.get(0))
    }

    /// One attempt at an atomic multi-stream append; `Any` must already be resolved.
    async fn try_append(&self, appends: &[StreamAppend]) -> Result<Vec<AppendOutcome>, AppendError> {
        let rows = AppendRows::new(appends);
        let client = self.pool.get().await.map_err(StoreError::from)?;
        let statement = client
            .prepare_cached(APPEND_SQL)
            .await
            .map_err(StoreError::from)?;
        // A transaction of its own, sent in one go: one round trip. Why not
        // the bare statement: Postgres plans a prepared statement afresh on
        // every call for as long as it estimates a custom plan cheaper than
        // the generic one, and for this statement (whose arrays' lengths only
        // a custom plan sees) it always does. Planning was about 40% of the
        // append's time, for the same plan every time. `SET LOCAL` keeps the
        // generic plan to this transaction. The three requests are queued on
        // the connection in order on the first poll, so a caller that gives
        // up midway still leaves the connection outside any transaction.
        let params = rows.params();
        let (begun, result, committed) = futures::join!(
            client.batch_execute("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan"),
            client.query(&statement, &params),
            client.batch_execute("COMMIT"),
        );
        begun.map_err(StoreError::from)?;
        // A failed statement makes the COMMIT a rollback, which is no error;
        // a COMMIT that fails after the statement did leaves it unknown
        // whether the events are stored, as a lost connection always has.
        let result = result.and_then(|rows| committed.map(|()| rows));
        let rows = match result {
            Ok(rows) if rows.is_empty() => {
                // The guard found a stream behind its expected version. It may
                // still be a retry of an append that is already stored.
                drop(client);
                return match self.already_stored(appends).await? {
                    Some(outcomes) => Ok(outcomes),
                    None => Err(conflict(appends, guarded_stream(appends))),
                };
            }
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                drop(client);
                return match self.already_stored(appends).await? {
                    Some(outcomes) => Ok(outcomes),
                    None => Err(conflict(appends, violated_stream(appends, &e))),
                };
            }
            Err(e) => return Err(StoreError::from(e).into()),
        };
        self.notify_committed();
        Ok(outcomes(appends, rows))
    }

    /// If every event of `appends` is already in the log, in the streams named,
    /// the append is a retry: report what was stored. If some but not all are,
    /// or they sit in other streams, event ids are being reused: an error.
    async fn already_stored(
        &self,
        appends: &[StreamAppend],
    ) -> Result<Option<Vec<AppendOutcome>>, AppendError> {
        let wanted: Vec<Uuid> = appends
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.event_id))
            .collect();
        let client = self.pool.get().await.map_err(StoreError::from)?;
        let statement = client
            .prepare_cached(
                "SELECT event_id, stream_id, version, tx_id, position FROM events WHERE event_id = ANY($1)",
            )
            .await
            .map_err(StoreError::from)?;
        let rows = client
            .query(&statement, &[&wanted])
            .await
            .map_err(StoreError::from)?;
        if rows.is_empty() {
            return Ok(None);
        }
        let stored: HashMap<Uuid, (String, i64, LogPosition)> = rows
            .iter()
            .map(|row| {
                (
                    row.get("event_id"),
                    (
                        row.get("stream_id"),
                        row.get("version"),
                        LogPosition {
                            tx_id: row.get("tx_id"),
                            position: row.get("position"),
                        },
                    ),
                )
            })
            .collect();
        let mut outcomes = Vec::with_capacity(appends.len());
        for append in appends {
            let mut last: Option<(i64, LogPosition)> = None;
            for event in &append.events {
                match stored.get(&event.event_id) {
                    Some((stream, version, position)) if *stream == append.stream_id => {
                        if last.is_none_or(|(v, _)| *version > v) {
                            last = Some((*version, *position));
                        }
                    }
                    _ => return Err(AppendError::EventIdReused(event.event_id)),
                }
            }
            let (last_version, last_position) = last.expect("appends are never empty");
            outcomes.push(AppendOutcome {
                last_version,
                last_position,
                already_stored: true,
            });
        }
        Ok(Some(outcomes))
    }
}

/// An event as `read_all_matching` gives one of a stream it was not asked
/// for: where it is, without its bodies (as the query's NULLs decode).
fn without_body(event: &RecordedEvent) -> RecordedEvent {
    RecordedEvent {
        stream_id: event.stream_id.clone(),
        event_type: event.event_type.clone(),
        data: crate::null_body(),
        metadata: crate::null_body(),
        ..*event
    }
}

/// A row of `events` (all columns but `hash`) as an upcast [`RecordedEvent`].
pub(crate) fn decode_row(upcasters: &[Upcaster], row: &Row) -> RecordedEvent {
    let event_type: String = row.get("event_type");
    // `data` is NULL only for an event left out by `read_all_matching`:
    // nothing to upcast.
    let (schema_version, data) = match row.get::<_, Option<Value>>("data") {
        Some(data) => upcast(upcasters, &event_type, row.get("schema_version"), data),
        None => (row.get("schema_version"), Value::Null),
    };
    RecordedEvent {
        position: LogPosition {
            tx_id: row.get("tx_id"),
            position: row.get("position"),
        },
        event_id: row.get("event_id"),
        stream_id: row.get("stream_id"),
        version: row.get("version"),
        event_type,
        schema_version,
        data: data.into(),
        metadata: row
            .get::<_, Option<Value>>("metadata")
            .map_or_else(crate::null_body, Arc::new),
        recorded_at: row.get("recorded_at"),
    }
}

/// The append statement: inserts every event of every stream with `unnest`,
/// guarded so that a stream appended at an exact version must be at that version
/// (the unique `(stream_id, version)` index stops two writers taking the same
/// next version; the guard stops a writer leaving a gap).
///
/// Each event's metadata is `$7[$11[i]]`: a run of events with equal
/// metadata (every event of a bulk import) sends it, and Postgres parses it,
/// once; every row still stores its own copy, so readers and the hash chain
/// see exactly what a one-event append would have stored.
const APPEND_SQL: &str = "WITH guard AS (
         SELECT count(*) AS missing
         FROM unnest($9::text[], $10::int8[]) AS g(stream_id, version)
         WHERE NOT EXISTS (
             SELECT 1 FROM events e WHERE e.stream_id = g.stream_id AND e.version = g.version)
     )
     INSERT INTO events
         (event_id, stream_id, version, event_type, schema_version, data, metadata, recorded_at)
     SELECT u.event_id, u.stream_id, u.version, u.event_type, u.schema_version, u.data,
            ($7::jsonb[])[u.metadata], u.recorded_at
     FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::int4[],
                 $6::jsonb[], $11::int4[], $8::timestamptz[])
              AS u(event_id, stream_id, version, event_type, schema_version, data, metadata, recorded_at),
          guard
     WHERE guard.missing = 0
     RETURNING stream_id, version, tx_id, position";

/// The parameters of [`APPEND_SQL`], column by column.
struct AppendRows<'a> {
    event_ids: Vec<Uuid>,
    stream_ids: Vec<&'a str>,
    versions: Vec<i64>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    data: Vec<&'a Value>,
    /// The distinct metadata of each run of events that share it.
    metadata: Vec<&'a Value>,
    /// Each event's metadata: a 1-based index into `metadata`.
    metadata_index: Vec<i32>,
    recorded_at: Vec<DateTime<Utc>>,
    guard_streams: Vec<&'a str>,
    guard_versions: Vec<i64>,
}

impl<'a> AppendRows<'a> {
    /// `Any` must already be resolved to `NoStream` or `Exact`.
    fn new(appends: &'a [StreamAppend]) -> Self {
        let total: usize = appends.iter().map(|a| a.events.len()).sum();
        let mut rows = AppendRows {
            event_ids: Vec::with_capacity(total),
            stream_ids: Vec::with_capacity(total),
            versions: Vec::with_capacity(total),
            types: Vec::with_capacity(total),
            schema_versions: Vec::with_capacity(total),
            data: Vec::with_capacity(total),
            metadata: Vec::new(),
            metadata_index: Vec::with_capacity(total),
            recorded_at: Vec::with_capacity(total),
            guard_streams: Vec::new(),
            guard_versions: Vec::new(),
        };
        for append in appends {
            let first = match append.expected {
                ExpectedVersion::NoStream => 0,
                ExpectedVersion::Exact(v) => {
                    rows.guard_streams.push(append.stream_id.as_str());
                    rows.guard_versions.push(v);
                    v + 1
                }
                ExpectedVersion::Any => unreachable!("resolved before building rows"),
            };
            for (offset, event) in append.events.iter().enumerate() {
                rows.event_ids.push(event.event_id);
                rows.stream_ids.push(append.stream_id.as_str());
                rows.versions.push(first + offset as i64);
                rows.types.push(event.event_type.as_str());
                rows.schema_versions.push(event.schema_version);
                rows.data.push(&event.data);
                rows.push_metadata(&event.metadata);
                rows.recorded_at.push(event.recorded_at);
            }
        }
        rows
    }

    /// The event's metadata: the previous event's entry when equal.
    fn push_metadata(&mut self, metadata: &'a Value) {
        if self.metadata.last() != Some(&metadata) {
            self.metadata.push(metadata);
        }
        let index = i32::try_from(self.metadata.len()).expect("fewer than 2^31 events in one append");
        self.metadata_index.push(index);
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 11] {
        [
            &self.event_ids,
            &self.stream_ids,
            &self.versions,
            &self.types,
            &self.schema_versions,
            &self.data,
            &self.metadata,
            &self.recorded_at,
            &self.guard_streams,
            &self.guard_versions,
            &self.metadata_index,
        ]
    }
}

/// The last version and position of each stream of an append, from the
/// statement's `RETURNING` rows.
fn outcomes(appends: &[StreamAppend], rows: Vec<Row>) -> Vec<AppendOutcome> {
    let mut last: HashMap<String, (i64, LogPosition)> = HashMap::new();
    for row in rows {
        let position = LogPosition {
            tx_id: row.get("tx_id"),
            position: row.get("position"),
        };
        let version: i64 = row.get("version");
        let entry = last.entry(row.get("stream_id")).or_insert((version, position));
        if version >= entry.0 {
            *entry = (version, position);
        }
    }
    appends
        .iter()
        .map(|a| {
            let (last_version, last_position) = last[&a.stream_id];
            AppendOutcome {
                last_version,
                last_position,
                already_stored: false,
            }
        })
        .collect()
}

/// The first stream appended at an exact version: the one a failed guard blames.
fn guarded_stream(appends: &[StreamAppend]) -> Option<&str> {
    appends
        .iter()
        .find(|a| matches!(a.expected, ExpectedVersion::Exact(_)))
        .map(|a| a.stream_id.as_str())
}

/// The stream named in a unique violation's detail, if it names one of ours.
fn violated_stream<'a>(appends: &'a [StreamAppend], error: &tokio_postgres::Error) -> Option<&'a str> {
    error
        .as_db_error()
        .and_then(|db| db.detail())
        .and_then(|detail| {
            appends
                .iter()
                .find(|a| detail.contains(&format!("({}, ", a.stream_id)))
        })
        .map(|a| a.stream_id.as_str())
}

/// Appends inside the caller's transaction, so that rows the caller writes to
/// other tables (uniqueness claims, encryption keys) commit or roll back
/// together with the events. Postgres-only by nature: it is what lets the lead
/// write side keep "one email per campaign" without a reservation that could
/// outlive a failed append.
///
/// `ExpectedVersion::Any` is resolved inside the transaction. Any failure
/// (version conflict, an event id already stored) leaves the transaction
/// aborted: roll it back and decide whether to retry. Unlike [`EventStore::append_many`]
/// this does not recognise a retried append; callers that derive event ids
/// check the stream themselves. After commit, call
/// [`EventStore::notify_committed`]: it wakes the readers in this process and
/// sends the coalesced `NOTIFY` that wakes the others (nothing is sent from
/// inside the transaction, see `Notifier`).
pub async fn append_in_transaction(
    tx: &deadpool_postgres::Transaction<'_>,
    appends: &[StreamAppend],
) -> Result<Vec<AppendOutcome>, AppendError> {
    if appends.is_empty() || appends.iter().any(|a| a.events.is_empty()) {
        return Err(AppendError::Empty);
    }
    let mut resolved = appends.to_vec();
    for append in resolved.iter_mut().filter(|a| a.expected == ExpectedVersion::Any) {
        let current: Option<i64> = tx
            .query_one(
                "SELECT max(version) FROM events WHERE stream_id = $1",
                &[&append.stream_id],
            )
            .await
            .map_err(StoreError::from)?
            .get(0);
        append.expected = current.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
    }
    let rows = AppendRows::new(&resolved);
    let statement = tx.prepare_cached(APPEND_SQL).await.map_err(StoreError::from)?;
    match tx.query(&statement, &rows.params()).await {
        Ok(rows) if rows.is_empty() => Err(conflict(appends, guarded_stream(&resolved))),
        Ok(rows) => Ok(outcomes(&resolved, rows)),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Err(conflict(appends, violated_stream(appends, &e)))
        }
        Err(e) => Err(StoreError::from(e).into()),
    }
}

/// A `LIKE` pattern matching strings that start with `prefix`.
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn conflict(appends: &[StreamAppend], stream: Option<&str>) -> AppendError {
    let append = stream
        .and_then(|s| appends.iter().find(|a| a.stream_id == s))
        .unwrap_or(&appends[0]);
    AppendError::Conflict {
        stream_id: append.stream_id.clone(),
        expected: append.expected,
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendOutcome>, AppendError> {
        if appends.is_empty() || appends.iter().any(|a| a.events.is_empty()) {
            return Err(AppendError::Empty);
        }
        let mut appends = appends;
        let any: Vec<usize> = appends
            .iter()
            .enumerate()
            .filter(|(_, a)| a.expected == ExpectedVersion::Any)
            .map(|(i, _)| i)
            .collect();
        if any.is_empty() {
            return self.try_append(&appends).await;
        }
        // `Any` means "after whatever is there": read the version, append at it,
        // and go again if another writer got in between.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut resolved = appends.clone();
            for &i in &any {
                resolved[i].expected = match self.current_version(&appends[i].stream_id).await? {
                    Some(v) => ExpectedVersion::Exact(v),
                    None => ExpectedVersion::NoStream,
                };
            }
            match self.try_append(&resolved).await {
                Err(AppendError::Conflict { stream_id, .. })
                    if attempt < ANY_VERSION_ATTEMPTS
                        && any.iter().any(|&i| appends[i].stream_id == stream_id) =>
                {
                    continue;
                }
                Err(AppendError::Conflict { stream_id, .. }) => {
                    for &i in &any {
                        appends[i].expected = ExpectedVersion::Any;
                    }
                    return Err(AppendError::Conflict {
                        expected: appends
                            .iter()
                            .find(|a| a.stream_id == stream_id)
                            .map_or(ExpectedVersion::Any, |a| a.expected),
                        stream_id,
                    });
                }
                other => return other,
            }
        }
    }

    async fn read_stream(&self, stream_id: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT position, tx_id, event_id, stream_id, version, event_type, schema_version,
                        data, metadata, recorded_at
                 FROM events WHERE stream_id = $1 ORDER BY version",
            )
            .await?;
        let rows = client.query(&statement, &[&stream_id]).await?;
        Ok(rows.iter().map(|row| self.decode(row)).collect())
    }

    async fn read_versions(&self, places: &[StreamVersion]) -> Result<Vec<RecordedEvent>, StoreError> {
        let streams: Vec<&str> = places.iter().map(|p| p.stream_id.as_str()).collect();
        let versions: Vec<i64> = places.iter().map(|p| p.version).collect();
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT e.position, e.tx_id, e.event_id, e.stream_id, e.version, e.event_type,
                        e.schema_version, e.data, e.metadata, e.recorded_at
                 FROM events e
                 JOIN unnest($1::text[], $2::bigint[]) AS p(stream_id, version)
                   ON e.stream_id = p.stream_id AND e.version = p.version
                 ORDER BY e.tx_id, e.position",
            )
            .await?;
        let rows = client.query(&statement, &[&streams, &versions]).await?;
        Ok(rows.iter().map(|row| self.decode(row)).collect())
    }

    /// The log is the `events` table: its readers query it directly.
    fn log_reader(self: Arc<Self>) -> LogReader {
        LogReader::Postgres
    }

    /// Why not `WHERE position > $last`: sequence values are handed out at insert,
    /// but transactions commit in any order. A reader that saw position 11 may
    /// later find position 10 committed, and would skip it forever.
    ///
    /// Instead each row records its inserting transaction id, and a reader takes
    /// only rows whose transaction is older than the oldest transaction of this
    /// database still running (the greater of the statement's own snapshot's
    /// `xmin` and the store's cached precise horizon, crate::horizon): every such
    /// transaction has finished, so the set of rows below that horizon can no
    /// longer grow. Ordering by `(tx_id, position)` and resuming strictly after the
    /// last pair seen therefore never skips and never repeats an event, and no
    /// writer waits for any lock. The price is latency: a long transaction in this
    /// database holds the horizon back (it delays readers; it cannot make them
    /// miss anything).
    async fn read_all(&self, after: LogPosition, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let cached = self
            .tail
            .read(after, limit, RecordedEvent::clone, |from, n| {
                self.read_log(from, n)
            })
            .await?;
        match cached {
            Some(events) => Ok(events),
            None => self.read_log_and_offer(after, limit).await,
        }
    }

    /// [`PgEventStore::read_all`], with the bodies of other streams' events
    /// left out: they still advance the reader, but cost nothing to decode.
    /// From the tail cache when it covers `after` (the bodies dropped in
    /// memory); at the tail with nothing cached, from a read of every body
    /// that starts the cache; otherwise (behind the cache) replaced by NULL
    /// in the database, so that they cost neither the jsonb output nor the
    /// transfer nor the parse.
    async fn read_all_matching(
        &self,
        after: LogPosition,
        limit: usize,
        stream_prefixes: &[&str],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let present = |event: &RecordedEvent| {
            if stream_prefixes.iter().any(|p| event.stream_id.starts_with(p)) {
                event.clone()
            } else {
                without_body(event)
            }
        };
        let cached = self
            .tail
            .read(after, limit, present, |from, n| self.read_log(from, n))
            .await?;
        if let Some(events) = cached {
            return Ok(events);
        }
        if self.tail.could_start_at(after).await {
            // At the tail with nothing cached: read every body, so that this
            // read can start the cache for the other readers.
            let events = self.read_log_and_offer(after, limit).await?;
            return Ok(events.iter().map(present).collect());
        }
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT position, tx_id, event_id, stream_id, version, event_type, schema_version,
                        CASE WHEN stream_id LIKE ANY($4) THEN data END AS data,
                        CASE WHEN stream_id LIKE ANY($4) THEN metadata END AS metadata,
                        recorded_at
                 FROM events
                 WHERE (tx_id, position) > ($1, $2)
                   AND tx_id < GREATEST(pg_snapshot_xmin(pg_current_snapshot())::text::bigint, $5)
                 ORDER BY tx_id, position
                 LIMIT $3",
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let patterns: Vec<String> = stream_prefixes.iter().map(|p| like_prefix(p)).collect();
        let floor = self.horizon.floor(&client).await?;
        let rows = client
            .query(
                &statement,
                &[&after.tx_id, &after.position, &limit, &patterns, &floor],
            )
            .await?;
        Ok(rows.iter().map(|row| self.decode(row)).collect())
    }

    async fn head(&self) -> Result<Option<LogPosition>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT tx_id, position FROM events
                 WHERE tx_id < GREATEST(pg_snapshot_xmin(pg_current_snapshot())::text::bigint, $1)
                 ORDER BY tx_id DESC, position DESC LIMIT 1",
            )
            .await?;
        let floor = self.horizon.floor(&client).await?;
        Ok(client
            .query_opt(&statement, &[&floor])
            .await?
            .map(|row| LogPosition {
                tx_id: row.get(0),
                position: row.get(1),
            }))
    }

    fn wakeups(&self) -> Wakeups {
        self.wakeups.clone()
    }

    fn in_postgres(&self) -> bool {
        true
    }

    fn notify_committed(&self) {
        self.wakeups.notify();
        self.notifier.hint(&self.pool);
    }
}
