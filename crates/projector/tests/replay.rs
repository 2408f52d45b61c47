//! Blue/green replay: rebuilds while writes continue, equals a fresh rebuild,
//! and readers keep being answered.

use deadpool_postgres::Pool;
use domain::campaign::{stream_id, CampaignCommand, CampaignStatus};
use domain::DomainEvent;
use event_store::{connect_pool, EventStore, ExpectedVersion, NewEvent, PgEventStore, Wakeups};
use projector::{replay, CampaignsProjection, ProjectionRunner, ReplayOptions, RunnerConfig};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn write_campaign_history(store: &PgEventStore, i: u64) {
    let id = Uuid::new_v4();
    let mut campaign = domain::campaign::Campaign::default();
    let mut commands = vec![CampaignCommand::Create {
        campaign_id: id,
        project: domain::ProjectSlug::parse("acme").unwrap(),
        input: Box::new(
            domain::input::from_json_slice(
                format!(r#"{{"name": "c{i}", "total_budget": {i}.25}}"#).as_bytes(),
            )
            .unwrap(),
        ),
    }];
    commands.push(CampaignCommand::Update(Box::new(
        domain::input::from_json_slice(format!(r#"{{"description": "d{i}"}}"#).as_bytes()).unwrap(),
    )));
    commands.push(CampaignCommand::ChangeStatus(CampaignStatus::Active));
    if i.is_multiple_of(5) {
        commands.push(CampaignCommand::Delete);
    }
    for command in commands {
        let events = campaign.handle(command).unwrap();
        let expected = campaign
            .version()
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let at = event_store::now();
        let new = events
            .iter()
            .map(|e| NewEvent {
                event_id: Uuid::new_v4(),
                event_type: e.event_type().into(),
                schema_version: 1,
                data: e.to_data(),
                metadata: json!({}),
                recorded_at: at,
            })
            .collect();
        let outcome = store.append(&stream_id(id), expected, new).await.unwrap();
        for (n, e) in events.iter().enumerate() {
            campaign.apply(e, at, outcome.last_version - events.len() as i64 + 1 + n as i64);
        }
    }
}

async fn table_digest(pool: &Pool, table: &str) -> (i64, String) {
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t.id)), '') FROM {table} t"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn index_names(pool: &Pool) -> Vec<String> {
    let client = pool.get().await.unwrap();
    let mut names: Vec<String> = client
        .query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'campaigns'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_while_writing_equals_a_fresh_rebuild_and_reads_keep_working() {
    let db = test_support::fresh_database().await;
    let mut client = db.connect().await;
    event_store::migrate(&mut client).await.unwrap();
    projector::migrate(&mut client).await.unwrap();
    let pool = connect_pool(&db.url, 16).unwrap();
    let store = Arc::new(PgEventStore::new(pool.clone(), &[], Wakeups::new()));
    for i in 0..300 {
        write_campaign_history(&store, i).await;
    }
    let indexes_before = index_names(&pool).await;

    let stop = CancellationToken::new();
    let runner = ProjectionRunner::new(
        store.clone(),
        pool.clone(),
        Arc::new(CampaignsProjection),
        RunnerConfig::default(),
    );
    let live = tokio::spawn(runner.run(stop.clone()));

    // Writers and readers keep going during the replay.
    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, writing, written) = (store.clone(), writing.clone(), written.clone());
        tokio::spawn(async move {
            let mut i = 1000;
            while writing.load(Ordering::SeqCst) {
                write_campaign_history(&store, i).await;
                i += 1;
                written.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (pool, writing, reads) = (pool.clone(), writing.clone(), reads.clone());
        tokio::spawn(async move {
            while writing.load(Ordering::SeqCst) {
                let client = pool.get().await.unwrap();
                // A cached prepared statement, like the query API's, must survive the swap.
                let statement = client
                    .prepare_cached("SELECT count(*) FROM campaigns WHERE project = $1")
                    .await
                    .unwrap();
                client
                    .query_one(&statement, &[&"acme"])
                    .await
                    .expect("reads keep working during replay");
                reads.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let options = ReplayOptions {
        batch_size: 100,
        swap: true,
        shards: 1,
    };
    let mut batches = 0;
    let outcome = replay(store.as_ref(), &pool, &CampaignsProjection, &options, |_, _| {
        batches += 1
    })
    .await
    .unwrap();
    assert!(outcome.events >= 300 * 3, "{outcome:?}");
    assert!(batches > 5);
    // Writes and reads go on across the swap, so the live runner has work
    // that came after it.
    let (writes_at_swap, reads_at_swap) = (written.load(Ordering::SeqCst), reads.load(Ordering::SeqCst));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while written.load(Ordering::SeqCst) < writes_at_swap + 3
        || reads.load(Ordering::SeqCst) < reads_at_swap + 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no writes and reads after the swap"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writing.store(false, Ordering::SeqCst);
    writer.await.unwrap();
    reader.await.unwrap();
    assert!(reads.load(Ordering::SeqCst) > 0);

    // Let the live runner apply what came after the swap, then rebuild afresh
    // (without swapping) and compare.
    let head = store.head().await.unwrap().unwrap();
    let mut progress = event_store::LogPosition::START;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let client = pool.get().await.unwrap();
        let row = client
            .query_one(
                "SELECT tx_id, position FROM projection_checkpoints WHERE name = 'campaigns'",
                &[],
            )
            .await
            .unwrap();
        progress = event_store::LogPosition {
            tx_id: row.get(0),
            position: row.get(1),
        };
        if progress >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(progress >= head, "live runner continued after the swap");
    let fresh = ReplayOptions {
        batch_size: 500,
        swap: false,
        shards: 1,
    };
    replay(store.as_ref(), &pool, &CampaignsProjection, &fresh, |_, _| {})
        .await
        .unwrap();
    let live_digest = table_digest(&pool, "public.campaigns").await;
    let fresh_digest = table_digest(&pool, "replay_campaigns.campaigns").await;
    assert!(live_digest.0 > 240, "{live_digest:?}");
    assert_eq!(live_digest, fresh_digest);
    assert_eq!(
        index_names(&pool).await,
        indexes_before,
        "index names survive the swap"
    );
    stop.cancel();
    live.await.unwrap();
}
