//! Drives the relay on the log follower ([`event_store::follower`]), which
//! brings leadership, reading, fail-over and the checkpoint's compare-and-set;
//! this file adds producer sessions and rounds of produce → await
//! acknowledgements → checkpoint (only over what the broker acknowledged).

use crate::cloudevents::{self, OutgoingRecord};
use crate::config::{ConfigError, PublisherConfig};
use crate::gate::{DataGate, GateError, RoutedEvent};
use crate::kafka::{self, Producer};
use crate::route::{self, RouteError, TopicKind};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use event_store::follower::{self, Batch, Follower, FollowerConfig, Handled, Handler};
use event_store::{EventStore, LogPosition, RecordedEvent, StoreError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer as _};
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

/// What a publisher has done so far, for whoever watches it (see
/// [`Publisher::activity`]): conditions to wait on instead of times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Producer sessions started (each with a producer of its own).
    pub sessions_started: u64,
    /// Producer sessions ended: each session's producer was flushed or given
    /// up, and dropped, so nothing it had in flight can still be acknowledged
    /// (and its acknowledged prefix is already committed).
    pub sessions_ended: u64,
    /// Rounds that stopped at an event that cannot be published (yet), and
    /// will try it again.
    pub halted_rounds: u64,
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
    follower::lock_key("publisher:", name)
}

pub struct Publisher {
    follower: Follower,
    relay: Relay,
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
        let follower = FollowerConfig {
            batch_size: config.batch_size,
            idle_poll: config.idle_poll,
            standby_poll: config.standby_poll,
        };
        Ok(Self {
            follower: Follower::new(store, pool, follower),
            relay: Relay {
                config,
                gate,
                producer: None,
                poison_failures: 0,
                active: None,
                activity: watch::Sender::new(Activity::default()),
            },
        })
    }

    /// Ticks with the checkpoint: every event at or before it was acknowledged.
    pub fn progress(&self) -> watch::Receiver<LogPosition> {
        self.follower.progress()
    }

    pub fn config(&self) -> &PublisherConfig {
        &self.relay.config
    }

    /// Ticks with every producer session that ends and every halted round.
    pub fn activity(&self) -> watch::Receiver<Activity> {
        self.relay.activity.subscribe()
    }

    /// Runs until `shutdown` is cancelled: stands by while another process
    /// publishes, publishes while it holds the lock. Errors are logged and
    /// retried; a publisher that gave up would let the topics fall silently behind.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.follower.run(&mut self.relay, &shutdown).await;
        tracing::info!("publisher stopped");
    }
}

/// The relay as the follower's handler. A session is one producer's life: it
/// makes sure the topics exist (a broker may have come back without them),
/// publishes until something goes wrong, then gets rid of the producer. A
/// fresh producer starts from the checkpoint, so whatever the old one had in
/// flight is produced again, in order.
struct Relay {
    config: PublisherConfig,
    gate: Arc<dyn DataGate>,
    /// The session's producer.
    producer: Option<Producer>,
    /// Rounds in a row halted at an event that cannot be published (yet).
    poison_failures: u32,
    /// Set while this process leads.
    active: Option<ActiveGauge>,
    activity: watch::Sender<Activity>,
}

/// A growing pause: 100 ms doubling per failure, at most 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100 * 2u64.pow(failures.min(6))).min(Duration::from_secs(5))
}

#[async_trait]
impl Handler for Relay {
    type Error = PublishError;

    fn name(&self) -> &str {
        &self.config.checkpoint_name
    }

    fn lock_key(&self) -> i64 {
        lock_key(&self.config.checkpoint_name)
    }

    fn became_active(&mut self, checkpoint: LogPosition) {
        self.active = Some(ActiveGauge::set());
        tracing::info!(?checkpoint, "became the active publisher");
    }

    fn stood_down(&mut self) {
        self.active = None;
    }

    async fn begin(&mut self, shutdown: &CancellationToken) -> Result<bool, PublishError> {
        tokio::select! {
            created = kafka::ensure_topics(&self.config) => created?,
            _ = shutdown.cancelled() => return Ok(false),
        }
        self.producer = Some(kafka::create_producer(&self.config)?);
        self.activity.send_modify(|a| a.sessions_started += 1);
        self.poison_failures = 0;
        metrics::counter!("marketing_publisher_sessions_total").increment(1);
        Ok(true)
    }

