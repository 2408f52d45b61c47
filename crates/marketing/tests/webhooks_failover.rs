//! The webhook dispatcher killed in the middle of a delivery loses nothing:
//! two `marketing webhooks` processes (the real binary) divide the
//! dispatcher's two shards; the one leading the shard of a delivery that a
//! receiver holds unanswered is SIGKILLed; the other takes over its shard and
//! every event arrives, in order per aggregate, and only what was in flight
//! is sent twice (receivers dedupe on `webhook-id`).

use marketing::config::Config;
use marketing::startup::{migrate, Application, Role};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use test_support::fresh_database;
use test_support::process::{Marketing, RoleProcess};
use test_support::receiver::{Receiver, Reply};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_marketing");
const WAIT: Duration = Duration::from_secs(60);
/// Campaigns per shard, at least; each has two events.
const PER_SHARD: usize = 3;
const SHARDS: u32 = 2;

/// `marketing webhooks` with fast retries, allowed to reach loopback, once
/// healthy; its ops address.
async fn dispatcher(database_url: &str) -> (RoleProcess, String) {
    let shards = SHARDS.to_string();
    let process = Marketing::new(BIN, database_url)
        .spawn(
            "webhooks",
            &[
                ("WEBHOOKS_SHARDS", &shards),
                ("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true"),
                ("WEBHOOKS_RETRY_BASE_MS", "20"),
                ("WEBHOOKS_RETRY_MAX_MS", "200"),
                ("WEBHOOKS_IDLE_POLL_MS", "50"),
            ],
        )
        .await;
    let ops = process.base_url();
    (process, ops)
}

/// The shards a dispatcher process leads now, from its `/metrics`.
async fn led_shards(client: &reqwest::Client, ops: &str) -> Vec<u32> {
    let Ok(response) = client.get(format!("{ops}/metrics")).send().await else {
        return Vec::new();
    };
    let text = response.text().await.unwrap_or_default();
    (0..SHARDS)
        .filter(|i| {
            let line = format!("marketing_webhooks_active{{shard=\"{i}/{SHARDS}\"}} 1");
            text.lines().any(|l| l == line)
        })
        .collect()
}

/// Waits until the processes at `ops` lead the shards `want` says.
async fn wait_for_leaders(client: &reqwest::Client, ops: &[&str], want: &[Vec<u32>]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut led = Vec::new();
        for address in ops {
            led.push(led_shards(client, address).await);
        }
        if led == want {
            return;
        }
        assert!(Instant::now() < deadline, "shards led {led:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A role of the application in this process; stopped when the token is cancelled.
async fn start(config: Config, role: Role) -> (String, CancellationToken) {
    let app = Application::build(config, role)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());
    (address, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dispatcher_killed_mid_delivery_loses_nothing() {
    let db = fresh_database().await;
    migrate(&db.url).await.unwrap();
    let mut config = Config::for_database(&db.url);
    config.webhooks_allow_private_targets = true;
    config.media_dir = std::env::temp_dir().join(format!("mk-failover-{}", uuid::Uuid::new_v4().simple()));
    // The APIs and projectors here, without a dispatcher: that runs apart.
    let (api, stop_api) = start(config.clone(), Role::CommandApi).await;
    let (_, stop_projector) = start(config.clone(), Role::Projector).await;
    let keys = web::ApiKeys::new(event_store::connect_pool(&db.url, 2).unwrap());
    let project = domain::ProjectSlug::parse("acme").unwrap();
    let key = keys.create(&project, "test").await.unwrap().1;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{api}/v1/dev/marketing{path}"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };

    let receiver = Receiver::start().await;
    receiver.script([Reply::Hold]);
    let created = post("/webhooks", json!({ "url": receiver.url(), "events": ["*"] }))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // Two processes: the second makes the first give one shard up.
    let (first, first_ops) = dispatcher(&db.url).await;
    wait_for_leaders(&client, &[&first_ops], &[vec![0, 1]]).await;
    let (second, second_ops) = dispatcher(&db.url).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (a, b) = (
            led_shards(&client, &first_ops).await,
            led_shards(&client, &second_ops).await,
        );
        if a.len() == 1 && b.len() == 1 && a != b {
            break;
        }
        assert!(Instant::now() < deadline, "the shards are not split: {a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Campaigns in both shards, each created then renamed.
    let mut per_shard = [0usize; SHARDS as usize];
    let mut streams = Vec::new();
    while per_shard.iter().any(|&n| n < PER_SHARD) {
        let response = post("/campaigns", json!({ "name": "Summer Sale Campaign" }))
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let id: uuid::Uuid = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        per_shard[projector::Shard::of(id, SHARDS).index as usize] += 1;
        let renamed = client
            .put(format!("{api}/v1/dev/marketing/campaigns/{id}"))
            .bearer_auth(&key)
            .json(&json!({ "name": "Renamed" }))
            .send()
            .await
            .unwrap();
        assert_eq!(renamed.status(), 200);
        streams.push(format!("campaign-{id}"));
    }
    let events = streams.len() * 2;
    // The first delivery is in flight (held by the receiver): kill the
    // process leading its shard there.
    let held = receiver.wait_for(1, WAIT).await.remove(0);
    let held_campaign: uuid::Uuid = held.json()["campaignid"].as_str().unwrap().parse().unwrap();
    let held_shard = projector::Shard::of(held_campaign, SHARDS).index;
    let (mut dispatchers, mut ops) = (vec![Some(first), Some(second)], vec![first_ops, second_ops]);
    let victim = if led_shards(&client, &ops[0]).await.contains(&held_shard) {
        0
    } else {
        1
    };
    let before_kill: std::collections::HashSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    drop(dispatchers[victim].take());
    let survivor = ops.remove(1 - victim);
    // The survivor takes the dead one's shard.
    wait_for_leaders(&client, &[&survivor], &[vec![0, 1]]).await;
    let held_id = held.header("webhook-id").to_owned();
    receiver
        .wait_until(WAIT, "the cut delivery sent again", |received| {
            received
                .iter()
                .filter(|r| r.header("webhook-id") == held_id)
                .count()
                >= 2
        })
        .await;
    receiver.wait_for_distinct(events, WAIT).await;
    // Every delivery is recorded as delivered.
    let db_client = db.connect().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let delivered: i64 = db_client
            .query_one(
                "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if delivered == events as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of {events} recorded as delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Only what had reached the receiver before the kill (in flight, or
    // answered but not yet recorded) came twice.
    let all = receiver.received();
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for request in &all {
        *counts.entry(request.header("webhook-id")).or_default() += 1;
    }
    for (id, count) in &counts {
        assert!(
            *count == 1 || before_kill.contains(*id),
            "{id} sent {count} times, though not in flight at the kill ({} requests)",
            all.len()
        );
    }
    let order = test_support::receiver::first_arrivals_by_stream(&all);
    for stream in &streams {
        assert_eq!(order[stream], [0, 1], "{stream}");
    }
    drop(dispatchers);
    stop_api.cancel();
    stop_projector.cancel();
}
