//! The webhook dispatcher killed in the middle of a delivery loses nothing:
//! `marketing webhooks` (the real binary) is SIGKILLed while a receiver holds
//! one of its requests unanswered; a second dispatcher takes over the lock and
//! every event arrives (the cut one again: receivers dedupe on `webhook-id`).

use marketing::config::Config;
use marketing::startup::{migrate, Application, Role};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::fresh_database;
use test_support::receiver::{Receiver, Reply};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_marketing");
const WAIT: Duration = Duration::from_secs(60);
const CAMPAIGNS: usize = 5;

struct Dispatcher(Child);

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `marketing webhooks` with fast retries, allowed to reach loopback.
fn dispatcher(database_url: &str) -> Dispatcher {
    let child = Command::new(BIN)
        .arg("webhooks")
        .env("DATABASE_URL", database_url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
        .env("WEBHOOKS_RETRY_BASE_MS", "20")
        .env("WEBHOOKS_RETRY_MAX_MS", "200")
        .env("WEBHOOKS_IDLE_POLL_MS", "50")
        .env_remove("KAFKA_BROKERS")
        .env_remove("EVENT_STORE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start marketing webhooks");
    Dispatcher(child)
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
    let first = dispatcher(&db.url);
    for _ in 0..CAMPAIGNS {
        let response = post("/campaigns", json!({ "name": "Summer Sale Campaign" }))
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    // The first delivery is in flight (held by the receiver): kill it there.
    let held = receiver.wait_for(1, WAIT).await.remove(0);
    drop(first);
    let _second = dispatcher(&db.url);
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
    receiver.wait_for_distinct(CAMPAIGNS, WAIT).await;
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
        if delivered == CAMPAIGNS as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of {CAMPAIGNS} recorded as delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_api.cancel();
    stop_projector.cancel();
}
