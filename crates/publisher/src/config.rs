//! What the publisher needs to know, checked once at start-up so a typo fails
//! the process instead of silently publishing nowhere.

use std::time::Duration;

/// Topic names Kafka accepts: ASCII letters, digits, `.`, `_`, `-`; at most 249
/// characters; not `.` or `..`.
pub const TOPIC_NAME_MAX: usize = 249;

/// Most partitions the publisher creates a topic with. Far above what this
/// service needs (per-key order only needs keys spread over consumers), low
/// enough that a stray extra digit is caught.
pub const PARTITIONS_MAX: i32 = 1024;

/// librdkafka properties the publisher sets itself because its guarantees rest
/// on them (ordering, no loss, no duplicates from retries, the partitioner that
/// other clients agree with). `KAFKA_PRODUCER_CONFIG` may not override them.
pub const OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "retries",
    "message.send.max.retries",
    "partitioner",
    "enable.gapless.guarantee",
    "transactional.id",
];

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Where campaign-scoped events go (campaign, task, content, analytics).
    pub campaigns_topic: String,
    /// Where lead events go.
    pub leads_topic: String,
    /// Partitions of a topic the publisher creates. Existing topics are used as
    /// they are: changing a topic's partition count would move keys.
    pub partitions: i32,
    /// Replication factor of a topic the publisher creates; `-1` takes the
    /// broker's `default.replication.factor`.
    pub replication_factor: i32,
    /// Extra librdkafka properties (security, compression, batching), applied to
    /// the producer and the admin client.
    pub extra_properties: Vec<(String, String)>,
    /// Names the checkpoint row (in `projection_checkpoints`) and the advisory
    /// lock. Two publishers with different names publish independently.
    pub checkpoint_name: String,
    /// Most events read from the log and produced per round; the checkpoint
    /// moves once per round.
    pub batch_size: usize,
    /// Longest sleep between polls of the log when idle; NOTIFY usually wakes the
    /// publisher sooner.
    pub idle_poll: Duration,
    /// How often a standby instance tries to become the active one.
    pub standby_poll: Duration,
    /// If the oldest unacknowledged record gets no delivery report for this long,
    /// the producer is replaced and the records are sent again from the
    /// checkpoint. Covers brokers that came back without the producer's state or
    /// the topics (librdkafka would otherwise wait forever, by design: see
    /// `message.timeout.ms` in docs/kafka.md).
    pub stall_timeout: Duration,
    /// On shutdown, how long outstanding records may take to be acknowledged
    /// before the publisher stops without them (they are sent again next time).
    pub shutdown_grace: Duration,
    /// Longest wait for one admin request (topic creation).
    pub admin_timeout: Duration,
}

impl PublisherConfig {
    pub const DEFAULT_CAMPAIGNS_TOPIC: &'static str = "marketing.campaigns";
    pub const DEFAULT_LEADS_TOPIC: &'static str = "marketing.leads";
    pub const DEFAULT_PARTITIONS: i32 = 6;
    pub const DEFAULT_CHECKPOINT_NAME: &'static str = "publisher";

    /// Defaults for everything but the brokers.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            campaigns_topic: Self::DEFAULT_CAMPAIGNS_TOPIC.to_owned(),
            leads_topic: Self::DEFAULT_LEADS_TOPIC.to_owned(),
            partitions: Self::DEFAULT_PARTITIONS,
            replication_factor: -1,
            extra_properties: Vec::new(),
            checkpoint_name: Self::DEFAULT_CHECKPOINT_NAME.to_owned(),
            batch_size: 1000,
            idle_poll: Duration::from_millis(500),
            standby_poll: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            admin_timeout: Duration::from_secs(10),
        }
    }

    /// Every rule, with a message naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::new("KAFKA_BROKERS", "must name at least one broker"));
        }
        check_topic("KAFKA_TOPIC_CAMPAIGNS", &self.campaigns_topic)?;
        check_topic("KAFKA_TOPIC_LEADS", &self.leads_topic)?;
        if self.campaigns_topic == self.leads_topic {
            return Err(ConfigError::new(
                "KAFKA_TOPIC_LEADS",
                "must differ from KAFKA_TOPIC_CAMPAIGNS: consumers tell the streams apart by topic",
            ));
        }
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(ConfigError::new(
                "KAFKA_PARTITIONS",
                format!("must be between 1 and {PARTITIONS_MAX}"),
            ));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return Err(ConfigError::new(
                "KAFKA_REPLICATION_FACTOR",
                "must be -1 (the broker's default) or at least 1",
            ));
        }
        for (key, _) in &self.extra_properties {
            if OWNED_PROPERTIES.contains(&key.as_str()) {
                return Err(ConfigError::new(
                    "KAFKA_PRODUCER_CONFIG",
                    format!("{key} is set by the publisher itself and cannot be overridden"),
                ));
            }
        }
        if self.checkpoint_name.is_empty() {
            return Err(ConfigError::new("checkpoint_name", "must not be empty"));
        }
        if self.batch_size == 0 {
            return Err(ConfigError::new("batch_size", "must be at least 1"));
        }
        Ok(())
    }
}

