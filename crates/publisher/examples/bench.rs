//! Publisher benchmark (not a test): events/s published, and end-to-end lag from
//! append to broker acknowledgement.
//!
//! ```text
//! KAFKA_BROKERS=127.0.0.1:9092 cargo run --release -p publisher --example bench
//! ```
//!
//! Uses a fresh Postgres database (`TEST_DATABASE_URL`, default the local one)
//! and fresh topics on `KAFKA_BROKERS` (or `KAFKA_TEST_BROKERS`);
//! `KAFKA_PRODUCER_CONFIG` passes extra producer properties as in `marketing`.
//! Two phases:
//!
//! 1. **Backlog**: `BENCH_EVENTS` campaign events (default 50 000, over
//!    `BENCH_CAMPAIGNS` = 500 campaigns) are in the log before the publisher
//!    starts; reports how fast it drains them.
//! 2. **Live**: the publisher is caught up; `BENCH_WRITERS` concurrent writers
//!    (default 8) append at `BENCH_RATE` events/s in all (default 500) for `BENCH_SECONDS` (default 10).
//!    For each event: time from its append returning (committed) until the
//!    publisher's checkpoint covers it, i.e. the broker acknowledged it *and*
//!    the checkpoint was committed, an upper bound of append → acknowledgement.

use chrono::Utc;
use deadpool_postgres::Pool;
use event_store::{
    connect_pool, spawn_listener, EventStore, ExpectedVersion, LogPosition, NewEvent, PgEventStore, Wakeups,
};
use publisher::{AsStored, Publisher, PublisherConfig};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn campaign_event(campaign: Uuid, version: i64) -> NewEvent {
    let data = if version == 0 {
        json!({
            "campaign_id": campaign,
            "project": "bench",
            "status": "draft",
            "details": {
                "name": "Summer Sale Campaign", "description": "Promotional campaign for summer products",
                "type": "sales", "start_date": "2024-06-01T00:00:00Z", "end_date": "2024-08-31T23:59:59Z",
                "total_budget": 10000.00, "target_audience": null, "goals": null, "channels": [], "kpis": []
            }
        })
    } else {
        json!({ "campaign_id": campaign, "changes": { "name": format!("Name {version}"), "total_budget": 15000.00 } })
    };
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: if version == 0 {
            "CampaignCreated"
        } else {
            "CampaignUpdated"
        }
        .to_owned(),
        schema_version: 1,
        data,
        metadata: json!({ "project": "bench", "request_id": "bench", "correlation_id": "bench" }),
        recorded_at: event_store::now(),
    }
}

/// Appends `total` events spread over `campaigns` campaigns, 100 per statement.
async fn fill_backlog(store: &PgEventStore, campaigns: usize, total: usize) {
    let ids: Vec<Uuid> = (0..campaigns).map(|_| Uuid::new_v4()).collect();
    let per_campaign = total / campaigns;
    let mut appends = Vec::new();
    for id in &ids {
        let events = (0..per_campaign as i64).map(|v| campaign_event(*id, v)).collect();
        appends.push(event_store::StreamAppend {
            stream_id: format!("campaign-{id}"),
            expected: ExpectedVersion::NoStream,
            events,
        });
        if appends.len() * per_campaign >= 1000 {
            store
                .append_many(std::mem::take(&mut appends))
                .await
                .expect("append");
        }
    }
    if !appends.is_empty() {
        store.append_many(appends).await.expect("append");
    }
}

