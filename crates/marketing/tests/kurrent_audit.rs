//! The readers of the log by content (campaign history, its chain check, the
//! event feed, webhook bodies) and the auditor's CLI verbs (`history`,
//! `verify`, `replay`) with the log in KurrentDB: the `log_index` projection
//! fed from the store into a fresh Postgres database, the reads through
//! `LogReader`, the verbs run as the real binary with `EVENT_STORE_URL`.
//!
//! The log is served by the sanctioned test double of the KurrentDB gRPC API
//! (`test_support::kurrentdb`, the one double this project allows: no real
//! server can run here); the real `kurrentdb` client drives it over real
//! gRPC. Postgres, HTTP and the binary are real.

use deadpool_postgres::Pool;
use domain::campaign::{stream_id, Campaign, CampaignCommand, CampaignStatus, CreateCampaign};
use domain::{DomainEvent, ProjectSlug};
use event_store::{
    connect_pool, EventStore, ExpectedVersion, HistoryFilter, KurrentEventStore, LogPosition, LogReader,
    NewEvent, RecordedEvent, Wakeups,
};
use projector::{Consumer, LogIndexProjection, Progress, ProjectionRunner, ReadModelProgress, Written};
use serde_json::{json, Value};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use test_support::kurrentdb::KurrentDbDouble;
use test_support::process::Marketing;
use test_support::{fresh_database, TestDatabase};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_marketing");

/// A Postgres database with every schema, a KurrentDB log on the double, and
/// the log's index projected from it.
struct Subject {
    db: TestDatabase,
    pool: Pool,
    double: KurrentDbDouble,
    store: Arc<KurrentEventStore>,
    stop: CancellationToken,
}

impl Drop for Subject {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn subject() -> Subject {
    let db = fresh_database().await;
    let migrated = Marketing::new(BIN, &db.url).run(&["migrate"]);
    assert!(migrated.status.success(), "{migrated:?}");
    let double = KurrentDbDouble::start().await;
    let store =
        Arc::new(KurrentEventStore::connect(&double.url(), domain::upcast::ALL, Wakeups::new()).unwrap());
    let pool = connect_pool(&db.url, 8).unwrap();
    let stop = CancellationToken::new();
    Subject {
        db,
        pool,
        double,
        store,
        stop,
    }
}

impl Subject {
    fn log(&self) -> LogReader {
        self.store.clone().log_reader()
    }

    /// Up to 50 events of campaign `id`'s history after `after`, through the index.
    async fn history(&self, id: Uuid, filter: &HistoryFilter, after: LogPosition) -> Vec<RecordedEvent> {
        self.log()
            .correlated(
                &self.pool,
                domain::upcast::ALL,
                &id.to_string(),
                filter,
                after,
                50,
            )
            .await
            .unwrap()
    }

    /// Runs the index projection on the store, as the projector role does.
    fn start_index(&self) -> tokio::sync::watch::Receiver<LogPosition> {
        let runner = ProjectionRunner::new(
            self.store.clone(),
            self.pool.clone(),
            Arc::new(LogIndexProjection),
            projector::RunnerConfig {
                batch_size: 50,
                idle_poll: Duration::from_millis(20),
                standby_poll: Duration::from_millis(50),
            },
        );
        let progress = runner.progress();
        tokio::spawn(runner.run(self.stop.clone()));
        progress
    }

    /// Creates a campaign of `project` and changes its status, as the
    /// command side would: the domain decides, the store appends.
    async fn campaign(&self, project: &str, key_name: &str) -> (Uuid, LogPosition) {
        let id = Uuid::now_v7();
        let input: CreateCampaign =
            domain::input::from_json_slice(br#"{"name": "Audited", "type": "product_launch"}"#).unwrap();
        let commands = vec![
            CampaignCommand::Create {
                campaign_id: id,
                project: ProjectSlug::parse(project).unwrap(),
                input: Box::new(input),
            },
            CampaignCommand::ChangeStatus(CampaignStatus::Active),
        ];
        let mut campaign = Campaign::default();
        let mut last = LogPosition::START;
        for command in commands {
            let expected = campaign
                .version()
                .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            let events = campaign.handle(command).unwrap();
            let now = event_store::now();
            let new_events = events
                .iter()
                .map(|e| NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: e.event_type().into(),
                    schema_version: e.schema_version(),
                    data: e.to_data(),
                    metadata: json!({"project": project, "api_key_name": key_name, "api_key_id": "k1"}),
                    recorded_at: now,
                })
                .collect();
            let outcome = self
                .store
                .append(&stream_id(id), expected, new_events)
                .await
                .unwrap();
            let first_version = outcome.last_version - events.len() as i64 + 1;
            for (i, event) in events.iter().enumerate() {
                campaign.apply(event, now, first_version + i as i64);
            }
            last = outcome.last_position;
        }
        (id, last)
    }

