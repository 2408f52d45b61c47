//! Replica reads (`READ_DATABASE_URL`) against a real streaming replica: a
//! private primary and a `pg_basebackup -R` standby of it that the test starts
//! itself (`test_support::replica`), with the roles as separate applications
//! (projector, command API, query API), each with its own watcher, as a split
//! deployment runs them.
//!
//! What must hold: a write the command API acknowledged is seen by the very
//! next GET through the query API, whether that GET is served by the replica
//! or (the replica paused or stopped) by the primary; writes answer while the
//! replica is gone.

use marketing::config::Config;
use marketing::startup::Role;
use marketing_e2e::{RunningApp, TempDir, BASE};
use reqwest::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use test_support::replica::ReplicatedCluster;

/// A request that takes longer than this hangs: far beyond any bound the
/// service has (READ_AFTER_WRITE_TIMEOUT_MS + READ_REPLICA_MAX_LAG_MS).
const HANG: Duration = Duration::from_secs(120);

struct Split {
    // Stopped before the clusters go away.
    queries: RunningApp,
    commands: RunningApp,
    projector: RunningApp,
    key: String,
    client: Client,
    _media: TempDir,
    cluster: ReplicatedCluster,
}

impl Split {
    /// The three roles on the cluster's primary, reads from its replica.
    async fn start(max_lag_ms: u64, check_interval_ms: u64) -> Self {
        let cluster = ReplicatedCluster::start();
        marketing::startup::migrate(&cluster.primary_url()).await.unwrap();
        let media = TempDir::new("media");
        let mut config = Config::for_database(&cluster.primary_url());
        config.media_dir = media.path().to_path_buf();
        config.read_database_url = Some(cluster.replica_url());
        config.read_replica_max_lag_ms = max_lag_ms;
        config.read_replica_check_interval_ms = check_interval_ms;
        let projector = RunningApp::start_with(config.clone(), Role::Projector).await;
        let commands = RunningApp::start_with(config.clone(), Role::CommandApi).await;
        let queries = RunningApp::start_with(config, Role::QueryApi).await;
        let keys = web::ApiKeys::new(event_store::connect_pool(&cluster.primary_url(), 2).unwrap());
        let key = keys
            .create(&domain::ProjectSlug::parse("acme").unwrap(), "replica")
            .await
            .unwrap()
            .1;
        let split = Self {
            queries,
            commands,
            projector,
            key,
            client: Client::builder().timeout(HANG).build().unwrap(),
            _media: media,
            cluster,
        };
        split.wait_for_reads_from(1.0, "the replica").await;
        split
    }

    async fn stop(self) {
        self.queries.stop().await;
        self.commands.stop().await;
        self.projector.stop().await;
    }