    async fn end(&mut self, graceful: bool) {
        let Some(producer) = self.producer.take() else {
            return;
        };
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
        self.activity.send_modify(|a| a.sessions_ended += 1);
    }

    /// One round: prepare, produce, await the acknowledgements, then move the
    /// checkpoint over the acknowledged prefix (and nothing beyond it).
    async fn handle(
        &mut self,
        mut batch: Batch<'_>,
        shutdown: &CancellationToken,
    ) -> Result<Handled, PublishError> {
        let (prepared, halted) = self.prepare(std::mem::take(&mut batch.events)).await;
        let producer = self.producer.as_ref().expect("a session is open");
        let delivered = self.deliver(producer, &prepared, shutdown).await;
        let mut handled = Handled::Nothing;
        if delivered.acknowledged > 0 {
            let to = prepared[delivered.acknowledged - 1].position;
            if !batch.advance(to).await? {
                return Ok(Handled::Moved);
            }
            handled = Handled::Committed(to);
        }
        if let Some(error) = delivered.error {
            return Err(error);
        }
        if delivered.interrupted {
            return Ok(handled);
        }
        if let Some(error) = halted {
            // An event that cannot be published (yet): everything before it
            // went out; wait and try it again. The producer is fine, so keep it.
            self.poison_failures += 1;
            metrics::counter!("marketing_publisher_errors_total", "kind" => error.kind()).increment(1);
            tracing::error!(%error, attempts = self.poison_failures, "publishing is halted at an event");
            self.activity.send_modify(|a| a.halted_rounds += 1);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(backoff(self.poison_failures)) => {}
            }
        } else {
            self.poison_failures = 0;
        }
        Ok(handled)
    }

    fn failed(&self, error: &PublishError, failures: u32) -> Duration {
        metrics::counter!("marketing_publisher_errors_total", "kind" => error.kind()).increment(1);
        tracing::warn!(%error, failures, "producer session ended; starting a new one");
        backoff(failures)
    }

    fn lost(&self, error: &PublishError) {
        metrics::counter!("marketing_publisher_errors_total", "kind" => error.kind()).increment(1);
        tracing::error!(%error, "publisher failed; retrying");
    }

    /// Someone (an operator re-publishing history, or an instance that thought
    /// it led) moved it: continue from there.
    fn moved(&self, actual: LogPosition) {
        let kind = PublishError::CheckpointMoved(actual).kind();
        metrics::counter!("marketing_publisher_errors_total", "kind" => kind).increment(1);
        tracing::warn!(?actual, "publisher checkpoint moved; continuing from it");
    }
}

impl Relay {
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
        // The follower's batch span, when it is exported.
        let handling = trace_context::of_span(&tracing::Span::current());
        let mut records = published.iter().zip(&disclosed).map(|(routed, data)| {
            (
                routed.route.aggregate.topic,
                cloudevents::encode(&routed.event, &routed.route, data, handling),
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
        let (pending, enqueue_error) = self.enqueue(producer, batch).await;
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
                        self.record_acknowledged(item);
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

    /// Produces the round's records in log order: one pending delivery per
    /// item (`None` for items not published), up to the first that cannot be
    /// enqueued (returned as the error).
    async fn enqueue(
        &self,
        producer: &Producer,
        batch: &[Prepared],
    ) -> (Vec<Option<DeliveryFuture>>, Option<PublishError>) {
        let mut pending = Vec::with_capacity(batch.len());
        for item in batch {
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
                        let error = PublishError::Delivery {
                            event_id: item.event_id,
                            error,
                        };
                        return (pending, Some(error));
                    }
                }
            }
        }
        (pending, None)
    }

    /// Counts an acknowledged record and its lag behind the log.
    fn record_acknowledged(&self, item: &Prepared) {
        if let Some((kind, _)) = &item.record {
            let topic = self.topic(*kind).to_owned();
            metrics::counter!("marketing_publisher_events_total", "topic" => topic).increment(1);
        }
        let lag = (Utc::now() - item.recorded_at).to_std().unwrap_or_default();
        metrics::histogram!("marketing_publisher_ack_lag_seconds").record(lag.as_secs_f64());
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
