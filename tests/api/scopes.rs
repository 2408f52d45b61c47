//! Scoped, expiring and rotated API keys (docs/api-design.md, "API keys").
//!
//! The matrix is generated from the OpenAPI document, where every route
//! declares its scope (the same declarations the access guard enforces): a
//! route added later is in it without anyone writing a case for it.

use marketing_e2e::{assert_error, spawn_app, TestApp, SEED_CREATE};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use web::{Scope, Scopes};

const UNAUTHORIZED: &str = "Invalid or missing API key";

async fn key_with(app: &TestApp, scopes: &[Scope], expires_in: Option<Duration>) -> (uuid::Uuid, String) {
    let project = domain::ProjectSlug::parse("acme").unwrap();
    let (info, secret) = app
        .keys()
        .create_scoped(&project, "scoped", Scopes::of(scopes.iter().copied()), expires_in)
        .await
        .expect("create key");
    (info.id, secret)
}

/// Real ids where the test has them, so allowed requests reach real
/// resources; any other id is a fresh one (a 404 is still "allowed").
fn fill(path: &str, ids: &[(&str, String)]) -> String {
    let mut filled = path.to_owned();
    while let Some(start) = filled.find('{') {
        let end = start + filled[start..].find('}').expect("closed parameter");
        let name = &filled[start + 1..end];
        let value = ids
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), |(_, v)| v.clone());
        filled.replace_range(start..=end, &value);
    }
    filled
}

