//! The Postgres event log's own invariants (docs/architecture.md, "The event
//! log"): what only Postgres offers (appends inside a caller's transaction,
//! atomic multi-stream appends, unique event ids across streams, NOTIFY) or
//! must survive (transactions committing out of sequence order). What every
//! backend must do is in `contract.rs`.

use chrono::Utc;
use event_store::{
    connect_pool, migrate, spawn_listener, AppendError, EventStore, ExpectedVersion, LogPosition, NewEvent,
    PgEventStore, StreamAppend, Upcaster, Wakeups,
};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::{fresh_database, TestDatabase};
use uuid::Uuid;

async fn store_with(upcasters: &'static [Upcaster]) -> (PgEventStore, TestDatabase) {
    let db = fresh_database().await;
    let mut client = db.connect().await;
    migrate(&mut client).await.expect("migrate");
    let pool = connect_pool(&db.url, 32).expect("pool");
    (PgEventStore::new(pool, upcasters, Wakeups::new()), db)
}

async fn store() -> (PgEventStore, TestDatabase) {
    store_with(&[]).await
}

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "Thing".into(),
        schema_version: 1,
        data: json!({ "n": n }),
        metadata: json!({}),
        recorded_at: Utc::now(),
    }
}

async fn count(store: &PgEventStore) -> i64 {
    let client = store.pool().get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0)
}

/// Reads the whole log once everything appended so far is readable.
async fn read_everything(store: &PgEventStore, expected: usize) -> Vec<event_store::RecordedEvent> {
    for _ in 0..600 {
        let events = store.read_all(LogPosition::START, 10_000).await.unwrap();
        if events.len() >= expected {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the log never showed {expected} events");
}

/// Postgres keeps event ids unique across the whole log, so an id reused in
/// another stream is a caller bug it reports (KurrentDB cannot: contract.rs
/// and docs/kurrentdb.md).
#[tokio::test]
async fn an_event_id_reused_in_another_stream_is_refused() {
    let (store, _db) = store().await;
    let stored = event(0);
    store
        .append("s", ExpectedVersion::NoStream, vec![stored.clone()])
        .await
        .unwrap();
    let err = store
        .append("other", ExpectedVersion::NoStream, vec![stored])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::EventIdReused(_)), "{err}");
    assert_eq!(count(&store).await, 1);
}

#[tokio::test]
async fn multi_stream_append_is_all_or_nothing() {
    let (store, _db) = store().await;
    store
        .append("taken", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let err = store
        .append_many(vec![
            StreamAppend {
                stream_id: "fresh".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![event(1)],
            },
            StreamAppend {
                stream_id: "taken".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![event(2)],
            },
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::Conflict { ref stream_id, .. } if stream_id == "taken"),
        "{err}"
    );
    assert!(store.read_stream("fresh").await.unwrap().is_empty());
    let outcomes = store
        .append_many(
            (0..100)
                .map(|i| StreamAppend {
                    stream_id: format!("bulk-{i}"),
                    expected: ExpectedVersion::NoStream,
                    events: vec![event(i)],
                })
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 100);
    assert_eq!(count(&store).await, 101);
}

#[tokio::test]
async fn notify_wakes_readers_in_other_processes() {
    let (writer, db) = store().await;
    // A second store with its own wake-ups stands in for another process: only
    // Postgres NOTIFY can wake it.
    let wakeups = Wakeups::new();
    let mut ticks = wakeups.subscribe();
    let listener = spawn_listener(db.config(), wakeups.clone());
    // The listener ticks once when connected.
    tokio::time::timeout(Duration::from_secs(10), ticks.changed())
        .await
        .expect("listener connected")
        .unwrap();
    ticks.borrow_and_update();
    writer
        .append("s", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), ticks.changed())
        .await
        .expect("a NOTIFY arrives after a commit")
        .unwrap();
    listener.abort();
}

/// Opens a transaction, inserts one event (taking a sequence position), and
/// commits only after `hold`: meanwhile other writers commit higher positions.
/// A reader that followed the sequence would skip this event for good.
async fn slow_writer(db_url: String, stream: String, hold: Duration) -> Uuid {
    let (mut client, connection) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tx = client.transaction().await.unwrap();
    let id = Uuid::new_v4();
    tx.execute(
        "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, data, metadata, recorded_at)
         VALUES ($1, $2, 0, 'Thing', 1, '{}', '{}', now())",
        &[&id, &stream],
    )
    .await
    .unwrap();
    tokio::time::sleep(hold).await;
    tx.commit().await.unwrap();
    id
}

