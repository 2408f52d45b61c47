//! Campaign, task, content and analytics writes with the log in KurrentDB:
//! every GET right after its 2xx sees the write (read-after-write through the
//! projectors' `$all` reads), and campaign events reach Kafka.

use crate::{spawn_on_kurrentdb, KurrentApp};
use marketing_e2e::{SEED_CREATE, SEED_UPDATE};
use reqwest::multipart::Form;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use test_support::kafka::{shared_brokers, unique_topic, Reader};
use tokio::task::block_in_place;

const TASK: &str = r#"{ "title": "Create ad copy", "description": "Write compelling ad copy for Facebook", "assigned_to": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "due_date": "2024-06-15T00:00:00Z", "status": "pending" }"#;
const TRACK: &str = r#"{ "date": "2024-06-15", "source": "facebook", "metrics": { "impressions": 10000, "clicks": 500, "conversions": 50, "cost": 250.00, "revenue": 5000.00 } }"#;

/// `marketing_read_after_write_timeouts_total`: a write that answered before
/// its read models had it would count here.
async fn read_after_write_timeouts(app: &KurrentApp) -> u64 {
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("marketing_read_after_write_timeouts_total "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn send(app: &KurrentApp, method: Method, path: &str, body: &str, status: u16) -> Value {
    let response = app
        .json(method.clone(), path, &app.key, body)
        .send()
        .await
        .unwrap();
    let got = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn get(app: &KurrentApp, path: &str) -> Value {
    let response = app.get(path, &app.key).await;
    assert_eq!(response.status(), 200, "GET {path} right after its write");
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn campaign_create_get_update_patch_delete_read_their_writes() {
    let app = spawn_on_kurrentdb(|_| {}).await;
    let created = send(&app, Method::POST, "/campaigns", SEED_CREATE, 201).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/campaigns/{id}");
    assert_eq!(get(&app, &path).await, created);

    let updated = send(&app, Method::PUT, &path, SEED_UPDATE, 200).await;
    assert_eq!(updated["name"], "Updated Campaign Name");
    assert_eq!(get(&app, &path).await, updated);

    let status = json!({ "status": "active" }).to_string();
    let patched = send(&app, Method::PATCH, &format!("{path}/status"), &status, 200).await;
    assert_eq!(patched["status"], "active");
    assert_eq!(get(&app, &path).await["status"], "active");
    let listed = get(&app, "/campaigns").await;
    assert_eq!(listed["data"][0]["id"], id.as_str(), "{listed}");

    let delete = app.request(Method::DELETE, &path, &app.key).send().await.unwrap();
    assert_eq!(delete.status(), 204);
    assert_eq!(app.get(&path, &app.key).await.status(), 404);

    assert_eq!(
        app.types(&format!("campaign-{id}")).await,
        [
            "CampaignCreated",
            "CampaignUpdated",
            "CampaignStatusChanged",
            "CampaignDeleted"
        ]
    );
    assert_eq!(read_after_write_timeouts(&app).await, 0);
    app.assert_postgres_log_empty().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_content_and_analytics_read_their_writes() {
    let app = spawn_on_kurrentdb(|_| {}).await;
    let campaign = app.campaign().await;

    let tasks = format!("/campaigns/{campaign}/tasks");
    let task = send(&app, Method::POST, &tasks, TASK, 201).await;
    let task_path = format!("{tasks}/{}", task["id"].as_str().unwrap());
    assert_eq!(get(&app, &task_path).await, task);
    let done = r#"{ "status": "completed" }"#;
    assert_eq!(
        send(&app, Method::PUT, &task_path, done, 200).await["status"],
        "completed"
    );
    assert_eq!(get(&app, &task_path).await["status"], "completed");

    let form = Form::new()
        .text("title", "New Blog Post")
        .text("content_type", "blog")
        .text("platform", "wordpress")
        .text("status", "draft")
        .text("content", "Content description");
    let response = app
        .multipart(
            Method::POST,
            &format!("/campaigns/{campaign}/content"),
            &app.key,
            form,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let content: Value = response.json().await.unwrap();
    let content_path = format!(
        "/campaigns/{campaign}/content/{}",
        content["id"].as_str().unwrap()
    );
    assert_eq!(get(&app, &content_path).await["title"], "New Blog Post");

    let analytics = format!("/campaigns/{campaign}/analytics");
    send(&app, Method::POST, &analytics, TRACK, 201).await;
    let summary = get(
        &app,
        &format!("{analytics}/summary?start_date=2024-06-01&end_date=2024-06-30"),
    )
    .await;
    assert_eq!(summary["records"], 1, "{summary}");
    assert_eq!(summary["metrics"]["impressions"], 10000, "{summary}");

    assert_eq!(read_after_write_timeouts(&app).await, 0);
    app.assert_postgres_log_empty().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn campaign_events_in_kurrentdb_reach_kafka() {
    let brokers = shared_brokers();
    let topic = unique_topic("campaigns");
    let app = spawn_on_kurrentdb(|config| {
        config.kafka_brokers = Some(brokers.clone());
        config.kafka_topic_campaigns = topic.clone();
        config.kafka_topic_leads = unique_topic("leads");
        config.kafka_partitions = 2;
    })
    .await;
    let created = send(&app, Method::POST, "/campaigns", SEED_CREATE, 201).await;
    let id = created["id"].as_str().unwrap().to_owned();
    send(&app, Method::PUT, &format!("/campaigns/{id}"), SEED_UPDATE, 200).await;

    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&topic]);
        reader
            .read_until(Duration::from_secs(30), |r| r.len() >= 2)
            .to_vec()
    });
    let types: Vec<_> = records.iter().map(|r| r.header("ce_type").unwrap()).collect();
    assert_eq!(
        types,
        [
            "com.marketing.campaign.created.v1",
            "com.marketing.campaign.updated.v1"
        ]
    );
    assert!(records.iter().all(|r| r.key.as_deref() == Some(id.as_str())));
    // The record's id is the event's id in KurrentDB.
    let stored = app.stream(&format!("campaign-{id}")).await;
    assert_eq!(
        records[0].header("ce_id"),
        Some(stored[0].event_id.to_string().as_str())
    );
    app.assert_postgres_log_empty().await;
}
