//! Read-after-write, idempotent retries and concurrent writers.

use futures::future::join_all;
use marketing::startup::Role;
use marketing_e2e::{assert_error, spawn_app, RunningApp, SEED_CREATE};
use reqwest::Method;
use serde_json::{json, Value};

/// A GET as a well-behaved client sends it: a `503` with `Retry-After` (the
/// database was unavailable for this request: a pool wait or a new
/// connection timed out, which a machine under heavy load can cause even for
/// one client) says nothing about the resource and is retried, at once, a
/// few times. Any other answer is returned as it is: a read that reached the
/// read model and did not find the write answers `404` (or the old status),
/// never `503`, so a miss still fails the test. (A retried iteration gives the
/// projections a moment more; the other iterations, nearly all, keep the
/// check as tight as before.)
async fn get_as_client(app: &marketing_e2e::TestApp, path: &str) -> reqwest::Response {
    for _ in 0..5 {
        let response = app.get(path, &app.key).await;
        let unavailable = response.status() == 503 && response.headers().contains_key("retry-after");
        if !unavailable {
            return response;
        }
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["code"], "unavailable",
            "a 503 other than the documented one: {body}"
        );
        eprintln!("GET {path}: 503 {body}; retrying");
    }
    app.get(path, &app.key).await
}

#[tokio::test]
async fn create_then_get_never_404s() {
    let app = spawn_app().await;
    let mut misses = 0;
    for i in 0..300 {
        let body = json!({ "name": format!("tight loop {i}") }).to_string();
        let created = app.create_campaign(&app.key, &body).await;
        let path = format!("/campaigns/{}", created["id"].as_str().unwrap());
        let response = get_as_client(&app, &path).await;
        if response.status() != 200 {
            misses += 1;
            continue;
        }
        // And a status change is visible at once too.
        let patched = app
            .json(
                Method::PATCH,
                &format!("{path}/status"),
                &app.key,
                r#"{"status":"active"}"#,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 200);
        let fetched: Value = get_as_client(&app, &path).await.json().await.unwrap();
        assert_eq!(fetched["status"], "active", "GET after PATCH saw the old status");
    }
    assert_eq!(misses, 0, "GET right after a 201 returned 404");
}

#[tokio::test]
async fn idempotent_retries_replay_the_first_response() {
    let app = spawn_app().await;
    let post = |key: &str, body: &str| {
        app.json(Method::POST, "/campaigns", &app.key, body)
            .header("idempotency-key", key)
            .send()
    };
    let first = post("retry-1", SEED_CREATE).await.unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].clone();
    let first_body = first.text().await.unwrap();
    for _ in 0..3 {
        let again = post("retry-1", SEED_CREATE).await.unwrap();
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["location"], location);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.text().await.unwrap(), first_body);
    }
    // Same key, different body: refused, nothing written.
    let conflict = post("retry-1", r#"{"name": "Something else"}"#).await.unwrap();
    assert_error(
        conflict,
        409,
        "Idempotency-Key was already used with a different request",
    )
    .await;
    // Concurrent duplicates of a fresh key create one campaign.
    let racers = join_all((0..8).map(|_| post("race-1", r#"{"name": "Raced"}"#))).await;
    let mut created_ids = std::collections::HashSet::new();
    for response in racers {
        let response = response.unwrap();
        match response.status().as_u16() {
            201 => {
                let body: Value = response.json().await.unwrap();
                created_ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            409 => {} // "still in progress": the client retries later.
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created_ids.len(), 1);
    let list: Value = app.get("/campaigns", &app.key).await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "one campaign per key");
    // Keys are per project: another project may use the same key.
    let other = app.new_key("globex").await;
    let theirs = app
        .json(Method::POST, "/campaigns", &other, SEED_CREATE)
        .header("idempotency-key", "retry-1")
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 201);
    assert!(theirs.headers().get("idempotent-replayed").is_none());
    // A failed request is replayed as the same failure.
    let bad = post("bad-1", r#"{"name": ""}"#).await.unwrap();
    assert_eq!(bad.status(), 400);
    let bad_again = post("bad-1", r#"{"name": ""}"#).await.unwrap();
    assert_eq!(bad_again.status(), 400);
    assert_eq!(bad_again.headers()["idempotent-replayed"], "true");
    let invalid_key = post(&"k".repeat(300), SEED_CREATE).await.unwrap();
    assert_eq!(
        assert_error(invalid_key, 400, "").await["field"],
        "Idempotency-Key"
    );
}

#[tokio::test]
async fn idempotency_survives_a_lost_response() {
    // The first request appended its event but its stored response was lost
    // (a crash between the two). The retry must not create a second campaign.
    let app = spawn_app().await;
    let send = || {
        app.json(Method::POST, "/campaigns", &app.key, SEED_CREATE)
            .header("idempotency-key", "crashy")
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let client = app.db.connect().await;
    client
        .execute("DELETE FROM idempotency_keys WHERE key = 'crashy'", &[])
        .await
        .unwrap();
    let retry = send().await.unwrap();
    assert_eq!(retry.status(), 201);
    let retried: Value = retry.json().await.unwrap();
    assert_eq!(retried["id"], first["id"]);
    assert_eq!(retried["version"], 0);
    let events: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
}

#[tokio::test]
async fn concurrent_updates_all_land_without_if_match() {
    let app = spawn_app().await;
    let created = app.create_campaign(&app.key, r#"{"name": "busy"}"#).await;
    let path = format!("/campaigns/{}", created["id"].as_str().unwrap());
    let writers = (0..10).map(|i| {
        let body = json!({ "description": format!("writer {i}") }).to_string();
        let request = app.json(Method::PUT, &path, &app.key, &body);
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let statuses = join_all(writers).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // Losers of a race re-read and retry; only persistent contention gives 409.
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    assert!(ok >= 5, "{statuses:?}");
    let current: Value = app.get(&path, &app.key).await.json().await.unwrap();
    assert_eq!(current["version"], ok as i64);
}

#[tokio::test]
async fn roles_in_separate_processes_keep_read_after_write() {
    let db = test_support::fresh_database().await;
    marketing::startup::migrate(&db.url).await.unwrap();
    let projector = RunningApp::start(&db.url, Role::Projector).await;
    let commands = RunningApp::start(&db.url, Role::CommandApi).await;
    let queries = RunningApp::start(&db.url, Role::QueryApi).await;
    let keys = web::ApiKeys::new(event_store::connect_pool(&db.url, 2).unwrap());
    let key = keys
        .create(&domain::ProjectSlug::parse("acme").unwrap(), "t")
        .await
        .unwrap()
        .1;
    let client = reqwest::Client::new();
    for i in 0..25 {
        let created: Value = client
            .post(format!("{}/v1/dev/marketing/campaigns", commands.address))
            .bearer_auth(&key)
            .json(&json!({ "name": format!("split {i}") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let fetched = client
            .get(format!(
                "{}/v1/dev/marketing/campaigns/{}",
                queries.address,
                created["id"].as_str().unwrap()
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            fetched.status(),
            200,
            "query API did not see a write the command API confirmed"
        );
    }
    // Each role serves only its own routes.
    let write_on_query_api = client
        .post(format!("{}/v1/dev/marketing/campaigns", queries.address))
        .bearer_auth(&key)
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(write_on_query_api.status(), 405);
    commands.stop().await;
    queries.stop().await;
    projector.stop().await;
}
