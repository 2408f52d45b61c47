//! Drives the relay: leadership, producer sessions, rounds of read → produce →
//! await acknowledgements → checkpoint.

use crate::cloudevents::{self, OutgoingRecord};
use crate::config::{ConfigError, PublisherConfig};
use crate::gate::{DataGate, GateError, RoutedEvent};
use crate::kafka::{self, Producer};
use crate::route::{self, RouteError, TopicKind};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use event_store::{EventStore, LogPosition, RecordedEvent, StoreError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid publisher configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("connection pool error: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("event store error: {0}")]
    Store(#[from] StoreError),
    #[error("cannot route event at {position:?}: {source}")]
    Route {
        position: LogPosition,
        #[source]
        source: RouteError,
    },
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("delivery of event {event_id} failed: {error}")]
    Delivery { event_id: Uuid, error: KafkaError },
    #[error("no delivery report for {0:?}; replacing the producer")]
    Stalled(Duration),
    #[error("checkpoint moved by another instance to {0:?}")]
    CheckpointMoved(LogPosition),
}

impl PublishError {
    /// A short label for the errors metric.
    fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Kafka(_) => "kafka",
            Self::Database(_) | Self::Pool(_) | Self::Store(_) => "database",
            Self::Route { .. } => "route",
            Self::Gate(_) => "gate",
            Self::Delivery { .. } => "delivery",
            Self::Stalled(_) => "stalled",
            Self::CheckpointMoved(_) => "checkpoint_moved",
        }
    }
}

/// One event of a round, ready to produce (or to pass over: not published).
struct Prepared {
    position: LogPosition,
    event_id: Uuid,
    recorded_at: DateTime<Utc>,
    /// `None` for events of streams that are not published.
    record: Option<(TopicKind, OutgoingRecord)>,
}

/// How a round of deliveries ended.
struct Delivered {
    /// Leading events of the round that are acknowledged (or need no delivery).
    acknowledged: usize,
    /// Why the rest was not.
    error: Option<PublishError>,
    /// Shutdown came and the grace period ran out first.
    interrupted: bool,
}

/// Sets `marketing_publisher_active` while this process leads.
struct ActiveGauge;

impl ActiveGauge {
    fn set() -> Self {
        metrics::gauge!("marketing_publisher_active").set(1.0);
        ActiveGauge
    }
}

impl Drop for ActiveGauge {
    fn drop(&mut self) {
        metrics::gauge!("marketing_publisher_active").set(0.0);
    }
}

/// The advisory-lock key of a publisher: FNV-1a of a tagged name, so it cannot
/// equal a projection's key.
fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "publisher:".bytes().chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash >> 1) as i64
}

pub struct Publisher {
    store: Arc<dyn EventStore>,
    pool: Pool,
    config: PublisherConfig,
    gate: Arc<dyn DataGate>,
    progress: watch::Sender<LogPosition>,
}

