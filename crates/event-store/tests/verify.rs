//! Tamper evidence: hash chains computed by the database, re-checked by `verify`.

use chrono::Utc;
use event_store::{
    connect_pool, migrate, verify, EventStore, ExpectedVersion, NewEvent, PgEventStore, Wakeups,
};
use serde_json::json;
use test_support::{fresh_database, TestDatabase};
use uuid::Uuid;

async fn populated() -> (PgEventStore, TestDatabase) {
    let db = fresh_database().await;
    let mut client = db.connect().await;
    migrate(&mut client).await.unwrap();
    let store = PgEventStore::new(connect_pool(&db.url, 4).unwrap(), &[], Wakeups::new());
    for s in 0..3 {
        let events = (0..4)
            .map(|n| NewEvent {
                event_id: Uuid::new_v4(),
                event_type: "Thing".into(),
                schema_version: 1,
                data: json!({ "n": n, "amount": 10.50 }),
                metadata: json!({ "api_key_id": "k" }),
                recorded_at: Utc::now(),
            })
            .collect();
        store
            .append(&format!("s-{s}"), ExpectedVersion::NoStream, events)
            .await
            .unwrap();
    }
    (store, db)
}

/// Tampering needs the immutability trigger out of the way first, as an
/// attacker with DDL rights would do.
async fn tamper(db: &TestDatabase, sql: &str) {
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "ALTER TABLE events DISABLE TRIGGER events_immutable; {sql}; ALTER TABLE events ENABLE TRIGGER events_immutable;"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_intact_log_verifies_with_a_stable_digest() {
    let (store, _db) = populated().await;
    let first = verify(store.pool()).await.unwrap();
    assert_eq!(
        (first.streams, first.events, first.first_break.clone()),
        (3, 12, None)
    );
    assert_eq!(verify(store.pool()).await.unwrap().log_digest, first.log_digest);
    store
        .append(
            "s-0",
            ExpectedVersion::Exact(3),
            vec![NewEvent {
                event_id: Uuid::new_v4(),
                event_type: "Thing".into(),
                schema_version: 1,
                data: json!({}),
                metadata: json!({}),
                recorded_at: Utc::now(),
            }],
        )
        .await
        .unwrap();
    let after = verify(store.pool()).await.unwrap();
    assert_eq!(after.first_break, None);
    assert_ne!(after.log_digest, first.log_digest, "new events change the digest");
}

#[tokio::test]
async fn the_log_refuses_updates_and_deletes() {
    let (_store, db) = populated().await;
    let client = db.connect().await;
    for sql in [
        "UPDATE events SET data = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{sql}: {err:?}"
        );
    }
}

#[tokio::test]
async fn an_altered_event_breaks_its_chain_there() {
    let (store, db) = populated().await;
    tamper(
        &db,
        "UPDATE events SET data = jsonb_set(data, '{amount}', '99') WHERE stream_id = 's-1' AND version = 2",
    )
    .await;
    let report = verify(store.pool()).await.unwrap();
    let broken = report.first_break.unwrap();
    assert_eq!((broken.stream_id.as_str(), broken.version), ("s-1", 2));
}

#[tokio::test]
async fn a_rehashed_alteration_still_breaks_the_next_link() {
    let (store, db) = populated().await;
    tamper(
        &db,
        "UPDATE events SET data = '{\"n\": 1, \"amount\": 0}',
             hash = event_hash(
                 (SELECT hash FROM events WHERE stream_id = 's-2' AND version = 0),
                 event_id, stream_id, version, event_type, schema_version,
                 '{\"n\": 1, \"amount\": 0}'::jsonb, metadata, recorded_at)
         WHERE stream_id = 's-2' AND version = 1",
    )
    .await;
    let broken = verify(store.pool()).await.unwrap().first_break.unwrap();
    assert_eq!((broken.stream_id.as_str(), broken.version), ("s-2", 2));
}

#[tokio::test]
async fn a_removed_event_is_found() {
    let (store, db) = populated().await;
    tamper(&db, "DELETE FROM events WHERE stream_id = 's-0' AND version = 1").await;
    let broken = verify(store.pool()).await.unwrap().first_break.unwrap();
    assert_eq!((broken.stream_id.as_str(), broken.version), ("s-0", 2));
    assert!(broken.reason.contains("follows version 0"), "{}", broken.reason);
}

#[tokio::test]
async fn reordered_events_are_found() {
    let (store, db) = populated().await;
    tamper(
        &db,
        "UPDATE events SET version = 1000 WHERE stream_id = 's-1' AND version = 1;
         UPDATE events SET version = 1 WHERE stream_id = 's-1' AND version = 2;
         UPDATE events SET version = 2 WHERE stream_id = 's-1' AND version = 1000",
    )
    .await;
    let broken = verify(store.pool()).await.unwrap().first_break.unwrap();
    assert_eq!((broken.stream_id.as_str(), broken.version), ("s-1", 1));
}

/// The trigger computes the chain with its own copy of `event_hash`'s
/// expression (migration V5); every appended row must hash exactly as
/// `event_hash`, which `verify` recomputes with, whatever the content.
#[tokio::test]
async fn the_trigger_hashes_exactly_as_event_hash_for_awkward_content() {
    let db = fresh_database().await;
    let mut client = db.connect().await;
    migrate(&mut client).await.unwrap();
    let store = PgEventStore::new(connect_pool(&db.url, 4).unwrap(), &[], Wakeups::new());
    let bodies = [
        json!({}),
        json!({ "text": "é ✓ 😀 \"quoted\" \\ back\tslash\nnewline", "": "" }),
        json!({ "big": 123456789012345678901234567890u128, "small": -0.000001, "exp": 1e300 }),
        json!({ "nested": { "b": [1, { "z": null, "a": true }], "a": [] }, "aa": "x" }),
        json!([1, "two", null]),
    ];
    let events = bodies
        .iter()
        .map(|data| NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Thing ✓".into(),
            schema_version: 3,
            data: data.clone(),
            metadata: data.clone(),
            recorded_at: Utc::now(),
        })
        .collect();
    store
        .append("s-ünïcode", ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    let mismatched: i64 = client
        .query_one(
            "SELECT count(*) FROM events
             WHERE hash <> event_hash(
                 coalesce((SELECT p.hash FROM events p
                           WHERE p.stream_id = events.stream_id AND p.version = events.version - 1),
                          event_hash_genesis()),
                 event_id, stream_id, version, event_type, schema_version, data, metadata, recorded_at)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mismatched, 0);
    let report = verify(store.pool()).await.unwrap();
    assert_eq!((report.events, report.first_break), (5, None));
}
