//! The six campaign endpoints with the seed's bodies.

use marketing_e2e::{assert_error, spawn_app, SEED_CREATE, SEED_UPDATE};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn seed_create_returns_201_location_etag_and_exact_money() {
    let app = spawn_app().await;
    let response = app
        .json(Method::POST, "/campaigns", &app.key, SEED_CREATE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["etag"], "\"0\"");
    let raw = response.text().await.unwrap();
    // Money comes back as the exact JSON number that went in.
    assert!(raw.contains(r#""total_budget":10000.00"#), "{raw}");
    assert!(raw.contains(r#""budget_allocation":5000.00"#), "{raw}");
    let body: Value = serde_json::from_str(&raw).unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/dev/marketing/campaigns/{id}"));
    assert_eq!(body["name"], "Summer Sale Campaign");
    assert_eq!(body["type"], "sales");
    assert_eq!(body["status"], "draft");
    assert_eq!(body["project"], "acme");
    assert_eq!(body["version"], 0);
    assert_eq!(body["target_audience"]["age_range"], json!([25, 45]));
    assert_eq!(body["goals"]["kpis"][0]["metric"], "conversions");
    assert_eq!(body["channels"][0]["platform"], "facebook");
    assert_eq!(body["kpis"][0]["unit"], "count");

    // The Location resolves to the same resource, byte for byte.
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
}

#[tokio::test]
async fn seed_update_changes_core_attributes_and_bumps_the_version() {
    let app = spawn_app().await;
    let created = app.create_campaign(&app.key, SEED_CREATE).await;
    let path = format!("/campaigns/{}", created["id"].as_str().unwrap());
    let response = app
        .json(Method::PUT, &path, &app.key, SEED_UPDATE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let raw = response.text().await.unwrap();
    assert!(raw.contains(r#""total_budget":15000.00"#), "{raw}");
    let updated: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(updated["name"], "Updated Campaign Name");
    assert_eq!(updated["description"], "Updated description");
    assert_eq!(updated["version"], 1);
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_ne!(updated["updated_at"], created["updated_at"]);
    // Untouched attributes stay.
    assert_eq!(updated["channels"], created["channels"]);
    let fetched = app.get(&path, &app.key).await.text().await.unwrap();
    assert_eq!(fetched, raw, "GET after PUT returns what PUT returned");

    // A PUT that changes nothing is a 200 with the same version.
    let same = app
        .json(Method::PUT, &path, &app.key, SEED_UPDATE)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
    assert_eq!(same.headers()["etag"], "\"1\"");

    // null clears an optional field; the whole resource may be echoed back.
    let mut echo = updated.clone();
    echo["description"] = Value::Null;
    let cleared: Value = app
        .json(Method::PUT, &path, &app.key, &echo.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["description"], Value::Null);
    assert_eq!(cleared["version"], 2);
}

#[tokio::test]
async fn update_validation_and_status_field() {
    let app = spawn_app().await;
    let created = app.create_campaign(&app.key, SEED_CREATE).await;
    let path = format!("/campaigns/{}", created["id"].as_str().unwrap());
    let cases = [
        (r#"{"total_budget": 100}"#, "channels"),
        (r#"{"end_date": "2020-01-01T00:00:00Z"}"#, "end_date"),
        (r#"{"name": ""}"#, "name"),
        (r#"{"name": null}"#, "name"),
        (r#"{"status": "active"}"#, "status"),
        (r#"{"total_budget": "lots"}"#, "total_budget"),
        (r#"{"nickname": "x"}"#, "nickname"),
    ];
    for (body, field) in cases {
        let response = app.json(Method::PUT, &path, &app.key, body).send().await.unwrap();
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], field, "body {body}: {error}");
        assert!(error["message"].as_str().unwrap().len() > 3);
    }
    // Nothing was written by any of them.
    let current: Value = app.get(&path, &app.key).await.json().await.unwrap();
    assert_eq!(current["version"], 0);
}

#[tokio::test]
async fn status_follows_the_lifecycle() {
    let app = spawn_app().await;
    let created = app.create_campaign(&app.key, SEED_CREATE).await;
    let path = format!("/campaigns/{}/status", created["id"].as_str().unwrap());
    let change = |status: &str| {
        app.json(
            Method::PATCH,
            &path,
            &app.key,
            &json!({ "status": status }).to_string(),
        )
        .send()
    };
    let response = change("active").await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["status"].as_str(), body["version"].as_i64()),
        (Some("active"), Some(1))
    );
    assert_error(
        change("draft").await.unwrap(),
        409,
        "cannot change campaign status from active to draft",
    )
    .await;
    assert_eq!(change("paused").await.unwrap().status(), 200);
    assert_eq!(change("active").await.unwrap().status(), 200);
    assert_eq!(change("completed").await.unwrap().status(), 200);
    for next in ["active", "paused", "cancelled", "draft", "completed"] {
        assert_error(change(next).await.unwrap(), 409, "").await;
    }
    let error = assert_error(change("archived").await.unwrap(), 400, "").await;
    assert_eq!(error["field"], "status");
    let missing = app
        .json(Method::PATCH, &path, &app.key, "{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_error(missing, 400, "status is required").await["field"],
        "status"
    );
    let fetched: Value = app
        .get(
            &format!("/campaigns/{}", created["id"].as_str().unwrap()),
            &app.key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["status"], "completed");
}

#[tokio::test]
async fn new_campaigns_start_as_draft_or_active_only() {
    let app = spawn_app().await;
    let active = app
        .create_campaign(&app.key, r#"{"name": "Go", "status": "active"}"#)
        .await;
    assert_eq!(active["status"], "active");
    let default = app.create_campaign(&app.key, r#"{"name": "Plain"}"#).await;
    assert_eq!(
        (default["status"].as_str(), default["type"].as_str()),
        (Some("draft"), Some("other"))
    );
    for status in ["paused", "completed", "cancelled"] {
        let body = json!({ "name": "x", "status": status }).to_string();
        let response = app
            .json(Method::POST, "/campaigns", &app.key, &body)
            .send()
            .await
            .unwrap();
        assert_error(
            response,
            409,
            &format!("a new campaign must start as draft or active, not {status}"),
        )
        .await;
    }
}

#[tokio::test]
async fn create_validation_errors_name_the_field_and_write_nothing() {
    let app = spawn_app().await;
    let cases = [
        (r#"{"description": "no name"}"#, "name"),
        (r#"{"name": "   "}"#, "name"),
        (r#"{"name": "x", "type": "telepathy"}"#, "type"),
        (r#"{"name": "x", "status": "archived"}"#, "status"),
        (r#"{"name": "x", "total_budget": -5}"#, "total_budget"),
        (
            r#"{"name": "x", "start_date": "2024-06-30T00:00:00Z", "end_date": "2024-06-01T00:00:00Z"}"#,
            "end_date",
        ),
        (r#"{"name": "x", "start_date": "June 1st"}"#, "start_date"),
        (
            r#"{"name": "x", "total_budget": 100, "channels": [{"name": "a", "type": "t", "budget_allocation": 150}]}"#,
            "channels",
        ),
        (
            r#"{"name": "x", "target_audience": {"age_range": [50, 20]}}"#,
            "target_audience.age_range",
        ),
        (r#"{"name": "x", "kpis": [{"name": "k"}]}"#, "kpis[0].target"),
        (r#"{"name": 42}"#, "name"),
        (r#"[1, 2]"#, "body"),
        (r#"{"name": "x""#, "body"),
    ];
    for (body, field) in cases {
        let response = app
            .json(Method::POST, "/campaigns", &app.key, body)
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], field, "body {body}: {error}");
        assert_eq!(error["code"], "validation_failed");
    }
    let list: Value = app.get("/campaigns", &app.key).await.json().await.unwrap();
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn delete_makes_the_campaign_404_everywhere_and_keeps_history() {
    let app = spawn_app().await;
    let created = app.create_campaign(&app.key, SEED_CREATE).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/campaigns/{id}");
    let response = app.request(Method::DELETE, &path, &app.key).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.unwrap(), "");
    assert_error(app.get(&path, &app.key).await, 404, "Campaign not found").await;
    assert_error(
        app.json(Method::PUT, &path, &app.key, SEED_UPDATE)
            .send()
            .await
            .unwrap(),
        404,
        "Campaign not found",
    )
    .await;
    assert_error(
        app.json(
            Method::PATCH,
            &format!("{path}/status"),
            &app.key,
            r#"{"status":"active"}"#,
        )
        .send()
        .await
        .unwrap(),
        404,
        "Campaign not found",
    )
    .await;
    assert_error(
        app.request(Method::DELETE, &path, &app.key).send().await.unwrap(),
        404,
        "Campaign not found",
    )
    .await;
    let list: Value = app.get("/campaigns", &app.key).await.json().await.unwrap();
    assert_eq!(list["data"], json!([]));
    // The log still has both events, for auditors.
    let client = app.db.connect().await;
    let types: Vec<String> = client
        .query(
            "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version",
            &[&format!("campaign-{id}")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, vec!["CampaignCreated", "CampaignDeleted"]);
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_campaign_not_found() {
    let app = spawn_app().await;
    for id in ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "123"] {
        let path = format!("/campaigns/{id}");
        assert_error(app.get(&path, &app.key).await, 404, "Campaign not found").await;
        let put = app
            .json(Method::PUT, &path, &app.key, SEED_UPDATE)
            .send()
            .await
            .unwrap();
        assert_error(put, 404, "Campaign not found").await;
        let delete = app.request(Method::DELETE, &path, &app.key).send().await.unwrap();
        assert_error(delete, 404, "Campaign not found").await;
    }
}

#[tokio::test]
async fn if_match_turns_stale_writes_into_412() {
    let app = spawn_app().await;
    let created = app.create_campaign(&app.key, SEED_CREATE).await;
    let path = format!("/campaigns/{}", created["id"].as_str().unwrap());
    let put = |etag: &str, body: &str| {
        app.json(Method::PUT, &path, &app.key, body)
            .header("if-match", etag)
            .send()
    };
    let ok = put("\"0\"", r#"{"name": "First"}"#).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["etag"], "\"1\"");
    // Someone else's view from before that write is stale.
    assert_error(put("\"0\"", r#"{"name": "Second"}"#).await.unwrap(), 412, "").await;
    assert_error(put("garbage", r#"{"name": "Second"}"#).await.unwrap(), 412, "").await;
    assert_eq!(put("*", r#"{"name": "Any"}"#).await.unwrap().status(), 200);
    assert_eq!(put("W/\"2\"", r#"{"name": "Weak"}"#).await.unwrap().status(), 200);
    let status = app
        .json(
            Method::PATCH,
            &format!("{path}/status"),
            &app.key,
            r#"{"status":"active"}"#,
        )
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_error(status, 412, "").await;
    let delete = app
        .request(Method::DELETE, &path, &app.key)
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_error(delete, 412, "").await;
    let current: Value = app.get(&path, &app.key).await.json().await.unwrap();
    assert_eq!(
        (current["name"].as_str(), current["version"].as_i64()),
        (Some("Weak"), Some(3))
    );
    let delete = app
        .request(Method::DELETE, &path, &app.key)
        .header("if-match", "\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
}
