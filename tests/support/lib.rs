//! `spawn_app`: the real application (every role wired as `marketing serve`
//! wires it) on a free port, with a fresh database, and an HTTP client.

use marketing::config::Config;
use marketing::startup::{Application, Role};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use std::path::{Path, PathBuf};
use test_support::{fresh_database, TestDatabase};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const BASE: &str = "/v1/dev/marketing";

/// The seed's exact create body.
pub const SEED_CREATE: &str = r#"{ "name": "Summer Sale Campaign", "description": "Promotional campaign for summer products", "type": "sales", "status": "draft", "start_date": "2024-06-01T00:00:00Z", "end_date": "2024-08-31T23:59:59Z", "total_budget": 10000.00, "target_audience": { "age_range": [25, 45], "gender": ["male", "female"], "locations": ["US", "CA"], "interests": ["technology", "shopping"] }, "goals": { "primary": "Increase sales by 30%", "secondary": ["Brand awareness", "Customer retention"], "kpis": [ { "metric": "conversions", "target": 1000, "current": 0 } ] }, "channels": [ { "name": "Facebook Ads", "type": "social_media", "platform": "facebook", "budget_allocation": 5000.00, "start_date": "2024-06-01T00:00:00Z", "end_date": "2024-08-31T23:59:59Z" } ], "kpis": [ { "name": "Conversions", "target": 1000, "current": 0, "unit": "count" } ] }"#;

/// The seed's exact update body.
pub const SEED_UPDATE: &str =
    r#"{ "name": "Updated Campaign Name", "total_budget": 15000.00, "description": "Updated description" }"#;

pub struct RunningApp {
    pub address: String,
    /// The process's own keys, with its key cache.
    pub api_keys: web::ApiKeys,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), String>>>,
}

impl RunningApp {
    pub async fn start(database_url: &str, role: Role) -> Self {
        Self::start_with(Config::for_database(database_url), role).await
    }

    pub async fn start_with(config: Config, role: Role) -> Self {
        let app = Application::build(config, role)
            .await
            .expect("application builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let api_keys = app.api_keys();
        let shutdown = app.shutdown_token();
        let handle = tokio::spawn(async move { app.run_until_stopped().await.map_err(|e| format!("{e:#}")) });
        Self {
            address,
            api_keys,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Stops gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("app task").expect("app stopped cleanly");
        }
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct TestApp {
    pub app: RunningApp,
    pub db: TestDatabase,
    pub client: reqwest::Client,
    /// A key for project `acme`.
    pub key: String,
    /// This app's own MEDIA_DIR, removed when the test ends.
    pub media_dir: TempDir,
    /// The configuration the app was started with.
    pub config: Config,
}

/// A directory removed (with its contents) when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        Self(std::env::temp_dir().join(format!("mk-test-{label}-{}", uuid::Uuid::new_v4().simple())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Every regular file below the directory, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![self.0.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    found.push(path);
                }
            }
        }
        found.sort();
        found
    }

    /// The files once there are `count` of them (waiting up to 30 s): a refused
    /// upload's staged file is removed in the background, after the response.
    pub async fn files_once(&self, count: usize) -> Vec<PathBuf> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let files = self.files();
            if files.len() == count || std::time::Instant::now() >= deadline {
                return files;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with a chance to change the configuration first.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(fresh_database().await, configure).await
}

/// Like [`spawn_app_with`], on a database the test prepared (for example with
/// a projection's lock already taken).
pub async fn spawn_app_on(db: TestDatabase, configure: impl FnOnce(&mut Config)) -> TestApp {
    let media_dir = TempDir::new("media");
    let mut config = Config::for_database(&db.url);
    config.media_dir = media_dir.path().to_path_buf();
    configure(&mut config);
    let app = RunningApp::start_with(config.clone(), Role::Serve).await;
    let client = reqwest::Client::new();
    let mut test_app = TestApp {
        app,
        db,
        client,
        key: String::new(),
        media_dir,
        config,
    };
    test_app.key = test_app.new_key("acme").await;
    test_app
}

impl TestApp {
    pub fn keys(&self) -> web::ApiKeys {
        web::ApiKeys::new(event_store::connect_pool(&self.db.url, 2).expect("pool"))
    }

    /// Creates a key for `project` and returns its secret.
    pub async fn new_key(&self, project: &str) -> String {
        let project = domain::ProjectSlug::parse(project).expect("valid slug");
        self.keys().create(&project, "test").await.expect("create key").1
    }

    /// The service's `/metrics` text (Prometheus exposition format).
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.app.address))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// `path` below the base path, e.g. `/campaigns`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{BASE}{path}", self.app.address)
    }

    pub fn request(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    pub fn json(&self, method: Method, path: &str, key: &str, body: &str) -> RequestBuilder {
        self.request(method, path, key)
            .header("content-type", "application/json")
            .body(body.to_owned())
    }

    /// The id of a new campaign of the seed's body, created with [`Self::key`].
    pub async fn campaign(&self) -> String {
        self.create_campaign(&self.key, SEED_CREATE).await["id"]
            .as_str()
            .expect("a created campaign has an id")
            .to_owned()
    }

    pub async fn create_campaign(&self, key: &str, body: &str) -> Value {
        let response = self
            .json(Method::POST, "/campaigns", key, body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "create failed");
        response.json().await.unwrap()
    }

    /// A `multipart/form-data` request, as `curl -F` sends it.
    pub fn multipart(
        &self,
        method: Method,
        path: &str,
        key: &str,
        form: reqwest::multipart::Form,
    ) -> RequestBuilder {
        self.request(method, path, key).multipart(form)
    }

    /// How many events the log holds in streams starting with `prefix`.
    pub async fn event_count(&self, prefix: &str) -> i64 {
        self.db
            .connect()
            .await
            .query_one(
                "SELECT count(*) FROM events WHERE starts_with(stream_id, $1)",
                &[&prefix],
            )
            .await
            .expect("count events")
            .get(0)
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.request(Method::GET, path, key).send().await.unwrap()
    }
}

/// Asserts an error response: status, JSON content type, exact message.
pub async fn assert_error(response: Response, status: u16, message: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    assert!(
        response.headers().contains_key("x-request-id"),
        "error without x-request-id"
    );
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "error is not JSON: {content_type}"
    );
    let body: Value = response.json().await.unwrap();
    if !message.is_empty() {
        assert_eq!(body["message"], message, "body: {body}");
    }
    body
}
