//! Read-after-write waits only for the read models a write changes, and of
//! those only for the shard of its campaign: with one shard of the leads
//! projection held, every other write (leads of the other shard included)
//! still answers with its result visible, and only a lead write in the held
//! shard waits (and then answers at the bound).

use marketing_e2e::{spawn_app_on, TestApp, SEED_CREATE};
use projector::Shard;
use reqwest::Method;
use serde_json::Value;
use test_support::fresh_database;

/// `marketing_read_after_write_timeouts_total` as the service reports it.
async fn timeouts(app: &TestApp) -> u64 {
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("marketing_read_after_write_timeouts_total "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn created(app: &TestApp, path: &str, body: &str) -> Value {
    let response = app.json(Method::POST, path, &app.key, body).send().await.unwrap();
    assert_eq!(response.status(), 201, "POST {path}");
    response.json().await.unwrap()
}

async fn visible(app: &TestApp, path: &str) {
    let response = app.get(path, &app.key).await;
    assert_eq!(response.status(), 200, "GET {path} right after its write");
}

/// A campaign whose leads are in `shard` (of the app's count): campaign ids
/// are random, so a few creations find one (each has a 1/count chance).
async fn campaign_in(app: &TestApp, shard: u32) -> String {
    for _ in 0..200 {
        let campaign = created(app, "/campaigns", SEED_CREATE).await;
        let id: uuid::Uuid = campaign["id"].as_str().unwrap().parse().unwrap();
        if Shard::of(id, app.config.projection_shards).index == shard {
            return id.to_string();
        }
    }
    panic!("no campaign in shard {shard} after 200 creations");
}

async fn created_lead(app: &TestApp, campaign: &str, email: &str) -> String {
    let body = format!(r#"{{"email": "{email}"}}"#);
    let lead = created(app, &format!("/campaigns/{campaign}/leads"), &body).await;
    format!("/campaigns/{campaign}/leads/{}", lead["id"].as_str().unwrap())
}

#[tokio::test]
async fn a_held_shard_delays_only_the_writes_it_consumes() {
    // Hold shard 0 of the leads projection: its runner stands by while this
    // session keeps the shard's advisory lock. (A session lock, not an open
    // transaction, which would hold back every reader's horizon.)
    let db = fresh_database().await;
    let holder = db.connect().await;
    let held = Shard { index: 0, count: 2 };
    let held_lock = event_store::lock_key("", &held.reader_name("leads"));
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&held_lock])
        .await
        .unwrap();
    // Long enough that no write waiting for a live projection could time out
    // on a busy machine; the lead write below waits this long.
    let app = spawn_app_on(db, |config| {
        config.read_after_write_timeout_ms = 20_000;
        config.projection_shards = held.count;
    })
    .await;

    let id = campaign_in(&app, held.index).await;
    visible(&app, &format!("/campaigns/{id}")).await;
    let task = created(&app, &format!("/campaigns/{id}/tasks"), r#"{"title": "t"}"#).await;
    visible(
        &app,
        &format!("/campaigns/{id}/tasks/{}", task["id"].as_str().unwrap()),
    )
    .await;
    let content = created(
        &app,
        &format!("/campaigns/{id}/content"),
        r#"{"title": "c", "content_type": "blog"}"#,
    )
    .await;
    visible(
        &app,
        &format!("/campaigns/{id}/content/{}", content["id"].as_str().unwrap()),
    )
    .await;
    let track = r#"{"date": "2024-06-15", "source": "facebook", "metrics": {"clicks": 5}}"#;
    created(&app, &format!("/campaigns/{id}/analytics"), track).await;
    let summary: Value = app
        .get(&format!("/campaigns/{id}/analytics/summary"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(summary["records"], 1, "{summary}");
    // A lead of a campaign in the other shard: that shard runs.
    let other = campaign_in(&app, 1 - held.index).await;
    let other_lead = created_lead(&app, &other, "other@example.com").await;
    visible(&app, &other_lead).await;
    assert_eq!(timeouts(&app).await, 0, "no write waited for the held shard");

    // A lead write in the held shard waits to the bound, then answers anyway
    // (it is durable), counted as a timeout.
    let lead_path = created_lead(&app, &id, "a@example.com").await;
    assert_eq!(timeouts(&app).await, 1);
    assert_eq!(
        app.get(&lead_path, &app.key).await.status(),
        404,
        "held: not projected yet"
    );

    // Released, the shard catches up and the next lead write waits for it.
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&held_lock])
        .await
        .unwrap();
    let second = created_lead(&app, &id, "b@example.com").await;
    visible(&app, &second).await;
    visible(&app, &lead_path).await;
    assert_eq!(timeouts(&app).await, 1);
}
