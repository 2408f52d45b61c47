//! The KurrentDB event log (cargo feature `kurrentdb`, on by default).
//!
//! How the trait maps onto KurrentDB (docs/kurrentdb.md has the whole design):
//!
//! * a stream is a KurrentDB stream of the same name; an event's `version` is
//!   its stream revision (both start at 0);
//! * [`LogPosition`] is the event's `$all` position: `tx_id` holds the commit
//!   position and `position` the prepare position. Both backends order
//!   positions lexicographically, which is `$all` order here and
//!   `(transaction, sequence)` order on Postgres; `START` (0, 0) is before
//!   every event on both;
//! * the event's data is its JSON body; everything else the trait stores
//!   (schema version, `recorded_at` in microseconds, the free-form metadata,
//!   and the chain hash) travels in the event's custom metadata
//!   ([`StoredMetadata`]), because the server's own timestamp reaches the
//!   client truncated to seconds;
//! * the hash chain is computed here, with the canonical bytes of the Postgres
//!   trigger ([`crate::chain`]), from the stream's last stored hash, and the
//!   append is made at that last revision: a chain can only be extended by the
//!   writer that saw its head. [`KurrentEventStore::verify`] re-checks it;
//! * `ExpectedVersion::Any` is resolved to the revision just read, as on
//!   Postgres, so every append is made at an exact revision;
//! * idempotent retries: before appending, the stream's event ids are read;
//!   if every event is already there the append is a retry and reports what
//!   is stored. KurrentDB keeps no unique index of event ids across streams,
//!   so an id reused in *another* stream is not detected
//!   (`AppendError::EventIdReused` is returned only for a partial overlap
//!   within the stream);
//! * `append_many` is **not atomic across streams**: KurrentDB appends to one
//!   stream at a time. It appends stream by stream, in order, each atomically,
//!   and stops at the first failure: the streams before it stay appended, the
//!   rest are not. Because a retry with the same event ids is recognised per
//!   stream, re-running the same `append_many` completes it without
//!   duplicating anything (how imports use it: docs/kurrentdb.md).

use crate::chain::{self, ChainedFields, Hash};
use crate::{
    upcast, AppendError, AppendOutcome, ChainBreak, EventStore, ExpectedVersion, LogPosition, LogReader,
    NewEvent, RecordedEvent, StoreError, StreamAppend, StreamVersion, Upcaster, VerifyReport, Wakeups,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, Position, ReadAllOptions, ReadStreamOptions,
    StreamPosition, StreamState, SubscribeToAllOptions, SubscriptionEvent,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How many times an append re-reads the stream after another writer got in
/// between (only an `Any` append can then still go ahead).
const ANY_VERSION_ATTEMPTS: usize = 5;
/// Events per `$all` read while verifying.
const VERIFY_BATCH: usize = 1000;
/// Stream reads in flight at once when loading events by place.
const READ_CONCURRENCY: usize = 8;
/// Pause before re-subscribing after the wake-up subscription dropped.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(500);

/// What the store keeps in an event's custom metadata.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredMetadata {
    pub schema_version: i32,
    /// Microseconds since the Unix epoch (what Postgres stores and hashes).
    pub recorded_at_us: i64,
    pub metadata: Value,
    /// Hex SHA-256 of this event chained to its predecessor in the stream.
    pub hash: String,
}

/// The event log on KurrentDB, through the official `kurrentdb` gRPC client.
pub struct KurrentEventStore {
    client: Client,
    upcasters: &'static [Upcaster],
    wakeups: Wakeups,
    watcher: JoinHandle<()>,
}

impl Drop for KurrentEventStore {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// What an append needs to know of its stream.
struct Head {
    ids: HashMap<Uuid, (i64, LogPosition)>,
    last: Option<(i64, Hash)>,
}

impl KurrentEventStore {
    /// Connects to `url` (`kurrentdb://host:port?tls=false`, `esdb://…`, or any
    /// connection string the client accepts) and starts the subscription to
    /// `$all` that ticks `wakeups` whenever an event is appended, by this
    /// process or any other. Must run inside a Tokio runtime.
    pub fn connect(url: &str, upcasters: &'static [Upcaster], wakeups: Wakeups) -> Result<Self, StoreError> {
        let settings: ClientSettings = url
            .parse()
            .map_err(|e| StoreError::Other(format!("invalid EVENT_STORE_URL: {e}")))?;
        let client =
            Client::new(settings).map_err(|e| StoreError::Other(format!("KurrentDB client: {e}")))?;
        let watcher = tokio::spawn(watch_all(client.clone(), wakeups.clone()));
        Ok(Self {
            client,
            upcasters,
            wakeups,
            watcher,
        })
    }