/// The hard invariant: many concurrent writers (including slow transactions that
/// commit out of sequence order) while readers follow the whole log through one
/// store, so that they share its tail cache, with batches of different sizes
/// (one of a single event, one larger than the writers' whole output), two of
/// them reading everything and two naming some streams (as projections do).
/// Each reader must see every committed event exactly once, each stream in
/// version order, with the bodies of exactly the streams it named. Repeated
/// for several rounds with different interleavings.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_make_a_reader_miss_or_repeat_an_event() {
    const ROUNDS: usize = 5;
    const WRITERS: usize = 12;
    const APPENDS_PER_WRITER: usize = 40;
    const SLOW_WRITERS: usize = 6;
    for round in 0..ROUNDS {
        let (store, db) = store().await;
        let store = Arc::new(store);
        let expected_total = WRITERS * APPENDS_PER_WRITER * 2 + SLOW_WRITERS;

        let readers: Vec<_> = READERS
            .into_iter()
            .map(|(batch_size, prefixes)| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut seen: Vec<event_store::RecordedEvent> = Vec::new();
                    let mut after = LogPosition::START;
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while seen.len() < expected_total {
                        assert!(
                            Instant::now() < deadline,
                            "reader timed out with {} events",
                            seen.len()
                        );
                        // Small batches, so the readers interleave with the writers.
                        let batch = match prefixes {
                            Some(prefixes) => store.read_all_matching(after, batch_size, prefixes).await,
                            None => store.read_all(after, batch_size).await,
                        }
                        .unwrap();
                        match batch.last() {
                            Some(last) => after = last.position,
                            // A polling interval: the loop is bounded by the deadline.
                            None => tokio::time::sleep(Duration::from_millis(2)).await,
                        }
                        seen.extend(batch);
                    }
                    seen
                })
            })
            .collect();

        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..APPENDS_PER_WRITER {
                    // Each writer keeps a few streams; events go two at a time.
                    let stream = format!("w{w}-s{}", i % 3);
                    let events = vec![event(i as i64), event(i as i64)];
                    ids.extend(events.iter().map(|e| e.event_id));
                    store.append(&stream, ExpectedVersion::Any, events).await.unwrap();
                }
                ids
            }));
        }
        for s in 0..SLOW_WRITERS {
            let url = db.url.clone();
            let hold = Duration::from_millis(20 + 15 * s as u64);
            writers.push(tokio::spawn(async move {
                vec![slow_writer(url, format!("slow-{s}"), hold).await]
            }));
        }
        let mut written = HashSet::new();
        for writer in writers {
            written.extend(writer.await.unwrap());
        }
        for (reader, (_, prefixes)) in readers.into_iter().zip(READERS) {
            let seen = reader.await.unwrap();
            check_delivery(round, &store, &seen, &written).await;
            for e in &seen {
                let named = prefixes.is_none_or(|p| p.iter().any(|p| e.stream_id.starts_with(p)));
                assert_eq!(
                    *e.data != Value::Null,
                    named,
                    "round {round}: body of {} given to a reader of {prefixes:?}",
                    e.stream_id
                );
            }
        }
        // The readers followed the tail together: once one read reached it,
        // the others were answered from memory.
        assert!(
            store.tail_stats().served > 0,
            "round {round}: the tail cache served nobody"
        );
    }
}

/// The readers of [`concurrent_writers_never_make_a_reader_miss_or_repeat_an_event`]:
/// batch size, and the streams named (`None`: all of them).
const READERS: [(usize, Option<&[&str]>); 4] = [
    (7, None),
    (1, Some(&["w1-", "slow-"])),
    (3, None),
    (5_000, Some(&["w"])),
];

/// What one reader of [`concurrent_writers_never_make_a_reader_miss_or_repeat_an_event`]
/// saw: every written event once, in log order, each stream in version order.
async fn check_delivery(
    round: usize,
    store: &PgEventStore,
    seen: &[event_store::RecordedEvent],
    written: &HashSet<Uuid>,
) {
    // Every writer has committed: nothing more may appear after what the
    // reader saw.
    let last = seen.last().expect("events were read").position;
    assert!(
        store.read_all(last, 10).await.unwrap().is_empty(),
        "round {round}: more events than were written"
    );

    let seen_ids: Vec<Uuid> = seen.iter().map(|e| e.event_id).collect();
    let unique: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seen_ids.len(),
        "round {round}: an event was delivered twice"
    );
    assert_eq!(
        &unique, written,
        "round {round}: delivered set differs from committed set"
    );
    let mut last_version: HashMap<&str, i64> = HashMap::new();
    for e in seen {
        let previous = last_version.insert(&e.stream_id, e.version);
        assert_eq!(
            e.version,
            previous.map_or(0, |v| v + 1),
            "round {round}: stream {} out of order",
            e.stream_id
        );
    }
    for pair in seen.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "round {round}: positions not increasing"
        );
    }
}

