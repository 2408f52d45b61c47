//! The campaign task endpoints with the seed's bodies, over real HTTP and Postgres.

use futures::future::join_all;
use marketing_e2e::{assert_error, spawn_app, TestApp, SEED_CREATE};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;

/// The seed's create body exactly, "uuid-here" included.
const SEED_TASK: &str = r#"{ "title": "Create ad copy", "description": "Write compelling ad copy for Facebook", "assigned_to": "uuid-here", "due_date": "2024-06-15T00:00:00Z", "status": "pending" }"#;
/// The seed's create body with a real UUID where the seed has its placeholder.
const ASSIGNEE: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
const SEED_TASK_UPDATE: &str = r#"{ "status": "completed", "description": "Updated description" }"#;

fn seed_task() -> String {
    SEED_TASK.replace("uuid-here", ASSIGNEE)
}

async fn campaign(app: &TestApp, key: &str) -> String {
    let created = app.create_campaign(key, SEED_CREATE).await;
    created["id"].as_str().unwrap().to_owned()
}

async fn create_task(app: &TestApp, campaign_id: &str, body: &str) -> Value {
    let response = app
        .json(
            Method::POST,
            &format!("/campaigns/{campaign_id}/tasks"),
            &app.key,
            body,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "create task failed");
    response.json().await.unwrap()
}

async fn list(app: &TestApp, campaign_id: &str, query: &str) -> Value {
    let response = app
        .get(&format!("/campaigns/{campaign_id}/tasks{query}"), &app.key)
        .await;
    assert_eq!(response.status(), 200, "list {query}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn seed_create_update_and_read_back() {
    let app = spawn_app().await;
    let campaign_id = campaign(&app, &app.key).await;
    let tasks = format!("/campaigns/{campaign_id}/tasks");

    // The seed's body verbatim: "uuid-here" is not a UUID.
    let response = app
        .json(Method::POST, &tasks, &app.key, SEED_TASK)
        .send()
        .await
        .unwrap();
    let error = assert_error(
        response,
        400,
        "assigned_to must be a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6, not \"uuid-here\"",
    )
    .await;
    assert_eq!(error["field"], "assigned_to", "{error}");
    assert_eq!(app.event_count("task-").await, 0);

    let response = app
        .json(Method::POST, &tasks, &app.key, &seed_task())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"0\"");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let raw = response.text().await.unwrap();
    let created: Value = serde_json::from_str(&raw).unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        location,
        format!("/v1/dev/marketing/campaigns/{campaign_id}/tasks/{id}")
    );
    assert_eq!(created["campaign_id"], campaign_id.as_str());
    assert_eq!(created["title"], "Create ad copy");
    assert_eq!(created["description"], "Write compelling ad copy for Facebook");
    assert_eq!(created["assigned_to"], ASSIGNEE);
    assert_eq!(created["due_date"], "2024-06-15T00:00:00Z");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["version"], 0);

    // Read-after-write: the Location answers at once, byte for byte.
    let fetched = app
        .client
        .get(format!("{}{location}", app.app.address))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["etag"], "\"0\"");
    assert_eq!(fetched.text().await.unwrap(), raw);

    // The seed's update: a change and a status move, two events.
    let path = format!("{tasks}/{id}");
    let response = app
        .json(Method::PUT, &path, &app.key, SEED_TASK_UPDATE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let raw = response.text().await.unwrap();
    let updated: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(updated["status"], "completed");
    assert_eq!(updated["description"], "Updated description");
    assert_eq!(updated["title"], "Create ad copy");
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_eq!(app.get(&path, &app.key).await.text().await.unwrap(), raw);
    let listed = list(&app, &campaign_id, "").await;
    assert_eq!(listed["data"], json!([updated]));
    assert_eq!(
        (listed["has_more"].clone(), listed["next_cursor"].clone()),
        (json!(false), Value::Null)
    );

    // The events carry the campaign id, for consumers and auditors.
    let client = app.db.connect().await;
    let rows = client
        .query(
            "SELECT event_type, data->>'campaign_id' FROM events WHERE stream_id = $1 ORDER BY version",
            &[&format!("task-{id}")],
        )
        .await
        .unwrap();
    let events: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        events,
        vec![
            ("TaskCreated".to_owned(), campaign_id.clone()),
            ("TaskUpdated".to_owned(), campaign_id.clone()),
            ("TaskStatusChanged".to_owned(), campaign_id.clone()),
        ]
    );

    // A PUT that changes nothing keeps the version; echoing the resource is fine.
    let same = app
        .json(Method::PUT, &path, &app.key, &updated.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
    assert_eq!(same.headers()["etag"], "\"2\"");
    // null clears optional fields.
    let cleared: Value = app
        .json(
            Method::PUT,
            &path,
            &app.key,
            r#"{"assigned_to": null, "due_date": null}"#,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (cleared["assigned_to"].clone(), cleared["due_date"].clone()),
        (Value::Null, Value::Null)
    );
}

