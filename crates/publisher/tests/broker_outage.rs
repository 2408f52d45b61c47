//! The broker stops while writes continue, stays away, and comes back: frozen
//! (SIGSTOP, then SIGCONT: it keeps everything), and killed (SIGKILL, then a
//! restart).
//! The test runs a private tansu (`TANSU_BIN`) so it can kill it. Its storage is
//! in memory, so the restarted broker is empty: no topics, no records, no
//! producer state. That is harsher than a real cluster restart, and shows the
//! publisher re-creating its topics and replacing a producer the broker no
//! longer knows.
//!
//! What the publisher owes: the checkpoint never covers an event the broker did
//! not acknowledge, and everything after the checkpoint arrives once the broker
//! is back, in per-key order. (Records the old broker acknowledged live only in
//! its memory and die with it; the publisher rightly does not send them again.)
//!
//! What the tests do *not* assert: that the checkpoint stands still for some
//! time after the broker went away. Acknowledgements the publisher received just
//! before may still be committed a moment later (at the latest when the stall
//! watchdog ends the round), and how long that takes depends on the machine's
//! load. What is fixed is the upper bound: nothing written after the broker
//! stopped answering can have been acknowledged by it.

mod common;

use common::*;
use event_store::{LogPosition, RecordedEvent};
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

    // The broker dies mid-stream. Nothing written from now on can have been
    // acknowledged by it.
    broker.kill();
    let head_at_crash = last_committed(&setup).await;
    // Down until a real backlog built up (a condition: under load the writer
    // is slower and the outage lasts longer), and until the producer that was
    // sending at the crash has been given up (its session ended, its
    // acknowledged prefix committed) before the broker returns. Otherwise it
    // could still retry into the restarted broker, and what it had
    // acknowledged from the old one would be indistinguishable from a gap.
    let stopped_at = hold_outage(&setup, &name, head_at_crash, BACKLOG, &running).await;

    // The broker comes back, empty. Publishing resumes while writes go on.
    let restarted = Instant::now();
    broker.restart();
    let head_at_restart = last_committed(&setup).await;
    wait_for_checkpoint(&setup, &name, head_at_restart, Duration::from_secs(90)).await;
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
    let after = block_in_place(|| read_records(&brokers, &topic_refs, &owed));
    let checked = check_records(&after, &events, &config);
    // Everything the checkpoint did not cover when the broker came back
    // arrives, checked and in per-key order; that includes every event written
    // after the crash, since the checkpoint never covered one ...
    assert_all_present(&checked, &owed);
    assert!(owed.len() >= BACKLOG, "a real backlog built up: {}", owed.len());
    // ... and nothing it covered (acknowledged by the old broker) is sent again.
    assert!(
        checked
            .copies
            .keys()
            .all(|id| position_of(&events, *id) > stopped_at),
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

/// Events written while the broker is away, at least: enough to be a real
/// backlog (the writer adds about 400 a second on an idle machine).
const BACKLOG: usize = 1_000;

/// Keeps the broker away (the caller stopped it, just before) until at least
/// `backlog` events were written after `head` and every producer session
/// started before has ended (the stall watchdog gives up on a producer whose
/// broker does not answer; no new one starts while the broker is away, since
/// a session first makes sure of its topics). Meanwhile checks, on every
/// look, that the checkpoint covers nothing written after `head`: such events
/// cannot have been acknowledged. Returns the checkpoint at the end, which is
/// final for the outage.
async fn hold_outage(
    setup: &Setup,
    name: &str,
    head: LogPosition,
    backlog: usize,
    running: &Running,
) -> LogPosition {
    let started_before = running.activity.borrow().sessions_started;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let at = checkpoint(setup, name).await;
        assert!(
            at <= head,
            "the checkpoint {at:?} covers events written after the broker stopped answering at {head:?}"
        );
        let sessions_over = running.activity.borrow().sessions_ended >= started_before;
        if events_after(setup, head).await >= backlog as i64 && sessions_over {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "no backlog of {backlog} events, or the publisher's sessions did not end: {:?}",
            *running.activity.borrow()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Number of events committed after `after`.
async fn events_after(setup: &Setup, after: LogPosition) -> i64 {
    let client = setup.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM events WHERE (tx_id, position) > ($1, $2)",
            &[&after.tx_id, &after.position],
        )
        .await
        .unwrap()
        .get(0)
}

fn position_of(events: &[RecordedEvent], id: Uuid) -> LogPosition {
    events
        .iter()
        .find(|e| e.event_id == id)
        .map(|e| e.position)
        .expect("a record of this log")
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

    // Frozen mid-stream until the publisher gave up on its producer (after the
    // stall timeout, 3 s here) and keeps trying to start new sessions.
    broker.freeze();
    let head_at_freeze = last_committed(&setup).await;
    let frozen_at = hold_outage(&setup, &name, head_at_freeze, BACKLOG, &running).await;
    broker.thaw();
    let thawed = Instant::now();
    let head_at_thaw = last_committed(&setup).await;
    wait_for_checkpoint(&setup, &name, head_at_thaw, Duration::from_secs(90)).await;
    stop_writing.store(true, Ordering::SeqCst);
    let written = writer.await.unwrap();
    wait_until_published(&setup, &name, Duration::from_secs(90)).await;
    eprintln!("caught up {:?} after the broker resumed", thawed.elapsed());

    // The broker kept everything: every event is there, from the first.
    let events = all_events(&setup).await;
    assert_eq!(published_count(&events), written);
    let records = block_in_place(|| read_records(&brokers, &topics, &events));
    let checked = check_records(&records, &events, &config);
    assert_all_present(&checked, &events);
    let positions: std::collections::HashMap<_, _> =
        events.iter().map(|e| (e.event_id, e.position)).collect();
    for id in checked.duplicated() {
        assert!(
            positions[&id] > frozen_at,
            "event {id} was sent twice although the checkpoint covered it during the freeze"
        );
    }
    eprintln!(
        "{} events, {} records ({} duplicated, all after the checkpoint during the freeze)",
        written,
        records.len(),
        checked.duplicated().len()
    );
    running.stop(Duration::from_secs(10)).await;
}
