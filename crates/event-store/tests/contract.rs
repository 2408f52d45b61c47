//! One contract for the `EventStore` trait, run against every backend:
//!
//! * `postgres::*`: `PgEventStore` on a fresh database of the real Postgres;
//! * `kurrentdb::*`: `KurrentEventStore` through the real `kurrentdb` client
//!   over gRPC, against a real KurrentDB server when `KURRENTDB_URL` is set
//!   (e.g. `kurrentdb://127.0.0.1:2113?tls=false`), and otherwise against the
//!   sanctioned test double of the KurrentDB gRPC API
//!   (`test_support::kurrentdb`), since no real server can run here.
//!
//! Each test works in a namespace of stream names of its own, so the same tests
//! run on a shared real server. Where the backends differ by design (atomic
//! multi-stream appends, event-id uniqueness across streams: docs/kurrentdb.md)
//! the test states both outcomes. Postgres-only behaviour (appends inside a
//! caller's transaction, out-of-order commits, NOTIFY) is in `log.rs`.

use event_store::{
    connect_pool, migrate, spawn_listener, AppendError, EventStore, ExpectedVersion, KurrentEventStore,
    LogPosition, NewEvent, PgEventStore, RecordedEvent, StreamAppend, Upcaster, Wakeups,
};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::kurrentdb::KurrentDbDouble;
use test_support::{fresh_database, TestDatabase};
use uuid::Uuid;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Postgres,
    KurrentDb,
}

/// What a test runs against.
struct Subject {
    backend: Backend,
    store: Arc<dyn EventStore>,
    /// Another handle on the same log with wake-ups of its own, standing in
    /// for another process.
    other_process: Arc<dyn EventStore>,
    namespace: String,
    _keep: Keep,
}

/// What must live as long as the test: the database and its LISTEN task, or
/// the double.
enum Keep {
    Postgres {
        _db: TestDatabase,
        listener: tokio::task::JoinHandle<()>,
    },
    Double {
        _double: KurrentDbDouble,
    },
    RealServer,
}

impl Drop for Keep {
    fn drop(&mut self) {
        if let Keep::Postgres { listener, .. } = self {
            listener.abort();
        }
    }
}

impl Subject {
    fn stream(&self, name: &str) -> String {
        format!("{}{name}", self.namespace)
    }

    fn ours(&self, event: &RecordedEvent) -> bool {
        event.stream_id.starts_with(&self.namespace)
    }

    /// Every event of this test's namespace, once all `expected` are readable.
    async fn read_everything(&self, expected: usize) -> Vec<RecordedEvent> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut events = Vec::new();
            let mut after = LogPosition::START;
            loop {
                let batch = self.store.read_all(after, 1000).await.unwrap();
                let Some(last) = batch.last() else { break };
                after = last.position;
                events.extend(batch.into_iter().filter(|e| self.ours(e)));
            }
            if events.len() >= expected {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "the log never showed {expected} events"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn postgres(upcasters: &'static [Upcaster]) -> Subject {
    let db = fresh_database().await;
    let mut client = db.connect().await;
    migrate(&mut client).await.expect("migrate");
    let wakeups = Wakeups::new();
    let listener = spawn_listener(db.config(), wakeups.clone());
    let store = PgEventStore::new(connect_pool(&db.url, 16).expect("pool"), upcasters, wakeups);
    let other = PgEventStore::new(connect_pool(&db.url, 4).expect("pool"), upcasters, Wakeups::new());
    Subject {
        backend: Backend::Postgres,
        store: Arc::new(store),
        other_process: Arc::new(other),
        namespace: namespace(),
        _keep: Keep::Postgres { _db: db, listener },
    }
}

async fn kurrentdb(upcasters: &'static [Upcaster]) -> Subject {
    let (url, keep) = match std::env::var("KURRENTDB_URL") {
        Ok(url) => (url, Keep::RealServer),
        Err(_) => {
            let double = KurrentDbDouble::start().await;
            (double.url(), Keep::Double { _double: double })
        }
    };
    let store = KurrentEventStore::connect(&url, upcasters, Wakeups::new()).expect("connect");
    let other = KurrentEventStore::connect(&url, upcasters, Wakeups::new()).expect("connect");
    Subject {
        backend: Backend::KurrentDb,
        store: Arc::new(store),
        other_process: Arc::new(other),
        namespace: namespace(),
        _keep: keep,
    }
}

fn namespace() -> String {
    format!("t{}-", &Uuid::new_v4().simple().to_string()[..12])
}

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "Thing".into(),
        schema_version: 1,
        data: json!({ "n": n }),
        metadata: json!({ "request_id": format!("r-{n}") }),
        recorded_at: event_store::now(),
    }
}

