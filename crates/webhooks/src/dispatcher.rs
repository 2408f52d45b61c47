//! The dispatcher: a log follower (leadership by advisory lock, fail-over,
//! checkpoint by compare-and-set, as the publisher's) whose handler fans
//! each event out into the outbox of every endpoint it matches, in the
//! transaction that moves its checkpoint. So every event lands in every
//! matching outbox exactly once, whatever crashes. While it leads, its
//! [`Sender`] delivers from the outbox.

use crate::config::WebhooksConfig;
use crate::outbound;
use crate::sender::Sender;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use event_store::follower::{self, Batch, Follower, FollowerConfig, Handled, Handler};
use event_store::{EventStore, LogPosition, RecordedEvent, StoreError};
use publisher::DataGate;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("connection pool error: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("event store error: {0}")]
    Store(#[from] StoreError),
}

/// An enabled endpoint, as the fan-out matches events against it.
struct Subscriber {
    id: Uuid,
    project: String,
    events: Vec<String>,
    created_at: DateTime<Utc>,
}

impl Subscriber {
    /// An endpoint gets the events of its project recorded since it was
    /// created, of the types it lists.
    fn wants(&self, project: &str, event_type: &str, recorded_at: DateTime<Utc>) -> bool {
        self.project == project
            && recorded_at >= self.created_at
            && self.events.iter().any(|e| e == "*" || e == event_type)
    }
}

/// The outbox rows of one batch, column by column.
#[derive(Default)]
struct Rows {
    endpoint_ids: Vec<Uuid>,
    event_ids: Vec<Uuid>,
    tx_ids: Vec<i64>,
    positions: Vec<i64>,
    stream_ids: Vec<String>,
    event_types: Vec<String>,
}

impl Rows {
    fn of(events: &[RecordedEvent], subscribers: &[Subscriber]) -> Self {
        let mut rows = Rows::default();
        for event in events {
            let Some(route) = outbound::public_route(event) else {
                continue;
            };
            let Some(project) = event.metadata.get("project").and_then(Value::as_str) else {
                continue;
            };
            let event_type = outbound::event_type(event, &route);
            for subscriber in subscribers
                .iter()
                .filter(|s| s.wants(project, &event_type, event.recorded_at))
            {
                rows.endpoint_ids.push(subscriber.id);
                rows.event_ids.push(event.event_id);
                rows.tx_ids.push(event.position.tx_id);
                rows.positions.push(event.position.position);
                rows.stream_ids.push(event.stream_id.clone());
                rows.event_types.push(event_type.clone());
            }
        }
        rows
    }
}

/// The follower's handler: fan-out, plus the sender's life.
struct Fanout {
    config: Arc<WebhooksConfig>,
    sender: Sender,
    prefixes: Vec<&'static str>,
    /// The running sender of this session.
    session: Option<(CancellationToken, JoinHandle<()>)>,
}

#[async_trait]
impl Handler for Fanout {
    type Error = DispatchError;

    fn name(&self) -> &str {
        &self.config.name
    }

    fn lock_key(&self) -> i64 {
        follower::lock_key("webhooks:", &self.config.name)
    }

    fn stream_prefixes(&self) -> Option<&[&str]> {
        Some(&self.prefixes)
    }

    fn became_active(&mut self, checkpoint: LogPosition) {
        metrics::gauge!("marketing_webhooks_active").set(1.0);
        tracing::info!(?checkpoint, "became the active webhook dispatcher");
    }

    fn stood_down(&mut self) {
        metrics::gauge!("marketing_webhooks_active").set(0.0);
    }

    async fn begin(&mut self, _shutdown: &CancellationToken) -> Result<bool, DispatchError> {
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.sender.clone().run(stop.clone()));
        self.session = Some((stop, task));
        Ok(true)
    }

    async fn end(&mut self, _graceful: bool) {
        if let Some((stop, task)) = self.session.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    async fn handle(
        &mut self,
        batch: Batch<'_>,
        _shutdown: &CancellationToken,
    ) -> Result<Handled, DispatchError> {
        let to = batch.last();
        let mut client = self.sender.pool.get().await?;
        let tx = client.transaction().await?;
        let subscribers: Vec<Subscriber> = tx
            .query(
                "SELECT id, project, events, created_at FROM webhook_endpoints WHERE enabled",
                &[],
            )
            .await?
            .iter()
            .map(|row| Subscriber {
                id: row.get(0),
                project: row.get(1),
                events: row.get(2),
                created_at: row.get(3),
            })
            .collect();
        let rows = Rows::of(&batch.events, &subscribers);
        if !rows.event_ids.is_empty() {
            tx.execute(
                "INSERT INTO webhook_deliveries
                     (endpoint_id, event_id, tx_id, position, stream_id, event_type, next_attempt_at)
                 SELECT u.*, now() FROM unnest($1::uuid[], $2::uuid[], $3::int8[], $4::int8[], $5::text[], $6::text[]) AS u
                 ON CONFLICT DO NOTHING",
                &[&rows.endpoint_ids, &rows.event_ids, &rows.tx_ids, &rows.positions, &rows.stream_ids, &rows.event_types],
            )
            .await?;
        }
        if !batch.commit_in(&tx, to).await? {
            return Ok(Handled::Moved);
        }
        tx.commit().await?;
        if !rows.event_ids.is_empty() {
            metrics::counter!("marketing_webhook_deliveries_queued_total")
                .increment(rows.event_ids.len() as u64);
            self.sender.wake.notify_one();
        }
        Ok(Handled::Committed(to))
    }

    fn failed(&self, error: &DispatchError, failures: u32) -> Duration {
        metrics::counter!("marketing_webhook_errors_total").increment(1);
        tracing::warn!(%error, failures, "webhook dispatcher failed; retrying");
        Duration::from_millis(100 * 2u64.pow(failures.min(6))).min(Duration::from_secs(5))
    }

    fn lost(&self, error: &DispatchError) {
        metrics::counter!("marketing_webhook_errors_total").increment(1);
        tracing::error!(%error, "webhook dispatcher lost its leadership; standing by");
    }
}

/// One dispatcher process's part: follows the log as the active instance or
/// stands by.
pub struct Dispatcher {
    follower: Follower,
    fanout: Fanout,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: Pool,
        gate: Arc<dyn DataGate>,
        config: WebhooksConfig,
        wake: Arc<Notify>,
    ) -> Self {
        let config = Arc::new(config);
        let follower = Follower::new(
            store,
            pool.clone(),
            FollowerConfig {
                batch_size: 1000,
                idle_poll: Duration::from_millis(500),
                standby_poll: Duration::from_secs(1),
            },
        );
        let prefixes = publisher::route::AGGREGATES.iter().map(|a| a.prefix).collect();
        Self {
            follower,
            fanout: Fanout {
                sender: Sender::new(pool, gate, config.clone(), wake),
                config,
                prefixes,
                session: None,
            },
        }
    }

    /// Ticks with the checkpoint: every event at or before it is in the outbox.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<LogPosition> {
        self.follower.progress()
    }

    /// Runs until `shutdown`; errors are logged and retried.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.follower.run(&mut self.fanout, &shutdown).await;
        tracing::info!("webhook dispatcher stopped");
    }
}
