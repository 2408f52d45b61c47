//! The audit trail over HTTP, and replay under live traffic.

use marketing_e2e::{assert_error, spawn_app, SEED_CREATE, SEED_UPDATE};
use reqwest::Method;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[tokio::test]
async fn history_lists_every_change_in_order_with_its_actor() {
    let app = spawn_app().await;
    let created = app.create_campaign(&app.key, SEED_CREATE).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/campaigns/{id}");
    app.json(Method::PUT, &path, &app.key, SEED_UPDATE)
        .header("x-request-id", "audit-update")
        .send()
        .await
        .unwrap();
    app.json(
        Method::PATCH,
        &format!("{path}/status"),
        &app.key,
        r#"{"status":"active"}"#,
    )
    .send()
    .await
    .unwrap();
    app.request(Method::DELETE, &path, &app.key).send().await.unwrap();

    // Still readable by its project after the delete: that is what audit is for.
    let history: Value = app
        .get(&format!("{path}/history"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    let entries = history["data"].as_array().unwrap();
    let types: Vec<&str> = entries.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "CampaignCreated",
            "CampaignUpdated",
            "CampaignStatusChanged",
            "CampaignDeleted"
        ]
    );
    let versions: Vec<i64> = entries.iter().map(|e| e["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, [0, 1, 2, 3]);
    assert!(entries
        .windows(2)
        .all(|w| w[0]["position"].as_i64() < w[1]["position"].as_i64()));
    assert_eq!(entries[1]["actor"]["request_id"], "audit-update");
    assert_eq!(entries[1]["actor"]["api_key_name"], "test");
    assert!(entries[1]["actor"]["api_key_id"].is_string());
    assert_eq!(entries[1]["data"]["changes"]["name"], "Updated Campaign Name");
    assert_eq!(entries[2]["data"]["from"], "draft");
    assert_eq!(entries[0]["schema_version"], 1);

    // Filters and pages.
    let only: Value = app
        .get(&format!("{path}/history?type=CampaignStatusChanged"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    let first: Value = app
        .get(&format!("{path}/history?limit=3"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["data"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(&format!("{path}/history?limit=3&cursor={cursor}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["data"][0]["type"], "CampaignDeleted");
    assert_eq!(second["has_more"], false);
    let future: Value = app
        .get(&format!("{path}/history?from=2999-01-01T00:00:00Z"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(future["data"].as_array().unwrap().len(), 0);
    let bad = app.get(&format!("{path}/history?from=yesterday"), &app.key).await;
    assert_eq!(assert_error(bad, 400, "").await["field"], "from");

    // Other projects see nothing.
    let other = app.new_key("globex").await;
    assert_error(
        app.get(&format!("{path}/history"), &other).await,
        404,
        "Campaign not found",
    )
    .await;
    let unknown = format!("/campaigns/{}/history", uuid::Uuid::new_v4());
    assert_error(app.get(&unknown, &app.key).await, 404, "Campaign not found").await;
}

#[tokio::test]
async fn the_api_keeps_answering_while_projections_are_replayed() {
    let app = spawn_app().await;
    for i in 0..150 {
        app.create_campaign(&app.key, &format!(r#"{{"name": "before {i}"}}"#))
            .await;
    }
    let running = Arc::new(AtomicBool::new(true));
    let answered = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (running, answered) = (running.clone(), answered.clone());
        let client = app.client.clone();
        let url = app.url("/campaigns");
        let key = app.key.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0;
            while running.load(Ordering::SeqCst) {
                let created = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&serde_json::json!({ "name": format!("during {n}") }))
                    .send()
                    .await
                    .unwrap();
                if created.status() != 201 {
                    failures.push(format!("POST {}", created.status()));
                    continue;
                }
                let body: Value = created.json().await.unwrap();
                let got = client
                    .get(format!("{url}/{}", body["id"].as_str().unwrap()))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap();
                if got.status() != 200 {
                    failures.push(format!("GET {}", got.status()));
                }
                n += 1;
                answered.fetch_add(1, Ordering::SeqCst);
            }
            (n, failures)
        })
    };
    let pool = event_store::connect_pool(&app.db.url, 8).unwrap();
    let store = event_store::PgEventStore::new(pool.clone(), &[], event_store::Wakeups::new());
    let options = projector::ReplayOptions {
        batch_size: 50,
        swap: true,
        shards: app.config.projection_shards,
    };
    let outcome = projector::replay(
        &store,
        &pool,
        &projector::CampaignsProjection,
        &options,
        |_, _| {},
    )
    .await
    .unwrap();
    assert!(outcome.events >= 150);
    // Traffic goes on across the swap: a few more create-and-read rounds
    // answered after it (failures are collected and asserted below).
    let at_swap = answered.load(Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < at_swap + 5 {
        assert!(std::time::Instant::now() < deadline, "no traffic after the swap");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    running.store(false, Ordering::SeqCst);
    let (requests, failures) = traffic.await.unwrap();
    assert!(requests > 0);
    assert!(failures.is_empty(), "requests failed during replay: {failures:?}");
    let list: Value = app
        .get("/campaigns?limit=500", &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 150 + requests);
}

/// Every kind of change a campaign can go through, across its tasks, content
/// and analytics, shows up in its history, in the order it happened.
#[tokio::test]
async fn history_covers_every_aggregate_of_a_campaign_in_order() {
    let app = spawn_app().await;
    let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
    let id = campaign["id"].as_str().unwrap().to_owned();
    let base = format!("/campaigns/{id}");
    let send = |method: Method, path: String, body: &str| {
        let request = app.json(method, &path, &app.key, body);
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.text().await.unwrap()
        }
    };
    let task: Value = serde_json::from_str(
        &send(
            Method::POST,
            format!("{base}/tasks"),
            r#"{"title": "Create ad copy", "status": "pending"}"#,
        )
        .await,
    )
    .unwrap();
    let task_path = format!("{base}/tasks/{}", task["id"].as_str().unwrap());
    send(
        Method::PUT,
        task_path.clone(),
        r#"{"status": "completed", "description": "Updated description"}"#,
    )
    .await;
    app.request(Method::DELETE, &task_path, &app.key)
        .send()
        .await
        .unwrap();
    let content: Value = serde_json::from_str(
        &send(
            Method::POST,
            format!("{base}/content"),
            r#"{"title": "New Blog Post", "content_type": "blog", "platform": "wordpress", "status": "draft"}"#,
        )
        .await,
    )
    .unwrap();
    let content_path = format!("{base}/content/{}", content["id"].as_str().unwrap());
    send(Method::PUT, content_path.clone(), r#"{"title": "Updated Title"}"#).await;
    app.request(Method::DELETE, &content_path, &app.key)
        .send()
        .await
        .unwrap();
    send(
        Method::POST,
        format!("{base}/analytics"),
        r#"{"date": "2024-06-15", "source": "facebook", "metrics": {"impressions": 10, "clicks": 1, "conversions": 0, "cost": 1.00, "revenue": 0}}"#,
    )
    .await;
    send(Method::PUT, base.clone(), SEED_UPDATE).await;
    send(Method::PATCH, format!("{base}/status"), r#"{"status": "active"}"#).await;
    app.request(Method::DELETE, &base, &app.key).send().await.unwrap();

    // Poll: history reads below the commit horizon, which other tests'
    // transactions on the shared cluster may hold back for a moment.
    let expected = [
        "CampaignCreated",
        "TaskCreated",
        "TaskUpdated",
        "TaskStatusChanged",
        "TaskDeleted",
        "ContentCreated",
        "ContentUpdated",
        "ContentDeleted",
        "AnalyticsRecorded",
        "CampaignUpdated",
        "CampaignStatusChanged",
        "CampaignDeleted",
    ];
    let mut types = Vec::new();
    for _ in 0..300 {
        let history: Value = app
            .get(&format!("{base}/history?limit=500"), &app.key)
            .await
            .json()
            .await
            .unwrap();
        types = history["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        if types.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(types, expected);
}

/// The audit trail keeps that a lead existed and was deleted, but shows the
/// person's data only while the lead exists.
#[tokio::test]
async fn history_shows_lead_personal_data_only_while_the_lead_exists() {
    let app = spawn_app().await;
    let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
    let base = format!("/campaigns/{}", campaign["id"].as_str().unwrap());
    let lead =
        r#"{"name": "John Doe", "email": "john@example.com", "phone": "+1234567890", "status": "new"}"#;
    let created: Value = app
        .json(Method::POST, &format!("{base}/leads"), &app.key, lead)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let history_text = || async {
        for _ in 0..300 {
            let text = app
                .get(&format!("{base}/history"), &app.key)
                .await
                .text()
                .await
                .unwrap();
            if text.contains("LeadCreated") {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("LeadCreated never showed up in the history");
    };
    let before = history_text().await;
    assert!(before.contains("john@example.com"), "{before}");
    let lead_path = format!("{base}/leads/{}", created["id"].as_str().unwrap());
    let deleted = app
        .request(Method::DELETE, &lead_path, &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let mut after = String::new();
    for _ in 0..300 {
        after = app
            .get(&format!("{base}/history"), &app.key)
            .await
            .text()
            .await
            .unwrap();
        if after.contains("LeadDeleted") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        after.contains("LeadCreated") && after.contains("LeadDeleted"),
        "{after}"
    );
    assert!(
        !after.contains("john@example.com") && !after.contains("John Doe"),
        "{after}"
    );
    assert!(after.contains("erased"), "{after}");
}

#[tokio::test]
async fn the_chain_check_of_a_campaign_names_the_event_that_was_altered() {
    let app = spawn_app().await;
    let id = app.create_campaign(&app.key, SEED_CREATE).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/campaigns/{id}");
    let updated = app
        .json(Method::PUT, &path, &app.key, SEED_UPDATE)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let task = app
        .json(
            Method::POST,
            &format!("{path}/tasks"),
            &app.key,
            r#"{"title": "Brief"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(task.status(), 201);
    let other = app.create_campaign(&app.key, SEED_CREATE).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let check = |campaign: String| {
        let app = &app;
        async move {
            let response = app
                .get(&format!("/campaigns/{campaign}/history/verify"), &app.key)
                .await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let intact = check(id.clone()).await;
    assert_eq!(intact["intact"], true, "{intact}");
    assert_eq!(
        intact["streams"], 2,
        "the campaign's stream and its task's: {intact}"
    );
    assert_eq!(intact["events"], 3, "{intact}");
    assert!(intact["first_break"].is_null());
    let digest = intact["digest"].as_str().unwrap().to_owned();
    assert_eq!(digest.len(), 64);
    assert_eq!(
        check(id.clone()).await["digest"],
        digest.as_str(),
        "the same events, the same digest"
    );

    // Alter the update behind the service's back.
    app.db
        .connect()
        .await
        .batch_execute(&format!(
            "ALTER TABLE events DISABLE TRIGGER events_immutable;
             UPDATE events SET data = jsonb_set(data, '{{name}}', '\"Tampered\"')
               WHERE stream_id = 'campaign-{id}' AND version = 1;
             ALTER TABLE events ENABLE TRIGGER events_immutable;"
        ))
        .await
        .unwrap();
    let broken = check(id.clone()).await;
    assert_eq!(broken["intact"], false, "{broken}");
    assert_eq!(broken["first_break"]["stream_id"], format!("campaign-{id}"));
    assert_eq!(broken["first_break"]["version"], 1);
    assert!(
        broken["first_break"]["reason"].as_str().unwrap().contains("hash"),
        "{broken}"
    );
    // Another campaign's streams are untouched, and say so.
    assert_eq!(check(other).await["intact"], true);

    // Another project cannot check (or learn of) the campaign.
    let rival = app.new_key("rival").await;
    assert_error(
        app.get(&format!("{path}/history/verify"), &rival).await,
        404,
        "Campaign not found",
    )
    .await;
}
