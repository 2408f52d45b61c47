//! What arrives in Kafka, read back with a real consumer from the broker the test
//! run provides (`KAFKA_TEST_BROKERS`; each test uses topics of its own).

mod common;

use async_trait::async_trait;
use common::*;
use event_store::LogPosition;
use publisher::{DataGate, GateError, Publisher, PublisherConfig, RoutedEvent, TopicKind};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use test_support::kafka::{shared_brokers, Reader};
use tokio::task::block_in_place;
use uuid::Uuid;

const CAMPAIGNS: usize = 12;
const STEPS_PER_CAMPAIGN: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_arrives_once_with_its_key_headers_and_json_value_in_order() {
    let setup = setup().await;
    let config = config(&shared_brokers());
    let running = start(&setup, config.clone());

    // Concurrent writers, as concurrent requests would be: each owns some
    // campaigns and steps them through create/update/status changes, with tasks
    // and leads of those campaigns in between (stand-ins for the features being
    // added in parallel), plus a stream that is not published at all.
    let mut writers = Vec::new();
    for writer in 0..4 {
        let store = setup.store.clone();
        writers.push(tokio::spawn(async move {
            let mut scripts: Vec<CampaignScript> =
                (0..CAMPAIGNS / 4).map(|_| CampaignScript::new()).collect();
            let task = Uuid::new_v4();
            let lead = Uuid::new_v4();
            for step in 0..STEPS_PER_CAMPAIGN {
                for script in &mut scripts {
                    script.step(store.as_ref()).await;
                }
                let campaign = scripts[0].id;
                let kind = if step == 0 { "Created" } else { "Updated" };
                append_task_event(store.as_ref(), task, campaign, &format!("Task{kind}")).await;
                append_lead_event(store.as_ref(), lead, campaign, &format!("Lead{kind}")).await;
                append_raw(
                    store.as_ref(),
                    &format!("internal-{writer}"),
                    "SomethingInternal",
                    json!({ "n": step }),
                )
                .await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    wait_until_published(&setup, &config.checkpoint_name, Duration::from_secs(60)).await;
    let events = all_events(&setup).await;
    let expected = published_count(&events);
    assert_eq!(
        expected,
        CAMPAIGNS * STEPS_PER_CAMPAIGN + 4 * 2 * STEPS_PER_CAMPAIGN
    );

    let brokers = shared_brokers();
    let topics = [config.campaigns_topic.as_str(), config.leads_topic.as_str()];
    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &topics);
        assert_eq!(
            reader.partitions(&config.campaigns_topic),
            3,
            "topic created with KAFKA_PARTITIONS"
        );
        assert_eq!(reader.partitions(&config.leads_topic), 3);
        reader.read_until(Duration::from_secs(30), |r| r.len() >= expected);
        // Then everything the broker holds, so anything extra (a duplicate, an
        // unpublished stream) is seen.
        reader.read_to_end(Duration::from_secs(30)).to_vec()
    });
    let checked = check_records(&records, &events, &config);
    assert_all_present(&checked, &events);
    assert_eq!(records.len(), expected, "no duplicates in a run without failures");
    assert!(checked.duplicated().is_empty());
    // Routing by prefix: leads on the leads topic, everything else campaign-scoped.
    let on_leads = records.iter().filter(|r| r.topic == config.leads_topic).count();
    assert_eq!(on_leads, 4 * STEPS_PER_CAMPAIGN);
    assert!(records
        .iter()
        .all(|r| !r.header("ce_streamid").unwrap().starts_with("internal-")));
    // A task's records share their campaign's key, so they interleave in log order.
    let task_record = records
        .iter()
        .find(|r| r.header("ce_type") == Some("com.marketing.task.created.v1"))
        .expect("task event published");
    assert_eq!(task_record.key.as_deref(), task_record.header("ce_campaignid"));

    // The checkpoint is the stored one, and the progress channel agrees.
    let stored = checkpoint(&setup, &config.checkpoint_name).await;
    assert_eq!(*running.progress.borrow(), stored);
    assert_eq!(stored, last_committed(&setup).await);
    running.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_that_cannot_be_routed_halts_publishing_at_it_without_skipping() {
    let setup = setup().await;
    let config = config(&shared_brokers());
    let mut before = CampaignScript::new();
    let mut last_good = LogPosition::START;
    for _ in 0..3 {
        last_good = before.step(setup.store.as_ref()).await;
    }
    // A task event that does not say which campaign it belongs to: it cannot be
    // keyed, and publishing what comes after it would reorder.
    append_raw(
        setup.store.as_ref(),
        &format!("task-{}", Uuid::new_v4()),
        "TaskCreated",
        json!({ "title": "orphan" }),
    )
    .await;
    let mut after = CampaignScript::new();
    after.step(setup.store.as_ref()).await;

    let running = start(&setup, config.clone());
    // It publishes up to the unroutable event...
    wait_for_checkpoint(
        &setup,
        &config.checkpoint_name,
        last_good,
        Duration::from_secs(30),
    )
    .await;
    // ... and is halted there, retrying it (after 200 ms, 400 ms, ...). Give it
    // rounds to skip it if it would: three rounds halted at it.
    let mut activity = running.activity.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        activity.wait_for(|a| a.halted_rounds >= 3),
    )
    .await
    .expect("the publisher retries the event it is halted at")
    .unwrap();
    let brokers = shared_brokers();
    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&config.campaigns_topic]);
        reader.read_until(Duration::from_secs(20), |r| r.len() >= 3);
        reader.read_to_end(Duration::from_secs(20)).to_vec()
    });
    assert_eq!(records.len(), 3, "exactly the events before the unroutable one");
    assert!(records
        .iter()
        .all(|r| r.key.as_deref() == Some(before.id.to_string().as_str())));
    assert_eq!(checkpoint(&setup, &config.checkpoint_name).await, last_good);
    running.stop(Duration::from_secs(10)).await;
}