    /// The ids, revisions and positions of `stream`'s events, and its last
    /// revision and hash.
    async fn head(&self, stream_id: &str) -> Result<Head, StoreError> {
        let mut head = Head {
            ids: HashMap::new(),
            last: None,
        };
        for event in self.read_raw_stream(stream_id).await? {
            let stored = stored_metadata(&event)?;
            let version = revision(&event)?;
            head.ids.insert(event.id, (version, position(event.position)?));
            head.last = Some((version, parse_hash(&stored.hash, &event)?));
        }
        Ok(head)
    }

    async fn read_raw_stream(&self, stream_id: &str) -> Result<Vec<kurrentdb::RecordedEvent>, StoreError> {
        self.read_raw_range(stream_id, 0, None).await
    }

    /// The events of `stream_id` from revision `from` on, at most `count` of
    /// them when given.
    async fn read_raw_range(
        &self,
        stream_id: &str,
        from: u64,
        count: Option<usize>,
    ) -> Result<Vec<kurrentdb::RecordedEvent>, StoreError> {
        let mut options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Position(from));
        if let Some(count) = count {
            options = options.max_count(count);
        }
        let mut stream = match self.client.read_stream(stream_id, &options).await {
            Ok(stream) => stream,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(kurrent_error(e)),
        };
        let mut events = Vec::new();
        loop {
            match stream.next().await {
                Ok(Some(resolved)) => events.extend(original(resolved)),
                Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => return Ok(events),
                Err(e) => return Err(kurrent_error(e)),
            }
        }
    }

    /// Up to `limit` events of `$all` strictly after `after` (the server reads
    /// from a position inclusively), skipping KurrentDB's own `$` streams.
    async fn read_all_raw(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> Result<Vec<kurrentdb::RecordedEvent>, StoreError> {
        let mut events = Vec::new();
        let mut from = after;
        loop {
            let start = if from == LogPosition::START {
                StreamPosition::Start
            } else {
                StreamPosition::Position(Position {
                    commit: from.tx_id as u64,
                    prepare: from.position as u64,
                })
            };
            // One more than needed: the first may be `from` itself.
            let want = limit - events.len() + 1;
            let options = ReadAllOptions::default()
                .forwards()
                .position(start)
                .max_count(want);
            let mut stream = self.client.read_all(&options).await.map_err(kurrent_error)?;
            let mut read = 0;
            while let Some(resolved) = stream.next().await.map_err(kurrent_error)? {
                read += 1;
                let Some(event) = original(resolved) else { continue };
                let at = position(event.position)?;
                from = at;
                if at <= after || event.stream_id().starts_with('$') {
                    continue;
                }
                events.push(event);
                if events.len() == limit {
                    return Ok(events);
                }
            }
            if read < want {
                return Ok(events);
            }
        }
    }

    fn decode(&self, event: &kurrentdb::RecordedEvent) -> Result<RecordedEvent, StoreError> {
        let stored = stored_metadata(event)?;
        let data: Value = serde_json::from_slice(&event.data)
            .map_err(|e| foreign(event, &format!("its data is not JSON ({e})")))?;
        let (schema_version, data) = upcast(self.upcasters, &event.event_type, stored.schema_version, data);
        Ok(RecordedEvent {
            position: position(event.position)?,
            event_id: event.id,
            stream_id: event.stream_id().to_owned(),
            version: revision(event)?,
            event_type: event.event_type.clone(),
            schema_version,
            data: data.into(),
            metadata: stored.metadata.into(),
            recorded_at: micros_to_time(stored.recorded_at_us),
        })
    }

    async fn append_one(&self, append: &StreamAppend) -> Result<AppendOutcome, AppendError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let head = self.head(&append.stream_id).await?;
            if let Some(outcome) = already_stored(&head, append)? {
                return Ok(outcome);
            }
            let current = head.last.map(|(version, _)| version);
            let fits = match append.expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => current.is_none(),
                ExpectedVersion::Exact(v) => current == Some(v),
            };
            if !fits {
                return Err(conflict(append));
            }
            let state = current.map_or(StreamState::NoStream, |v| StreamState::StreamRevision(v as u64));
            let events = chained(append, head.last)?;
            let options = AppendToStreamOptions::default().stream_state(state);
            match self
                .client
                .append_to_stream(append.stream_id.as_str(), &options, events)
                .await
            {
                Ok(written) => {
                    return Ok(AppendOutcome {
                        last_version: written.next_expected_version as i64,
                        last_position: position(written.position).map_err(AppendError::from)?,
                        already_stored: false,
                    })
                }
                // Another writer got in between: the next round re-reads the
                // stream (the winner may have stored these very events).
                Err(kurrentdb::Error::WrongExpectedVersion { .. }) if attempt < ANY_VERSION_ATTEMPTS => {}
                Err(kurrentdb::Error::WrongExpectedVersion { .. }) => return Err(conflict(append)),
                Err(e) => return Err(kurrent_error(e).into()),
            }
        }
    }

    /// `marketing verify` for this backend: reads `$all` once, recomputing every
    /// event's hash from its content and its predecessor's stored hash, and
    /// checking that each stream's revisions run from 0 without gaps. Memory
    /// holds one entry per stream (its last revision and hash), not the events.
    /// The digest is built as on Postgres (stream id, NUL, last hash, in stream
    /// id byte order); compare digests of one backend only.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.verify_with_progress(|_| {}).await
    }

    /// [`KurrentEventStore::verify`], calling `progress` with the number of
    /// events checked so far after every batch read (the CLI's progress bar).
    pub async fn verify_with_progress(
        &self,
        mut progress: impl FnMut(u64),
    ) -> Result<VerifyReport, StoreError> {
        let mut check = ChainCheck::default();
        let mut after = LogPosition::START;
        loop {
            let batch = self.read_all_raw(after, VERIFY_BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = position(last.position)?;
            for event in &batch {
                check.event(event)?;
            }
            progress(check.report.events);
        }
        Ok(check.finish())
    }

    /// [`KurrentEventStore::verify`] for these streams only, each read whole
    /// from revision 0 (the campaign check of the history API); the digest
    /// covers them only. A stream that does not exist counts as none.
    pub async fn verify_streams(&self, streams: &[String]) -> Result<VerifyReport, StoreError> {
        let mut check = ChainCheck::default();
        for stream_id in streams {
            for event in self.read_raw_stream(stream_id).await? {
                check.event(&event)?;
            }
        }
        Ok(check.finish())
    }
}

