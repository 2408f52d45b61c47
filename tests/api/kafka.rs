//! The publisher wired into the binary: API writes reach Kafka as documented
//! CloudEvents, the API keeps answering while the broker is down, `/metrics`
//! shows the publish lag, and `marketing publisher` runs it on its own.

use marketing::config::Config;
use marketing::startup::{Application, Role};
use marketing_e2e::{RunningApp, TestApp, SEED_CREATE, SEED_UPDATE};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use test_support::fresh_database;
use test_support::kafka::{shared_brokers, unique_topic, ReadRecord, Reader, Tansu};
use tokio::task::block_in_place;

pub(crate) fn kafka_config(database_url: &str, brokers: &str) -> Config {
    let mut config = Config::for_database(database_url);
    config.kafka_brokers = Some(brokers.to_owned());
    config.kafka_topic_campaigns = unique_topic("campaigns");
    config.kafka_topic_leads = unique_topic("leads");
    config.kafka_partitions = 2;
    config.kafka_stall_timeout_ms = 2_000;
    config
}

pub(crate) async fn test_app(config: Config, role: Role) -> TestApp {
    let db_url = config.database_url.clone();
    let media_dir = marketing_e2e::TempDir::new("media");
    let mut config = config;
    config.media_dir = media_dir.path().to_path_buf();
    let app = RunningApp::start_with(config.clone(), role).await;
    let mut test_app = TestApp {
        app,
        db: test_support::TestDatabase {
            name: db_url.rsplit('/').next().unwrap().to_owned(),
            url: db_url,
        },
        client: reqwest::Client::new(),
        key: String::new(),
        media_dir,
        config,
    };
    test_app.key = test_app.new_key("acme").await;
    test_app
}

