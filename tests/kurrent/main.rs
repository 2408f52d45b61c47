//! `marketing serve` with its event log in KurrentDB (`EVENT_STORE_URL`),
//! over real HTTP, with real Postgres for read models, checkpoints and the
//! vault, and a real Kafka-protocol broker.
//!
//! The KurrentDB side is **the sanctioned test double of the KurrentDB gRPC
//! API** (`test_support::kurrentdb`), in process, since no KurrentDB server can
//! run where this is built (docs/kurrentdb.md says what the double proves and
//! what it cannot). The application drives it through the real `kurrentdb`
//! client over real gRPC. Every test also checks that the Postgres `events`
//! table stayed empty: the log really is in KurrentDB.

mod leads;
mod writes;

use event_store::{EventStore, KurrentEventStore, RecordedEvent, Wakeups};
use marketing::config::Config;
use marketing_e2e::{spawn_app_with, TestApp};
use std::time::{Duration, Instant};
use test_support::kurrentdb::KurrentDbDouble;

/// The application on a fresh database, its log in a double of its own.
/// `app` is declared first so it stops before the double does.
pub struct KurrentApp {
    pub app: TestApp,
    pub double: KurrentDbDouble,
}

impl std::ops::Deref for KurrentApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

pub async fn spawn_on_kurrentdb(configure: impl FnOnce(&mut Config)) -> KurrentApp {
    let double = KurrentDbDouble::start().await;
    let url = double.url();
    let app = spawn_app_with(|config| {
        config.event_store_url = Some(url);
        configure(config);
    })
    .await;
    KurrentApp { app, double }
}

impl KurrentApp {
    /// A client of the double of its own, to look at the log directly.
    pub fn log(&self) -> KurrentEventStore {
        KurrentEventStore::connect(&self.double.url(), domain::upcast::ALL, Wakeups::new())
            .expect("connect to the double")
    }

    pub async fn stream(&self, stream_id: &str) -> Vec<RecordedEvent> {
        self.log().read_stream(stream_id).await.expect("read a stream")
    }

    /// Event types of one stream, oldest first.
    pub async fn types(&self, stream_id: &str) -> Vec<String> {
        self.stream(stream_id)
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// Nothing reached the Postgres `events` table.
    pub async fn assert_postgres_log_empty(&self) {
        assert_eq!(self.event_count("").await, 0, "events written to Postgres");
    }
}

/// Polls `check` until it is true, failing after 30 s.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