/// Events appended inside a caller's transaction commit or vanish together with
/// the caller's other rows, and versions are still enforced.
#[tokio::test]
async fn appends_in_a_caller_transaction_are_all_or_nothing_with_its_other_writes() {
    let (store, _db) = store().await;
    let mut client = store.pool().get().await.unwrap();
    client
        .batch_execute("CREATE TABLE side (n int PRIMARY KEY)")
        .await
        .unwrap();
    let appends = |expected| {
        vec![StreamAppend {
            stream_id: "tx-1".into(),
            expected,
            events: vec![event(0)],
        }]
    };

    // Rolled back: neither the side row nor the event exists.
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO side VALUES (1)", &[]).await.unwrap();
    event_store::append_in_transaction(&tx, &appends(ExpectedVersion::NoStream))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(&store).await, 0);

    // Committed: both exist, with the positions the outcome reported.
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO side VALUES (2)", &[]).await.unwrap();
    let outcome = event_store::append_in_transaction(&tx, &appends(ExpectedVersion::NoStream))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(outcome[0].last_version, 0);
    let stored = store.read_stream("tx-1").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].position, outcome[0].last_position);
    let side: i64 = client
        .query_one("SELECT count(*) FROM side", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(side, 1);

    // A stale expected version is a conflict, and so is a version ahead.
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(5)] {
        let tx = client.transaction().await.unwrap();
        let result = event_store::append_in_transaction(&tx, &appends(expected)).await;
        assert!(
            matches!(result, Err(AppendError::Conflict { .. })),
            "{expected:?}: {result:?}"
        );
        tx.rollback().await.unwrap();
    }
    // `Any` is resolved inside the transaction.
    let tx = client.transaction().await.unwrap();
    let outcome = event_store::append_in_transaction(&tx, &appends(ExpectedVersion::Any))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(outcome[0].last_version, 1);
}

/// One event in each of `streams`, in order: `event(1)`, `event(2)`, ...
async fn one_event_in_each(store: &PgEventStore, streams: &[&str]) {
    for (n, stream) in streams.iter().enumerate() {
        store
            .append(stream, ExpectedVersion::NoStream, vec![event(n as i64 + 1)])
            .await
            .unwrap();
    }
}