/// Polls `/metrics` until `line` is in it.
async fn wait_for_metric(app: &TestApp, line: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let metrics = app.metrics().await;
        if metrics.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{line}` in:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn types(records: &[ReadRecord]) -> Vec<&str> {
    records.iter().map(|r| r.header("ce_type").unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_publishes_api_writes_and_keeps_serving_while_the_broker_is_down() {
    let mut broker = Tansu::start();
    let db = fresh_database().await;
    let config = kafka_config(&db.url, &broker.brokers());
    let topic = config.kafka_topic_campaigns.clone();
    let app = test_app(config, Role::Serve).await;

    let response = app
        .json(Method::POST, "/campaigns", &app.key, SEED_CREATE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/campaigns/{id}");
    let update = app
        .json(Method::PUT, &path, &app.key, SEED_UPDATE)
        .send()
        .await
        .unwrap();
    assert_eq!(update.status(), 200);
    let status = json!({ "status": "active" }).to_string();
    let patch = app
        .json(Method::PATCH, &format!("{path}/status"), &app.key, &status)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);
    let delete = app.request(Method::DELETE, &path, &app.key).send().await.unwrap();
    assert_eq!(delete.status(), 204);

    let brokers = broker.brokers();
    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&topic]);
        reader.read_until(Duration::from_secs(30), |r| r.len() >= 4);
        reader.read_for(Duration::from_millis(300)).to_vec()
    });
    assert_eq!(
        types(&records),
        [
            "com.marketing.campaign.created.v1",
            "com.marketing.campaign.updated.v1",
            "com.marketing.campaign.status_changed.v1",
            "com.marketing.campaign.deleted.v1",
        ]
    );
    for (version, record) in records.iter().enumerate() {
        assert_eq!(record.key.as_deref(), Some(id.as_str()));
        assert_eq!(record.header("ce_specversion"), Some("1.0"));
        assert_eq!(record.header("ce_source"), Some("urn:marketing:project:acme"));
        assert_eq!(
            record.header("ce_subject"),
            Some(format!("campaigns/{id}").as_str())
        );
        assert_eq!(
            record.header("ce_streamversion"),
            Some(version.to_string().as_str())
        );
        assert_eq!(record.header("content-type"), Some("application/json"));
        assert_eq!(record.json()["campaign_id"], id.as_str());
    }
    let created_event = records[0].json();
    assert_eq!(created_event["details"]["name"], "Summer Sale Campaign");
    assert_eq!(created_event["status"], "draft");
    assert_eq!(records[0].header("ce_correlationid"), Some(request_id.as_str()));
    assert_eq!(records[1].json()["changes"]["name"], "Updated Campaign Name");
    assert_eq!(records[2].json()["to"], "active");
    wait_for_metric(
        &app,
        r#"marketing_projection_lag_events{projection="publisher"} 0"#,
        Duration::from_secs(30),
    )
    .await;

    // The broker goes away: writes and reads go on as usual, publishing waits.
    broker.kill();
    let started = Instant::now();
    let second = app.create_campaign(&app.key, SEED_CREATE).await;
    // Well below the read-after-write timeout (30 s here), which a write that
    // waited for the publisher would run into; generous for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a write does not wait for Kafka"
    );
    let second_id = second["id"].as_str().unwrap().to_owned();
    let fetched = app.get(&format!("/campaigns/{second_id}"), &app.key).await;
    assert_eq!(fetched.status(), 200);
    wait_for_metric(
        &app,
        r#"marketing_projection_lag_events{projection="publisher"} 1"#,
        Duration::from_secs(30),
    )
    .await;

    // It comes back (empty: in-memory storage): the publisher re-creates the
    // topic and delivers what it owes.
    broker.restart();
    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&topic]);
        reader
            .read_until(Duration::from_secs(60), |r| !r.is_empty())
            .to_vec()
    });
    assert_eq!(types(&records), ["com.marketing.campaign.created.v1"]);
    assert_eq!(records[0].key.as_deref(), Some(second_id.as_str()));
    wait_for_metric(
        &app,
        r#"marketing_projection_lag_events{projection="publisher"} 0"#,
        Duration::from_secs(30),
    )
    .await;
    // Graceful shutdown (which flushes the producer) completes.
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_publisher_role_publishes_what_another_process_writes() {
    let db = fresh_database().await;
    let api = test_app(Config::for_database(&db.url), Role::Serve).await;
    let config = kafka_config(&db.url, &shared_brokers());
    let topic = config.kafka_topic_campaigns.clone();
    let publisher = RunningApp::start_with(config, Role::Publisher).await;
    // Health and metrics only; no API.
    let health = api
        .client
        .get(format!("{}/healthz", publisher.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let no_api = api
        .client
        .get(format!("{}/v1/dev/marketing/campaigns", publisher.address))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(no_api.status(), 404);

    let created = api.create_campaign(&api.key, SEED_CREATE).await;
    let brokers = shared_brokers();
    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&topic]);
        reader
            .read_until(Duration::from_secs(30), |r| !r.is_empty())
            .to_vec()
    });
    assert_eq!(types(&records), ["com.marketing.campaign.created.v1"]);
    assert_eq!(records[0].key.as_deref(), created["id"].as_str());
    publisher.stop().await;
}

#[tokio::test]
async fn the_publisher_role_refuses_to_start_without_or_with_bad_kafka_settings() {
    let db = fresh_database().await;
    let error = Application::build(Config::for_database(&db.url), Role::Publisher)
        .await
        .err()
        .expect("refused");
    assert!(format!("{error:#}").contains("KAFKA_BROKERS"), "{error:#}");
    let mut bad = kafka_config(&db.url, "127.0.0.1:1");
    bad.kafka_partitions = 0;
    let error = Application::build(bad, Role::Serve).await.err().expect("refused");
    assert!(format!("{error:#}").contains("KAFKA_PARTITIONS"), "{error:#}");
    let mut bad = kafka_config(&db.url, "127.0.0.1:1");
    bad.kafka_producer_config = "enable.idempotence=false".into();
    let error = Application::build(bad, Role::Publisher)
        .await
        .err()
        .expect("refused");
    assert!(format!("{error:#}").contains("enable.idempotence"), "{error:#}");
}

/// Lead personal data goes out decrypted while the lead exists, and never after
/// its deletion: a re-publication from position zero carries it erased.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lead_personal_data_is_published_only_while_the_lead_exists() {
    let broker = Tansu::start();
    let db = fresh_database().await;
    let config = kafka_config(&db.url, &broker.brokers());
    let topic = config.kafka_topic_leads.clone();
    let app = test_app(config.clone(), Role::Serve).await;
    let campaign: Value = app
        .json(Method::POST, "/campaigns", &app.key, SEED_CREATE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let leads = format!("/campaigns/{}/leads", campaign["id"].as_str().unwrap());
    let lead = json!({ "name": "John Doe", "email": "john@example.com", "phone": "+1234567890",
                       "company": "Acme Inc.", "source": "facebook", "status": "new",
                       "notes": "Interested in product" });
    let created = app
        .json(Method::POST, &leads, &app.key, &lead.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let lead_id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let brokers = broker.brokers();
    let first = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&topic]);
        reader
            .read_until(Duration::from_secs(30), |r| !r.is_empty())
            .to_vec()
    });
    assert!(
        first[0].json().to_string().contains("john@example.com"),
        "{}",
        first[0].json()
    );
    assert_eq!(first[0].key.as_deref(), Some(lead_id.as_str()));
    assert!(
        first[0].json().to_string().contains("Acme Inc."),
        "{}",
        first[0].json()
    );

    let deleted = app
        .request(Method::DELETE, &format!("{leads}/{lead_id}"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&topic]);
        reader.read_until(Duration::from_secs(30), |r| r.len() >= 2);
    });
    app.app.stop().await;

    // Publish everything again from the start, as after losing the checkpoint.
    let client = db.connect().await;
    client
        .execute(
            "UPDATE projection_checkpoints SET tx_id = 0, position = 0 WHERE name = 'publisher'",
            &[],
        )
        .await
        .unwrap();
    let again = RunningApp::start_with(config, Role::Publisher).await;
    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&topic]);
        reader
            .read_until(Duration::from_secs(30), |r| r.len() >= 4)
            .to_vec()
    });
    let republished = records[2].json().to_string();
    assert_eq!(
        records[2].header("ce_id"),
        first[0].header("ce_id"),
        "the same event again"
    );
    assert!(!republished.contains("john@example.com"), "{republished}");
    assert!(!republished.contains("John Doe"), "{republished}");
    assert!(!republished.contains("Acme Inc."), "{republished}");
    again.stop().await;
}
