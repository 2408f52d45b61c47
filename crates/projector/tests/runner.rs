//! Projection runner guarantees against a real Postgres: atomic checkpoints under
//! failures and kills, one active instance, and the campaigns read model.

use async_trait::async_trait;
use chrono::Utc;
use deadpool_postgres::Pool;
use domain::campaign::{stream_id, Campaign, CampaignCommand, CreateCampaign};
use domain::{DomainEvent, ProjectSlug};
use event_store::leases::Leases;
use event_store::{
    connect_pool, EventStore, ExpectedVersion, LogPosition, NewEvent, PgEventStore, RecordedEvent, Wakeups,
};
use projector::Shard;
use projector::{
    CampaignsProjection, Progress, Projection, ProjectionError, ProjectionRunner, ReadModelProgress,
    RunnerConfig,
};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use test_support::fresh_database;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Setup {
    store: Arc<PgEventStore>,
    pool: Pool,
    _db: test_support::TestDatabase,
}

async fn setup() -> Setup {
    let db = fresh_database().await;
    let mut client = db.connect().await;
    event_store::migrate(&mut client).await.unwrap();
    projector::migrate(&mut client).await.unwrap();
    client
        .batch_execute("CREATE TABLE applied (event_id uuid NOT NULL, batch int NOT NULL)")
        .await
        .unwrap();
    let pool = connect_pool(&db.url, 16).unwrap();
    let store = Arc::new(PgEventStore::new(pool.clone(), &[], Wakeups::new()));
    Setup { store, pool, _db: db }
}

fn config() -> RunnerConfig {
    RunnerConfig {
        batch_size: 10,
        idle_poll: Duration::from_millis(20),
        standby_poll: Duration::from_millis(50),
    }
}

/// Records every event it applies, without any uniqueness, so a double apply
/// shows up as a duplicate row. Can fail a chosen batch after writing to it, and
/// can dawdle inside its transaction to give a kill something to interrupt.
struct Recording {
    batches: AtomicUsize,
    fail_batches: Vec<usize>,
    dawdle: Duration,
}

impl Recording {
    fn new(fail_batches: Vec<usize>, dawdle: Duration) -> Arc<Self> {
        Arc::new(Self {
            batches: AtomicUsize::new(0),
            fail_batches,
            dawdle,
        })
    }
}

#[async_trait]
impl Projection for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["applied"]
    }

    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let batch = self.batches.fetch_add(1, Ordering::SeqCst);
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        tx.execute(
            "INSERT INTO applied (event_id, batch) SELECT unnest($1::uuid[]), $2",
            &[&ids, &(batch as i32)],
        )
        .await?;
        tokio::time::sleep(self.dawdle).await;
        if self.fail_batches.contains(&batch) {
            // Fail after writing: the rows above must be rolled back with it.
            tx.execute("SELECT 1/0", &[]).await?;
        }
        Ok(())
    }
}

async fn append_events(store: &PgEventStore, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Thing".into(),
            schema_version: 1,
            data: json!({ "i": i }),
            metadata: json!({}),
            recorded_at: Utc::now(),
        };
        ids.push(event.event_id);
        store
            .append(&format!("thing-{}", i % 7), ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
    ids
}