/// Parses `KAFKA_PRODUCER_CONFIG`: `key=value` pairs separated by `;`, e.g.
/// `security.protocol=SASL_SSL;sasl.mechanism=SCRAM-SHA-512`. Values may contain
/// `=` (only the first one splits) but not `;`.
pub fn parse_properties(raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut properties = Vec::new();
    for pair in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(ConfigError::new(
                "KAFKA_PRODUCER_CONFIG",
                format!("{pair:?} is not key=value"),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError::new(
                "KAFKA_PRODUCER_CONFIG",
                format!("{pair:?} has an empty key"),
            ));
        }
        properties.push((key.to_owned(), value.trim().to_owned()));
    }
    Ok(properties)
}

fn check_topic(setting: &'static str, name: &str) -> Result<(), ConfigError> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > TOPIC_NAME_MAX || !valid_chars || name == "." || name == ".." {
        return Err(ConfigError::new(
            setting,
            format!(
                "{name:?} is not a valid topic name: use 1-{TOPIC_NAME_MAX} characters a-z, A-Z, 0-9, '.', '_' or '-'"
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self {
            setting,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = PublisherConfig::new("127.0.0.1:9092");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.campaigns_topic, "marketing.campaigns");
        assert_eq!(config.leads_topic, "marketing.leads");
    }

    #[test]
    fn every_rule_names_its_setting() {
        let base = PublisherConfig::new("127.0.0.1:9092");
        let cases: Vec<(PublisherConfig, &str)> = vec![
            (
                PublisherConfig {
                    brokers: " ".into(),
                    ..base.clone()
                },
                "KAFKA_BROKERS",
            ),
            (
                PublisherConfig {
                    campaigns_topic: "has space".into(),
                    ..base.clone()
                },
                "KAFKA_TOPIC_CAMPAIGNS",
            ),
            (
                PublisherConfig {
                    leads_topic: "..".into(),
                    ..base.clone()
                },
                "KAFKA_TOPIC_LEADS",
            ),
            (
                PublisherConfig {
                    leads_topic: "x".repeat(TOPIC_NAME_MAX + 1),
                    ..base.clone()
                },
                "KAFKA_TOPIC_LEADS",
            ),
            (
                PublisherConfig {
                    leads_topic: base.campaigns_topic.clone(),
                    ..base.clone()
                },
                "KAFKA_TOPIC_LEADS",
            ),
            (
                PublisherConfig {
                    partitions: 0,
                    ..base.clone()
                },
                "KAFKA_PARTITIONS",
            ),
            (
                PublisherConfig {
                    partitions: PARTITIONS_MAX + 1,
                    ..base.clone()
                },
                "KAFKA_PARTITIONS",
            ),
            (
                PublisherConfig {
                    replication_factor: 0,
                    ..base.clone()
                },
                "KAFKA_REPLICATION_FACTOR",
            ),
            (
                PublisherConfig {
                    extra_properties: vec![("enable.idempotence".into(), "false".into())],
                    ..base.clone()
                },
                "KAFKA_PRODUCER_CONFIG",
            ),
            (
                PublisherConfig {
                    batch_size: 0,
                    ..base.clone()
                },
                "batch_size",
            ),
        ];
        for (config, setting) in cases {
            assert_eq!(config.validate().unwrap_err().setting, setting, "{config:?}");
        }
        let at_limits = PublisherConfig {
            campaigns_topic: "c".repeat(TOPIC_NAME_MAX),
            partitions: PARTITIONS_MAX,
            replication_factor: 3,
            ..base
        };
        assert_eq!(at_limits.validate(), Ok(()));
    }

    #[test]
    fn producer_properties_parse_as_key_value_pairs() {
        assert_eq!(
            parse_properties(" security.protocol=SASL_SSL; sasl.password=a=b ;").unwrap(),
            vec![
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
                ("sasl.password".to_owned(), "a=b".to_owned()),
            ]
        );
        assert_eq!(parse_properties("").unwrap(), vec![]);
        assert_eq!(
            parse_properties("linger.ms").unwrap_err().setting,
            "KAFKA_PRODUCER_CONFIG"
        );
        assert_eq!(
            parse_properties("=5").unwrap_err().setting,
            "KAFKA_PRODUCER_CONFIG"
        );
    }
}