/// A gate standing in for the lead feature's: erases personal fields of leads
/// whose key is destroyed, and can be made to fail.
struct ShreddingGate {
    shredded: Mutex<HashSet<String>>,
    failing: AtomicBool,
    calls: Mutex<Vec<usize>>,
}

#[async_trait]
impl DataGate for ShreddingGate {
    async fn disclose(&self, events: &[RoutedEvent]) -> Result<Vec<Value>, GateError> {
        self.calls.lock().unwrap().push(events.len());
        if self.failing.load(Ordering::SeqCst) {
            return Err(GateError("key store unavailable".into()));
        }
        let shredded = self.shredded.lock().unwrap();
        Ok(events
            .iter()
            .map(|routed| {
                let mut data = (*routed.event.data).clone();
                if routed.route.aggregate.topic == TopicKind::Leads
                    && shredded.contains(&routed.route.aggregate_id)
                {
                    data["email"] = Value::Null;
                    data["name"] = Value::Null;
                }
                data
            })
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_personal_data_gate_decides_what_is_published_and_its_failure_publishes_nothing() {
    let setup = setup().await;
    let config = config(&shared_brokers());
    let campaign = Uuid::new_v4();
    let (kept, deleted) = (Uuid::new_v4(), Uuid::new_v4());
    append_lead_event(setup.store.as_ref(), kept, campaign, "LeadCreated").await;
    append_lead_event(setup.store.as_ref(), deleted, campaign, "LeadCreated").await;
    let gate = Arc::new(ShreddingGate {
        shredded: Mutex::new(HashSet::from([deleted.to_string()])),
        failing: AtomicBool::new(true),
        calls: Mutex::new(Vec::new()),
    });
    let running = start_with_gate(&setup, config.clone(), gate.clone());
    // While the gate fails, nothing goes out and the checkpoint stays; the
    // batch is retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while gate.calls.lock().unwrap().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the batch is not retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        checkpoint(&setup, &config.checkpoint_name).await,
        LogPosition::START
    );
    gate.failing.store(false, Ordering::SeqCst);
    wait_until_published(&setup, &config.checkpoint_name, Duration::from_secs(30)).await;

    let brokers = shared_brokers();
    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&config.leads_topic]);
        reader.read_until(Duration::from_secs(20), |r| r.len() >= 2);
        reader.read_to_end(Duration::from_secs(20)).to_vec()
    });
    assert_eq!(records.len(), 2);
    for record in &records {
        let value = record.json();
        if record.key.as_deref() == Some(deleted.to_string().as_str()) {
            assert_eq!(value["email"], Value::Null, "shredded lead published erased");
            assert_eq!(value["name"], Value::Null);
        } else {
            assert_eq!(record.key.as_deref(), Some(kept.to_string().as_str()));
            assert_eq!(value["email"], "john@example.com");
        }
        assert_eq!(value["campaign_id"], campaign.to_string());
    }
    running.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_commits_what_was_acknowledged_and_a_restart_sends_the_rest_once() {
    let setup = setup().await;
    let config = config(&shared_brokers());
    let mut scripts: Vec<CampaignScript> = (0..20).map(|_| CampaignScript::new()).collect();
    for _ in 0..10 {
        for script in &mut scripts {
            script.step(setup.store.as_ref()).await;
        }
    }
    let running = start(
        &setup,
        PublisherConfig {
            batch_size: 20,
            ..config.clone()
        },
    );
    let mut progress = running.progress.clone();
    progress
        .wait_for(|p| *p > LogPosition::START)
        .await
        .expect("publisher started publishing");
    running.stop(Duration::from_secs(10)).await;
    let stopped_at = checkpoint(&setup, &config.checkpoint_name).await;
    let events = all_events(&setup).await;
    let published_before = events.iter().filter(|e| e.position <= stopped_at).count();
    assert!(published_before > 0);

    // Restarted, it continues from its checkpoint.
    let running = start(&setup, config.clone());
    wait_until_published(&setup, &config.checkpoint_name, Duration::from_secs(30)).await;
    let brokers = shared_brokers();
    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&config.campaigns_topic]);
        reader.read_until(Duration::from_secs(20), |r| r.len() >= events.len());
        reader.read_to_end(Duration::from_secs(20)).to_vec()
    });
    let checked = check_records(&records, &events, &config);
    assert_all_present(&checked, &events);
    // A graceful stop waits for the acknowledgements it is owed and commits them:
    // no event is sent twice.
    assert_eq!(
        records.len(),
        events.len(),
        "duplicates: {:?}",
        checked.duplicated()
    );
    running.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn invalid_configuration_is_refused_before_connecting() {
    let setup = setup().await;
    let bad_topic = PublisherConfig {
        campaigns_topic: "no spaces allowed".into(),
        ..PublisherConfig::new("127.0.0.1:1")
    };
    let error = Publisher::new(
        setup.store.clone(),
        setup.pool.clone(),
        bad_topic,
        Arc::new(publisher::AsStored),
    )
    .err()
    .expect("refused");
    assert!(error.to_string().contains("KAFKA_TOPIC_CAMPAIGNS"), "{error}");
    let bad_property = PublisherConfig {
        extra_properties: vec![("no.such.property".into(), "1".into())],
        ..PublisherConfig::new("127.0.0.1:1")
    };
    let error = Publisher::new(
        setup.store.clone(),
        setup.pool.clone(),
        bad_property,
        Arc::new(publisher::AsStored),
    )
    .err()
    .expect("refused");
    assert!(error.to_string().contains("no.such.property"), "{error}");
}