/// Waits until the publisher's checkpoint covers every committed event. (Not
/// `EventStore::head`, which stops below the oldest transaction open anywhere on
/// the cluster.)
async fn wait_caught_up(pool: &Pool, progress: &mut tokio::sync::watch::Receiver<LogPosition>) {
    let client = pool.get().await.unwrap();
    let head = client
        .query_opt(
            "SELECT tx_id, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .map_or(LogPosition::START, |row| LogPosition {
            tx_id: row.get(0),
            position: row.get(1),
        });
    drop(client);
    progress
        .wait_for(|p| *p >= head)
        .await
        .expect("publisher running");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let brokers = std::env::var("KAFKA_BROKERS")
        .or_else(|_| std::env::var("KAFKA_TEST_BROKERS"))
        .expect("set KAFKA_BROKERS to a Kafka-protocol broker");
    let total: usize = env_or("BENCH_EVENTS", 50_000);
    let campaigns: usize = env_or("BENCH_CAMPAIGNS", 500);
    let rate: u64 = env_or("BENCH_RATE", 500);
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let writers: usize = env_or("BENCH_WRITERS", 8).max(1);

    let db = test_support::fresh_database().await;
    {
        let mut client = db.connect().await;
        event_store::migrate(&mut client).await.unwrap();
        projector::migrate(&mut client).await.unwrap();
    }
    // The publisher has a pool of its own, as in `marketing publisher`: writers
    // waiting for connections must not hold it up.
    let pool: Pool = connect_pool(&db.url, 4).unwrap();
    let wakeups = Wakeups::new();
    let _listener = spawn_listener(db.config(), wakeups.clone());
    let store = Arc::new(PgEventStore::new(pool.clone(), &[], wakeups.clone()));
    let writer_pool: Pool = connect_pool(&db.url, writers + 2).unwrap();
    let writer_store = Arc::new(PgEventStore::new(writer_pool, &[], wakeups));
    let suffix = Uuid::new_v4().simple().to_string();
    let config = PublisherConfig {
        campaigns_topic: format!("bench.campaigns.{suffix}"),
        leads_topic: format!("bench.leads.{suffix}"),
        extra_properties: publisher::parse_properties(
            &std::env::var("KAFKA_PRODUCER_CONFIG").unwrap_or_default(),
        )
        .expect("valid KAFKA_PRODUCER_CONFIG"),
        ..PublisherConfig::new(brokers.clone())
    };
    println!(
        "brokers {brokers}; {} partitions; batch {}; extra producer properties {:?}; database {}",
        config.partitions, config.batch_size, config.extra_properties, db.name
    );

    // 1. Backlog.
    let filled = Instant::now();
    fill_backlog(&writer_store, campaigns, total).await;
    let backlog = total / campaigns * campaigns;
    println!(
        "backlog: {backlog} events over {campaigns} campaigns written in {:.1?}",
        filled.elapsed()
    );
    let publisher = Publisher::new(store.clone(), pool.clone(), config, Arc::new(AsStored)).unwrap();
    let mut progress = publisher.progress();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let handle = tokio::spawn(publisher.run(shutdown.clone()));
    progress.wait_for(|p| *p > LogPosition::START).await.unwrap();
    let first_ack = started.elapsed();
    wait_caught_up(&pool, &mut progress).await;
    let drained = started.elapsed();
    let steady = drained - first_ack;
    println!(
        "backlog drained: {backlog} events in {drained:.2?} = {:.0} events/s (first round acknowledged after {first_ack:.2?}, incl. topic creation and producer start; after it {:.0} events/s)",
        backlog as f64 / drained.as_secs_f64(),
        backlog as f64 / steady.as_secs_f64().max(1e-9),
    );

    // 2. Live: fixed-rate appends from concurrent writers (as concurrent requests
    // would be), lag until the checkpoint covers each one.
    let appended: Arc<std::sync::Mutex<BTreeMap<LogPosition, Instant>>> = Default::default();
    let lags: Arc<std::sync::Mutex<Vec<Duration>>> = Default::default();
    let watcher = {
        let appended = appended.clone();
        let lags = lags.clone();
        let mut progress = progress.clone();
        tokio::spawn(async move {
            loop {
                // Also sweep now and then: a writer may record its append only
                // after the checkpoint already covered it.
                tokio::select! {
                    changed = progress.changed() => if changed.is_err() { break },
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
                let at = *progress.borrow_and_update();
                let now = Instant::now();
                let mut pending = appended.lock().unwrap();
                let later = pending.split_off(&LogPosition {
                    tx_id: at.tx_id,
                    position: at.position + 1,
                });
                let covered = std::mem::replace(&mut *pending, later);
                lags.lock()
                    .unwrap()
                    .extend(covered.values().map(|when| now - *when));
            }
        })
    };
    // Readers of the log stop below the oldest transaction that is writing
    // anywhere on the Postgres cluster (see `PgEventStore::read_all`): on a shared
    // machine another program's long transaction shows up here as lag. Watch for it.
    let longest_writer: Arc<std::sync::Mutex<f64>> = Default::default();
    let sampler = {
        let client = db.connect().await;
        let longest = longest_writer.clone();
        tokio::spawn(async move {
            loop {
                {
                    if let Ok(row) = client
                        .query_one(
                            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)::float8
                             FROM pg_stat_activity WHERE backend_xid IS NOT NULL",
                            &[],
                        )
                        .await
                    {
                        let seconds: f64 = row.get(0);
                        let mut longest = longest.lock().unwrap();
                        *longest = longest.max(seconds);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let live_started = Instant::now();
    let mut writer_tasks = Vec::new();
    for _ in 0..writers {
        let store = writer_store.clone();
        let appended = appended.clone();
        writer_tasks.push(tokio::spawn(async move {
            let live_campaigns: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
            let mut versions = vec![0i64; live_campaigns.len()];
            let per_writer = (rate / writers as u64).max(1);
            let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / per_writer));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut written = 0usize;
            while live_started.elapsed() < Duration::from_secs(seconds) {
                ticker.tick().await;
                let i = written % live_campaigns.len();
                let expected = if versions[i] == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(versions[i] - 1)
                };
                let outcome = store
                    .append(
                        &format!("campaign-{}", live_campaigns[i]),
                        expected,
                        vec![campaign_event(live_campaigns[i], versions[i])],
                    )
                    .await
                    .expect("append");
                appended
                    .lock()
                    .unwrap()
                    .insert(outcome.last_position, Instant::now());
                versions[i] += 1;
                written += 1;
            }
            written
        }));
    }
    let mut written = 0;
    for task in writer_tasks {
        written += task.await.unwrap();
    }
    let achieved = written as f64 / live_started.elapsed().as_secs_f64();
    wait_caught_up(&pool, &mut progress).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    watcher.abort();
    sampler.abort();
    let mut lags = lags.lock().unwrap().clone();
    lags.sort();
    println!(
        "live: {writers} writers, {written} events at {achieved:.0} events/s for {seconds} s; append -> acknowledged+checkpointed: p50 {:.1?}, p95 {:.1?}, p99 {:.1?}, max {:.1?} ({} samples)",
        percentile(&lags, 0.50),
        percentile(&lags, 0.95),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or_default(),
        lags.len()
    );
    println!(
        "longest write transaction seen open on the Postgres cluster during the live phase: {:.2} s",
        *longest_writer.lock().unwrap()
    );
    shutdown.cancel();
    let _ = handle.await;
    println!("done at {}", Utc::now().to_rfc3339());
}