/// A hash-chain check fed each stream's events in revision order: one entry
/// per stream (its last revision and hash), and the first break found.
#[derive(Default)]
struct ChainCheck {
    heads: BTreeMap<String, (i64, Hash)>,
    report: VerifyReport,
}

impl ChainCheck {
    fn event(&mut self, event: &kurrentdb::RecordedEvent) -> Result<(), StoreError> {
        self.report.events += 1;
        let stream_id = event.stream_id().to_owned();
        let previous = self.heads.get(&stream_id).copied();
        let (stored, computed, version) = rehash(event, previous.map_or(chain::GENESIS, |(_, h)| h))?;
        if self.report.first_break.is_none() {
            let reason = match previous {
                None if version != 0 => Some(format!("stream starts at version {version}, not 0")),
                Some((p, _)) if version != p + 1 => Some(format!("version {version} follows version {p}")),
                _ if stored != computed => Some("hash does not match the event's content and chain".into()),
                _ => None,
            };
            self.report.first_break = reason.map(|reason| ChainBreak {
                stream_id: stream_id.clone(),
                version,
                reason,
            });
        }
        self.heads.insert(stream_id, (version, stored));
        Ok(())
    }

    fn finish(mut self) -> VerifyReport {
        self.report.streams = self.heads.len() as u64;
        let mut digest = Sha256::new();
        for (stream, (_, hash)) in &self.heads {
            digest.update(stream.as_bytes());
            digest.update([0]);
            digest.update(hash);
        }
        self.report.log_digest = hex::encode(digest.finalize());
        self.report
    }
}

