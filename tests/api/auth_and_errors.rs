//! Authentication, tenancy and the error contract.

use marketing_e2e::{assert_error, spawn_app, SEED_CREATE, SEED_UPDATE};
use reqwest::Method;
use serde_json::{json, Value};

const UNAUTHORIZED: &str = "Invalid or missing API key";

#[tokio::test]
async fn missing_malformed_unknown_and_revoked_keys_get_401() {
    let app = spawn_app().await;
    let url = app.url("/campaigns");
    let no_header = app.client.get(&url).send().await.unwrap();
    assert_error(no_header, 401, UNAUTHORIZED).await;
    for header in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Bearer mk_not_a_real_key",
        "Bearer not-even-our-format",
        "Token abc",
    ] {
        let response = app
            .client
            .get(&url)
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, UNAUTHORIZED).await;
    }
    // Writes are refused before the body is even looked at.
    let response = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, UNAUTHORIZED).await;
    // So is an Idempotency-Key, on JSON and upload routes alike: an
    // unauthenticated request learns nothing about what the key should be.
    let campaign = uuid::Uuid::new_v4();
    for path in ["/campaigns".to_owned(), format!("/campaigns/{campaign}/content")] {
        for key in ["", &"k".repeat(1000)] {
            let response = app
                .client
                .post(app.url(&path))
                .header("content-type", "application/json")
                .header("idempotency-key", key)
                .body(SEED_CREATE)
                .send()
                .await
                .unwrap();
            assert_error(response, 401, UNAUTHORIZED).await;
        }
    }

    // Revocation takes effect immediately.
    let keys = app.keys();
    let project = domain::ProjectSlug::parse("acme").unwrap();
    let (info, secret) = keys.create(&project, "temporary").await.unwrap();
    assert_eq!(app.get("/campaigns", &secret).await.status(), 200);
    assert!(keys.revoke(info.id).await.unwrap());
    assert_error(app.get("/campaigns", &secret).await, 401, UNAUTHORIZED).await;
    assert!(
        !keys.revoke(info.id).await.unwrap(),
        "revoking twice reports nothing revoked"
    );
    assert_eq!(
        app.get("/campaigns", &app.key).await.status(),
        200,
        "other keys unaffected"
    );
}

#[tokio::test]
async fn other_projects_data_is_invisible() {
    let app = spawn_app().await;
    let other = app.new_key("globex").await;
    let created = app.create_campaign(&app.key, SEED_CREATE).await;
    let path = format!("/campaigns/{}", created["id"].as_str().unwrap());
    assert_error(app.get(&path, &other).await, 404, "Campaign not found").await;
    let put = app
        .json(Method::PUT, &path, &other, SEED_UPDATE)
        .send()
        .await
        .unwrap();
    assert_error(put, 404, "Campaign not found").await;
    let patch = app
        .json(
            Method::PATCH,
            &format!("{path}/status"),
            &other,
            r#"{"status": "active"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_error(patch, 404, "Campaign not found").await;
    let delete = app.request(Method::DELETE, &path, &other).send().await.unwrap();
    assert_error(delete, 404, "Campaign not found").await;
    let theirs: Value = app.get("/campaigns", &other).await.json().await.unwrap();
    assert_eq!(theirs["data"], json!([]));
    // And the owner's campaign is untouched.
    let mine: Value = app.get(&path, &app.key).await.json().await.unwrap();
    assert_eq!(mine["version"], 0);
    // Another project's campaign in the owner's list? Never.
    app.create_campaign(&other, r#"{"name": "Globex launch"}"#).await;
    let mine: Value = app.get("/campaigns", &app.key).await.json().await.unwrap();
    assert_eq!(mine["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn content_type_body_size_and_unknown_routes_get_json_errors() {
    let app = spawn_app().await;
    let wrong_type = app
        .request(Method::POST, "/campaigns", &app.key)
        .header("content-type", "text/plain")
        .body(SEED_CREATE)
        .send()
        .await
        .unwrap();
    assert_error(wrong_type, 415, "Content-Type must be application/json").await;
    let no_type = app
        .request(Method::POST, "/campaigns", &app.key)
        .body(SEED_CREATE)
        .send()
        .await
        .unwrap();
    assert_error(no_type, 415, "").await;

    let huge = format!(
        r#"{{"name": "x", "description": "{}"}}"#,
        "a".repeat(1024 * 1024 + 10) // just over the documented 1 MiB, under axum's 2 MB default
    );
    let too_large = app
        .json(Method::POST, "/campaigns", &app.key, &huge)
        .send()
        .await
        .unwrap();
    let error = assert_error(too_large, 413, "").await;
    assert!(
        error["message"].as_str().unwrap().contains("too large"),
        "{error}"
    );
    // Just under the limit, but the description is over its own length limit: 400.
    let long = format!(r#"{{"name": "x", "description": "{}"}}"#, "a".repeat(20_000));
    let response = app
        .json(Method::POST, "/campaigns", &app.key, &long)
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(response, 400, "").await["field"], "description");

    let unknown = app
        .client
        .get(format!("{}/nowhere", app.app.address))
        .send()
        .await
        .unwrap();
    assert_error(unknown, 404, "Not found").await;
    let wrong_method = app
        .request(Method::PATCH, "/campaigns", &app.key)
        .send()
        .await
        .unwrap();
    assert_error(wrong_method, 405, "Method not allowed").await;
    let list: Value = app.get("/campaigns", &app.key).await.json().await.unwrap();
    assert_eq!(list["data"], json!([]), "nothing was written");
}

#[tokio::test]
async fn server_faults_are_opaque_500s() {
    let app = spawn_app().await;
    let created = app.create_campaign(&app.key, SEED_CREATE).await;
    // Break the read model under the running service: a fault we cannot cause
    // through the API.
    let client = app.db.connect().await;
    client
        .batch_execute("ALTER TABLE campaigns RENAME TO campaigns_broken")
        .await
        .unwrap();
    let response = app
        .get(
            &format!("/campaigns/{}", created["id"].as_str().unwrap()),
            &app.key,
        )
        .await;
    let body = assert_error(response, 500, "Something went wrong").await;
    let text = body.to_string();
    assert!(
        !text.contains("campaigns_broken") && !text.contains("relation"),
        "{text}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only message and code: {body}"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_client_ids_are_kept() {
    let app = spawn_app().await;
    let response = app
        .request(Method::GET, "/campaigns", &app.key)
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let created = app
        .json(Method::POST, "/campaigns", &app.key, r#"{"name": "x"}"#)
        .header("x-request-id", "create-42")
        .send()
        .await
        .unwrap();
    assert_eq!(created.headers()["x-request-id"], "create-42");
    let body: Value = created.json().await.unwrap();
    // The request id reaches the event metadata, for auditors.
    let client = app.db.connect().await;
    let metadata: Value = client
        .query_one(
            "SELECT metadata FROM events WHERE stream_id = $1",
            &[&format!("campaign-{}", body["id"].as_str().unwrap())],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(metadata["request_id"], "create-42");
    assert_eq!(metadata["project"], "acme");
    assert!(metadata["api_key_id"].is_string());
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/nowhere"] {
        let response = app
            .client
            .get(format!("{}{path}", app.app.address))
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("x-request-id"), "{path}");
    }
}
