//! What a sync job needs from the lead API: a duplicate-email `409` that names
//! the lead holding the address, an upsert keyed by email that stays one lead
//! under concurrent calls, and batches of creates or upserts answered item by
//! item.

use futures::future::join_all;
use marketing_e2e::{assert_error, spawn_app, TestApp};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use std::collections::HashSet;

const DUPLICATE: &str = "A lead with this email already exists in this campaign";

fn leads_path(campaign: &str) -> String {
    format!("/campaigns/{campaign}/leads")
}

fn upsert_path(campaign: &str, email: &str) -> String {
    // Percent-encoded as a client must: `+` and `@` are not path-safe for all.
    let encoded: String = email
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("{}/by-email/{encoded}", leads_path(campaign))
}

async fn send(app: &TestApp, method: Method, path: &str, body: &str) -> Response {
    app.json(method, path, &app.key, body).send().await.unwrap()
}

async fn create_lead(app: &TestApp, campaign: &str, body: &str) -> Value {
    let response = send(app, Method::POST, &leads_path(campaign), body).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn batch(app: &TestApp, campaign: &str, body: &Value) -> Value {
    let response = send(
        app,
        Method::POST,
        &format!("{}/batch", leads_path(campaign)),
        &body.to_string(),
    )
    .await;
    assert_eq!(response.status(), 207);
    response.json().await.unwrap()
}

async fn all_leads(app: &TestApp, campaign: &str) -> Vec<Value> {
    let response = app
        .get(&format!("{}?limit=500", leads_path(campaign)), &app.key)
        .await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["has_more"], false);
    page["data"].as_array().unwrap().clone()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.db.connect().await.query_one(sql, &[]).await.unwrap().get(0)
}