/// Runs each contract test against both backends: `postgres::name` and
/// `kurrentdb::name`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::postgres(super::UPCASTERS).await).await
                }
            )*
        }
        mod kurrentdb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::kurrentdb(super::UPCASTERS).await).await
                }
            )*
        }
    };
}

contract!(
    appends_number_versions_from_zero_and_read_back_in_order,
    conflicting_appends_to_one_stream_exactly_one_wins,
    an_expected_version_ahead_of_the_stream_is_a_conflict_not_a_gap,
    retried_append_with_same_event_ids_appends_nothing,
    a_partly_stored_append_is_an_event_id_reuse,
    a_failed_multi_stream_append_completes_when_run_again,
    any_version_appends_never_collide,
    old_schema_versions_are_upcast_on_every_read_path,
    concurrent_writers_never_make_a_reader_miss_or_repeat_an_event,
    a_reader_catches_up_then_is_woken_for_live_appends_from_another_process,
    a_reader_resumes_from_its_checkpoint_without_gaps_or_repeats,
    a_missing_stream_reads_as_empty,
);

/// Schema version 1 of `Upcast` events is upcast to 2; `Thing` is current.
fn v1_to_v2(mut data: Value) -> Value {
    let n = data["n"].take();
    json!({ "number": n })
}

static UPCASTERS: &[Upcaster] = &[("Upcast", 1, v1_to_v2)];

async fn appends_number_versions_from_zero_and_read_back_in_order(s: Subject) {
    let stream = s.stream("s-1");
    let first = s
        .store
        .append(&stream, ExpectedVersion::NoStream, vec![event(0), event(1)])
        .await
        .unwrap();
    assert_eq!((first.last_version, first.already_stored), (1, false));
    let second = s
        .store
        .append(&stream, ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .unwrap();
    assert_eq!(second.last_version, 2);
    assert!(second.last_position > first.last_position);
    let events = s.store.read_stream(&stream).await.unwrap();
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![0, 1, 2]);
    let ns: Vec<i64> = events.iter().map(|e| e.data["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, vec![0, 1, 2]);
    assert_eq!(*events[2].metadata, json!({"request_id": "r-2"}));
    assert_eq!(events[2].position, second.last_position);
    assert_eq!(events[1].position, first.last_position);
    // The whole-log read places them at the same positions, in order.
    let all = s.read_everything(3).await;
    assert_eq!(
        all.iter().map(|e| (e.event_id, e.position)).collect::<Vec<_>>(),
        events
            .iter()
            .map(|e| (e.event_id, e.position))
            .collect::<Vec<_>>()
    );
    assert_eq!(all[0].recorded_at, events[0].recorded_at);
    // The head is at or past the last append once it is readable.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head = s.store.head().await.unwrap();
        if head >= Some(second.last_position) {
            break;
        }
        assert!(Instant::now() < deadline, "head stayed at {head:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn conflicting_appends_to_one_stream_exactly_one_wins(s: Subject) {
    let stream = s.stream("contested");
    s.store
        .append(&stream, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let store = s.store.clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                store
                    .append(&stream, ExpectedVersion::Exact(0), vec![event(n)])
                    .await
            })
        })
        .collect();
    let (mut wins, mut conflicts) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => {
                assert_eq!(outcome.last_version, 1);
                wins += 1;
            }
            Err(AppendError::Conflict { stream_id, .. }) => {
                assert_eq!(stream_id, stream);
                conflicts += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!((wins, conflicts), (1, 15));
    assert_eq!(s.store.read_stream(&stream).await.unwrap().len(), 2);
    let err = s
        .store
        .append(&stream, ExpectedVersion::NoStream, vec![event(9)])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Conflict { .. }), "{err}");
}