#[tokio::test]
async fn every_operation_answers_403_to_every_scope_but_its_own() {
    let app = spawn_app().await;
    let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
    let campaign_id = campaign["id"].as_str().unwrap().to_owned();
    let lead = app
        .json(
            Method::POST,
            &format!("/campaigns/{campaign_id}/leads"),
            &app.key,
            r#"{"name":"Ada Lovelace","email":"ada@example.com"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(lead.status(), 201);
    let lead: Value = lead.json().await.unwrap();
    let ids = [
        ("campaign_id", campaign_id.clone()),
        ("lead_id", lead["id"].as_str().unwrap().to_owned()),
    ];

    let required = web::access::required_scopes(marketing::openapi::document())
        .expect("every operation declares one scope");
    for scope in Scope::ALL {
        assert!(
            required.iter().any(|(_, _, s)| *s == scope),
            "no operation needs {scope}: the matrix would not exercise it"
        );
    }
    let mut keys = Vec::new();
    for scope in Scope::ALL {
        keys.push((scope, key_with(&app, &[scope], None).await.1));
    }
    // Deletes last, so the resources the other operations use still exist.
    let mut operations = required.clone();
    operations.sort_by_key(|(method, _, _)| *method == Method::DELETE);
    for (method, path, needed) in &operations {
        let url = format!("{}{}", app.app.address, fill(path, &ids));
        for (scope, secret) in &keys {
            let mut request = app.client.request(method.clone(), &url).bearer_auth(secret);
            if [Method::POST, Method::PUT, Method::PATCH].contains(method) {
                request = request.header("content-type", "application/json").body("{}");
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            if scope == needed {
                assert!(
                    status != 401 && status != 403 && status < 500,
                    "{method} {path} with {scope}: {status} {}",
                    response.text().await.unwrap()
                );
            } else {
                let body =
                    assert_error(response, 403, &format!("This API key lacks the scope {needed}")).await;
                assert_eq!(
                    body,
                    json!({"message": format!("This API key lacks the scope {needed}"), "code": "insufficient_scope"}),
                    "{method} {path} with {scope}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_history_shows_lead_personal_data_only_with_leads_export() {
    let app = spawn_app().await;
    let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
    let campaign_id = campaign["id"].as_str().unwrap();
    let created = app
        .json(
            Method::POST,
            &format!("/campaigns/{campaign_id}/leads"),
            &app.key,
            r#"{"name":"Grace Hopper","email":"grace@example.com"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let history = |key: String| {
        let app = &app;
        async move {
            let response = app.get(&format!("/campaigns/{campaign_id}/history"), &key).await;
            assert_eq!(response.status(), 200);
            let page: Value = response.json().await.unwrap();
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["type"] == "LeadCreated")
                .expect("the lead's creation")["data"]
                .clone()
        }
    };
    let (_, history_only) = key_with(&app, &[Scope::HistoryRead], None).await;
    let withheld = history(history_only).await;
    assert_eq!(withheld["personal_data"], "withheld", "{withheld}");
    assert!(!withheld.to_string().contains("grace@example.com"), "{withheld}");
    assert!(withheld.get("ciphertext").is_none() && withheld.get("email").is_none());

    let (_, with_export) = key_with(&app, &[Scope::HistoryRead, Scope::LeadsExport], None).await;
    let shown = history(with_export).await;
    assert_eq!(shown["personal_data"], "present", "{shown}");
    assert_eq!(shown["email"], "grace@example.com");
}

#[tokio::test]
async fn an_expired_key_gets_the_seeds_401() {
    let app = spawn_app().await;
    let (_, secret) = key_with(&app, &Scope::ALL, Some(Duration::from_secs(1))).await;
    let expiry = Instant::now() + Duration::from_secs(1);
    // The scenario: the key's lifetime passes.
    tokio::time::sleep_until((expiry + Duration::from_millis(50)).into()).await;
    assert_error(app.get("/campaigns", &secret).await, 401, UNAUTHORIZED).await;

    // A live key that is made to expire (plain SQL, as an operator might) is
    // refused like a revoked one, within the key cache's bound.
    let (id, secret) = key_with(&app, &Scope::ALL, Some(Duration::from_secs(3600))).await;
    assert_eq!(app.get("/campaigns", &secret).await.status(), 200);
    app.db
        .connect()
        .await
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = app.get("/campaigns", &secret).await;
        if response.status() == 401 {
            assert_error(response, 401, UNAUTHORIZED).await;
            break;
        }
        assert!(Instant::now() < deadline, "the expired key kept working");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `secret` gets `status` on `GET /campaigns` (a key change made
/// by another process reaches this one's cache within a second).
async fn until_status(app: &TestApp, secret: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if app.get("/campaigns", secret).await.status() == status {
            return;
        }
        assert!(Instant::now() < deadline, "never {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rotated_key_keeps_its_old_secret_for_the_grace_period_only() {
    let app = spawn_app().await;
    let (id, first) = key_with(&app, &[Scope::CampaignsRead, Scope::CampaignsWrite], None).await;
    assert_eq!(app.get("/campaigns", &first).await.status(), 200);

    let (info, second) = app
        .keys()
        .rotate(id, Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    assert_eq!(info.id, id, "the same key, a new secret");
    assert_ne!(first, second);
    assert!(info.previous_secret_until.is_some());
    until_status(&app, &second, 200).await;
    assert_eq!(
        app.get("/campaigns", &first).await.status(),
        200,
        "within the grace period"
    );

    // Writes with the new secret are the same key's: the audit trail says so.
    let campaign = app.create_campaign(&second, SEED_CREATE).await;
    let history: Value = app
        .get(
            &format!("/campaigns/{}/history", campaign["id"].as_str().unwrap()),
            &app.key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["data"][0]["actor"]["api_key_id"], json!(id));
    // Scopes follow the key, not the secret.
    assert_eq!(app.get("/events", &second).await.status(), 403);

    // A rotation without grace ends every earlier secret at once.
    let (_, third) = app.keys().rotate(id, Duration::ZERO).await.unwrap();
    until_status(&app, &first, 401).await;
    until_status(&app, &second, 401).await;
    assert_error(app.get("/campaigns", &second).await, 401, UNAUTHORIZED).await;
    assert_eq!(app.get("/campaigns", &third).await.status(), 200);

    let listed = app.keys().list().await.unwrap();
    let listed = listed.iter().find(|k| k.id == id).unwrap();
    assert_eq!(listed.key_prefix, third[..10]);
    assert_eq!(listed.previous_secret_until, None);

    // Neither a revoked nor an unknown key can be rotated.
    assert!(app.keys().revoke(id).await.unwrap());
    assert!(matches!(
        app.keys().rotate(id, Duration::ZERO).await,
        Err(web::auth::RotateError::NotFound(_))
    ));
}

#[tokio::test]
async fn last_use_is_recorded_in_batches_not_per_request() {
    let app = spawn_app().await;
    let (id, secret) = key_with(&app, &[Scope::CampaignsRead], None).await;
    let before = chrono::Utc::now();
    assert_eq!(app.get("/campaigns", &secret).await.status(), 200);
    // Refused requests are uses too.
    assert_eq!(app.get("/events", &secret).await.status(), 403);
    app.app.api_keys.flush_usage().await.unwrap();
    let listed = app.keys().list().await.unwrap();
    let key = listed.iter().find(|k| k.id == id).unwrap();
    let used = key.last_used_at.expect("recorded");
    assert!(used >= before - chrono::Duration::seconds(1), "{used} {before}");
    assert_eq!(key.scopes, Scopes::of([Scope::CampaignsRead]));
    let unused = listed.iter().find(|k| k.id != id).unwrap();
    assert_eq!(
        unused.key_prefix,
        app.key[..10],
        "the app's own key, not used here"
    );
    assert_eq!(unused.last_used_at, None);
}
