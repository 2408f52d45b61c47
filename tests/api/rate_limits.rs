//! Per-key rate limits (docs/operations.md, "Rate limits"). The limits are
//! chosen so that timing cannot flip an outcome: the rate is 1 request per
//! second and the bursts are hundreds, so a refill could change a count only
//! if the requests took minutes.

use marketing::startup::Role;
use marketing_e2e::{spawn_app_with, RunningApp, TestApp, SEED_CREATE};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response};
use serde_json::Value;
use std::time::{Duration, Instant};

fn header(response: &Response, name: &str) -> u64 {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

async fn limited(per_second: u32, burst: u32) -> TestApp {
    spawn_app_with(|config| {
        config.rate_limit_per_second = per_second;
        config.rate_limit_burst = burst;
    })
    .await
}

/// Waits until `process` counts `n` live API processes (heartbeats).
async fn until_processes(process: &RunningApp, n: u32) {
    let limits = process.api_keys.rate_limits().expect("limits on");
    let deadline = Instant::now() + Duration::from_secs(30);
    while limits.processes() != n {
        assert!(Instant::now() < deadline, "never saw {n} processes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `n` GETs with `key` to `address` one after another: how many were
/// admitted, and how long it took.
async fn burst(app: &TestApp, address: &str, key: &str, n: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut admitted = 0;
    for _ in 0..n {
        let response = app
            .client
            .get(format!("{address}{}/campaigns", marketing_e2e::BASE))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    (admitted, started.elapsed())
}

#[tokio::test]
async fn two_processes_share_one_keys_limit() {
    // 400 at once across the deployment: one process alone would admit 300
    // requests in a row; sharing with a second it has 200 of them.
    let app = limited(1, 400).await;
    let other = RunningApp::start_with(app.config.clone(), Role::QueryApi).await;
    until_processes(&app.app, 2).await;
    until_processes(&other, 2).await;

    let (admitted, took) = burst(&app, &app.app.address, &app.key, 300).await;
    // A refill of one per 2 s (1/s shared by two) over however long it took.
    let refilled = (took.as_secs_f64() / 2.0).ceil() as usize;
    assert!(
        admitted >= 200 && admitted <= 200 + refilled,
        "{admitted} admitted in {took:?}"
    );
    assert!(admitted < 300, "the shared limit refused some ({took:?})");
    // The other process still has its share.
    let (admitted_there, _) = burst(&app, &other.address, &app.key, 1).await;
    assert_eq!(admitted_there, 1);

    // A process that stops leaves at once: the one left has the whole limit
    // (its share starts afresh, full, when the count changes).
    other.stop().await;
    until_processes(&app.app, 1).await;
    let (admitted, _) = burst(&app, &app.app.address, &app.key, 300).await;
    assert_eq!(admitted, 300);
}

#[tokio::test]
async fn responses_carry_the_headers_and_a_429_says_when_to_retry() {
    let app = limited(1, 3).await;
    let first = app.get("/campaigns", &app.key).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "ratelimit-limit"), 3);
    // The bucket starts full, so this is exact.
    assert_eq!(header(&first, "ratelimit-remaining"), 2);
    assert!(header(&first, "ratelimit-reset") <= 1);

    let mut refused = None;
    for _ in 0..100 {
        let response = app.get("/campaigns", &app.key).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let refused = refused.expect("a 429 within 100 requests at 1/s");
    assert_eq!(header(&refused, "ratelimit-remaining"), 0);
    assert_eq!(header(&refused, "ratelimit-limit"), 3);
    let retry_after = header(&refused, "retry-after");
    // One request per second, so the next is at most a second away.
    assert_eq!(retry_after, 1);
    assert!(refused.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("Rate limit"), "{body}");

    // Another key has a limit of its own.
    let other = app.new_key("acme").await;
    assert_eq!(app.get("/campaigns", &other).await.status(), 200);

    // A client that waits as told is served (the scenario is the wait).
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let retried = app.get("/campaigns", &app.key).await;
    assert_eq!(retried.status(), 200);
    assert!(retried.headers().contains_key("ratelimit-remaining"));
}

#[tokio::test]
async fn an_import_and_an_export_count_once() {
    let app = limited(1, 300).await;
    let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
    let leads = format!("/campaigns/{}/leads", campaign["id"].as_str().unwrap());
    let key = app.new_key("acme").await;
    let mut csv = String::from("name,email\n");
    for n in 0..1000 {
        csv.push_str(&format!("Lead {n},lead{n}@example.com\n"));
    }
    let form = Form::new().part(
        "file",
        Part::bytes(csv.into_bytes())
            .file_name("leads.csv")
            .mime_str("text/csv")
            .unwrap(),
    );
    let imported = app
        .multipart(Method::POST, &format!("{leads}/import"), &key, form)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200, "{:?}", imported.headers());
    // A fresh key's first request: the bucket was full, so exactly one taken.
    assert_eq!(header(&imported, "ratelimit-remaining"), 299);
    let report: Value = imported.json().await.unwrap();
    assert_eq!(report["imported"], 1000);

    let exported = app.get(&format!("{leads}/export"), &key).await;
    assert_eq!(exported.status(), 200);
    // At most one taken since (plus refills, which only raise it).
    assert!(header(&exported, "ratelimit-remaining") >= 298);
    let text = exported.text().await.unwrap();
    assert_eq!(text.lines().count(), 1001);
}