async fn an_expected_version_ahead_of_the_stream_is_a_conflict_not_a_gap(s: Subject) {
    let stream = s.stream("s");
    s.store
        .append(&stream, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let err = s
        .store
        .append(&stream, ExpectedVersion::Exact(5), vec![event(1)])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Conflict { .. }), "{err}");
    let missing = s.stream("missing");
    let err = s
        .store
        .append(&missing, ExpectedVersion::Exact(0), vec![event(1)])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Conflict { .. }), "{err}");
    assert_eq!(s.store.read_stream(&stream).await.unwrap().len(), 1);
    assert!(s.store.read_stream(&missing).await.unwrap().is_empty());
    let err = s
        .store
        .append(&stream, ExpectedVersion::Any, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Empty), "{err}");
}

async fn retried_append_with_same_event_ids_appends_nothing(s: Subject) {
    let stream = s.stream("s");
    let events = vec![event(0), event(1)];
    let first = s
        .store
        .append(&stream, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    assert!(!first.already_stored);
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::Exact(1),
    ] {
        let retry = s.store.append(&stream, expected, events.clone()).await.unwrap();
        assert!(retry.already_stored, "{expected:?}");
        assert_eq!(retry.last_version, first.last_version);
        assert_eq!(retry.last_position, first.last_position);
    }
    // Later events do not stop a retry of an earlier append being recognised.
    s.store
        .append(&stream, ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .unwrap();
    let late = s
        .store
        .append(&stream, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    assert!(late.already_stored);
    assert_eq!(late.last_position, first.last_position);
    assert_eq!(s.store.read_stream(&stream).await.unwrap().len(), 3);
    // Concurrent retries of one append store it once. KurrentDB answers a
    // duplicate that races the original with its own idempotency, as a plain
    // success, so there more than one of them may report `already_stored:
    // false` (docs/kurrentdb.md); the events are stored once either way.
    let again = s.stream("again");
    let batch = vec![event(5), event(6)];
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, stream, batch) = (s.store.clone(), again.clone(), batch.clone());
            tokio::spawn(async move { store.append(&stream, ExpectedVersion::NoStream, batch).await })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        let outcome = task.await.unwrap().unwrap();
        assert_eq!(outcome.last_version, 1);
        fresh += usize::from(!outcome.already_stored);
    }
    match s.backend {
        Backend::Postgres => assert_eq!(fresh, 1),
        Backend::KurrentDb => assert!(fresh >= 1),
    }
    assert_eq!(s.store.read_stream(&again).await.unwrap().len(), 2);
}

