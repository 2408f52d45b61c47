//! W3C trace context (docs/operations.md, "Tracing"): a request's
//! `traceparent` is stored with every event it appends (read back with SQL
//! and through the history endpoint), and sent as the `traceparent` header of
//! each event's Kafka record; a malformed one is ignored and a new trace
//! started. Trace export over OTLP is crates/marketing/tests/otlp.rs.

use crate::kafka::{kafka_config, test_app};
use marketing::startup::Role;
use marketing_e2e::{spawn_app, TestApp, SEED_CREATE};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use test_support::fresh_database;
use test_support::kafka::{shared_brokers, Reader};
use tokio::task::block_in_place;
use trace_context::TraceParent;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: u64 = 0x00f0_67aa_0ba9_02b7;

/// The `traceparent` stored with each event of `stream_id`, in stream order.
async fn stored_traces(app: &TestApp, stream_id: &str) -> Vec<TraceParent> {
    app.db
        .connect()
        .await
        .query(
            "SELECT metadata->>'traceparent' FROM events WHERE stream_id = $1 ORDER BY version",
            &[&stream_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let stored: String = row.get(0);
            TraceParent::parse(stored.as_bytes()).unwrap_or_else(|| panic!("stored {stored:?}"))
        })
        .collect()
}

async fn create_with(app: &TestApp, traceparents: &[&str]) -> String {
    let mut request = app.json(Method::POST, "/campaigns", &app.key, SEED_CREATE);
    for value in traceparents {
        request = request.header("traceparent", *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 201);
    // Nothing is exported here, so there is no trace to point the caller to.
    assert!(response.headers().get("traceresponse").is_none());
    let created: Value = response.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requests_trace_is_in_its_events_metadata_and_on_their_kafka_records() {
    let db = fresh_database().await;
    let config = kafka_config(&db.url, &shared_brokers());
    let topic = config.kafka_topic_campaigns.clone();
    let app = test_app(config, Role::Serve).await;

    let id = create_with(&app, &[TRACEPARENT]).await;
    let status = json!({ "status": "active" }).to_string();
    let patch = app
        .json(
            Method::PATCH,
            &format!("/campaigns/{id}/status"),
            &app.key,
            &status,
        )
        .header("traceparent", TRACEPARENT)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);

    // Every event either request appended, in the caller's trace, as a child
    // of the caller's span (each request is a span of its own).
    let stored = stored_traces(&app, &format!("campaign-{id}")).await;
    assert_eq!(stored.len(), 2);
    for trace in &stored {
        assert_eq!(trace.trace_id().to_string(), TRACE_ID);
        assert_ne!(trace.parent_id(), CALLER_SPAN);
        assert!(trace.is_sampled());
    }
    assert_ne!(stored[0].parent_id(), stored[1].parent_id());

    let history: Value = app
        .get(&format!("/campaigns/{id}/history"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    let traces: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["actor"]["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(traces, [TRACE_ID, TRACE_ID]);

    let brokers = shared_brokers();
    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&topic]);
        reader
            .read_until(Duration::from_secs(60), |r| r.len() >= 2)
            .to_vec()
    });
    let sent: Vec<&str> = records.iter().map(|r| r.header("traceparent").unwrap()).collect();
    // No trace export: the record carries the context stored with the event.
    let expected: Vec<String> = stored.iter().map(ToString::to_string).collect();
    assert_eq!(sent, expected);
}

#[tokio::test]
async fn a_malformed_traceparent_is_ignored_and_a_new_trace_started() {
    let app = spawn_app().await;
    let upper = TRACEPARENT.to_uppercase();
    let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let mut seen = Vec::new();
    for bad in [
        vec!["garbage"],
        vec![upper.as_str()],
        vec![zeros],
        vec![TRACEPARENT, TRACEPARENT],
        vec![],
    ] {
        let id = create_with(&app, &bad).await;
        let stored = stored_traces(&app, &format!("campaign-{id}")).await;
        assert_eq!(stored.len(), 1);
        let trace_id = stored[0].trace_id().to_string();
        assert_ne!(trace_id, TRACE_ID, "{bad:?} started a new trace");
        assert!(!seen.contains(&trace_id), "each new trace is new");
        seen.push(trace_id);
    }
    // A read with one is served as any other.
    let read = app
        .request(Method::GET, "/campaigns", &app.key)
        .header("traceparent", "00-zz")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
}
