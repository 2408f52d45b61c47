//! Webhooks end to end, with real HTTP receivers on loopback: endpoints and
//! their secrets, signatures checked by our verifier and by the independent
//! `standardwebhooks` package, retries listed as attempts, order per
//! aggregate across an outage, and targets refused or not followed.

use marketing_e2e::{assert_error, spawn_app_with, TestApp, SEED_CREATE, SEED_UPDATE};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use test_support::receiver::{Received, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(60);

/// The service with fast retries; loopback receivers allowed or not.
async fn hooks_app(allow_private: bool) -> TestApp {
    spawn_app_with(|config| {
        config.webhooks_allow_private_targets = allow_private;
        config.webhooks_retry_base_ms = 20;
        config.webhooks_retry_max_ms = 200;
        config.webhooks_idle_poll_ms = 50;
    })
    .await
}

async fn create_endpoint(app: &TestApp, url: &str, events: &[&str]) -> Value {
    let body = json!({ "url": url, "events": events, "description": "test" }).to_string();
    let response = app
        .json(Method::POST, "/webhooks", &app.key, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// The endpoint's attempts (newest first) once there are at least `count`.
async fn attempts(app: &TestApp, endpoint: &Value, count: usize) -> Vec<Value> {
    let path = format!("/webhooks/{}/deliveries", endpoint["id"].as_str().unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        let page: Value = app.get(&path, &app.key).await.json().await.unwrap();
        let data = page["data"].as_array().unwrap().clone();
        if data.len() >= count {
            return data;
        }
        assert!(Instant::now() < deadline, "{count} attempts expected: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `PATCH` with a JSON body; the answer, which must be 200.
async fn patch(app: &TestApp, path: &str, body: &str) -> Value {
    let response = app
        .json(Method::PATCH, path, &app.key, body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn secret_of(endpoint: &Value) -> String {
    endpoint["secret"].as_str().unwrap().to_owned()
}

fn verify_ours(secret: &str, request: &Received) -> Result<(), webhooks::signature::SignatureError> {
    webhooks::signature::verify(
        secret,
        request.header("webhook-id"),
        request.header("webhook-timestamp"),
        request.header("webhook-signature"),
        &request.body,
        chrono::Utc::now().timestamp(),
    )
}

/// Runs `tests/support/standardwebhooks.sh` (the PyPI package in a private
/// venv) on a delivery; true if the package accepts it.
fn verify_with_standardwebhooks(secret: &str, request: &Received, body: &[u8]) -> bool {
    use base64::Engine;
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/support/standardwebhooks.sh");
    let input = json!({
        "secret": secret,
        "headers": {
            "webhook-id": request.header("webhook-id"),
            "webhook-timestamp": request.header("webhook-timestamp"),
            "webhook-signature": request.header("webhook-signature"),
        },
        "body": base64::engine::general_purpose::STANDARD.encode(body),
    });
    let mut child = std::process::Command::new("bash")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bash runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // A missing interpreter or a failed install is a broken test, not a
    // refused signature.
    assert!(
        !stderr.contains("No module named")
            && !stderr.contains("command not found")
            && !stderr.contains("ERROR:"),
        "the standardwebhooks venv could not be set up: {stderr}"
    );
    if output.status.success() {
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "verified");
    } else {
        assert!(
            stderr.contains("WebhookVerificationError"),
            "unexpected failure: {stderr}"
        );
    }
    output.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoints_are_managed_and_their_secret_is_shown_only_at_creation_and_rotation() {
    let app = hooks_app(true).await;
    let body = json!({ "url": "https://93.184.215.14/hooks", "events": ["*"] }).to_string();
    let response = app
        .json(Method::POST, "/webhooks", &app.key, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/dev/marketing/webhooks/{id}"));
    let secret = secret_of(&created);
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(created["enabled"], true);
    assert_eq!(created["description"], Value::Null);

    let path = format!("/webhooks/{id}");
    let fetched: Value = app.get(&path, &app.key).await.json().await.unwrap();
    assert!(fetched.get("secret").is_none(), "{fetched}");
    let listed: Value = app.get("/webhooks", &app.key).await.json().await.unwrap();
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(listed["data"][0].get("secret").is_none());

    let changes =
        json!({ "events": ["com.marketing.campaign.created.v1"], "description": "crm", "enabled": false });
    let patched: Value = patch(&app, &path, &changes.to_string()).await;
    assert_eq!(patched["events"], json!(["com.marketing.campaign.created.v1"]));
    assert_eq!(
        (&patched["description"], &patched["enabled"]),
        (&json!("crm"), &json!(false))
    );
    assert!(patched.get("secret").is_none());
    let cleared: Value = patch(&app, &path, r#"{"description": null}"#).await;
    assert_eq!(cleared["description"], Value::Null);

    let rotated = app
        .request(Method::POST, &format!("{path}/rotate-secret"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    assert!(secret_of(&rotated).starts_with("whsec_"));
    assert_ne!(secret_of(&rotated), secret);

    // Another project's endpoint does not exist for this one.
    let other = app.new_key("globex").await;
    assert_error(app.get(&path, &other).await, 404, "Webhook not found").await;
    assert_error(
        app.get("/webhooks/not-a-uuid", &app.key).await,
        404,
        "Webhook not found",
    )
    .await;

    for (bad, field) in [
        (json!({ "url": "https://93.184.215.14/", "events": [] }), "events"),
        (
            json!({ "url": "https://93.184.215.14/", "events": vec!["*"; 65] }),
            "events",
        ),
        (
            json!({ "url": "https://93.184.215.14/", "events": ["campaign.created"] }),
            "events[0]",
        ),
        (
            json!({ "url": "https://93.184.215.14/", "events": ["*"], "extra": 1 }),
            "extra",
        ),
        (
            json!({ "url": "https://93.184.215.14/", "events": ["*"], "description": "x".repeat(501) }),
            "description",
        ),
        (json!({ "url": "ftp://93.184.215.14/", "events": ["*"] }), "url"),
        (
            json!({ "url": format!("https://93.184.215.14/{}", "a".repeat(2048)), "events": ["*"] }),
            "url",
        ),
    ] {
        let response = app
            .json(Method::POST, "/webhooks", &app.key, &bad.to_string())
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], field, "{bad}: {error}");
    }

    // A retried create (same Idempotency-Key) answers the first response,
    // secret included, and creates nothing more.
    let body = json!({ "url": "https://93.184.215.14/other", "events": ["*"] }).to_string();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = app
            .json(Method::POST, "/webhooks", &app.key, &body)
            .header("Idempotency-Key", "hook-1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        answers.push(response.json::<Value>().await.unwrap());
    }
    assert_eq!(answers[0], answers[1]);
    let listed: Value = app.get("/webhooks", &app.key).await.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);

    let deleted = app.request(Method::DELETE, &path, &app.key).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_error(app.get(&path, &app.key).await, 404, "Webhook not found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_targets_are_refused_without_the_flag_at_creation_and_at_delivery() {
    let app = hooks_app(false).await;
    let receiver = Receiver::start().await;
    for url in [
        receiver.url(),
        format!("http://localhost:{}/hook", receiver.address.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.7/hook".to_owned(),
        "http://[::1]/hook".to_owned(),
        "http://[::ffff:127.0.0.1]/hook".to_owned(),
    ] {
        let body = json!({ "url": url, "events": ["*"] }).to_string();
        let response = app
            .json(Method::POST, "/webhooks", &app.key, &body)
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], "url", "{url}: {error}");
    }
    // At most 20 endpoints per project.
    for _ in 0..20 {
        create_endpoint(&app, "https://93.184.215.14/hook", &["com.marketing.none.v1"]).await;
    }
    let body = json!({ "url": "https://93.184.215.14/hook", "events": ["*"] }).to_string();
    let response = app
        .json(Method::POST, "/webhooks", &app.key, &body)
        .send()
        .await
        .unwrap();
    assert_error(response, 409, "A project may have at most 20 webhook endpoints").await;

    // An endpoint that points inward by the time of delivery (as after DNS
    // rebinding) is refused then too: written here behind the API's back.
    let other = app.new_key("initech").await;
    let client = app.db.connect().await;
    let mut endpoints = Vec::new();
    for url in [
        receiver.url(),
        format!("http://localhost:{}/hook", receiver.address.port()),
    ] {
        let id = uuid::Uuid::new_v4();
        client
            .execute(
                "INSERT INTO webhook_endpoints (id, project, url, events, secret, created_at, updated_at)
                 VALUES ($1, 'initech', $2, '{*}', $3, now(), now())",
                &[&id, &url, &webhooks::signature::new_secret()],
            )
            .await
            .unwrap();
        endpoints.push(json!({ "id": id }));
    }
    app.create_campaign(&other, SEED_CREATE).await;
    let other_app = TestApp { key: other, ..app };
    for endpoint in &endpoints {
        let attempt = &attempts(&other_app, endpoint, 1).await[0];
        assert_eq!(attempt["status_code"], Value::Null, "{attempt}");
        let error = attempt["error"].as_str().unwrap();
        assert!(error.contains("loopback, private"), "{error}");
    }
    assert!(
        receiver.received().is_empty(),
        "nothing reaches the private receiver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_verify_with_our_verifier_and_the_standardwebhooks_package() {
    let app = hooks_app(true).await;
    let receiver = Receiver::start().await;
    let endpoint = create_endpoint(&app, &receiver.url(), &["*"]).await;
    let secret = secret_of(&endpoint);
    let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
    let request = receiver.wait_for(1, WAIT).await.remove(0);

    assert_eq!(request.header("content-type"), "application/json");
    let body = request.json();
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["type"], "com.marketing.campaign.created.v1");
    assert_eq!(body["id"], request.header("webhook-id"));
    assert_eq!(
        body["subject"],
        format!("campaigns/{}", campaign["id"].as_str().unwrap())
    );
    assert_eq!(body["data"]["details"]["name"], "Summer Sale Campaign");
    // The body is the feed's item for the same event, byte for byte in meaning.
    let feed: Value = app.get("/events", &app.key).await.json().await.unwrap();
    assert_eq!(feed["data"][0], body);

    verify_ours(&secret, &request).expect("our verifier accepts it");
    assert!(verify_with_standardwebhooks(&secret, &request, &request.body));
    // The raw bytes are what is signed: re-serialised JSON does not verify.
    let reserialised = serde_json::to_vec_pretty(&body).unwrap();
    assert!(!verify_with_standardwebhooks(&secret, &request, &reserialised));
    assert!(verify_ours(&webhooks::signature::new_secret(), &request).is_err());

    // During a rotation both secrets verify.
    let rotated: Value = app
        .request(
            Method::POST,
            &format!("/webhooks/{}/rotate-secret", endpoint["id"].as_str().unwrap()),
            &app.key,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!("/campaigns/{}", campaign["id"].as_str().unwrap());
    let updated = app
        .json(Method::PUT, &path, &app.key, SEED_UPDATE)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let request = receiver.wait_for(2, WAIT).await.remove(1);
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
    verify_ours(&secret, &request).expect("the old secret still verifies");
    verify_ours(&secret_of(&rotated), &request).expect("the new secret verifies");
    assert!(verify_with_standardwebhooks(
        &secret_of(&rotated),
        &request,
        &request.body
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_twice_then_succeeding_is_three_attempts_listed() {
    let app = hooks_app(true).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(500)]);
    let endpoint = create_endpoint(&app, &receiver.url(), &["com.marketing.campaign.created.v1"]).await;
    app.create_campaign(&app.key, SEED_CREATE).await;
    let requests = receiver.wait_for(3, WAIT).await;
    let ids: Vec<&str> = requests.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one event, sent three times: {ids:?}"
    );
    assert!(requests.iter().all(|r| r.json() == requests[0].json()));

    let listed = attempts(&app, &endpoint, 3).await;
    let summary: Vec<(i64, Value, bool)> = listed
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap(),
                a["status_code"].clone(),
                a["next_retry_at"].is_null(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (3, json!(200), true),
            (2, json!(500), false),
            (1, json!(500), false)
        ],
        "{listed:?}"
    );
    assert!(listed.iter().all(|a| a["event_id"] == ids[0]));
    assert_eq!(listed[0]["succeeded"], true);
    assert_eq!(
        listed[1]["error"],
        "the endpoint answered 500 Internal Server Error"
    );
    assert!(listed.iter().all(|a| a["latency_ms"].as_i64().unwrap() >= 0));

    // A manual retry sends it once more.
    let retry = app
        .request(
            Method::POST,
            &format!(
                "/webhooks/{}/deliveries/{}/retry",
                endpoint["id"].as_str().unwrap(),
                ids[0]
            ),
            &app.key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 202);
    receiver.wait_for(4, WAIT).await;
    let missing = app
        .request(
            Method::POST,
            &format!(
                "/webhooks/{}/deliveries/{}/retry",
                endpoint["id"].as_str().unwrap(),
                uuid::Uuid::new_v4()
            ),
            &app.key,
        )
        .send()
        .await
        .unwrap();
    assert_error(missing, 404, "Delivery not found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_down_for_a_while_gets_everything_in_order_per_aggregate() {
    let app = hooks_app(true).await;
    let mut receiver = Receiver::start().await;
    let endpoint = create_endpoint(&app, &receiver.url(), &["*"]).await;
    receiver.down().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
        let path = format!("/campaigns/{}", campaign["id"].as_str().unwrap());
        for name in ["a", "b", "c"] {
            let body = json!({ "name": name }).to_string();
            let response = app
                .json(Method::PUT, &path, &app.key, &body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        streams.push(format!("campaign-{}", campaign["id"].as_str().unwrap()));
    }
    // Refused connections are failed attempts, retried.
    let failed = attempts(&app, &endpoint, 4).await;
    assert!(failed
        .iter()
        .all(|a| a["status_code"].is_null() && a["next_retry_at"].is_string()));
    receiver.up().await;
    let received = receiver.wait_for_distinct(12, WAIT).await;
    // First arrivals of each aggregate's events are in stream order.
    let order = test_support::receiver::first_arrivals_by_stream(&received);
    for stream in &streams {
        assert_eq!(order[stream], [0, 1, 2, 3], "{stream}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_is_not_followed() {
    let app = hooks_app(true).await;
    let inner = Receiver::start().await;
    let outer = Receiver::start().await;
    outer.script([Reply::Redirect(inner.url())]);
    let endpoint = create_endpoint(&app, &outer.url(), &["*"]).await;
    app.create_campaign(&app.key, SEED_CREATE).await;
    // The 307 is a failed attempt; the retry goes to the endpoint again.
    outer.wait_for(2, WAIT).await;
    let listed = attempts(&app, &endpoint, 2).await;
    assert_eq!(listed[1]["status_code"], 307, "{listed:?}");
    assert_eq!(listed[0]["status_code"], 200, "{listed:?}");
    assert!(inner.received().is_empty(), "the redirect target got nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_failing_for_the_whole_window_is_given_up_on_disabled_and_says_so() {
    let app = spawn_app_with(|config| {
        config.webhooks_allow_private_targets = true;
        config.webhooks_retry_base_ms = 20;
        config.webhooks_retry_max_ms = 100;
        config.webhooks_idle_poll_ms = 50;
        config.webhooks_give_up_after_secs = 1;
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.script(std::iter::repeat_n(Reply::Status(503), 10_000));
    let endpoint = create_endpoint(&app, &receiver.url(), &["*"]).await;
    app.create_campaign(&app.key, SEED_CREATE).await;
    let path = format!("/webhooks/{}", endpoint["id"].as_str().unwrap());
    let deadline = Instant::now() + WAIT;
    let disabled = loop {
        let current: Value = app.get(&path, &app.key).await.json().await.unwrap();
        if current["enabled"] == false {
            break current;
        }
        assert!(Instant::now() < deadline, "never disabled: {current}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("every delivery failed since"), "{reason}");
    // Given up: the last attempt has no next retry.
    let listed = attempts(&app, &endpoint, 2).await;
    assert!(listed[0]["next_retry_at"].is_null(), "{listed:?}");
    assert!(listed.iter().all(|a| a["status_code"] == 503));

    let enabled: Value = patch(&app, &path, r#"{"enabled": true}"#).await;
    assert_eq!(
        (&enabled["enabled"], &enabled["disabled_reason"]),
        (&json!(true), &Value::Null)
    );
}

/// The shard, of the app's dispatcher shards, of a delivery's campaign.
fn shard_of(app: &TestApp, request: &Received) -> usize {
    let campaign: uuid::Uuid = request.json()["campaignid"].as_str().unwrap().parse().unwrap();
    projector::Shard::of(campaign, app.config.webhooks_shards).index as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_endpoint_does_not_hold_up_the_others() {
    use webhooks::config::MAX_IN_FLIGHT;
    let app = hooks_app(true).await;
    let shards = app.config.webhooks_shards as usize;
    // A receiver that answers nothing until the test lets it.
    let slow = Receiver::start().await;
    slow.script(std::iter::repeat_n(Reply::Hold, 100_000));
    create_endpoint(&app, &slow.url(), &["com.marketing.campaign.created.v1"]).await;
    // More aggregates due to it in every shard than a shard's sender has
    // slots: without a per-endpoint bound they would take them all.
    let mut per_shard = vec![0usize; shards];
    let mut campaigns = 0;
    while per_shard.iter().any(|&n| n <= MAX_IN_FLIGHT) {
        let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
        let id: uuid::Uuid = campaign["id"].as_str().unwrap().parse().unwrap();
        per_shard[projector::Shard::of(id, shards as u32).index as usize] += 1;
        campaigns += 1;
    }
    slow.wait_for(1, WAIT).await;
    // Another endpoint gets all its events while the slow one holds on.
    let fast = Receiver::start().await;
    create_endpoint(&app, &fast.url(), &["*"]).await;
    const FAST: usize = 10;
    for _ in 0..FAST {
        app.create_campaign(&app.key, SEED_CREATE).await;
    }
    fast.wait_for_distinct(FAST, WAIT).await;
    // No shard gave the slow endpoint every slot (each gives it at most
    // MAX_IN_FLIGHT_PER_ENDPOINT per 10 s timeout round; none was answered).
    let mut slow_per_shard = vec![0usize; shards];
    for request in slow.received() {
        slow_per_shard[shard_of(&app, &request)] += 1;
    }
    assert!(
        slow_per_shard.iter().all(|&n| n < MAX_IN_FLIGHT),
        "requests to the slow endpoint per shard: {slow_per_shard:?}"
    );
    // Let go: the slow endpoint gets everything too.
    slow.clear_script();
    slow.release();
    slow.wait_for_distinct(campaigns + FAST, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_purges_old_attempts_and_finished_deliveries_but_not_pending_ones() {
    use webhooks::retention::{purge, Purged};
    let app = hooks_app(true).await;
    let up = Receiver::start().await;
    let mut down = Receiver::start().await;
    down.down().await;
    let delivered = create_endpoint(&app, &up.url(), &["*"]).await;
    let failing = create_endpoint(&app, &down.url(), &["*"]).await;
    app.create_campaign(&app.key, SEED_CREATE).await;
    attempts(&app, &delivered, 1).await;
    attempts(&app, &failing, 1).await;
    let pool = event_store::connect_pool(&app.db.url, 2).unwrap();
    let retention = app.config.webhooks().retention;
    // Nothing is old enough yet.
    let now = chrono::Utc::now();
    assert_eq!(purge(&pool, retention, now).await.unwrap(), Purged::default());
    // As if the retention period had passed.
    let later = now + chrono::TimeDelta::from_std(retention).unwrap() + chrono::TimeDelta::days(1);
    let purged = purge(&pool, retention, later).await.unwrap();
    assert!(purged.attempts >= 2, "{purged:?}");
    assert_eq!(purged.deliveries, 1, "{purged:?}");
    // The pending delivery stays (it is still retried); the list of the
    // delivered endpoint's attempts is empty now.
    let client = app.db.connect().await;
    let left: Vec<(uuid::Uuid, String)> = client
        .query("SELECT endpoint_id, state FROM webhook_deliveries", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let failing_id: uuid::Uuid = failing["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(left, [(failing_id, "pending".to_owned())]);
    let path = format!("/webhooks/{}/deliveries", delivered["id"].as_str().unwrap());
    let page: Value = app.get(&path, &app.key).await.json().await.unwrap();
    assert_eq!(page["data"], json!([]));
}
