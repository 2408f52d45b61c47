//! Replay with shards equals the live read models: what the shards built
//! concurrently, each from its own share of the log, is row for row what one
//! pass over the whole log builds.

use marketing_e2e::{spawn_app_with, TestApp, SEED_CREATE};
use reqwest::multipart::Form;
use reqwest::Method;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Sends a write and insists on a 2xx; returns the body.
async fn write(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// One campaign with a bit of everything: an update, a status change, a task
/// (updated), a content item, two leads (one updated), a day of analytics
/// and two restated days.
async fn busy_campaign(app: &TestApp, i: usize) -> String {
    let body = format!(r#"{{"name": "campaign {i}", "total_budget": {i}.5}}"#);
    let id = app.create_campaign(&app.key, &body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = format!("/campaigns/{id}");
    let key = &app.key;
    write(app.json(Method::PUT, &base, key, &format!(r#"{{"description": "d{i}"}}"#))).await;
    write(app.json(
        Method::PATCH,
        &format!("{base}/status"),
        key,
        r#"{"status": "active"}"#,
    ))
    .await;
    let task = write(app.json(
        Method::POST,
        &format!("{base}/tasks"),
        key,
        &format!(r#"{{"title": "task {i}", "due_date": "2024-06-15T00:00:00Z"}}"#),
    ))
    .await;
    let task_path = format!("{base}/tasks/{}", task["id"].as_str().unwrap());
    write(app.json(Method::PUT, &task_path, key, r#"{"status": "completed"}"#)).await;
    let form = Form::new()
        .text("title", format!("post {i}"))
        .text("content_type", "blog")
        .text("platform", "wordpress")
        .text("content", "words");
    write(app.multipart(Method::POST, &format!("{base}/content"), key, form)).await;
    for n in 0..2 {
        let lead = write(app.json(
            Method::POST,
            &format!("{base}/leads"),
            key,
            &format!(r#"{{"name": "Lead {n}", "email": "lead{n}.{i}@example.com", "source": "web"}}"#),
        ))
        .await;
        if n == 0 {
            let lead_path = format!("{base}/leads/{}", lead["id"].as_str().unwrap());
            write(app.json(Method::PUT, &lead_path, key, r#"{"status": "contacted"}"#)).await;
        }
    }
    let track = format!(
        r#"{{"date": "2024-06-{:02}", "source": "google", "metrics": {{"impressions": {}, "clicks": 5, "conversions": 1, "cost": 2.50, "revenue": 9.99}}}}"#,
        1 + i % 28,
        100 * (i + 1)
    );
    write(app.json(Method::POST, &format!("{base}/analytics"), key, &track)).await;
    // A restatement of the tracked day, and of one more.
    for day in [1 + i % 28, 29] {
        let path = format!("{base}/analytics/2024-06-{day:02}/google");
        let metrics = format!(r#"{{"metrics": {{"clicks": {i}, "custom_metrics": {{"views": 1}}}}}}"#);
        write(app.json(Method::PUT, &path, key, &metrics)).await;
    }
    id
}

/// Every row of `table` in `schema`, as text, sorted. (The tombstones table is
/// shared with the live models, not rebuilt: see docs/architecture.md.)
async fn rows(db: &tokio_postgres::Client, schema: &str, table: &str) -> Vec<String> {
    let query = format!("SELECT t::text FROM {schema}.{table} t ORDER BY 1");
    let rows = db.query(&query, &[]).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

/// Waits until every reader of every projection has passed the log's head.
async fn caught_up(db: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: bool = db
            .query_one(
                "SELECT bool_and((c.tx_id, c.position) >= (e.tx_id, e.position))
                 FROM projection_checkpoints c,
                      (SELECT tx_id, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1) e",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "projections did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_equals_the_live_read_models_of_every_sharded_projection() {
    let app = spawn_app_with(|config| config.projection_shards = 3).await;
    let mut campaigns = Vec::new();
    for i in 0..12 {
        campaigns.push(busy_campaign(&app, i).await);
    }
    // The seed's full body too, and a deleted campaign whose rows every
    // projection hides behind a tombstone.
    app.create_campaign(&app.key, SEED_CREATE).await;
    let doomed = &campaigns[5];
    let deleted = app
        .request(Method::DELETE, &format!("/campaigns/{doomed}"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let db = app.db.connect().await;
    caught_up(&db).await;
    let sharded: i64 = db
        .query_one(
            "SELECT count(*) FROM projection_checkpoints WHERE name LIKE '%:_/3'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sharded, 5 * 3, "every projection runs in three shards");

    let pool = event_store::connect_pool(&app.db.url, 4).unwrap();
    let store =
        event_store::PgEventStore::new(pool.clone(), domain::upcast::ALL, event_store::Wakeups::new());
    let vault = app.config.lead_vault().unwrap();
    let options = projector::ReplayOptions {
        batch_size: 7,
        swap: false,
        shards: 3,
    };
    for projection in projector::all_projections(&vault) {
        let outcome = projector::replay(&store, &pool, projection.as_ref(), &options, |_, _| {})
            .await
            .unwrap();
        let name = projection.name();
        let mut nonempty = 0;
        for table in projection.tables() {
            let live = rows(&db, "public", table).await;
            let rebuilt = rows(&db, &outcome.schema, table).await;
            assert_eq!(live, rebuilt, "{name}: {table} differs from its replay");
            nonempty += usize::from(!live.is_empty());
        }
        assert!(nonempty > 0, "{name}: nothing was compared");
    }
}