    /// Runs a CLI verb against this database and the double's log. Off the
    /// runtime's threads, since the double serves on them.
    async fn marketing(&self, args: &[&str]) -> Output {
        let mut command = Marketing::new(BIN, &self.db.url).command();
        command.args(args).env("EVENT_STORE_URL", self.double.url());
        tokio::task::spawn_blocking(move || command.output().expect("run marketing"))
            .await
            .unwrap()
    }
}

/// Waits, with a deadline, until `progress` reaches `position`.
async fn reached(progress: &mut tokio::sync::watch::Receiver<LogPosition>, position: LogPosition) {
    tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|p| *p >= position))
        .await
        .expect("the index reaches the write")
        .unwrap();
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_kurrentdb_reads_the_index_and_loads_bodies_from_the_store() {
    let subject = subject().await;
    let log = subject.log();
    assert!(log.is_indexed());
    let mut progress = subject.start_index();
    let (id, _) = subject.campaign("acme", "auditor").await;
    let (other, last) = subject.campaign("acme", "someone").await;
    let (_, last_globex) = subject.campaign("globex", "x").await;
    reached(&mut progress, last.max(last_globex)).await;

    let all = HistoryFilter::default();
    let events = subject.history(id, &all, LogPosition::START).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["CampaignCreated", "CampaignStatusChanged"]);
    assert!(events.iter().all(|e| e.stream_id == stream_id(id)));
    assert_eq!(events[1].data["to"], "active", "the body comes from the store");
    assert_eq!(events[0].metadata["api_key_name"], "auditor");

    // Paging from the first event's position, and the type filter.
    let rest = subject.history(id, &all, events[0].position).await;
    assert_eq!(rest, events[1..]);
    let only = HistoryFilter {
        event_type: Some("CampaignStatusChanged".into()),
        ..HistoryFilter::default()
    };
    let filtered = subject.history(id, &only, LogPosition::START).await;
    assert_eq!(filtered, events[1..]);

    assert_eq!(
        log.creator(&subject.pool, &stream_id(id))
            .await
            .unwrap()
            .as_deref(),
        Some("acme")
    );
    assert_eq!(
        log.creator(&subject.pool, &stream_id(Uuid::now_v7()))
            .await
            .unwrap(),
        None
    );

    let check = log
        .verify_campaign(&subject.pool, &other.to_string())
        .await
        .unwrap();
    assert_eq!((check.streams, check.events, check.first_break), (1, 2, None));

    // The feed: one project's events in log order, one campaign's on request.
    let feed = log
        .project(
            &subject.pool,
            domain::upcast::ALL,
            "acme",
            None,
            LogPosition::START,
            50,
        )
        .await
        .unwrap();
    assert_eq!(feed.len(), 4);
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));
    let one = log
        .project(
            &subject.pool,
            domain::upcast::ALL,
            "acme",
            Some(&other.to_string()),
            LogPosition::START,
            50,
        )
        .await
        .unwrap();
    assert!(one.len() == 2 && one.iter().all(|e| e.stream_id == stream_id(other)));

    // Webhook bodies by event id; an id the index does not hold yet waits.
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        log.events(&subject.pool, domain::upcast::ALL, &ids)
            .await
            .unwrap(),
        events
    );
    let unknown = Uuid::now_v7();
    let waiting = log.unindexed(&subject.pool, &[ids[0], unknown]).await.unwrap();
    assert_eq!(waiting.into_iter().collect::<Vec<_>>(), [unknown]);

    // The lag gauges: another reader at the start has every indexed event
    // pending; the index itself, caught up, none (counted in the store).
    let client = subject.db.connect().await;
    client
        .execute(
            "INSERT INTO projection_checkpoints (name, tx_id, position) VALUES ('behind', 0, 0)",
            &[],
        )
        .await
        .unwrap();
    let mut lags = log.lag(&subject.pool, 1000).await.unwrap();
    lags.sort();
    assert_eq!(lags, [("behind".to_owned(), 6), ("log_index".to_owned(), 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_the_index_so_history_shows_it() {
    let subject = subject().await;
    let progress = subject.start_index();
    // Read-after-write as the command side does it: the index consumes
    // every write, so the wait includes it.
    let consumer = Consumer::of(&LogIndexProjection);
    let waits = Progress::new(
        Some(subject.pool.clone()),
        vec![(consumer, Some(projector::Local::always_leading(progress)))],
    );
    for _ in 0..3 {
        let (id, last) = subject.campaign("acme", "auditor").await;
        let stream = stream_id(id);
        let written = [Written {
            stream_id: &stream,
            event_type: "CampaignStatusChanged",
            campaign_id: Some(id),
        }];
        assert!(
            waits
                .wait_for_writes(last, Some(&written), Duration::from_secs(30))
                .await
        );
        let events = subject
            .history(id, &HistoryFilter::default(), LogPosition::START)
            .await;
        assert_eq!(events.len(), 2, "history has the write once the wait returns");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_verify_and_replay_verbs_on_kurrentdb() {
    let subject = subject().await;
    let mut progress = subject.start_index();
    let (id, _) = subject.campaign("acme", "auditor").await;
    let (_, last) = subject.campaign("acme", "other").await;
    reached(&mut progress, last).await;

    let table = subject.marketing(&["history", &id.to_string()]).await;
    assert!(table.status.success(), "{table:?}");
    let text = stdout(&table);
    assert!(
        text.contains("CampaignCreated")
            && text.contains("CampaignStatusChanged")
            && text.contains("auditor"),
        "{text}"
    );
    let json = stdout(&subject.marketing(&["history", &id.to_string(), "--json"]).await);
    let lines: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{json}");
    assert_eq!(lines[1]["data"]["to"], "active");
    let missing = subject.marketing(&["history", &Uuid::now_v7().to_string()]).await;
    assert!(!missing.status.success());

    // The Postgres `events` table is empty: four events checked means the
    // chains were read from KurrentDB.
    let verified = subject.marketing(&["verify"]).await;
    assert!(verified.status.success(), "{verified:?}");
    let out = stdout(&verified);
    assert!(
        out.contains("checked 4 events in 2 streams") && out.contains("every hash chain is intact"),
        "{out}"
    );

    let replayed = subject.marketing(&["replay"]).await;
    assert!(replayed.status.success(), "{replayed:?}");
    let out = stdout(&replayed);
    assert!(
        out.contains("campaigns: rebuilt from 4 events") && out.contains("log_index: rebuilt from 4 events"),
        "{out}"
    );
    let client = subject.db.connect().await;
    let campaigns: i64 = client
        .query_one("SELECT count(*) FROM campaigns", &[])
        .await
        .unwrap()
        .get(0);
    let indexed: i64 = client
        .query_one("SELECT count(*) FROM log_index", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((campaigns, indexed), (2, 4), "the rebuilt tables are swapped in");
    let status: String = client
        .query_one("SELECT status FROM campaigns WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "active");
    // And history still reads through the rebuilt index.
    let again = stdout(&subject.marketing(&["history", &id.to_string(), "--json"]).await);
    assert_eq!(again.lines().count(), 2, "{again}");
}

/// The webhooks' state on this subject's log, private targets allowed (the
/// receiver is on loopback).
fn webhooks_state(subject: &Subject) -> webhooks::WebhooksState {
    let mut config = marketing::config::Config::for_database(&subject.db.url);
    config.webhooks_allow_private_targets = true;
    let vault = lead_vault::LeadVault::from_setting(None).unwrap();
    webhooks::WebhooksState {
        pool: subject.pool.clone(),
        log: subject.log(),
        keys: web::ApiKeys::new(subject.pool.clone()),
        gate: Arc::new(marketing::lead_gate::LeadDataGate::new(
            subject.pool.clone(),
            vault,
        )),
        config: Arc::new(config.webhooks()),
        wake: Arc::new(tokio::sync::Notify::new()),
    }
}

/// The history routes, the event feed and the webhook management routes,
/// served over real HTTP by the service's own routers with the log on the
/// double.
async fn serve_reads(subject: &Subject) -> String {
    let pool = subject.pool.clone();
    let media_dir = std::env::temp_dir().join(format!("kurrent-audit-{}", Uuid::now_v7()));
    let reads = query_api::router(query_api::QueryState {
        pool: pool.clone(),
        reads: web::replica::ReadPool::with_replica(pool.clone(), None),
        keys: web::ApiKeys::new(pool.clone()),
        media: media::MediaStore::local(&media_dir, 1 << 20).unwrap(),
        vault: lead_vault::LeadVault::from_setting(None).unwrap(),
        log: subject.log(),
    });
    let router = reads
        .merge(webhooks::feed_router(webhooks_state(subject)))
        .merge(webhooks::management_router(webhooks_state(subject)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1/dev/marketing", listener.local_addr().unwrap());
    let stop = subject.stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_routes_and_the_feed_over_http_on_kurrentdb() {
    let subject = subject().await;
    let mut progress = subject.start_index();
    let (id, _) = subject.campaign("acme", "auditor").await;
    let (_, last) = subject.campaign("globex", "other").await;
    reached(&mut progress, last).await;
    let project = ProjectSlug::parse("acme").unwrap();
    let key = web::ApiKeys::new(subject.pool.clone())
        .create(&project, "auditor")
        .await
        .unwrap()
        .1;
    let base = serve_reads(&subject).await;
    let client = reqwest::Client::new();
    let get = |path: String| client.get(format!("{base}{path}")).bearer_auth(&key).send();

    let history = get(format!("/campaigns/{id}/history?limit=1")).await.unwrap();
    assert_eq!(history.status(), 200);
    let page: Value = history.json().await.unwrap();
    assert_eq!(page["data"][0]["type"], "CampaignCreated", "{page}");
    assert_eq!(page["data"][0]["actor"]["api_key_name"], "auditor");
    let cursor = page["next_cursor"].as_str().expect("a second page").to_owned();
    let rest: Value = get(format!("/campaigns/{id}/history?cursor={cursor}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["data"][0]["type"], "CampaignStatusChanged", "{rest}");
    assert_eq!(rest["has_more"], false);

    let check: Value = get(format!("/campaigns/{id}/history/verify"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (check["intact"].as_bool(), check["events"].as_i64()),
        (Some(true), Some(2)),
        "{check}"
    );
    let unknown = get(format!("/campaigns/{}/history", Uuid::now_v7()))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let feed = get("/events".to_owned()).await.unwrap();
    assert_eq!(feed.status(), 200);
    let text = feed.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["data"].as_array().map(Vec::len),
        Some(2),
        "only acme's events: {text}"
    );
    assert!(text.contains(&id.to_string()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_wait_for_the_index_then_deliver_bodies_from_the_store() {
    let subject = subject().await;
    let project = ProjectSlug::parse("acme").unwrap();
    let key = web::ApiKeys::new(subject.pool.clone())
        .create(&project, "auditor")
        .await
        .unwrap()
        .1;
    let base = serve_reads(&subject).await;
    let receiver = test_support::receiver::Receiver::start().await;
    let created = reqwest::Client::new()
        .post(format!("{base}/webhooks"))
        .bearer_auth(&key)
        .json(&json!({ "url": receiver.url(), "events": ["*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let state = webhooks_state(&subject);
    let dispatcher = webhooks::Dispatcher::new(
        subject.store.clone(),
        subject.pool.clone(),
        state.gate.clone(),
        (*state.config).clone(),
        state.wake.clone(),
    );
    tokio::spawn(dispatcher.run(subject.stop.clone()));
    let (id, _) = subject.campaign("acme", "auditor").await;

    // The fan-out follows the store: the deliveries are queued while the
    // index has not run at all, and no attempt is made (none could read
    // the body).
    let client = subject.db.connect().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let queued: i64 = client
            .query_one("SELECT count(*) FROM webhook_deliveries", &[])
            .await
            .unwrap()
            .get(0);
        if queued == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deliveries are not queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts = "SELECT count(*) FROM webhook_attempts";
    let attempted: i64 = client.query_one(attempts, &[]).await.unwrap().get(0);
    assert_eq!(attempted, 0, "a delivery waits for the index instead of failing");

    let mut progress = subject.start_index();
    let head = subject.store.head().await.unwrap().unwrap();
    reached(&mut progress, head).await;
    let received = receiver.wait_for_distinct(2, Duration::from_secs(30)).await;
    let bodies: Vec<Value> = received.iter().map(|r| r.json()).collect();
    assert!(
        bodies.iter().all(|b| b.to_string().contains(&id.to_string())),
        "the bodies come from the store: {bodies:?}"
    );
    let failed: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_attempts WHERE error IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 0);
}