/// A reader that names its streams gets every event in the same order, with
/// other streams' bodies left out. Here it is behind what the store's tail
/// cache holds, so it reads the database, where the bodies are left out.
#[tokio::test]
async fn read_all_matching_returns_every_position_but_only_matching_bodies() {
    let (store, _db) = store().await;
    one_event_in_each(&store, &["lead-1", "campaign-1", "lead_x-1"]).await;
    // A transaction open elsewhere in this database holds back the readable
    // horizon: wait until all three are readable, then compare the reads.
    let all = read_everything(&store, 3).await;
    // Enough events after them that, once a reader has followed them, the
    // cache no longer holds the first three.
    let bulk: Vec<NewEvent> = (0..4_200).map(event).collect();
    store
        .append("bulk-1", ExpectedVersion::NoStream, bulk)
        .await
        .unwrap();
    let (mut after, mut followed) = (all[2].position, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while followed < 4_200 {
        assert!(Instant::now() < deadline, "the bulk append never became readable");
        let batch = store.read_all(after, 1_000).await.unwrap();
        match batch.last() {
            Some(last) => after = last.position,
            // A polling interval: the loop is bounded by the deadline.
            None => tokio::time::sleep(Duration::from_millis(2)).await,
        }
        followed += batch.len();
    }
    // The cache followed the bulk in reads of 2,000, so it has started and
    // dropped the oldest events: START is behind it.
    assert!(store.tail_stats().fetches >= 2);
    let served = store.tail_stats().served;
    let matching = store
        .read_all_matching(LogPosition::START, 10, &["campaign-", "lead-"])
        .await
        .unwrap();
    assert_eq!(store.tail_stats().served, served, "read from the database");
    let matching = &matching[..3];
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        matching.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    assert_eq!(matching[0].data, all[0].data);
    assert_eq!(matching[1].data, all[1].data);
    assert_ne!(*matching[0].metadata, Value::Null);
    // Other streams come with their position and type, without their bodies.
    assert_eq!(
        (&*matching[2].data, &*matching[2].metadata),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(matching[2].event_type, "Thing");
}

/// Projections read with `read_all_matching`. At the tail, with nothing
/// cached, such a read takes every body so that it can start the shared
/// cache: a reader of other streams (or of all) is then answered from memory,
/// with the bodies it asked for.
#[tokio::test]
async fn a_reader_of_some_streams_starts_the_tail_for_every_reader() {
    let (store, db) = store().await;
    one_event_in_each(&store, &["lead-1", "campaign-1"]).await;
    // Wait through a second store (its own cache) until both are readable.
    let pool = connect_pool(&db.url, 2).expect("pool");
    let all = read_everything(&PgEventStore::new(pool, &[], Wakeups::new()), 2).await;
    assert_eq!(store.tail_stats(), Default::default());

    let leads = store
        .read_all_matching(LogPosition::START, 10, &["lead-"])
        .await
        .unwrap();
    assert_eq!((&*leads[0].data, &*leads[1].data), (&*all[0].data, &Value::Null));
    assert_eq!(
        store.tail_stats().served,
        0,
        "the first read went to the database"
    );

    let campaigns = store
        .read_all_matching(LogPosition::START, 10, &["campaign-"])
        .await
        .unwrap();
    let everything = store.read_all(LogPosition::START, 10).await.unwrap();
    assert_eq!(store.tail_stats().served, 2, "both answered from memory");
    assert_eq!(
        (&*campaigns[0].data, &*campaigns[1].data),
        (&Value::Null, &*all[1].data)
    );
    assert_eq!(
        everything
            .iter()
            .map(|e| (e.position, &e.data, &e.metadata))
            .collect::<Vec<_>>(),
        all.iter()
            .map(|e| (e.position, &e.data, &e.metadata))
            .collect::<Vec<_>>()
    );
}

/// Transaction ids are cluster-wide, so the snapshot's own `xmin` is held back
/// by a transaction in any database; one that cannot write to this log must
/// not hold back its readers (event_store::horizon).
#[tokio::test]
async fn a_transaction_in_another_database_does_not_hold_back_readers() {
    let (store, _db) = store().await;
    let other = fresh_database().await;
    let mut foreign = other.connect().await;
    let open = foreign.transaction().await.unwrap();
    let foreign_xid: i64 = open
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .await
        .unwrap()
        .get(0);
    let appended = store
        .append("held-1", ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    // The cheap bound is held back by the foreign transaction: without the
    // precise horizon this event would stay unreadable until it ends.
    let client = store.pool().get().await.unwrap();
    let xmin: i64 = client
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        xmin <= foreign_xid,
        "xmin {xmin} is past the open transaction {foreign_xid}"
    );
    assert!(appended.last_position.tx_id > foreign_xid);

    let deadline = Instant::now() + Duration::from_secs(60);
    let read = loop {
        let events = store.read_all(LogPosition::START, 10).await.unwrap();
        if !events.is_empty() || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        read.len(),
        1,
        "the event never became readable beside a foreign transaction"
    );
    assert_eq!(read[0].position, appended.last_position);
    assert!(store.head().await.unwrap() >= Some(appended.last_position));
    // Still open all along: the read did not wait for it to end.
    open.query_one("SELECT 1", &[]).await.unwrap();
    open.rollback().await.unwrap();
}

/// The other half: a transaction of this database that may still append
/// holds the horizon, so an event committed after it is not read before it.
#[tokio::test]
async fn an_open_transaction_in_this_database_still_holds_back_readers() {
    let (store, _db) = store().await;
    let mut client = store.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let early = event_store::append_in_transaction(
        &tx,
        &[StreamAppend {
            stream_id: "early-1".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![event(1)],
        }],
    )
    .await
    .unwrap();
    let late = store
        .append("late-1", ExpectedVersion::NoStream, vec![event(2)])
        .await
        .unwrap();
    let horizon = store.commit_horizon().await.unwrap();
    assert!(
        horizon <= early[0].last_position.tx_id,
        "horizon {horizon} passed the open transaction {:?}",
        early[0].last_position
    );
    assert!(store.read_all(LogPosition::START, 10).await.unwrap().is_empty());
    assert_eq!(store.head().await.unwrap(), None);

    tx.commit().await.unwrap();
    let both = read_everything(&store, 2).await;
    assert_eq!(
        both.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![early[0].last_position, late.last_position]
    );
}
