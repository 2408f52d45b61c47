//! Shared by the publisher's tests: a fresh database with the log, real domain
//! events written the way the command side writes them, a publisher to run, and
//! the checks every test makes on what a real consumer read back.

#![allow(dead_code)] // each test binary uses a different part

use deadpool_postgres::Pool;
use domain::campaign::{self, Campaign, CampaignCommand, CampaignStatus, CreateCampaign, UpdateCampaign};
use domain::{DomainEvent, ProjectSlug};
use event_store::{
    connect_pool, EventStore, ExpectedVersion, LogPosition, NewEvent, PgEventStore, RecordedEvent, Wakeups,
};
use publisher::cloudevents;
use publisher::{AsStored, DataGate, Publisher, PublisherConfig, TopicKind};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use test_support::kafka::{unique_topic, ReadRecord};
use test_support::TestDatabase;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Setup {
    pub db: TestDatabase,
    pub store: Arc<PgEventStore>,
    pub pool: Pool,
}

pub async fn setup() -> Setup {
    let db = test_support::fresh_database().await;
    let mut client = db.connect().await;
    event_store::migrate(&mut client).await.unwrap();
    projector::migrate(&mut client).await.unwrap();
    let pool = connect_pool(&db.url, 16).unwrap();
    let store = Arc::new(PgEventStore::new(
        pool.clone(),
        domain::upcast::ALL,
        Wakeups::new(),
    ));
    Setup { db, store, pool }
}

/// Topics of this test only, 3 partitions, quick polling.
pub fn config(brokers: &str) -> PublisherConfig {
    PublisherConfig {
        campaigns_topic: unique_topic("campaigns"),
        leads_topic: unique_topic("leads"),
        partitions: 3,
        batch_size: 200,
        idle_poll: Duration::from_millis(50),
        standby_poll: Duration::from_millis(100),
        stall_timeout: Duration::from_secs(3),
        admin_timeout: Duration::from_secs(3),
        ..PublisherConfig::new(brokers)
    }
}

pub struct Running {
    pub shutdown: CancellationToken,
    pub progress: watch::Receiver<LogPosition>,
    pub activity: watch::Receiver<publisher::Activity>,
    pub handle: JoinHandle<()>,
}

impl Running {
    /// Stops gracefully; fails the test if that takes longer than `limit`.
    pub async fn stop(self, limit: Duration) {
        self.shutdown.cancel();
        tokio::time::timeout(limit, self.handle)
            .await
            .expect("publisher stops in time")
            .expect("publisher task");
    }
}

pub fn start(setup: &Setup, config: PublisherConfig) -> Running {
    start_with_gate(setup, config, Arc::new(AsStored))
}

pub fn start_with_gate(setup: &Setup, config: PublisherConfig, gate: Arc<dyn DataGate>) -> Running {
    let publisher =
        Publisher::new(setup.store.clone(), setup.pool.clone(), config, gate).expect("valid config");
    let progress = publisher.progress();
    let activity = publisher.activity();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(publisher.run(shutdown.clone()));
    Running {
        shutdown,
        progress,
        activity,
        handle,
    }
}

/// The publisher's checkpoint as stored.
pub async fn checkpoint(setup: &Setup, name: &str) -> LogPosition {
    let client = setup.pool.get().await.unwrap();
    client
        .query_opt(
            "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .map_or(LogPosition::START, |row| LogPosition {
            tx_id: row.get(0),
            position: row.get(1),
        })
}

/// The newest committed event, whatever transactions elsewhere on the cluster
/// are open. (`EventStore::head` stops below the oldest open transaction, which
/// another test's may hold back.)
pub async fn last_committed(setup: &Setup) -> LogPosition {
    let client = setup.pool.get().await.unwrap();
    client
        .query_opt(
            "SELECT tx_id, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .map_or(LogPosition::START, |row| LogPosition {
            tx_id: row.get(0),
            position: row.get(1),
        })
}