async fn applied(pool: &Pool) -> (i64, i64) {
    let client = pool.get().await.unwrap();
    let row = client
        .query_one("SELECT count(*), count(DISTINCT event_id) FROM applied", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Waits until `expected` rows were applied. A double apply that comes later is
/// caught by the final count, which every test takes after stopping its runners.
async fn wait_until_applied(pool: &Pool, expected: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (total, _) = applied(pool).await;
        if total >= expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{total} of {expected} events applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(setup: &Setup, projection: Arc<dyn Projection>) -> (ProjectionRunner, CancellationToken) {
    let runner = ProjectionRunner::new(setup.store.clone(), setup.pool.clone(), projection, config());
    (runner, CancellationToken::new())
}

#[tokio::test]
async fn failed_batches_are_retried_without_skipping_or_repeating() {
    let setup = setup().await;
    let ids = append_events(&setup.store, 95).await;
    let recording = Recording::new(vec![1, 2, 5], Duration::ZERO);
    let (runner, stop) = start(&setup, recording.clone());
    let task = tokio::spawn(runner.run(stop.clone()));
    wait_until_applied(&setup.pool, ids.len() as i64).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(applied(&setup.pool).await, (95, 95));
    assert!(
        recording.batches.load(Ordering::SeqCst) >= 13,
        "failed batches were retried"
    );
}

#[tokio::test]
async fn killing_the_projector_mid_batch_neither_skips_nor_repeats() {
    let setup = setup().await;
    let writer = {
        let store = setup.store.clone();
        tokio::spawn(async move { append_events(&store, 300).await })
    };
    // Kill the runner again and again at arbitrary points (often inside a batch's
    // transaction, thanks to the dawdle), restarting it each time.
    for round in 0..12u64 {
        let recording = Recording::new(vec![], Duration::from_millis(3));
        let (runner, stop) = start(&setup, recording);
        let task = tokio::spawn(runner.run(stop));
        tokio::time::sleep(Duration::from_millis(15 + (round * 7) % 40)).await;
        task.abort();
        let _ = task.await;
    }
    let ids = writer.await.unwrap();
    let (runner, stop) = start(&setup, Recording::new(vec![], Duration::ZERO));
    let task = tokio::spawn(runner.run(stop.clone()));
    wait_until_applied(&setup.pool, ids.len() as i64).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(applied(&setup.pool).await, (300, 300));
}

#[tokio::test]
async fn two_instances_share_a_projection_without_double_applying() {
    let setup = setup().await;
    let recording = Recording::new(vec![], Duration::from_millis(1));
    let (first, stop_first) = start(&setup, recording.clone());
    let (second, stop_second) = start(&setup, recording.clone());
    let first = tokio::spawn(first.run(stop_first.clone()));
    let second = tokio::spawn(second.run(stop_second.clone()));
    append_events(&setup.store, 120).await;
    wait_until_applied(&setup.pool, 120).await;
    assert_eq!(applied(&setup.pool).await, (120, 120));
    // Fail-over: stop whichever instance is active; the other carries on.
    stop_first.cancel();
    first.await.unwrap();
    append_events(&setup.store, 40).await;
    wait_until_applied(&setup.pool, 160).await;
    stop_second.cancel();
    second.await.unwrap();
    assert_eq!(applied(&setup.pool).await, (160, 160));
}

#[tokio::test]
async fn campaigns_read_model_matches_the_domain_fold_and_progress_reports_it() {
    let setup = setup().await;
    let projection = Arc::new(CampaignsProjection);
    let (runner, stop) = start(&setup, projection);
    let in_process = Progress::in_process(vec![runner.progress()]);
    let polled = Progress::polled(setup.pool.clone(), vec!["campaigns".into()]);
    let task = tokio::spawn(runner.run(stop.clone()));

    let id = Uuid::new_v4();
    let input: CreateCampaign = domain::input::from_json_slice(
        br#"{"name": "Launch", "type": "product_launch", "total_budget": 100.50, "status": "active"}"#,
    )
    .unwrap();
    let mut campaign = Campaign::default();
    let commands = vec![
        CampaignCommand::Create {
            campaign_id: id,
            project: ProjectSlug::parse("acme").unwrap(),
            input: Box::new(input),
        },
        CampaignCommand::Update(Box::new(
            domain::input::from_json_slice(br#"{"description": "now with text"}"#).unwrap(),
        )),
        CampaignCommand::ChangeStatus(domain::campaign::CampaignStatus::Paused),
    ];
    let mut last = LogPosition::START;
    for command in commands {
        let events = campaign.handle(command).unwrap();
        let expected = match campaign.version() {
            Some(v) => ExpectedVersion::Exact(v),
            None => ExpectedVersion::NoStream,
        };
        let now = event_store::now();
        let new_events = events
            .iter()
            .map(|e| NewEvent {
                event_id: Uuid::new_v4(),
                event_type: e.event_type().into(),
                schema_version: e.schema_version(),
                data: e.to_data(),
                metadata: json!({}),
                recorded_at: now,
            })
            .collect();
        let outcome = setup
            .store
            .append(&stream_id(id), expected, new_events)
            .await
            .unwrap();
        let first_version = outcome.last_version - events.len() as i64 + 1;
        for (i, e) in events.iter().enumerate() {
            campaign.apply(e, now, first_version + i as i64);
        }
        last = outcome.last_position;
    }
    assert!(in_process.wait_for(last, Duration::from_secs(10)).await);
    assert!(polled.wait_for(last, Duration::from_secs(10)).await);
    let client = setup.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT body::text, status, version FROM campaigns WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let expected_body = serde_json::to_string(campaign.state().unwrap()).unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        expected_body,
        "same JSON, same field order"
    );
    assert_eq!(row.get::<_, String>(1), "paused");
    assert_eq!(row.get::<_, i64>(2), 2);

    // Deleting removes the row.
    let deleted = campaign.handle(CampaignCommand::Delete).unwrap();
    let outcome = setup
        .store
        .append(
            &stream_id(id),
            ExpectedVersion::Exact(2),
            vec![NewEvent {
                event_id: Uuid::new_v4(),
                event_type: deleted[0].event_type().into(),
                schema_version: 1,
                data: deleted[0].to_data(),
                metadata: json!({}),
                recorded_at: Utc::now(),
            }],
        )
        .await
        .unwrap();
    assert!(
        in_process
            .wait_for(outcome.last_position, Duration::from_secs(10))
            .await
    );
    let gone = client
        .query_opt("SELECT 1 FROM campaigns WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert!(gone.is_none());
    // Waiting for a position nobody will reach times out rather than hanging.
    let beyond = LogPosition {
        tx_id: i64::MAX,
        position: 0,
    };
    assert!(!polled.wait_for(beyond, Duration::from_millis(100)).await);
    stop.cancel();
    task.await.unwrap();
}

/// Handles only `Thing` events; everything else is skipped without a write.
struct Picky;

#[async_trait]
impl Projection for Picky {
    fn name(&self) -> &'static str {
        "picky"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["applied"]
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "Thing"
    }

    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let ids: Vec<Uuid> = events
            .iter()
            .filter(|e| e.event_type == "Thing")
            .map(|e| e.event_id)
            .collect();
        tx.execute(
            "INSERT INTO applied (event_id, batch) SELECT unnest($1::uuid[]), 0",
            &[&ids],
        )
        .await?;
        Ok(())
    }
}

#[tokio::test]
async fn batches_a_projection_does_not_handle_are_skipped_and_still_checkpointed() {
    let setup = setup().await;
    let mut last = LogPosition::START;
    for i in 0..40 {
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Other".into(),
            schema_version: 1,
            data: json!({ "i": i }),
            metadata: json!({}),
            recorded_at: Utc::now(),
        };
        last = setup
            .store
            .append("other-1", ExpectedVersion::Any, vec![event])
            .await
            .unwrap()
            .last_position;
    }
    let (runner, stop) = start(&setup, Arc::new(Picky));
    let polled = Progress::polled(setup.pool.clone(), vec!["picky".into()]);
    let task = tokio::spawn(runner.run(stop.clone()));
    // Recorded in the checkpoint row once the runner is idle, for other processes.
    assert!(polled.wait_for(last, Duration::from_secs(30)).await);
    assert_eq!(
        applied(&setup.pool).await,
        (0, 0),
        "skipped batches write nothing"
    );
    let ids = append_events(&setup.store, 3).await;
    wait_until_applied(&setup.pool, 3).await;
    assert_eq!(applied(&setup.pool).await, (ids.len() as i64, 3));
    stop.cancel();
    task.await.unwrap();
}

/// Events of `campaigns` campaigns, round robin, each naming its campaign in
/// its metadata (as every appended event does), so they spread over shards.
async fn append_campaign_events(store: &PgEventStore, campaigns: &[Uuid], n: usize) {
    for i in 0..n {
        let campaign = campaigns[i % campaigns.len()];
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Thing".into(),
            schema_version: 1,
            data: json!({ "i": i }),
            metadata: json!({ "campaign_id": campaign }),
            recorded_at: Utc::now(),
        };
        store
            .append(&format!("thing-{}", i % 7), ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
}

/// One projector process: a runner per shard on one set of leases.
struct Process {
    leases: Arc<Leases>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn process(setup: &Setup, projection: Arc<dyn Projection>, shards: u32) -> Process {
    let leases = Leases::new(setup.pool.clone(), shards as usize);
    let tasks = Shard::all(shards)
        .map(|shard| {
            let runner = ProjectionRunner::shard(
                setup.store.clone(),
                setup.pool.clone(),
                projection.clone(),
                shard,
                config(),
            )
            .with_leases(leases.clone());
            tokio::spawn(runner.run(CancellationToken::new()))
        })
        .collect();
    Process { leases, tasks }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_processes_split_the_shards_and_a_killed_ones_move_without_gaps_or_repeats() {
    let setup = setup().await;
    let campaigns: Vec<Uuid> = (0..16).map(|_| Uuid::new_v4()).collect();
    let recording = Recording::new(vec![], Duration::from_millis(2));
    let first = process(&setup, recording.clone(), 4);
    let second = process(&setup, recording.clone(), 4);
    // Each leads its share, whichever started its runners first.
    wait_until("both processes lead two shards", || {
        first.leases.held() == 2 && second.leases.held() == 2
    })
    .await;
    let writer = {
        let store = setup.store.clone();
        let campaigns = campaigns.clone();
        tokio::spawn(async move { append_campaign_events(&store, &campaigns, 300).await })
    };
    wait_until_applied(&setup.pool, 100).await;
    // Kill the first process mid-stream (its batches dawdle inside their
    // transactions): its runners die and, with its leases, its connection.
    for task in &first.tasks {
        task.abort();
    }
    for task in first.tasks {
        let _ = task.await;
    }
    drop(first.leases);
    writer.await.unwrap();
    wait_until("the survivor leads every shard", || second.leases.held() == 4).await;
    wait_until_applied(&setup.pool, 300).await;
    for task in &second.tasks {
        task.abort();
    }
    assert_eq!(applied(&setup.pool).await, (300, 300));
}
