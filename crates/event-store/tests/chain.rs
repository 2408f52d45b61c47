//! The hash chain on KurrentDB: computed by the store in Rust with the canonical
//! bytes of the Postgres trigger, so the same events get the same hashes on both
//! backends, and `KurrentEventStore::verify` finds tampering. KurrentDB here is
//! the sanctioned test double of the KurrentDB gRPC API
//! (`test_support::kurrentdb`), or a real server when `KURRENTDB_URL` is set.

use event_store::{
    connect_pool, migrate, EventStore, ExpectedVersion, KurrentEventStore, NewEvent, PgEventStore,
    StoredMetadata, Wakeups,
};
use serde_json::{json, Value};
use test_support::fresh_database;
use test_support::kurrentdb::KurrentDbDouble;
use uuid::Uuid;

/// A KurrentDB to talk to, and what keeps the double alive.
async fn kurrentdb() -> (String, Option<KurrentDbDouble>) {
    match std::env::var("KURRENTDB_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let double = KurrentDbDouble::start().await;
            (double.url(), Some(double))
        }
    }
}

fn awkward_events() -> Vec<NewEvent> {
    let bodies = [
        json!({}),
        json!({ "text": "é ✓ 😀 \"quoted\" \\ back\tslash\nnewline\u{1}", "": "" }),
        json!({ "big": 123456789012345678901234567890u128, "small": -0.000001, "exp": 1e300, "neg": -0.0 }),
        serde_json::from_str::<Value>(r#"{"price": 10.50, "e": 1.50E+1, "tiny": 5e-3, "zero": -0}"#).unwrap(),
        json!({ "nested": { "b": [1, { "z": null, "a": true }], "a": [] }, "aa": "x", "b": false }),
        json!([1, "two", null]),
    ];
    bodies
        .iter()
        .map(|data| NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Thing ✓".into(),
            schema_version: 3,
            data: data.clone(),
            metadata: json!({ "api_key_id": "k", "copy": data }),
            recorded_at: event_store::now(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kurrentdb_and_postgres_chain_the_same_events_to_the_same_hashes() {
    let db = fresh_database().await;
    let mut client = db.connect().await;
    migrate(&mut client).await.unwrap();
    let postgres = PgEventStore::new(connect_pool(&db.url, 2).unwrap(), &[], Wakeups::new());
    let (url, _double) = kurrentdb().await;
    let kurrent = KurrentEventStore::connect(&url, &[], Wakeups::new()).unwrap();
    let stream = format!("s-ünïcode-{}", Uuid::new_v4().simple());
    let events = awkward_events();
    // Two appends, so the second chains to a hash the first stored.
    for store in [&postgres as &dyn EventStore, &kurrent] {
        store
            .append(&stream, ExpectedVersion::NoStream, events[..3].to_vec())
            .await
            .unwrap();
        store
            .append(&stream, ExpectedVersion::Exact(2), events[3..].to_vec())
            .await
            .unwrap();
    }
    let from_postgres: Vec<String> = client
        .query(
            "SELECT hash FROM events WHERE stream_id = $1 ORDER BY version",
            &[&stream],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| hex::encode(row.get::<_, Vec<u8>>(0)))
        .collect();
    let from_kurrent = stored_hashes(&url, &stream).await;
    assert_eq!(from_postgres.len(), events.len());
    assert_eq!(from_kurrent, from_postgres);
}

/// The hashes KurrentDB holds for `stream`, read with the plain client.
async fn stored_hashes(url: &str, stream: &str) -> Vec<String> {
    let client = kurrentdb::Client::new(url.parse().unwrap()).unwrap();
    let mut read = client
        .read_stream(stream, &kurrentdb::ReadStreamOptions::default())
        .await
        .unwrap();
    let mut hashes = Vec::new();
    while let Some(event) = read.next().await.unwrap() {
        let stored: StoredMetadata =
            serde_json::from_slice(&event.get_original_event().custom_metadata).unwrap();
        hashes.push(stored.hash);
    }
    hashes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_kurrentdb_passes_an_intact_log_and_finds_a_forged_event() {
    let (url, double) = kurrentdb().await;
    if double.is_none() {
        // A shared real server holds other logs; this test needs a log of its own.
        eprintln!("KURRENTDB_URL is set: verify needs an empty log, run on the double only");
        return;
    }
    let store = KurrentEventStore::connect(&url, &[], Wakeups::new()).unwrap();
    for s in 0..3 {
        store
            .append(&format!("s-{s}"), ExpectedVersion::NoStream, awkward_events())
            .await
            .unwrap();
    }
    let intact = store.verify().await.unwrap();
    assert_eq!(
        (intact.streams, intact.events, intact.first_break.clone()),
        (3, 18, None)
    );
    assert_eq!(store.verify().await.unwrap().log_digest, intact.log_digest);

    // A writer that bypasses the store appends an event whose stored hash does
    // not cover its content (it copies the metadata of a genuine event).
    let genuine = store.read_stream("s-1").await.unwrap();
    let client = kurrentdb::Client::new(url.parse().unwrap()).unwrap();
    let mut read = client
        .read_stream("s-1", &kurrentdb::ReadStreamOptions::default())
        .await
        .unwrap();
    let mut last_metadata = None;
    while let Some(event) = read.next().await.unwrap() {
        last_metadata = Some(event.get_original_event().custom_metadata.clone());
    }
    let forged = kurrentdb::EventData::json("Thing ✓", &json!({"forged": true}))
        .unwrap()
        .id(Uuid::new_v4())
        .metadata(last_metadata.unwrap());
    client
        .append_to_stream(
            "s-1",
            &kurrentdb::AppendToStreamOptions::default()
                .stream_state(kurrentdb::StreamState::StreamRevision(genuine.len() as u64 - 1)),
            forged,
        )
        .await
        .unwrap();
    let report = store.verify().await.unwrap();
    let broken = report.first_break.expect("the forged event breaks the chain");
    assert_eq!((broken.stream_id.as_str(), broken.version), ("s-1", 6));
    assert!(broken.reason.contains("hash does not match"), "{}", broken.reason);
}