async fn a_partly_stored_append_is_an_event_id_reuse(s: Subject) {
    let stream = s.stream("s");
    let stored = event(0);
    s.store
        .append(&stream, ExpectedVersion::NoStream, vec![stored.clone()])
        .await
        .unwrap();
    let err = s
        .store
        .append(&stream, ExpectedVersion::Any, vec![stored.clone(), event(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::EventIdReused(id) if id != stored.event_id),
        "{err}"
    );
    assert_eq!(s.store.read_stream(&stream).await.unwrap().len(), 1);
}

/// Postgres appends several streams atomically; KurrentDB stream by stream,
/// keeping the streams before a failure. On both, running the same appends
/// again (same event ids) completes them with every event stored once.
async fn a_failed_multi_stream_append_completes_when_run_again(s: Subject) {
    let (fresh, taken) = (s.stream("fresh"), s.stream("taken"));
    s.store
        .append(&taken, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let fresh_events = vec![event(1)];
    let taken_events = vec![event(2)];
    let appends = |taken_expected| {
        vec![
            StreamAppend {
                stream_id: fresh.clone(),
                expected: ExpectedVersion::NoStream,
                events: fresh_events.clone(),
            },
            StreamAppend {
                stream_id: taken.clone(),
                expected: taken_expected,
                events: taken_events.clone(),
            },
        ]
    };
    let err = s
        .store
        .append_many(appends(ExpectedVersion::NoStream))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::Conflict { ref stream_id, .. } if *stream_id == taken),
        "{err}"
    );
    let fresh_after_failure = s.store.read_stream(&fresh).await.unwrap().len();
    match s.backend {
        Backend::Postgres => assert_eq!(fresh_after_failure, 0, "all or nothing"),
        Backend::KurrentDb => assert_eq!(fresh_after_failure, 1, "stream by stream"),
    }
    let outcomes = s
        .store
        .append_many(appends(ExpectedVersion::Exact(0)))
        .await
        .unwrap();
    assert_eq!(outcomes[0].already_stored, s.backend == Backend::KurrentDb);
    assert_eq!((outcomes[0].last_version, outcomes[1].last_version), (0, 1));
    assert_eq!(s.store.read_stream(&fresh).await.unwrap().len(), 1);
    assert_eq!(s.store.read_stream(&taken).await.unwrap().len(), 2);
}

async fn any_version_appends_never_collide(s: Subject) {
    let stream = s.stream("busy");
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let (store, stream) = (s.store.clone(), stream.clone());
            tokio::spawn(async move { store.append(&stream, ExpectedVersion::Any, vec![event(n)]).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            // Under heavy contention `Any` may give up after a few attempts; it
            // must then say so, never overwrite.
            Err(AppendError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let versions: Vec<i64> = s
        .store
        .read_stream(&stream)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (0..ok).collect::<Vec<i64>>());
}

async fn old_schema_versions_are_upcast_on_every_read_path(s: Subject) {
    let stream = s.stream("s");
    let mut old = event(7);
    old.event_type = "Upcast".into();
    s.store
        .append(&stream, ExpectedVersion::NoStream, vec![old])
        .await
        .unwrap();
    let from_stream = &s.store.read_stream(&stream).await.unwrap()[0];
    assert_eq!(
        (from_stream.schema_version, &*from_stream.data),
        (2, &json!({"number": 7}))
    );
    let from_log = &s.read_everything(1).await[0];
    assert_eq!(
        (from_log.schema_version, &*from_log.data),
        (2, &json!({"number": 7}))
    );
}

/// The hard invariant: many concurrent writers while one reader follows the
/// whole log in small batches. The reader sees every event exactly once, each
/// stream in version order, positions strictly increasing.
async fn concurrent_writers_never_make_a_reader_miss_or_repeat_an_event(s: Subject) {
    const WRITERS: usize = 8;
    const APPENDS_PER_WRITER: usize = 25;
    let expected_total = WRITERS * APPENDS_PER_WRITER * 2;
    let s = Arc::new(s);
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = LogPosition::START;
            let deadline = Instant::now() + Duration::from_secs(180);
            while seen.len() < expected_total {
                assert!(
                    Instant::now() < deadline,
                    "reader timed out with {} events",
                    seen.len()
                );
                let batch = s.store.read_all(after, 7).await.unwrap();
                match batch.last() {
                    Some(last) => after = last.position,
                    None => tokio::time::sleep(Duration::from_millis(2)).await,
                }
                seen.extend(batch.into_iter().filter(|e| s.ours(e)));
            }
            (seen, after)
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..APPENDS_PER_WRITER {
                    let stream = s.stream(&format!("w{w}-s{}", i % 3));
                    let events = vec![event(i as i64), event(i as i64)];
                    ids.extend(events.iter().map(|e| e.event_id));
                    s.store
                        .append(&stream, ExpectedVersion::Any, events)
                        .await
                        .unwrap();
                }
                ids
            })
        })
        .collect();
    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    let (seen, after) = reader.await.unwrap();
    let more: Vec<_> = s
        .store
        .read_all(after, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| s.ours(e))
        .collect();
    assert!(more.is_empty(), "more events than were written");
    let ids: Vec<Uuid> = seen.iter().map(|e| e.event_id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event was delivered twice");
    assert_eq!(unique, written, "delivered set differs from committed set");
    let mut last_version: HashMap<&str, i64> = HashMap::new();
    for e in &seen {
        let previous = last_version.insert(&e.stream_id, e.version);
        assert_eq!(
            e.version,
            previous.map_or(0, |v| v + 1),
            "stream {} out of order",
            e.stream_id
        );
    }
    assert!(
        seen.windows(2).all(|p| p[0].position < p[1].position),
        "positions not increasing"
    );
}