/// Waits until the stored checkpoint covers every committed event.
pub async fn wait_until_published(setup: &Setup, name: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let head = last_committed(setup).await;
    loop {
        let at = checkpoint(setup, name).await;
        if at >= head {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publisher did not reach the head {head:?} within {timeout:?}; it is at {at:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the stored checkpoint is at or past `at_least`.
pub async fn wait_for_checkpoint(setup: &Setup, name: &str, at_least: LogPosition, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let at = checkpoint(setup, name).await;
        if at >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the checkpoint did not reach {at_least:?} within {timeout:?}; it is at {at:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record of `topics`: first until each published event of `expected`
/// arrived (up to 60 s; a missing one fails the caller's presence check), then
/// up to the high watermarks, so copies sent again are seen too.
pub fn read_records(brokers: &str, topics: &[&str], expected: &[RecordedEvent]) -> Vec<ReadRecord> {
    let wanted: std::collections::HashSet<Uuid> = expected
        .iter()
        .filter(|e| is_published(e))
        .map(|e| e.event_id)
        .collect();
    let mut reader = test_support::kafka::Reader::new(brokers, topics);
    reader.read_until(Duration::from_secs(60), |records| {
        let seen: std::collections::HashSet<Uuid> = records
            .iter()
            .filter_map(|r| r.header("ce_id").and_then(|id| Uuid::parse_str(id).ok()))
            .collect();
        wanted.is_subset(&seen)
    });
    reader.read_to_end(Duration::from_secs(30)).to_vec()
}

pub async fn all_events(setup: &Setup) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut after = LogPosition::START;
    loop {
        let batch = setup.store.read_all(after, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.position;
        events.extend(batch);
    }
    events
}

fn metadata(project: &str) -> Value {
    json!({ "project": project, "request_id": "test", "correlation_id": format!("corr-{}", Uuid::new_v4()) })
}

fn new_event(event_type: &str, data: Value, project: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        data,
        metadata: metadata(project),
        recorded_at: event_store::now(),
    }
}

/// One campaign, written through the real aggregate: each step is a command
/// handled by `Campaign` and appended at the expected version, as the command
/// API does.
pub struct CampaignScript {
    pub id: Uuid,
    campaign: Campaign,
    step: usize,
}

impl CampaignScript {
    pub fn new() -> Self {
        Self {
            id: Uuid::new_v4(),
            campaign: Campaign::default(),
            step: 0,
        }
    }

    fn next_command(&self) -> CampaignCommand {
        if self.step == 0 {
            let input: CreateCampaign = serde_json::from_value(json!({
                "name": "Summer Sale Campaign",
                "type": "sales",
                "total_budget": 10000.00,
                "channels": [{ "name": "Facebook Ads", "type": "social_media", "budget_allocation": 5000.00 }]
            }))
            .unwrap();
            return CampaignCommand::Create {
                campaign_id: self.id,
                project: ProjectSlug::parse("acme").unwrap(),
                input: Box::new(input),
            };
        }
        // Alternate updates with a status cycle draft → active → paused → active ...
        if self.step % 2 == 1 {
            CampaignCommand::Update(Box::new(UpdateCampaign {
                name: Some(Some(format!("Step {}", self.step))),
                ..UpdateCampaign::default()
            }))
        } else {
            let status = self.campaign.state().expect("live campaign").status;
            CampaignCommand::ChangeStatus(match status {
                CampaignStatus::Active => CampaignStatus::Paused,
                _ => CampaignStatus::Active,
            })
        }
    }

    /// Appends the next event of this campaign; returns its position.
    pub async fn step(&mut self, store: &dyn EventStore) -> LogPosition {
        let events = self.campaign.handle(self.next_command()).expect("valid command");
        let recorded_at = event_store::now();
        let new_events = events
            .iter()
            .map(|e| NewEvent {
                event_id: Uuid::new_v4(),
                event_type: e.event_type().to_owned(),
                schema_version: e.schema_version(),
                data: e.to_data(),
                metadata: metadata("acme"),
                recorded_at,
            })
            .collect();
        let expected = self
            .campaign
            .version()
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let outcome = store
            .append(&campaign::stream_id(self.id), expected, new_events)
            .await
            .expect("append");
        let first_version = self.campaign.version().map_or(0, |v| v + 1);
        for (version, event) in (first_version..).zip(&events) {
            self.campaign.apply(event, recorded_at, version);
        }
        self.step += 1;
        outcome.last_position
    }
}

/// Stand-ins for the aggregates other features are adding (tasks, leads): real
/// streams with the prefixes and the data the publisher relies on
/// (`campaign_id` in campaign-scoped events).
pub async fn append_task_event(store: &dyn EventStore, task_id: Uuid, campaign_id: Uuid, event_type: &str) {
    store
        .append(
            &format!("task-{task_id}"),
            ExpectedVersion::Any,
            vec![new_event(
                event_type,
                json!({ "task_id": task_id, "campaign_id": campaign_id, "title": "Create ad copy" }),
                "acme",
            )],
        )
        .await
        .unwrap();
}

pub async fn append_lead_event(store: &dyn EventStore, lead_id: Uuid, campaign_id: Uuid, event_type: &str) {
    store
        .append(
            &format!("lead-{lead_id}"),
            ExpectedVersion::Any,
            vec![new_event(
                event_type,
                json!({ "lead_id": lead_id, "campaign_id": campaign_id, "email": "john@example.com", "name": "John Doe" }),
                "acme",
            )],
        )
        .await
        .unwrap();
}

pub async fn append_raw(store: &dyn EventStore, stream_id: &str, event_type: &str, data: Value) {
    store
        .append(
            stream_id,
            ExpectedVersion::Any,
            vec![new_event(event_type, data, "acme")],
        )
        .await
        .unwrap();
}

/// What the checks found.
pub struct Checked {
    /// How often each event id arrived.
    pub copies: HashMap<Uuid, usize>,
}

impl Checked {
    pub fn duplicated(&self) -> Vec<Uuid> {
        self.copies
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Every record read is one of `events`, on its topic, with its key, headers
/// and value exactly as documented; per key, the first copies of the records
/// follow the log order (and so, per stream, the stream versions). Does not require every event to be present (see
/// [`assert_all_present`]).
pub fn check_records(records: &[ReadRecord], events: &[RecordedEvent], config: &PublisherConfig) -> Checked {
    let by_id: HashMap<Uuid, &RecordedEvent> = events.iter().map(|e| (e.event_id, e)).collect();
    let mut copies: HashMap<Uuid, usize> = HashMap::new();
    // Per (topic, partition), records in offset order.
    let mut partitions: BTreeMap<(String, i32), Vec<&ReadRecord>> = BTreeMap::new();
    for record in records {
        partitions
            .entry((record.topic.clone(), record.partition))
            .or_default()
            .push(record);
    }
    let mut first_seen_by_key: HashMap<(String, String), Vec<LogPosition>> = HashMap::new();
    let mut first_seen_by_stream: HashMap<String, Vec<i64>> = HashMap::new();
    for ((topic, partition), mut in_partition) in partitions {
        in_partition.sort_by_key(|r| r.offset);
        for record in in_partition {
            let ce_id = record.header("ce_id").expect("ce_id header");
            let id = Uuid::parse_str(ce_id).expect("ce_id is a uuid");
            let event = by_id
                .get(&id)
                .unwrap_or_else(|| panic!("record {ce_id} is no event of this log"));
            let route = publisher::route::route(&event.stream_id, &event.event_type, &event.data)
                .unwrap()
                .expect("published events are routed");
            let expected_topic = match route.aggregate.topic {
                TopicKind::Campaigns => &config.campaigns_topic,
                TopicKind::Leads => &config.leads_topic,
            };
            assert_eq!(&topic, expected_topic, "topic of {}", event.event_type);
            assert_eq!(record.key.as_deref(), Some(route.key.as_str()), "key of {ce_id}");
            assert_eq!(record.json(), *event.data, "value of {ce_id}");
            // Literal checks, independent of the encoder...
            assert_eq!(record.header("ce_specversion"), Some("1.0"));
            assert_eq!(record.header("content-type"), Some("application/json"));
            assert_eq!(record.header("ce_source"), Some("urn:marketing:project:acme"));
            assert_eq!(
                record.header("ce_streamversion"),
                Some(event.version.to_string().as_str())
            );
            assert_eq!(
                record.header("ce_position"),
                Some(event.position.position.to_string().as_str())
            );
            let time = record.header("ce_time").expect("ce_time");
            assert_eq!(
                chrono::DateTime::parse_from_rfc3339(time).unwrap(),
                event.recorded_at
            );
            if event.event_type == "CampaignCreated" {
                assert_eq!(
                    record.header("ce_type"),
                    Some("com.marketing.campaign.created.v1")
                );
            }
            // ... and every header exactly as encoded, nothing more, nothing less.
            let expected = cloudevents::encode(event, &route, &event.data, None);
            let got: Vec<(&str, &str)> = record
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let want: Vec<(&str, &str)> = expected.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(got, want, "headers of {ce_id}");
            let count = copies.entry(id).or_default();
            *count += 1;
            if *count == 1 {
                first_seen_by_key
                    .entry((topic.clone(), route.key.clone()))
                    .or_default()
                    .push(event.position);
                first_seen_by_stream
                    .entry(event.stream_id.clone())
                    .or_default()
                    .push(event.version);
            }
            let _ = partition;
        }
    }
    for ((topic, key), positions) in &first_seen_by_key {
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "records of key {key} on {topic} are out of log order: {positions:?}"
        );
    }
    for (stream, versions) in &first_seen_by_stream {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "records of stream {stream} are out of version order: {versions:?}"
        );
    }
    Checked { copies }
}

/// Every published event of `events` was read at least once.
pub fn assert_all_present(checked: &Checked, events: &[RecordedEvent]) {
    let missing: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| is_published(e) && !checked.copies.contains_key(&e.event_id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never arrived, first: {:?}",
        missing.len(),
        events.len(),
        missing.first().map(|e| (&e.stream_id, e.version, e.position))
    );
}

pub fn is_published(event: &RecordedEvent) -> bool {
    matches!(
        publisher::route::route(&event.stream_id, &event.event_type, &event.data),
        Ok(Some(_))
    )
}

pub fn published_count(events: &[RecordedEvent]) -> usize {
    events.iter().filter(|e| is_published(e)).count()
}

/// Number of distinct `ce_id`s among `records`.
pub fn distinct_ids(records: &[ReadRecord]) -> usize {
    records
        .iter()
        .filter_map(|r| r.header("ce_id"))
        .collect::<std::collections::HashSet<_>>()
        .len()
}