/// The stored hash of `event`, the hash recomputed from its content and
/// `prev`, and its version.
fn rehash(event: &kurrentdb::RecordedEvent, prev: Hash) -> Result<(Hash, Hash, i64), StoreError> {
    let stored = stored_metadata(event)?;
    let data: Value = serde_json::from_slice(&event.data)
        .map_err(|e| foreign(event, &format!("its data is not JSON ({e})")))?;
    let version = revision(event)?;
    let computed = chain::event_hash(
        &prev,
        &ChainedFields {
            event_id: event.id,
            stream_id: event.stream_id(),
            version,
            event_type: &event.event_type,
            schema_version: stored.schema_version,
            data: &data,
            metadata: &stored.metadata,
            recorded_at_micros: stored.recorded_at_us,
        },
    );
    Ok((parse_hash(&stored.hash, event)?, computed, version))
}

/// Keeps a subscription to the end of `$all` open and ticks `wakeups` for
/// every event that appears, and once after every (re)subscription because
/// events appended while it was down raised no tick. A hint only: readers
/// read `$all` themselves, from their own checkpoints.
async fn watch_all(client: Client, wakeups: Wakeups) {
    loop {
        let options = SubscribeToAllOptions::default().position(StreamPosition::End);
        let mut subscription = client.subscribe_to_all(&options).await;
        loop {
            match subscription.next_subscription_event().await {
                Ok(SubscriptionEvent::Confirmed(_)) | Ok(SubscriptionEvent::EventAppeared(_)) => {
                    wakeups.notify()
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "KurrentDB subscription dropped; readers fall back to polling");
                    break;
                }
            }
        }
        tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
    }
}

/// If every event of `append` is already in the stream, the append is a
/// retry: what was stored. Some but not all: event ids are being reused.
fn already_stored(head: &Head, append: &StreamAppend) -> Result<Option<AppendOutcome>, AppendError> {
    let found: Vec<Option<&(i64, LogPosition)>> =
        append.events.iter().map(|e| head.ids.get(&e.event_id)).collect();
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    if let Some(missing) = found.iter().position(Option::is_none) {
        return Err(AppendError::EventIdReused(append.events[missing].event_id));
    }
    let (last_version, last_position) = found
        .into_iter()
        .flatten()
        .max_by_key(|(version, _)| *version)
        .copied()
        .expect("appends are never empty");
    Ok(Some(AppendOutcome {
        last_version,
        last_position,
        already_stored: true,
    }))
}

/// The events of `append` as KurrentDB events, each carrying its chain hash.
fn chained(append: &StreamAppend, last: Option<(i64, Hash)>) -> Result<Vec<EventData>, StoreError> {
    let (mut version, mut prev) = last.map_or((0, chain::GENESIS), |(v, h)| (v + 1, h));
    let mut events = Vec::with_capacity(append.events.len());
    for event in &append.events {
        let hash = chain::event_hash(&prev, &ChainedFields::of(event, &append.stream_id, version));
        events.push(event_data(event, &hash)?);
        prev = hash;
        version += 1;
    }
    Ok(events)
}

fn event_data(event: &NewEvent, hash: &Hash) -> Result<EventData, StoreError> {
    let metadata = StoredMetadata {
        schema_version: event.schema_version,
        recorded_at_us: event.recorded_at.timestamp_micros(),
        metadata: event.metadata.clone(),
        hash: hex::encode(hash),
    };
    let encode =
        |e: serde_json::Error| StoreError::Other(format!("cannot encode event {}: {e}", event.event_id));
    EventData::json(&event.event_type, &event.data)
        .map_err(encode)?
        .id(event.event_id)
        .metadata_as_json(&metadata)
        .map_err(encode)
}

fn stored_metadata(event: &kurrentdb::RecordedEvent) -> Result<StoredMetadata, StoreError> {
    serde_json::from_slice(&event.custom_metadata)
        .map_err(|e| foreign(event, &format!("its custom metadata is not this store's ({e})")))
}

fn parse_hash(hex_hash: &str, event: &kurrentdb::RecordedEvent) -> Result<Hash, StoreError> {
    hex::decode(hex_hash)
        .ok()
        .and_then(|bytes| Hash::try_from(bytes).ok())
        .ok_or_else(|| foreign(event, "its hash is not a hex SHA-256"))
}

fn foreign(event: &kurrentdb::RecordedEvent, why: &str) -> StoreError {
    StoreError::Other(format!(
        "event {} in stream {} was not written by this event store: {why}",
        event.id,
        event.stream_id()
    ))
}

/// The event a read returned (the link itself for a link event: the store
/// resolves no links). `None` only for a reply the server should not send.
fn original(resolved: kurrentdb::ResolvedEvent) -> Option<kurrentdb::RecordedEvent> {
    resolved.link.or(resolved.event)
}