#[tokio::test]
async fn invalid_input_names_the_field_and_writes_nothing() {
    let app = spawn_app().await;
    let campaign_id = campaign(&app, &app.key).await;
    let tasks = format!("/campaigns/{campaign_id}/tasks");
    let cases = [
        (r#"{"description": "no title"}"#, "title"),
        (r#"{"title": ""}"#, "title"),
        (
            r#"{"title": "x", "due_date": "2024-06-31T00:00:00Z"}"#,
            "due_date",
        ),
        (r#"{"title": "x", "due_date": "tomorrow"}"#, "due_date"),
        (r#"{"title": "x", "status": "done"}"#, "status"),
        (r#"{"title": "x", "assigned_to": "bob"}"#, "assigned_to"),
        (r#"{"title": "x", "assigned_to": 42}"#, "assigned_to"),
        (r#"{"title": "x", "priority": "high"}"#, "priority"),
        (r#"["x"]"#, "body"),
        (r#"{"title": "x""#, "body"),
    ];
    for (body, field) in cases {
        let response = app
            .json(Method::POST, &tasks, &app.key, body)
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], field, "body {body}: {error}");
    }
    let response = app
        .request(Method::POST, &tasks, &app.key)
        .header("content-type", "text/plain")
        .body("title=x")
        .send()
        .await
        .unwrap();
    assert_error(response, 415, "").await;
    assert_eq!(app.event_count("task-").await, 0);

    let task = create_task(&app, &campaign_id, r#"{"title": "Valid"}"#).await;
    assert_eq!(task["status"], "pending", "status defaults to pending");
    let path = format!("{tasks}/{}", task["id"].as_str().unwrap());
    let updates = [
        (r#"{"title": null}"#, "title"),
        (r#"{"status": "archived"}"#, "status"),
        (r#"{"status": null}"#, "status"),
        (r#"{"due_date": "15/06/2024"}"#, "due_date"),
        (r#"{"assigned_to": "uuid-here"}"#, "assigned_to"),
        (r#"{"owner": "x"}"#, "owner"),
    ];
    for (body, field) in updates {
        let response = app.json(Method::PUT, &path, &app.key, body).send().await.unwrap();
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], field, "body {body}: {error}");
    }
    let current: Value = app.get(&path, &app.key).await.json().await.unwrap();
    assert_eq!(current["version"], 0);
}

#[tokio::test]
async fn unknown_wrong_campaign_and_other_project_are_404() {
    let app = spawn_app().await;
    let campaign_a = campaign(&app, &app.key).await;
    let campaign_b = campaign(&app, &app.key).await;
    let task = create_task(&app, &campaign_a, &seed_task()).await;
    let task_id = task["id"].as_str().unwrap();
    let nil = "00000000-0000-0000-0000-000000000000";

    // Unknown task, malformed task id, and a task of another campaign.
    for (campaign_id, id) in [(&campaign_a, nil), (&campaign_a, "nope"), (&campaign_b, task_id)] {
        let path = format!("/campaigns/{campaign_id}/tasks/{id}");
        assert_error(app.get(&path, &app.key).await, 404, "Task not found").await;
        let put = app
            .json(Method::PUT, &path, &app.key, SEED_TASK_UPDATE)
            .send()
            .await
            .unwrap();
        assert_error(put, 404, "Task not found").await;
        let delete = app.request(Method::DELETE, &path, &app.key).send().await.unwrap();
        assert_error(delete, 404, "Task not found").await;
    }
    // Unknown campaign, on every route.
    for campaign_id in [nil, "not-a-uuid"] {
        let tasks = format!("/campaigns/{campaign_id}/tasks");
        assert_error(app.get(&tasks, &app.key).await, 404, "Campaign not found").await;
        let post = app
            .json(Method::POST, &tasks, &app.key, &seed_task())
            .send()
            .await
            .unwrap();
        assert_error(post, 404, "Campaign not found").await;
        let path = format!("{tasks}/{task_id}");
        assert_error(app.get(&path, &app.key).await, 404, "Campaign not found").await;
        let put = app
            .json(Method::PUT, &path, &app.key, SEED_TASK_UPDATE)
            .send()
            .await
            .unwrap();
        assert_error(put, 404, "Campaign not found").await;
        let delete = app.request(Method::DELETE, &path, &app.key).send().await.unwrap();
        assert_error(delete, 404, "Campaign not found").await;
    }
    // Another project sees nothing, not even that the campaign exists.
    let other = app.new_key("globex").await;
    let tasks = format!("/campaigns/{campaign_a}/tasks");
    let path = format!("{tasks}/{task_id}");
    assert_error(app.get(&tasks, &other).await, 404, "Campaign not found").await;
    assert_error(app.get(&path, &other).await, 404, "Campaign not found").await;
    let post = app
        .json(Method::POST, &tasks, &other, &seed_task())
        .send()
        .await
        .unwrap();
    assert_error(post, 404, "Campaign not found").await;
    let put = app
        .json(Method::PUT, &path, &other, SEED_TASK_UPDATE)
        .send()
        .await
        .unwrap();
    assert_error(put, 404, "Campaign not found").await;
    let delete = app.request(Method::DELETE, &path, &other).send().await.unwrap();
    assert_error(delete, 404, "Campaign not found").await;
    // Nothing changed.
    let current: Value = app.get(&path, &app.key).await.json().await.unwrap();
    assert_eq!(current, task);
    // No key at all.
    let anonymous = app.client.get(app.url(&tasks)).send().await.unwrap();
    assert_error(anonymous, 401, "Invalid or missing API key").await;
}

#[tokio::test]
async fn filters_and_pagination() {
    let app = spawn_app().await;
    let campaign_id = campaign(&app, &app.key).await;
    let other_campaign = campaign(&app, &app.key).await;
    create_task(&app, &other_campaign, r#"{"title": "elsewhere"}"#).await;
    let bob = "11111111-1111-1111-1111-111111111111";
    let mut ids = Vec::new();
    for i in 0..7 {
        let status = ["pending", "in_progress", "completed", "cancelled"][i % 4];
        let assignee = if i % 2 == 0 { json!(bob) } else { Value::Null };
        let body = json!({"title": format!("task {i}"), "status": status, "assigned_to": assignee});
        ids.push(create_task(&app, &campaign_id, &body.to_string()).await["id"].clone());
    }
    let all = list(&app, &campaign_id, "").await;
    let listed: Vec<Value> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    assert_eq!(listed, ids, "a campaign's own tasks, oldest first");

    let pending = list(&app, &campaign_id, "?status=pending").await;
    let titles: Vec<&str> = pending["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["task 0", "task 4"]);
    let bobs = list(&app, &campaign_id, &format!("?assigned_to={bob}")).await;
    assert_eq!(bobs["data"].as_array().unwrap().len(), 4);
    let both = list(
        &app,
        &campaign_id,
        &format!("?assigned_to={bob}&status=completed"),
    )
    .await;
    let titles: Vec<&str> = both["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["task 2", "task 6"]);

    // Every page, in order, nothing twice, nothing missed.
    let mut seen = Vec::new();
    let mut query = "?limit=3".to_owned();
    loop {
        let page = list(&app, &campaign_id, &query).await;
        let items = page["data"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|t| t["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page["has_more"], true);
                query = format!("?limit=3&cursor={cursor}");
            }
            None => {
                assert_eq!(page["has_more"], false);
                break;
            }
        }
    }
    assert_eq!(seen, ids);

    for (query, field) in [
        ("?status=done", "status"),
        ("?assigned_to=bob", "assigned_to"),
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?cursor=garbage", "cursor"),
    ] {
        let response = app
            .get(&format!("/campaigns/{campaign_id}/tasks{query}"), &app.key)
            .await;
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], field, "{query}");
    }
}

#[tokio::test]
async fn delete_if_match_and_idempotent_create() {
    let app = spawn_app().await;
    let campaign_id = campaign(&app, &app.key).await;
    let tasks = format!("/campaigns/{campaign_id}/tasks");
    let task = create_task(&app, &campaign_id, &seed_task()).await;
    let path = format!("{tasks}/{}", task["id"].as_str().unwrap());

    let put = |etag: &'static str, body: &'static str| {
        app.json(Method::PUT, &path, &app.key, body)
            .header("if-match", etag)
            .send()
    };
    assert_eq!(put("\"0\"", r#"{"title": "First"}"#).await.unwrap().status(), 200);
    assert_error(put("\"0\"", r#"{"title": "Second"}"#).await.unwrap(), 412, "").await;
    assert_eq!(put("*", r#"{"title": "Any"}"#).await.unwrap().status(), 200);
    let stale_delete = app
        .request(Method::DELETE, &path, &app.key)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_error(stale_delete, 412, "").await;

    let deleted = app
        .request(Method::DELETE, &path, &app.key)
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(deleted.text().await.unwrap(), "");
    assert_error(app.get(&path, &app.key).await, 404, "Task not found").await;
    let again = app.request(Method::DELETE, &path, &app.key).send().await.unwrap();
    assert_error(again, 404, "Task not found").await;
    assert_eq!(list(&app, &campaign_id, "").await["data"], json!([]));

    // Retries with an Idempotency-Key replay the first response.
    let post = |key: &'static str, body: String| {
        app.json(Method::POST, &tasks, &app.key, &body)
            .header("idempotency-key", key)
            .send()
    };
    let first = post("task-1", seed_task()).await.unwrap();
    assert_eq!(first.status(), 201);
    let first_body = first.text().await.unwrap();
    let replay = post("task-1", seed_task()).await.unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), first_body);
    let conflict = post("task-1", r#"{"title": "other"}"#.to_owned()).await.unwrap();
    assert_error(
        conflict,
        409,
        "Idempotency-Key was already used with a different request",
    )
    .await;
    assert_eq!(
        list(&app, &campaign_id, "").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn deleting_the_campaign_hides_its_tasks() {
    let app = spawn_app().await;
    let campaign_id = campaign(&app, &app.key).await;
    let kept_campaign = campaign(&app, &app.key).await;
    let task = create_task(&app, &campaign_id, &seed_task()).await;
    let kept = create_task(&app, &kept_campaign, &seed_task()).await;
    let tasks = format!("/campaigns/{campaign_id}/tasks");
    let path = format!("{tasks}/{}", task["id"].as_str().unwrap());

    let response = app
        .request(Method::DELETE, &format!("/campaigns/{campaign_id}"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_error(app.get(&tasks, &app.key).await, 404, "Campaign not found").await;
    assert_error(app.get(&path, &app.key).await, 404, "Campaign not found").await;
    let put = app
        .json(Method::PUT, &path, &app.key, SEED_TASK_UPDATE)
        .send()
        .await
        .unwrap();
    assert_error(put, 404, "Campaign not found").await;
    let post = app
        .json(Method::POST, &tasks, &app.key, &seed_task())
        .send()
        .await
        .unwrap();
    assert_error(post, 404, "Campaign not found").await;
    let delete = app.request(Method::DELETE, &path, &app.key).send().await.unwrap();
    assert_error(delete, 404, "Campaign not found").await;

    // The read model dropped the rows; other campaigns keep theirs; the log keeps history.
    let client = app.db.connect().await;
    let rows: Vec<uuid::Uuid> = client
        .query("SELECT id FROM tasks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows,
        vec![uuid::Uuid::parse_str(kept["id"].as_str().unwrap()).unwrap()]
    );
    assert_eq!(app.event_count("task-").await, 2);
}

#[tokio::test]
async fn concurrent_creates_and_read_after_write() {
    let app = spawn_app().await;
    let campaign_id = campaign(&app, &app.key).await;
    let tasks = format!("/campaigns/{campaign_id}/tasks");
    let responses = join_all((0..20).map(|i| {
        app.json(
            Method::POST,
            &tasks,
            &app.key,
            &json!({"title": format!("t{i}")}).to_string(),
        )
        .send()
    }))
    .await;
    let mut ids = HashSet::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 20);
    assert_eq!(
        list(&app, &campaign_id, "?limit=500").await["data"]
            .as_array()
            .unwrap()
            .len(),
        20
    );
    // Each write is visible to the very next read.
    for i in 0..30 {
        let task = create_task(&app, &campaign_id, &json!({"title": format!("r{i}")}).to_string()).await;
        let path = format!("{tasks}/{}", task["id"].as_str().unwrap());
        assert_eq!(
            app.get(&path, &app.key).await.status(),
            200,
            "GET right after 201"
        );
        let updated = app
            .json(Method::PUT, &path, &app.key, r#"{"status": "in_progress"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(updated.status(), 200);
        let fetched: Value = app.get(&path, &app.key).await.json().await.unwrap();
        assert_eq!(
            fetched["status"], "in_progress",
            "GET after PUT saw the old status"
        );
    }
}