    /// A write through the command API; its status and body.
    async fn write(&self, method: reqwest::Method, path: &str, body: &str) -> (u16, Value) {
        let response = self
            .client
            .request(method, format!("{}{BASE}{path}", self.commands.address))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("the write answers");
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// A read through the query API; its status and body.
    async fn read(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{BASE}{path}", self.queries.address))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("the read answers");
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Creates a campaign and reads it back at once; then changes it and
    /// reads that back at once; then a task of it, listed at once.
    async fn write_then_read(&self, label: &str) {
        let name = format!("replica {label}");
        let (status, created) = self
            .write(
                reqwest::Method::POST,
                "/campaigns",
                &json!({ "name": name }).to_string(),
            )
            .await;
        assert_eq!(status, 201, "{label}: create: {created}");
        let path = format!("/campaigns/{}", created["id"].as_str().unwrap());
        let (status, fetched) = self.read(&path).await;
        assert_eq!(
            status, 200,
            "{label}: the query API did not see an acknowledged create"
        );
        assert_eq!(fetched, created, "{label}: the read is not the created campaign");

        let renamed = format!("{name}, renamed");
        let (status, updated) = self
            .write(
                reqwest::Method::PUT,
                &path,
                &json!({ "name": renamed }).to_string(),
            )
            .await;
        assert_eq!(status, 200, "{label}: update: {updated}");
        let (status, fetched) = self.read(&path).await;
        assert_eq!(status, 200, "{label}: read after update");
        assert_eq!(
            fetched, updated,
            "{label}: the read missed an acknowledged update"
        );
        assert_eq!(fetched["name"], renamed.as_str());

        let (status, task) = self
            .write(
                reqwest::Method::POST,
                &format!("{path}/tasks"),
                r#"{ "title": "Create ad copy" }"#,
            )
            .await;
        assert_eq!(status, 201, "{label}: task: {task}");
        let (status, tasks) = self.read(&format!("{path}/tasks")).await;
        assert_eq!(status, 200, "{label}: task list");
        assert_eq!(
            tasks["data"],
            json!([task]),
            "{label}: the list missed an acknowledged task"
        );
    }

    /// The query API's `/metrics`.
    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.queries.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls the query API's `marketing_read_replica_in_use` until it is
    /// `value` (1: reads from the replica, 0: from the primary).
    async fn wait_for_reads_from(&self, value: f64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let metrics = self.metrics().await;
            if sample(&metrics, "marketing_read_replica_in_use") == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "reads did not go to {what} within 60 s:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A sample of the Prometheus text: `name value` or `name{labels} value`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

fn counter(metrics: &str, series: &str) -> f64 {
    sample(metrics, series).unwrap_or(0.0)
}

const REPLICA_READS: &str = r#"marketing_reads_total{database="replica"}"#;
const PRIMARY_READS: &str = r#"marketing_reads_total{database="primary"}"#;
const WAIT_TIMEOUTS: &str = "marketing_read_replica_wait_timeouts_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_through_a_streaming_replica_see_every_acknowledged_write() {
    // A generous lag limit: under load the replica stays in use, so the reads
    // below are the replica's and the writes' wait for it is what is tested.
    let split = Split::start(10_000, 50).await;
    let before = split.metrics().await;
    for i in 0..50 {
        split.write_then_read(&i.to_string()).await;
    }
    let after = split.metrics().await;
    let from_replica = counter(&after, REPLICA_READS) - counter(&before, REPLICA_READS);
    let from_primary = counter(&after, PRIMARY_READS) - counter(&before, PRIMARY_READS);
    let waits = counter(&after, "marketing_read_replica_wait_seconds_count")
        - counter(&before, "marketing_read_replica_wait_seconds_count");
    let waited = counter(&after, "marketing_read_replica_wait_seconds_sum")
        - counter(&before, "marketing_read_replica_wait_seconds_sum");
    eprintln!(
        "reads: {from_replica} from the replica, {from_primary} from the primary; \
         writes waited for the replica {:.2} ms on average ({waits} waits)",
        1000.0 * waited / waits.max(1.0)
    );
    assert!(
        from_replica > 0.0,
        "no read was served by the replica ({from_primary} by the primary)"
    );
    assert!(sample(&after, "marketing_read_replica_lag_seconds").is_some());
    split.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_fall_back_to_the_primary_when_the_replica_lags_or_stops() {
    let split = Split::start(500, 50).await;
    split.write_then_read("healthy").await;

    // Replay paused: the replica answers, but falls behind with every write.
    // Each write waits for it to its bound and answers; the read after it is
    // the primary's, so it sees the write.
    split.cluster.pause_replay().await;
    let before = split.metrics().await;
    for i in 0..5 {
        split.write_then_read(&format!("paused {i}")).await;
    }
    split
        .wait_for_reads_from(0.0, "the primary while replay is paused")
        .await;
    let after = split.metrics().await;
    assert!(
        counter(&after, WAIT_TIMEOUTS) > counter(&before, WAIT_TIMEOUTS),
        "writes did not give up waiting for a paused replica"
    );
    assert!(counter(&after, PRIMARY_READS) > counter(&before, PRIMARY_READS));

    // Replay resumed: the replica catches up and serves reads again.
    split.cluster.resume_replay().await;
    split
        .wait_for_reads_from(1.0, "the replica once replay resumed")
        .await;
    split.write_then_read("resumed").await;

    // The replica stopped: writes answer (their wait for it is bounded),
    // reads go to the primary.
    let mut split = split;
    split.cluster.replica.stop();
    for i in 0..5 {
        split.write_then_read(&format!("stopped {i}")).await;
    }
    split
        .wait_for_reads_from(0.0, "the primary while the replica is down")
        .await;

    // Back: the watcher finds it again.
    split.cluster.replica.start_again();
    split
        .wait_for_reads_from(1.0, "the replica once it is back")
        .await;
    split.write_then_read("restarted").await;
    split.stop().await;
}
