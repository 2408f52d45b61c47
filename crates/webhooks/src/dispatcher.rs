//! The dispatcher: one log follower per shard ([`crate::layout`]; leadership
//! by lease, fail-over, checkpoint by compare-and-set, as the projections'
//! shards) whose handler fans each event of its shard out into the outbox of
//! every endpoint it matches, in the transaction that moves the shard's
//! checkpoint. So every event lands in every matching outbox exactly once,
//! whatever crashes. While it leads a shard, the shard's [`Sender`] delivers
//! that shard's deliveries from the outbox. The dispatcher processes divide
//! the shards between them ([`event_store::leases`]).

use crate::config::WebhooksConfig;
use crate::outbound;
use crate::sender::Sender;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use event_store::follower::{Batch, Follower, FollowerConfig, Handled, Handler};
use event_store::leases::Leases;
use event_store::{EventStore, LogPosition, RecordedEvent, StoreError};
use projector::Shard;
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
    #[error("{0}")]
    Layout(String),
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
    campaign_ids: Vec<Option<Uuid>>,
}

/// Whether `shard` fans `event` out: a public event of one of its campaigns.
fn fans_out(shard: Shard, event: &RecordedEvent) -> bool {
    shard.holds_event(event) && outbound::public_route(event).is_some()
}

impl Rows {
    fn of(shard: Shard, events: &[RecordedEvent], subscribers: &[Subscriber]) -> Self {
        let mut rows = Rows::default();
        for event in events.iter().filter(|e| shard.holds_event(e)) {
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
                rows.campaign_ids.push(projector::campaign_of(event));
            }
        }
        rows
    }
}

/// A shard's follower handler: fan-out, plus the shard's sender's life.
struct Fanout {
    shard: Shard,
    /// The shard's reader name (checkpoint row) and lock key.
    reader: String,
    lock_key: i64,
    sender: Sender,
    prefixes: Vec<&'static str>,
    /// The running sender of this session.
    session: Option<(CancellationToken, JoinHandle<()>)>,
}

#[async_trait]
impl Handler for Fanout {
    type Error = DispatchError;

    fn name(&self) -> &str {
        &self.reader
    }

    fn lock_key(&self) -> i64 {
        self.lock_key
    }

    /// The rows are the layout's ([`crate::layout::prepare`]), made by
    /// [`Dispatcher::run`] before the shards follow.
    fn creates_checkpoint(&self) -> bool {
        false
    }

    fn stream_prefixes(&self) -> Option<&[&str]> {
        Some(&self.prefixes)
    }

    fn wants(&self, events: &[RecordedEvent]) -> bool {
        events.iter().any(|e| fans_out(self.shard, e))
    }

    fn became_active(&mut self, checkpoint: LogPosition) {
        metrics::gauge!("marketing_webhooks_active", "shard" => self.shard_label()).set(1.0);
        tracing::info!(reader = %self.reader, ?checkpoint, "became the active webhook dispatcher of a shard");
    }

    fn stood_down(&mut self) {
        metrics::gauge!("marketing_webhooks_active", "shard" => self.shard_label()).set(0.0);
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
        let rows = Rows::of(self.shard, &batch.events, &subscribers);
        if !rows.event_ids.is_empty() {
            let shard = self.shard.index as i32;
            tx.execute(
                "INSERT INTO webhook_deliveries
                     (endpoint_id, event_id, tx_id, position, stream_id, event_type, campaign_id, shard, next_attempt_at)
                 SELECT u.*, $8, now()
                 FROM unnest($1::uuid[], $2::uuid[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::uuid[]) AS u
                 ON CONFLICT DO NOTHING",
                &[&rows.endpoint_ids, &rows.event_ids, &rows.tx_ids, &rows.positions, &rows.stream_ids, &rows.event_types, &rows.campaign_ids, &shard],
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
            self.sender.queued.notify_one();
        }
        Ok(Handled::Committed(to))
    }

    fn failed(&self, error: &DispatchError, failures: u32) -> Duration {
        metrics::counter!("marketing_webhook_errors_total").increment(1);
        tracing::warn!(reader = %self.reader, %error, failures, "webhook dispatcher failed; retrying");
        Duration::from_millis(100 * 2u64.pow(failures.min(6))).min(Duration::from_secs(5))
    }

    fn lost(&self, error: &DispatchError) {
        metrics::counter!("marketing_webhook_errors_total").increment(1);
        tracing::error!(reader = %self.reader, %error, "webhook dispatcher lost its leadership; standing by");
    }
}

impl Fanout {
    fn shard_label(&self) -> String {
        format!("{}/{}", self.shard.index, self.shard.count)
    }
}

/// One dispatcher process's part: a follower per shard, each leading its
/// shard or standing by, on one set of leases, so the dispatcher processes
/// divide the shards between them and take over those of one that dies.
pub struct Dispatcher {
    pool: Pool,
    config: Arc<WebhooksConfig>,
    shards: Vec<(Follower, Fanout)>,
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
        let count = config.shards.clamp(1, crate::config::MAX_SHARDS);
        let leases = Leases::for_group(pool.clone(), count as usize, &config.name);
        let prefixes: Vec<&'static str> = publisher::route::AGGREGATES.iter().map(|a| a.prefix).collect();
        let shards = Shard::all(count)
            .map(|shard| {
                let follower = Follower::new(
                    store.clone(),
                    pool.clone(),
                    FollowerConfig {
                        batch_size: 1000,
                        idle_poll: Duration::from_millis(500),
                        standby_poll: Duration::from_secs(1),
                    },
                )
                .with_leases(leases.clone());
                let reader = shard.reader_name(&config.name);
                let fanout = Fanout {
                    shard,
                    lock_key: crate::layout::reader_lock_key(&reader),
                    reader,
                    sender: Sender::new(
                        pool.clone(),
                        store.clone().log_reader(),
                        gate.clone(),
                        config.clone(),
                        wake.clone(),
                        shard,
                    ),
                    prefixes: prefixes.clone(),
                    session: None,
                };
                (follower, fanout)
            })
            .collect();
        Self { pool, config, shards }
    }

    /// True, per shard, while this process leads it.
    pub fn leading(&self) -> Vec<tokio::sync::watch::Receiver<bool>> {
        self.shards.iter().map(|(f, _)| f.leading()).collect()
    }

    /// Runs until `shutdown`; errors are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        if !self.prepare(&shutdown).await {
            return;
        }
        let retention = crate::retention::spawn(
            self.pool.clone(),
            self.config.clone(),
            self.shards.first().map(|(f, _)| f.leading()),
            shutdown.clone(),
        );
        let runs = self.shards.into_iter().map(|(follower, mut fanout)| {
            let shutdown = shutdown.clone();
            async move { follower.run(&mut fanout, &shutdown).await }
        });
        futures::future::join_all(runs).await;
        let _ = retention.await;
        tracing::info!("webhook dispatcher stopped");
    }

    /// Makes sure the checkpoint rows are this shard count's, retrying until
    /// they are or shutdown.
    async fn prepare(&self, shutdown: &CancellationToken) -> bool {
        let count = self.shards.len() as u32;
        loop {
            let prepared = match self.pool.get().await {
                Ok(mut client) => crate::layout::prepare(&mut client, &self.config.name, count).await,
                Err(error) => Err(error.into()),
            };
            match prepared {
                Ok(()) => return true,
                Err(error) => {
                    metrics::counter!("marketing_webhook_errors_total").increment(1);
                    tracing::error!(%error, "cannot start the webhook dispatcher's shards");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