fn revision(event: &kurrentdb::RecordedEvent) -> Result<i64, StoreError> {
    i64::try_from(event.revision).map_err(|_| foreign(event, "its revision is beyond i64"))
}

/// `{commit, prepare}` as a [`LogPosition`]. Real positions are file offsets,
/// far below `i64::MAX`.
fn position(position: Position) -> Result<LogPosition, StoreError> {
    match (i64::try_from(position.commit), i64::try_from(position.prepare)) {
        (Ok(tx_id), Ok(position)) => Ok(LogPosition { tx_id, position }),
        _ => Err(StoreError::Other(format!(
            "KurrentDB position {position} is beyond i64"
        ))),
    }
}

fn micros_to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn kurrent_error(error: kurrentdb::Error) -> StoreError {
    StoreError::Kurrent(error.to_string())
}

fn conflict(append: &StreamAppend) -> AppendError {
    AppendError::Conflict {
        stream_id: append.stream_id.clone(),
        expected: append.expected,
    }
}

#[async_trait]
impl EventStore for KurrentEventStore {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendOutcome>, AppendError> {
        if appends.is_empty() || appends.iter().any(|a| a.events.is_empty()) {
            return Err(AppendError::Empty);
        }
        let mut outcomes = Vec::with_capacity(appends.len());
        for append in &appends {
            match self.append_one(append).await {
                Ok(outcome) => outcomes.push(outcome),
                Err(error) => {
                    // The streams before this one stay appended (not atomic).
                    if !outcomes.is_empty() {
                        self.notify_committed();
                    }
                    return Err(error);
                }
            }
        }
        self.notify_committed();
        Ok(outcomes)
    }

    async fn read_stream(&self, stream_id: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_raw_stream(stream_id)
            .await?
            .iter()
            .map(|event| self.decode(event))
            .collect()
    }

    /// One read per stream, from its lowest wanted revision to its highest,
    /// a few streams at a time.
    async fn read_versions(&self, places: &[StreamVersion]) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut ranges: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for place in places.iter().filter(|p| p.version >= 0) {
            let range = ranges
                .entry(&place.stream_id)
                .or_insert((place.version, place.version));
            *range = (range.0.min(place.version), range.1.max(place.version));
        }
        let wanted: HashSet<(&str, i64)> = places.iter().map(|p| (p.stream_id.as_str(), p.version)).collect();
        let reads: Vec<_> = ranges
            .into_iter()
            .map(|(stream_id, (low, high))| {
                let count = usize::try_from(high - low + 1).unwrap_or(usize::MAX);
                self.read_raw_range(stream_id, low as u64, Some(count))
            })
            .collect();
        let streams: Vec<Vec<kurrentdb::RecordedEvent>> = futures::stream::iter(reads)
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut events = Vec::with_capacity(places.len());
        for event in streams.iter().flatten() {
            if wanted.contains(&(event.stream_id(), revision(event)?)) {
                events.push(self.decode(event)?);
            }
        }
        events.sort_by_key(|e| e.position);
        Ok(events)
    }

    /// The log is not in Postgres: its readers query the `log_index`
    /// projection and load bodies from here.
    fn log_reader(self: Arc<Self>) -> LogReader {
        LogReader::Kurrent(self)
    }

    async fn read_all(&self, after: LogPosition, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read_all_raw(after, limit)
            .await?
            .iter()
            .map(|event| self.decode(event))
            .collect()
    }

    async fn head(&self) -> Result<Option<LogPosition>, StoreError> {
        let mut from = StreamPosition::End;
        loop {
            let options = ReadAllOptions::default()
                .backwards()
                .position(from)
                .max_count(VERIFY_BATCH);
            let mut stream = self.client.read_all(&options).await.map_err(kurrent_error)?;
            let mut read = 0;
            while let Some(resolved) = stream.next().await.map_err(kurrent_error)? {
                read += 1;
                let Some(event) = original(resolved) else { continue };
                if !event.stream_id().starts_with('$') {
                    return position(event.position).map(Some);
                }
                from = StreamPosition::Position(event.position);
            }
            if read < VERIFY_BATCH {
                return Ok(None);
            }
        }
    }

    fn wakeups(&self) -> Wakeups {
        self.wakeups.clone()
    }
}
