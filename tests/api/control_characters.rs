//! Control characters in any text the API accepts: one rule (`web::text_guard`),
//! applied before any work on every input path. Tab, line feed and carriage
//! return are kept; U+0000 (which Postgres refuses), the other C0 controls, DEL
//! and C1 are a 400 in the validation envelope naming the field, and nothing is
//! recorded.

use marketing_e2e::{assert_error, spawn_app, TestApp, SEED_CREATE};
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::{json, Value};

async fn refused(app: &TestApp, method: Method, path: &str, body: &Value) -> Value {
    let response = app
        .json(method, path, &app.key, &body.to_string())
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 400, "").await;
    assert_eq!(error["code"], "validation_failed", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("control character U+"),
        "{error}"
    );
    error
}

fn seed() -> Value {
    serde_json::from_str(SEED_CREATE).unwrap()
}

#[tokio::test]
async fn json_bodies_at_any_depth_name_the_path() {
    let app = spawn_app().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "name": "a\u{0}b" }), "name"),
        (
            {
                let mut body = seed();
                body["target_audience"]["interests"] = json!(["technology", "a\u{0}b"]);
                body
            },
            "target_audience.interests[1]",
        ),
        (
            {
                let mut body = seed();
                body["channels"][0]["name"] = json!("Face\u{7f}book");
                body
            },
            "channels[0].name",
        ),
        (
            {
                let mut body = seed();
                body["description"] = json!("bell \u{7}");
                body
            },
            "description",
        ),
        (json!({ "name": "ok", "goals": { "prim\u{0}ary": "x" } }), "goals"),
        (json!({ "name": "c1 \u{85}" }), "name"),
    ];
    for (body, field) in cases {
        let error = refused(&app, Method::POST, "/campaigns", &body).await;
        assert_eq!(error["field"], field, "{body}");
    }
    assert_eq!(app.event_count("campaign-").await, 0, "nothing recorded");

    // Tab, line feed and carriage return are text; they round-trip.
    let mut body = seed();
    body["description"] = json!("line one\r\nline two\tindented");
    let created = app.create_campaign(&app.key, &body.to_string()).await;
    assert_eq!(created["description"], "line one\r\nline two\tindented");
    let id = created["id"].as_str().unwrap();

    // Updates and nested resources use the same extractor.
    let error = refused(
        &app,
        Method::PUT,
        &format!("/campaigns/{id}"),
        &json!({ "name": "x\u{0}" }),
    )
    .await;
    assert_eq!(error["field"], "name");
    let tasks = format!("/campaigns/{id}/tasks");
    let error = refused(
        &app,
        Method::POST,
        &tasks,
        &json!({ "title": "t", "description": "a\u{0}b" }),
    )
    .await;
    assert_eq!(error["field"], "description");
    let leads = format!("/campaigns/{id}/leads");
    let error = refused(
        &app,
        Method::POST,
        &leads,
        &json!({ "email": "a@example.com", "custom_fields": { "tier": "gold\u{0}" } }),
    )
    .await;
    assert_eq!(error["field"], "custom_fields.tier");
    assert_eq!(app.event_count("campaign-").await, 1);
    assert_eq!(app.event_count("task-").await, 0);
    assert_eq!(app.event_count("lead-").await, 0);
}

#[tokio::test]
async fn query_parameters_are_checked_before_any_work() {
    let app = spawn_app().await;
    let response = app.get("/campaigns?status=dr%00aft", &app.key).await;
    let error = assert_error(response, 400, "").await;
    assert_eq!(error["field"], "status");
    let response = app.get("/campaigns?limit=5&cursor=%1b", &app.key).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "cursor");
    let response = app.get("/campaigns?na%00me=x", &app.key).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "query");
    // Percent-encoded tab and newline are fine (and here simply match nothing).
    let response = app.get("/campaigns?status=draft", &app.key).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn multipart_text_fields_and_csv_cells_name_the_field() {
    let app = spawn_app().await;
    let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
    let id = campaign["id"].as_str().unwrap();
    let response = app
        .multipart(
            Method::POST,
            &format!("/campaigns/{id}/content"),
            &app.key,
            Form::new()
                .text("title", "Blog\u{0}Post")
                .text("content_type", "blog"),
        )
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 400, "").await;
    assert_eq!(error["field"], "title");
    // JSON on the content route too.
    let error = refused(
        &app,
        Method::POST,
        &format!("/campaigns/{id}/content"),
        &json!({ "title": "t", "content_type": "blog", "body": "a\u{0}" }),
    )
    .await;
    assert_eq!(error["field"], "body");
    assert_eq!(app.event_count("content-").await, 0);

    // A CSV row with a control character fails alone, naming line and column;
    // the other rows are imported.
    let csv = "email,name,tier\nann@example.com,Ann,gold\nbob@example.com,B\u{0}b,gold\ncid@example.com,Cid,si\u{1b}lver\n";
    let part = Part::bytes(csv.as_bytes().to_vec())
        .file_name("leads.csv")
        .mime_str("text/csv")
        .unwrap();
    let response = app
        .request(Method::POST, &format!("/campaigns/{id}/leads/import"), &app.key)
        .multipart(Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["imported"], 1, "{report}");
    assert_eq!(report["failed"], 2, "{report}");
    let errors: Vec<(u64, &str)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(errors, vec![(3, "name"), (4, "custom_fields.tier")]);
    assert!(report["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("U+0000"));
}