fn statuses(answer: &Value) -> Vec<u64> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn duplicate_email_409s_name_the_lead_that_has_the_address() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    let john = create_lead(
        &app,
        &campaign,
        r#"{"email": "john@example.com", "name": "John"}"#,
    )
    .await;
    let john_id = john["id"].as_str().unwrap();

    // A create with the address in another case.
    let response = send(
        &app,
        Method::POST,
        &leads_path(&campaign),
        r#"{"email": " JOHN@example.com"}"#,
    )
    .await;
    let body = assert_error(response, 409, DUPLICATE).await;
    assert_eq!(body["code"], "conflict");
    assert_eq!(body["existing_id"], john_id, "{body}");

    // An update of another lead onto the address.
    let ann = create_lead(&app, &campaign, r#"{"email": "ann@example.com"}"#).await;
    let ann_path = format!("{}/{}", leads_path(&campaign), ann["id"].as_str().unwrap());
    let response = send(&app, Method::PUT, &ann_path, r#"{"email": "John@Example.com"}"#).await;
    let body = assert_error(response, 409, DUPLICATE).await;
    assert_eq!(body["existing_id"], john_id, "{body}");

    // A replayed 409 (same Idempotency-Key) carries it too.
    let request = || {
        app.json(
            Method::POST,
            &leads_path(&campaign),
            &app.key,
            r#"{"email": "john@example.com"}"#,
        )
        .header("Idempotency-Key", "dup-1")
    };
    let first = assert_error(request().send().await.unwrap(), 409, DUPLICATE).await;
    let replay = request().send().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed = assert_error(replay, 409, DUPLICATE).await;
    assert_eq!(first["existing_id"], john_id);
    assert_eq!(replayed["existing_id"], john_id);

    // Once John is deleted, the address is free: a create succeeds.
    let john_path = format!("{}/{john_id}", leads_path(&campaign));
    let response = app
        .request(Method::DELETE, &john_path, &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    create_lead(&app, &campaign, r#"{"email": "john@example.com"}"#).await;
}

#[tokio::test]
async fn concurrent_upserts_of_one_email_make_exactly_one_lead() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    // 24 at once, in two spellings, each with its own name so that every
    // update is a real change that races the others for the lead's stream.
    let requests = (0..24).map(|i| {
        let email = if i % 2 == 0 {
            "race@example.com"
        } else {
            "RACE@Example.com"
        };
        let body = format!(r#"{{"name": "Racer {i}", "source": "sync"}}"#);
        let request = app.json(Method::PUT, &upsert_path(&campaign, email), &app.key, &body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, text)
        }
    });
    let answers = join_all(requests).await;
    let codes: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert!(answers.iter().all(|(s, _)| *s == 200 || *s == 201), "{answers:?}");
    assert_eq!(codes.iter().filter(|s| **s == 201).count(), 1, "{codes:?}");
    // Every answer is the same lead.
    let ids: HashSet<String> = answers
        .iter()
        .map(|(_, text)| {
            let lead: Value = serde_json::from_str(text).unwrap();
            lead["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let leads = all_leads(&app, &campaign).await;
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["id"].as_str(), ids.iter().next().map(String::as_str));
    assert!(leads[0]["name"].as_str().unwrap().starts_with("Racer "));
    assert_eq!(leads[0]["source"], "sync");
    // One stream, created once; one key, one claim.
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM events WHERE event_type = 'LeadCreated'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(DISTINCT stream_id) FROM events WHERE stream_id LIKE 'lead-%'"
        )
        .await,
        1
    );
    assert_eq!(count(&app, "SELECT count(*) FROM lead_keys").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM lead_email_claims").await, 1);
}

#[tokio::test]
async fn upsert_creates_then_updates_the_lead_with_the_address() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    let path = upsert_path(&campaign, "john+news@example.com");
    let response = send(
        &app,
        Method::PUT,
        &path,
        r#"{"name": "John Doe", "phone": "+1234567890", "status": "new", "custom_fields": {"plan": "pro"}}"#,
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"0\"");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["email"], "john+news@example.com");
    assert_eq!(created["name"], "John Doe");
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        location,
        format!("/v1/dev/marketing/campaigns/{campaign}/leads/{id}")
    );

    // Partial: status changes, the rest stays; null clears; the body may
    // repeat the address in another case.
    let response = send(
        &app,
        Method::PUT,
        &upsert_path(&campaign, "JOHN+news@example.com"),
        r#"{"status": "contacted", "phone": null, "email": "John+News@example.com"}"#,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert!(response.headers().get("location").is_none());
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["id"], id);
    assert_eq!(updated["status"], "contacted");
    assert_eq!(updated["name"], "John Doe");
    assert_eq!(updated["phone"], Value::Null);
    assert_eq!(
        updated["email"], "john+news@example.com",
        "the stored spelling stays"
    );
    assert_eq!(updated["custom_fields"], json!({"plan": "pro"}));
    // The same again changes nothing and records nothing.
    let response = send(&app, Method::PUT, &path, r#"{"status": "contacted"}"#).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert_eq!(all_leads(&app, &campaign).await.len(), 1);

    // Refusals, each naming its field, none writing anything.
    let response = send(&app, Method::PUT, &path, r#"{"email": "other@example.com"}"#).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "email");
    let response = send(&app, Method::PUT, &path, r#"{"status": null}"#).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "status");
    let response = send(&app, Method::PUT, &path, r#"{"colour": "red"}"#).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "colour");
    let response = send(
        &app,
        Method::PUT,
        &upsert_path(&campaign, "not an address"),
        r#"{"name": "X"}"#,
    )
    .await;
    assert_eq!(assert_error(response, 400, "").await["field"], "email");
    let response = send(
        &app,
        Method::PUT,
        &upsert_path("00000000-0000-0000-0000-000000000000", "a@example.com"),
        "{}",
    )
    .await;
    assert_error(response, 404, "Campaign not found").await;
    let response = send(
        &app,
        Method::PUT,
        &upsert_path("not-a-uuid", "a@example.com"),
        "{}",
    )
    .await;
    assert_error(response, 404, "Campaign not found").await;
    // Another project's campaign is not found either.
    let other = app.new_key("other").await;
    let response = app
        .json(Method::PUT, &path, &other, r#"{"name": "X"}"#)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "Campaign not found").await;
    assert_eq!(all_leads(&app, &campaign).await.len(), 1);
    assert_eq!(app.event_count("lead-").await, 2);

    // After a delete the address is free: the next upsert creates a new lead.
    let response = app
        .request(
            Method::DELETE,
            &location.replace("/v1/dev/marketing", ""),
            &app.key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = send(&app, Method::PUT, &path, r#"{"name": "John again"}"#).await;
    assert_eq!(response.status(), 201);
    let again: Value = response.json().await.unwrap();
    assert_ne!(again["id"], id);
}

#[tokio::test]
async fn a_batch_answers_each_item_in_order_and_writes_no_partial_item() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    let existing = create_lead(&app, &campaign, r#"{"email": "old@example.com"}"#).await;
    let answer = batch(
        &app,
        &campaign,
        &json!({"leads": [
            {"email": "a@example.com", "name": "A", "custom_fields": {"k": "v"}},
            {"email": "not an address", "name": "Bad"},
            {"email": "OLD@example.com"},
            {"email": "b@example.com", "status": "qualified"},
            {"email": "a@example.com", "name": "A twice"},
            {"email": "c@example.com", "status": "unknown"},
            "not an object",
            {"email": "d@example.com", "colour": "red"},
            {"name": "no email"},
            {"email": "e@example.com", "custom_fields": {"n": 1}},
            {"email": "f@example.com", "phone": "+1 555 0100"}
        ]}),
    )
    .await;
    assert_eq!(
        statuses(&answer),
        [201, 400, 409, 201, 409, 400, 400, 400, 400, 400, 201],
        "{answer}"
    );
    assert_eq!(
        (answer["created"].as_u64(), answer["failed"].as_u64()),
        (Some(3), Some(8))
    );
    assert_eq!(answer["updated"], 0);
    let results = answer["results"].as_array().unwrap();
    let ok_ids: Vec<&str> = [0, 3, 10]
        .iter()
        .map(|&i| {
            assert_eq!(results[i]["error"], Value::Null);
            results[i]["id"].as_str().unwrap()
        })
        .collect();
    for failed in [1, 2, 4, 5, 6, 7, 8, 9] {
        assert_eq!(results[failed]["id"], Value::Null, "{failed}");
        assert!(results[failed]["error"]["message"].is_string(), "{failed}");
    }
    // The fields named are the items' own.
    assert_eq!(results[1]["error"]["field"], "email");
    assert_eq!(results[5]["error"]["field"], "status");
    assert_eq!(results[7]["error"]["field"], "colour");
    assert_eq!(results[8]["error"]["field"], "email");
    assert_eq!(results[9]["error"]["field"], "custom_fields.n");
    // Duplicates name the holder: a lead from before, and an earlier item.
    assert_eq!(results[2]["error"]["existing_id"], existing["id"]);
    assert_eq!(results[4]["error"]["existing_id"], ok_ids[0]);
    assert_eq!(results[4]["error"]["code"], "conflict");

    // Read-after-write: listed at once; exactly the good items, whole.
    let leads = all_leads(&app, &campaign).await;
    assert_eq!(leads.len(), 4);
    let a = leads.iter().find(|l| l["id"] == ok_ids[0]).unwrap();
    assert_eq!(
        (a["name"].as_str(), a["custom_fields"]["k"].as_str()),
        (Some("A"), Some("v"))
    );
    assert_eq!(app.event_count("lead-").await, 4);
    assert_eq!(count(&app, "SELECT count(*) FROM lead_keys").await, 4);
    assert_eq!(count(&app, "SELECT count(*) FROM lead_email_claims").await, 4);

    // Upsert mode: the first updates, the second creates, the third updates
    // what the second made, the last has no key.
    let answer = batch(
        &app,
        &campaign,
        &json!({"mode": "upsert", "leads": [
            {"email": "A@example.com", "status": "converted"},
            {"email": "new@example.com", "name": "New"},
            {"email": "new@example.com", "phone": "+1 555 0199"},
            {"name": "no email"}
        ]}),
    )
    .await;
    assert_eq!(statuses(&answer), [200, 201, 200, 400], "{answer}");
    assert_eq!(
        (answer["created"].as_u64(), answer["updated"].as_u64()),
        (Some(1), Some(2))
    );
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["id"], ok_ids[0]);
    assert_eq!(results[1]["id"], results[2]["id"]);
    assert_eq!(results[3]["error"]["field"], "email");
    let leads = all_leads(&app, &campaign).await;
    assert_eq!(leads.len(), 5);
    let new = leads.iter().find(|l| l["email"] == "new@example.com").unwrap();
    assert_eq!(
        (new["name"].as_str(), new["phone"].as_str()),
        (Some("New"), Some("+1 555 0199"))
    );
    let a = leads.iter().find(|l| l["id"] == ok_ids[0]).unwrap();
    assert_eq!(
        (a["status"].as_str(), a["name"].as_str()),
        (Some("converted"), Some("A"))
    );
}

#[tokio::test]
async fn batch_limits_and_shape_are_checked_before_any_item() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    let path = format!("{}/batch", leads_path(&campaign));
    let items = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"email": format!("lead{i}@example.com")}))
            .collect()
    };
    let response = send(
        &app,
        Method::POST,
        &path,
        &json!({"leads": items(501)}).to_string(),
    )
    .await;
    let body = assert_error(response, 400, "").await;
    assert_eq!(body["field"], "leads");
    assert!(body["message"].as_str().unwrap().contains("500"), "{body}");
    let response = send(&app, Method::POST, &path, r#"{"leads": []}"#).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "leads");
    let response = send(&app, Method::POST, &path, r#"{"mode": "create"}"#).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "leads");
    let response = send(&app, Method::POST, &path, r#"{"leads": [{}], "mode": "merge"}"#).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "mode");
    let response = send(&app, Method::POST, &path, r#"{"leads": {}}"#).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "leads");
    let response = app
        .request(Method::POST, &path, &app.key)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(response, 415, "").await;
    let response = send(
        &app,
        Method::POST,
        "/campaigns/00000000-0000-0000-0000-000000000000/leads/batch",
        &json!({"leads": items(1)}).to_string(),
    )
    .await;
    assert_error(response, 404, "Campaign not found").await;
    assert_eq!(app.event_count("lead-").await, 0);
    // Exactly 500 is allowed, and all 500 are there when the answer comes.
    let answer = batch(&app, &campaign, &json!({"leads": items(500)})).await;
    assert_eq!(answer["created"], 500);
    let response = app
        .get(&format!("{}?limit=500", leads_path(&campaign)), &app.key)
        .await;
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 500);
    // GET of the batch route is not a lead lookup.
    let response = app.get(&path, &app.key).await;
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn a_batch_retried_with_its_idempotency_key_creates_nothing_twice() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    let path = format!("{}/batch", leads_path(&campaign));
    let body = json!({"leads": [
        {"email": "one@example.com"}, {"email": "two@example.com"}, {"email": "bad"}
    ]})
    .to_string();
    let request = || {
        app.json(Method::POST, &path, &app.key, &body)
            .header("Idempotency-Key", "batch-1")
    };
    let first = request().send().await.unwrap();
    assert_eq!(first.status(), 207);
    let first: Value = first.json().await.unwrap();
    let again = request().send().await.unwrap();
    assert_eq!(again.status(), 207);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    // Items got distinct ids derived from the key and their place.
    let ids: HashSet<&str> = first["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(app.event_count("lead-").await, 2);
    // The stored replay holds ids, never the addresses.
    let stored = "SELECT count(*) FROM idempotency_keys WHERE key = 'batch-1'";
    assert_eq!(count(&app, stored).await, 1);
    let personal = "SELECT count(*) FROM idempotency_keys
                    WHERE key = 'batch-1' AND (convert_from(response_body, 'UTF8') LIKE '%one@%'
                         OR convert_from(response_body, 'UTF8') LIKE '%two@%')";
    assert_eq!(count(&app, personal).await, 0, "{first}");
}
