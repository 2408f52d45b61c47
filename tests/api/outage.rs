//! The database goes away under load and comes back. On a private cluster the
//! test starts itself (`test_support::cluster`), so stopping it touches no other
//! test.
//!
//! What must hold: while Postgres is down every request that needs it answers
//! `503` with `Retry-After` and the JSON envelope (never `500`: a client cannot
//! tell that from a bug, and does not know to retry); `/readyz` says `503`; the
//! first request after Postgres accepts connections again succeeds (no stale
//! pooled connection is handed out); no acknowledged write is lost.

use marketing::config::Config;
use marketing::startup::Role;
use marketing_e2e::{RunningApp, TempDir, BASE, SEED_CREATE};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_support::cluster::PrivateCluster;

/// Concurrent clients writing and reading through the outage.
const CLIENTS: usize = 8;

#[derive(Default)]
struct Observed {
    ok: AtomicUsize,
    unavailable: AtomicUsize,
    /// Anything that is neither a success nor a well-formed 503.
    wrong: Mutex<Vec<String>>,
    /// Campaigns whose create answered 201.
    acknowledged: Mutex<Vec<String>>,
}

impl Observed {
    /// Checks one response; returns its body if it was a success.
    async fn record(&self, what: &str, response: reqwest::Result<reqwest::Response>) -> Option<Value> {
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                self.wrong
                    .lock()
                    .unwrap()
                    .push(format!("{what}: transport error {error}"));
                return None;
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let body: Option<Value> = response.json().await.ok();
        if status.is_success() {
            self.ok.fetch_add(1, Ordering::SeqCst);
            return body;
        }
        let well_formed_503 = status == StatusCode::SERVICE_UNAVAILABLE
            && retry_after.as_deref() == Some("1")
            && content_type.starts_with("application/json")
            && body.as_ref().is_some_and(|b| {
                b["code"] == "unavailable" && b["message"] == "The database is unavailable; retry shortly"
            });
        if well_formed_503 {
            self.unavailable.fetch_add(1, Ordering::SeqCst);
        } else {
            self.wrong.lock().unwrap().push(format!(
                "{what}: {status} retry-after={retry_after:?} content-type={content_type} body={body:?}"
            ));
        }
        None
    }
}

fn url(app: &RunningApp, path: &str) -> String {
    format!("{}{BASE}{path}", app.address)
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_answers_503_with_retry_after_and_the_first_request_after_it_succeeds() {
    let mut cluster = PrivateCluster::start();
    let media = TempDir::new("media");
    let mut config = Config::for_database(&cluster.url());
    config.media_dir = media.path().to_path_buf();
    let app = RunningApp::start_with(config, Role::Serve).await;
    let keys = web::ApiKeys::new(event_store::connect_pool(&cluster.url(), 2).unwrap());
    let project = domain::ProjectSlug::parse("acme").unwrap();
    let key = keys.create(&project, "outage").await.unwrap().1;
    drop(keys);
    let client = Client::new();
    let created = client
        .post(url(&app, "/campaigns"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(SEED_CREATE)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let campaign: Value = created.json().await.unwrap();
    let campaign_path = format!("/campaigns/{}", campaign["id"].as_str().unwrap());

    let observed = Arc::new(Observed::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let (observed, stop, client, key) = (observed.clone(), stop.clone(), client.clone(), key.clone());
        let (create_url, read_url, list_url) = (
            url(&app, "/campaigns"),
            url(&app, &campaign_path),
            url(&app, "/campaigns?limit=5"),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let response = client
                    .request(Method::POST, &create_url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("outage-{n}-{i}"))
                    .body(SEED_CREATE)
                    .send()
                    .await;
                if let Some(body) = observed.record("create", response).await {
                    let id = body["id"].as_str().unwrap().to_owned();
                    observed.acknowledged.lock().unwrap().push(id);
                }
                let response = client.get(&read_url).bearer_auth(&key).send().await;
                observed.record("get", response).await;
                let response = client.get(&list_url).bearer_auth(&key).send().await;
                observed.record("list", response).await;
            }
        }));
    }
    let ok_before = observed.ok.load(Ordering::SeqCst);
    wait_for("requests before the outage", Duration::from_secs(60), || {
        observed.ok.load(Ordering::SeqCst) >= ok_before + 50
    })
    .await;

    // Postgres stops (fast shutdown: sessions are ended with admin_shutdown).
    cluster.stop();
    let unavailable_before = observed.unavailable.load(Ordering::SeqCst);
    wait_for("503s during the outage", Duration::from_secs(60), || {
        observed.unavailable.load(Ordering::SeqCst) >= unavailable_before + 50
    })
    .await;
    let ready = client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "/readyz while the database is away");
    assert_eq!(ready.headers()["retry-after"], "1");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["code"], "not_ready");

    // Back: accepting connections when start_again returns. The very first
    // requests succeed (no waiting, so no dependence on the machine's speed):
    // pooled connections to the old server are verified and dropped, not used.
    cluster.start_again();
    let back = Instant::now();
    let ready = client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "/readyz once Postgres is back");
    let read = client
        .get(url(&app, &campaign_path))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "the first read after the outage");
    let write = client
        .post(url(&app, "/campaigns"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(SEED_CREATE)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 201, "the first write after the outage");
    eprintln!(
        "recovered {:?} after Postgres accepted connections",
        back.elapsed()
    );

    // Load goes on after the outage, then stops.
    let ok_after = observed.ok.load(Ordering::SeqCst);
    wait_for("requests after the outage", Duration::from_secs(60), || {
        observed.ok.load(Ordering::SeqCst) >= ok_after + 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let wrong = observed.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "{} responses were neither a success nor a 503 with Retry-After and the envelope, e.g. {:?}\npostgres log:\n{}",
        wrong.len(),
        &wrong[..wrong.len().min(5)],
        cluster.log()
    );
    // Every acknowledged write is there.
    let acknowledged = observed.acknowledged.lock().unwrap().clone();
    for id in &acknowledged {
        let response = client
            .get(url(&app, &format!("/campaigns/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "acknowledged campaign {id} is readable");
    }
    eprintln!(
        "{} successes ({} creates acknowledged), {} well-formed 503s",
        observed.ok.load(Ordering::SeqCst),
        acknowledged.len(),
        observed.unavailable.load(Ordering::SeqCst)
    );
    app.stop().await;
}
