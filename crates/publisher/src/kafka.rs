//! The librdkafka clients: how the producer is configured (and why), and topic
//! creation through the admin API.

use crate::config::PublisherConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientContext;

/// Routes librdkafka's logs and global errors into `tracing`. Connection errors
/// while a broker is down are expected and retried, so they are warnings.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        metrics::counter!("marketing_publisher_client_errors_total").increment(1);
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

pub type Producer = FutureProducer<LogContext>;

/// Settings shared by the producer and the admin client: where the brokers are,
/// and the operator's extras (security, ...).
fn base_config(config: &PublisherConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", "marketing-publisher")
        // Come back quickly after a broker restart; the default caps at 10 s.
        .set("reconnect.backoff.max.ms", "1000");
    for (key, value) in &config.extra_properties {
        client.set(key, value);
    }
    client
}

/// The producer configuration. Each setting is load-bearing:
///
/// * `enable.idempotence=true` (implies `acks=all`, at most 5 in-flight requests
///   per partition, unlimited retries): the broker drops retried duplicates and
///   keeps each partition in send order, so one producer's writes to a partition
///   are always a gap-free prefix of what it was given.
/// * `message.timeout.ms=0` (infinite): librdkafka never gives up on a record
///   because of time. A timed-out record that was already in flight could leave a
///   gap followed by later records, i.e. reordering. Instead the publisher's own
///   stall watchdog replaces the whole producer, which re-sends everything
///   unacknowledged in order.
/// * `partitioner=murmur2_random`: the Java client's partitioner, so records of a
///   key land where any other Kafka client would put that key.
/// * `linger.ms=0` unless the operator sets it (see below).
pub fn producer_config(config: &PublisherConfig) -> ClientConfig {
    let mut client = base_config(config);
    // The publisher hands librdkafka a whole round at once and waits for all of
    // it, so librdkafka batches anyway; lingering would only add its delay to
    // every round (5 ms by default: p50 lag 12.6 ms instead of 2.7 ms in
    // docs/kafka.md's benchmark). An operator's `linger.ms` still wins.
    let lingers = config
        .extra_properties
        .iter()
        .any(|(key, _)| key == "linger.ms" || key == "queue.buffering.max.ms");
    if !lingers {
        client.set("linger.ms", "0");
    }
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "0")
        .set("partitioner", "murmur2_random");
    client
}

pub fn create_producer(config: &PublisherConfig) -> Result<Producer, KafkaError> {
    producer_config(config).create_with_context(LogContext)
}

/// Creates the topics if they are missing. An existing topic is fine as it is
/// (whatever its partition count: changing it would move keys between
/// partitions, which only an operator should decide). Runs at the start of every
/// producer session, because a broker may come back without its topics.
pub async fn ensure_topics(config: &PublisherConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<LogContext> = base_config(config).create_with_context(LogContext)?;
    let result = create_missing(&admin, config).await;
    // Dropping the admin client joins its polling thread: keep that off the
    // async workers.
    tokio::task::spawn_blocking(move || drop(admin))
        .await
        .map_err(|_| KafkaError::Canceled)?;
    result
}

async fn create_missing(admin: &AdminClient<LogContext>, config: &PublisherConfig) -> Result<(), KafkaError> {
    let options = AdminOptions::new()
        .request_timeout(Some(config.admin_timeout))
        .operation_timeout(Some(config.admin_timeout));
    let replication = || TopicReplication::Fixed(config.replication_factor);
    let topics = [
        NewTopic::new(&config.campaigns_topic, config.partitions, replication()),
        NewTopic::new(&config.leads_topic, config.partitions, replication()),
    ];
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(topic) => tracing::info!(topic, partitions = config.partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            // Clusters where topics are managed by operators often deny
            // CreateTopics: go on and let the producer find out whether the topic
            // exists (if not, records wait and the stall watchdog retries).
            Err((
                topic,
                code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed),
            )) => {
                tracing::warn!(topic, %code, "not allowed to create topics; assuming they are managed elsewhere");
            }
            Err((topic, code)) => {
                tracing::warn!(topic, %code, "cannot create topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}