/// Catch-up, then live: a reader reads what is there, then waits on its
/// wake-ups; an append made through another handle (another process) wakes
/// it, and it reads exactly the new events.
async fn a_reader_catches_up_then_is_woken_for_live_appends_from_another_process(s: Subject) {
    for n in 0..5 {
        s.store
            .append(
                &s.stream(&format!("old-{n}")),
                ExpectedVersion::NoStream,
                vec![event(n)],
            )
            .await
            .unwrap();
    }
    let caught_up = s.read_everything(5).await;
    let mut after = LogPosition::START;
    loop {
        let batch = s.store.read_all(after, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.position;
    }
    let mut ticks = s.store.wakeups().subscribe();
    // The first tick says the wake-up source is connected (the LISTEN
    // connection, the subscription to `$all`): only later ones are appends.
    tokio::time::timeout(Duration::from_secs(60), ticks.wait_for(|n| *n > 0))
        .await
        .expect("the wake-up source connects")
        .unwrap();
    ticks.borrow_and_update();
    let live = vec![event(10), event(11)];
    s.other_process
        .append(&s.stream("live"), ExpectedVersion::NoStream, live.clone())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), ticks.changed())
        .await
        .expect("an append in another process wakes the reader")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut new = Vec::new();
    while new.len() < live.len() {
        assert!(Instant::now() < deadline, "live events never became readable");
        let batch = s.store.read_all(after, 1000).await.unwrap();
        if let Some(last) = batch.last() {
            after = last.position;
        }
        new.extend(batch.into_iter().filter(|e| s.ours(e)));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        new.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        live.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert!(new[0].position > caught_up.last().unwrap().position);
}

/// A reader that stops after part of the log and starts again from the
/// position it checkpointed, through a new connection, gets exactly the rest:
/// reading after a position excludes the event at it.
async fn a_reader_resumes_from_its_checkpoint_without_gaps_or_repeats(s: Subject) {
    let stream = s.stream("s");
    let events: Vec<NewEvent> = (0..10).map(event).collect();
    for chunk in events.chunks(3) {
        s.store
            .append(&stream, ExpectedVersion::Any, chunk.to_vec())
            .await
            .unwrap();
    }
    let all = s.read_everything(10).await;
    let checkpoint = all[3].position;
    let resumed: Vec<_> = s
        .other_process
        .read_all(checkpoint, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| s.ours(e))
        .collect();
    assert_eq!(
        resumed.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        events[4..].iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    // Page by page through the checkpoint of each page: the same sequence.
    let mut paged = Vec::new();
    let mut after = checkpoint;
    loop {
        let page = s.store.read_all(after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        paged.extend(page.into_iter().filter(|e| s.ours(e)).map(|e| e.event_id));
    }
    assert_eq!(paged, resumed.iter().map(|e| e.event_id).collect::<Vec<_>>());
}

async fn a_missing_stream_reads_as_empty(s: Subject) {
    assert!(s.store.read_stream(&s.stream("never")).await.unwrap().is_empty());
}
