//! The broker stops while writes continue, stays away, and comes back: frozen
//! (SIGSTOP, then SIGCONT: it keeps everything), and killed (SIGKILL, then a
//! restart).
//! The test runs a private tansu (`TANSU_BIN`) so it can kill it. Its storage is
//! in memory, so the restarted broker is empty: no topics, no records, no
//! producer state. That is harsher than a real cluster restart, and shows the
//! publisher re-creating its topics and replacing a producer the broker no
//! longer knows.
//!
//! What the publisher owes: nothing it had not seen acknowledged is lost, the
//! checkpoint never moves while the broker is away, and everything after the
//! last acknowledged event arrives at the restarted broker in per-key order.
//! (Records the old broker acknowledged live only in its memory and die with it;
//! the publisher rightly does not send them again.)

mod common;

use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::kafka::{Reader, Tansu};
use tokio::task::block_in_place;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_crash_and_restart_delays_publishing_but_loses_nothing_unacknowledged() {
    let setup = setup().await;
    let mut broker = Tansu::start();
    let config = config(&broker.brokers());
    let name = config.checkpoint_name.clone();
    let running = start(&setup, config.clone());

    // Writes go on through the whole test, across the outage.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(&setup, stop_writing.clone());

    // Before: records flow.
    let brokers = broker.brokers();
    let topics = [config.campaigns_topic.clone(), config.leads_topic.clone()];
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let before = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &topic_refs);
        reader
            .read_until(Duration::from_secs(30), |r| r.len() >= 100)
            .to_vec()
    });
    assert!(before.len() >= 100, "records flow before the outage");

    // The broker dies mid-stream.
    broker.kill();
    // In-flight acknowledgements died with it; let a checkpoint commit that was
    // already on its way land, then the checkpoint must stand still.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped_at = checkpoint(&setup, &name).await;
    let head_at_crash = last_committed(&setup).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        checkpoint(&setup, &name).await,
        stopped_at,
        "nothing is acknowledged while the broker is down"
    );
    let head_during = last_committed(&setup).await;
    assert!(head_during > head_at_crash, "writes continue during the outage");

    // The broker comes back, empty.
    let restarted = Instant::now();
    broker.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_writing.store(true, Ordering::SeqCst);
    let written = writer.await.unwrap();
    wait_until_published(&setup, &name, Duration::from_secs(90)).await;
    eprintln!("caught up {:?} after the broker restarted", restarted.elapsed());

    let events = all_events(&setup).await;
    assert_eq!(published_count(&events), written);
    let owed: Vec<_> = events
        .iter()
        .filter(|e| e.position > stopped_at)
        .cloned()
        .collect();
    assert!(owed.len() > 100, "a real backlog built up: {}", owed.len());
    let after = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &topic_refs);
        reader.read_until(Duration::from_secs(30), |r| distinct_ids(r) >= owed.len());
        reader.read_for(Duration::from_millis(500)).to_vec()
    });
    // Everything not acknowledged before the crash arrives, checked and in order...
    let checked = check_records(&after, &events, &config);
    assert_all_present(&checked, &owed);
    // ... and nothing that was acknowledged is sent again.
    let owed_ids: HashSet<Uuid> = owed.iter().map(|e| e.event_id).collect();
    assert!(
        checked.copies.keys().all(|id| owed_ids.contains(id)),
        "an event the old broker had acknowledged was sent again"
    );
    // What was read before the crash is in order too.
    check_records(&before, &events, &config);
    eprintln!(
        "{} events; {} read before the crash; {} owed after it, {} records delivered to the restarted broker",
        events.len(),
        before.len(),
        owed.len(),
        after.len()
    );
    running.stop(Duration::from_secs(10)).await;
}

/// Writes campaigns and a lead until `stop`; returns how many events it wrote.
fn spawn_writer(setup: &Setup, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    let store = setup.store.clone();
    tokio::spawn(async move {
        let mut scripts: Vec<CampaignScript> = (0..8).map(|_| CampaignScript::new()).collect();
        let lead = Uuid::new_v4();
        let mut written = 0usize;
        while !stop.load(Ordering::SeqCst) {
            for script in &mut scripts {
                script.step(store.as_ref()).await;
            }
            let kind = if written == 0 {
                "LeadCreated"
            } else {
                "LeadUpdated"
            };
            append_lead_event(store.as_ref(), lead, scripts[0].id, kind).await;
            written += scripts.len() + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        written
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_broker_delays_publishing_and_every_event_arrives_once_it_resumes() {
    let setup = setup().await;
    let broker = Tansu::start();
    let config = config(&broker.brokers());
    let name = config.checkpoint_name.clone();
    let running = start(&setup, config.clone());
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(&setup, stop_writing.clone());
    let brokers = broker.brokers();
    let topics = [config.campaigns_topic.as_str(), config.leads_topic.as_str()];
    block_in_place(|| {
        let mut reader = Reader::new(&brokers, &topics);
        reader.read_until(Duration::from_secs(30), |r| r.len() >= 100);
    });

    // Frozen mid-stream, longer than the stall timeout (3 s here): the publisher
    // gives up on its producer and keeps trying with new ones meanwhile.
    broker.freeze();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frozen_at = checkpoint(&setup, &name).await;
    let head_at_freeze = last_committed(&setup).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        checkpoint(&setup, &name).await,
        frozen_at,
        "nothing is acknowledged while the broker is frozen"
    );
    assert!(
        last_committed(&setup).await > head_at_freeze,
        "writes continue meanwhile"
    );
    broker.thaw();
    let thawed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_writing.store(true, Ordering::SeqCst);
    let written = writer.await.unwrap();
    wait_until_published(&setup, &name, Duration::from_secs(90)).await;
    eprintln!("caught up {:?} after the broker resumed", thawed.elapsed());

    // The broker kept everything: every event is there, from the first.
    let events = all_events(&setup).await;
    assert_eq!(published_count(&events), written);
    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &topics);
        reader.read_until(Duration::from_secs(30), |r| distinct_ids(r) >= written);
        reader.read_for(Duration::from_millis(500)).to_vec()
    });
    let checked = check_records(&records, &events, &config);
    assert_all_present(&checked, &events);
    let positions: std::collections::HashMap<_, _> =
        events.iter().map(|e| (e.event_id, e.position)).collect();
    for id in checked.duplicated() {
        assert!(
            positions[&id] > frozen_at,
            "event {id} was sent twice although acknowledged before the freeze"
        );
    }
    eprintln!(
        "{} events, {} records ({} duplicated, all after the checkpoint at the freeze)",
        written,
        records.len(),
        checked.duplicated().len()
    );
    running.stop(Duration::from_secs(10)).await;
}