impl Publisher {
    /// Checks the configuration (including every librdkafka property) without
    /// connecting to anything.
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: Pool,
        config: PublisherConfig,
        gate: Arc<dyn DataGate>,
    ) -> Result<Self, PublishError> {
        config.validate()?;
        kafka::producer_config(&config).create_native_config()?;
        let (progress, _) = watch::channel(LogPosition::START);
        Ok(Self {
            store,
            pool,
            config,
            gate,
            progress,
        })
    }

    /// Ticks with the checkpoint: every event at or before it was acknowledged.
    pub fn progress(&self) -> watch::Receiver<LogPosition> {
        self.progress.subscribe()
    }

    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// Runs until `shutdown` is cancelled: stands by while another process
    /// publishes, publishes while it holds the lock. Errors are logged and
    /// retried; a publisher that gave up would let the topics fall silently behind.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(error) = self.lead(&shutdown).await {
                metrics::counter!("marketing_publisher_errors_total", "kind" => error.kind()).increment(1);
                tracing::error!(%error, "publisher failed; retrying");
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.config.standby_poll) => {}
            }
        }
        tracing::info!("publisher stopped");
    }

    /// Becomes the active publisher if no other process is, then publishes until
    /// shutdown or until the lock's connection is lost.
    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), PublishError> {
        // A connection taken out of the pool: the session-level advisory lock lives
        // and dies with it, so a crashed process releases leadership by itself.
        let lock = deadpool_postgres::Object::take(self.pool.get().await?);
        let acquired: bool = lock
            .query_one(
                "SELECT pg_try_advisory_lock($1)",
                &[&lock_key(&self.config.checkpoint_name)],
            )
            .await?
            .get(0);
        if !acquired {
            return Ok(());
        }
        let _active = ActiveGauge::set();
        let mut checkpoint = self.load_checkpoint().await?;
        tracing::info!(?checkpoint, "became the active publisher");
        self.progress.send_replace(checkpoint);
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() || lock.is_closed() {
                return Ok(());
            }
            let before = checkpoint;
            let error = match self.session(shutdown, &lock, &mut checkpoint).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if checkpoint != before {
                failures = 0;
            }
            metrics::counter!("marketing_publisher_errors_total", "kind" => error.kind()).increment(1);
            match error {
                PublishError::CheckpointMoved(actual) => {
                    // Someone (an operator re-publishing history, or an instance
                    // that thought it led) moved it: continue from there.
                    tracing::warn!(?actual, "publisher checkpoint moved; continuing from it");
                    checkpoint = actual;
                    self.progress.send_replace(checkpoint);
                    continue;
                }
                PublishError::Database(_) | PublishError::Pool(_) if lock.is_closed() => return Err(error),
                error => {
                    failures += 1;
                    tracing::warn!(%error, failures, "producer session ended; starting a new one");
                }
            }
            let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6))).min(Duration::from_secs(5));
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One producer's life: make sure the topics exist (a broker may have come
    /// back without them), publish until something goes wrong, then get rid of
    /// the producer. A fresh producer starts from the checkpoint, so whatever the
    /// old one had in flight is produced again, in order.
    async fn session(
        &self,
        shutdown: &CancellationToken,
        lock: &tokio_postgres::Client,
        checkpoint: &mut LogPosition,
    ) -> Result<(), PublishError> {
        tokio::select! {
            created = kafka::ensure_topics(&self.config) => created?,
            _ = shutdown.cancelled() => return Ok(()),
        }
        let producer = kafka::create_producer(&self.config)?;
        metrics::counter!("marketing_publisher_sessions_total").increment(1);
        let result = self.publish(&producer, shutdown, lock, checkpoint).await;
        let graceful = result.is_ok();
        // Flushing and dropping block (dropping purges what is left, then joins
        // librdkafka's threads): keep them off the async workers.
        let flushed = tokio::task::spawn_blocking(move || {
            let flushed = if graceful {
                producer.flush(Timeout::After(Duration::from_secs(2)))
            } else {
                Ok(())
            };
            drop(producer);
            flushed
        })
        .await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "producer not flushed; unacknowledged records will be sent again");
        }
        result
    }

    /// Rounds until shutdown, lost leadership (`Ok`) or a failure (`Err`).
    async fn publish(
        &self,
        producer: &Producer,
        shutdown: &CancellationToken,
        lock: &tokio_postgres::Client,
        checkpoint: &mut LogPosition,
    ) -> Result<(), PublishError> {
        let mut wakeups = self.store.wakeups().subscribe();
        let mut idle_backoff = Duration::from_millis(1);
        let mut poison_failures = 0u32;
        loop {
            if shutdown.is_cancelled() || lock.is_closed() {
                return Ok(());
            }
            wakeups.borrow_and_update();
            let events = self.store.read_all(*checkpoint, self.config.batch_size).await?;
            if events.is_empty() {
                // Nothing readable. A wake-up means a commit happened; its events
                // may still sit behind an older open transaction, so re-poll
                // quickly at first and back off towards the idle interval.
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    changed = wakeups.changed() => {
                        if changed.is_ok() { idle_backoff = Duration::from_millis(1); }
                    }
                    _ = tokio::time::sleep(idle_backoff) => {
                        idle_backoff = (idle_backoff * 2).min(self.config.idle_poll);
                    }
                }
                continue;
            }
            idle_backoff = Duration::from_millis(1);
            let (batch, halted) = self.prepare(events).await;
            let delivered = self.deliver(producer, &batch, shutdown).await;
            if delivered.acknowledged > 0 {
                let to = batch[delivered.acknowledged - 1].position;
                self.save_checkpoint(*checkpoint, to).await?;
                *checkpoint = to;
                self.progress.send_replace(to);
            }
            if let Some(error) = delivered.error {
                return Err(error);
            }
            if delivered.interrupted {
                return Ok(());
            }
            if let Some(error) = halted {
                // An event that cannot be published (yet): everything before it
                // went out; wait and try it again. The producer is fine, so keep it.
                poison_failures += 1;
                metrics::counter!("marketing_publisher_errors_total", "kind" => error.kind()).increment(1);
                tracing::error!(%error, attempts = poison_failures, "publishing is halted at an event");
                let pause =
                    Duration::from_millis(100 * 2u64.pow(poison_failures.min(6))).min(Duration::from_secs(5));
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            } else {
                poison_failures = 0;
            }
        }
    }

    /// Routes, gates and encodes a round. Stops at the first event that cannot
    /// be routed (returned as the error) so nothing after it overtakes it; a gate
    /// failure stops the whole round.
    async fn prepare(&self, events: Vec<RecordedEvent>) -> (Vec<Prepared>, Option<PublishError>) {
        let mut halted = None;
        let mut routed = Vec::with_capacity(events.len());
        for event in events {
            match route::route(&event.stream_id, &event.event_type, &event.data) {
                Ok(route) => routed.push((event, route)),
                Err(source) => {
                    halted = Some(PublishError::Route {
                        position: event.position,
                        source,
                    });
                    break;
                }
            }
        }
        let mut order = Vec::with_capacity(routed.len());
        let mut published = Vec::new();
        for (event, route) in routed {
            order.push((event.position, event.event_id, event.recorded_at, route.is_some()));
            if let Some(route) = route {
                published.push(RoutedEvent { event, route });
            } else {
                metrics::counter!("marketing_publisher_skipped_total").increment(1);
            }
        }
        let disclosed = match self.gate.disclose(&published).await {
            Ok(data) if data.len() == published.len() => data,
            Ok(data) => {
                let error = GateError(format!(
                    "returned {} values for {} events",
                    data.len(),
                    published.len()
                ));
                return (Vec::new(), Some(error.into()));
            }
            Err(error) => return (Vec::new(), Some(error.into())),
        };
        let mut records = published.iter().zip(&disclosed).map(|(routed, data)| {
            (
                routed.route.aggregate.topic,
                cloudevents::encode(&routed.event, &routed.route, data),
            )
        });
        let batch = order
            .into_iter()
            .map(|(position, event_id, recorded_at, is_published)| Prepared {
                position,
                event_id,
                recorded_at,
                record: if is_published { records.next() } else { None },
            })
            .collect();
        (batch, halted)
    }

    fn topic(&self, kind: TopicKind) -> &str {
        match kind {
            TopicKind::Campaigns => &self.config.campaigns_topic,
            TopicKind::Leads => &self.config.leads_topic,
        }
    }

    /// Hands the round to the producer in log order, then waits for the delivery
    /// reports in log order. Stops at the first failure: only the acknowledged
    /// prefix counts. If the next report in line does not come for
    /// `stall_timeout`, gives up on this producer (the caller replaces it).
    async fn deliver(
        &self,
        producer: &Producer,
        batch: &[Prepared],
        shutdown: &CancellationToken,
    ) -> Delivered {
        let mut pending = Vec::with_capacity(batch.len());
        let mut enqueue_error = None;
        'enqueue: for item in batch {
            let Some((kind, record)) = &item.record else {
                pending.push(None);
                continue;
            };
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let mut future_record = FutureRecord::to(self.topic(*kind))
                .key(&record.key)
                .payload(&record.payload)
                .headers(headers);
            loop {
                match producer.send_result(future_record) {
                    Ok(delivery) => {
                        pending.push(Some(delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        // librdkafka's queue is full: it drains as the broker
                        // acknowledges; try again shortly.
                        future_record = returned;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => {
                        enqueue_error = Some(PublishError::Delivery {
                            event_id: item.event_id,
                            error,
                        });
                        break 'enqueue;
                    }
                }
            }
        }
        let mut acknowledged = 0;
        let mut last_progress = Instant::now();
        let mut deadline: Option<Instant> = None;
        for (index, slot) in pending.into_iter().enumerate() {
            let item = &batch[index];
            let Some(mut delivery) = slot else {
                acknowledged = index + 1;
                continue;
            };
            loop {
                let stall_at = last_progress + self.config.stall_timeout;
                let wake_at = deadline.map_or(stall_at, |d| d.min(stall_at));
                tokio::select! {
                    report = &mut delivery => {
                        let error = match report {
                            Ok(Ok(_)) => None,
                            Ok(Err((error, _))) => Some(error),
                            Err(_) => Some(KafkaError::Canceled),
                        };
                        if let Some(error) = error {
                            return Delivered {
                                acknowledged,
                                error: Some(PublishError::Delivery { event_id: item.event_id, error }),
                                interrupted: false,
                            };
                        }
                        acknowledged = index + 1;
                        last_progress = Instant::now();
                        if let Some((kind, _)) = &item.record {
                            let topic = self.topic(*kind).to_owned();
                            metrics::counter!("marketing_publisher_events_total", "topic" => topic).increment(1);
                        }
                        let lag = (Utc::now() - item.recorded_at).to_std().unwrap_or_default();
                        metrics::histogram!("marketing_publisher_ack_lag_seconds").record(lag.as_secs_f64());
                        break;
                    }
                    _ = shutdown.cancelled(), if deadline.is_none() => {
                        deadline = Some(Instant::now() + self.config.shutdown_grace);
                    }
                    _ = tokio::time::sleep_until(wake_at) => {
                        let interrupted = deadline.is_some_and(|d| Instant::now() >= d);
                        return Delivered {
                            acknowledged,
                            error: (!interrupted).then_some(PublishError::Stalled(self.config.stall_timeout)),
                            interrupted,
                        };
                    }
                }
            }
        }
        Delivered {
            acknowledged,
            error: enqueue_error,
            interrupted: false,
        }
    }

    async fn load_checkpoint(&self) -> Result<LogPosition, PublishError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                &[&self.config.checkpoint_name],
            )
            .await?;
        self.read_checkpoint(&client).await
    }

    async fn read_checkpoint(&self, client: &tokio_postgres::Client) -> Result<LogPosition, PublishError> {
        let row = client
            .query_one(
                "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1",
                &[&self.config.checkpoint_name],
            )
            .await?;
        Ok(LogPosition {
            tx_id: row.get(0),
            position: row.get(1),
        })
    }

    /// Moves the checkpoint from `from` to `to`, only if it still is at `from`: two
    /// instances that both think they lead cannot both move it.
    async fn save_checkpoint(&self, from: LogPosition, to: LogPosition) -> Result<(), PublishError> {
        let client = self.pool.get().await?;
        let updated = client
            .execute(
                "UPDATE projection_checkpoints SET tx_id = $2, position = $3, updated_at = now()
                 WHERE name = $1 AND tx_id = $4 AND position = $5",
                &[
                    &self.config.checkpoint_name,
                    &to.tx_id,
                    &to.position,
                    &from.tx_id,
                    &from.position,
                ],
            )
            .await?;
        if updated == 1 {
            Ok(())
        } else {
            Err(PublishError::CheckpointMoved(
                self.read_checkpoint(&client).await?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_tagged() {
        assert_eq!(lock_key("publisher"), lock_key("publisher"));
        assert_ne!(lock_key("publisher"), lock_key("publisher-2"));
        assert!(lock_key("publisher") >= 0);
    }
}
