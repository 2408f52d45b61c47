//! Typed configuration from the environment (docs/operations.md), with
//! defaults that work on a fresh machine.

use anyhow::Context;
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Postgres for the event log and the read models.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/marketing",
        global = true
    )]
    pub database_url: String,

    /// A Postgres streaming replica of DATABASE_URL for the query API's reads
    /// (docs/operations.md, "Replica reads"). Set it on every process that
    /// serves reads or writes (`serve`, `query-api`, `command-api`): writes
    /// wait for the replica, reads fall back to the primary when it lags.
    /// Unset: every read on the primary.
    #[arg(long, env = "READ_DATABASE_URL", global = true)]
    pub read_database_url: Option<String>,

    /// How far behind the primary the replica may be for reads to use it,
    /// and the longest a write waits for it to replay the write, in ms. The
    /// same value on every process.
    #[arg(long, env = "READ_REPLICA_MAX_LAG_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub read_replica_max_lag_ms: u64,

    /// How often each process checks the replica's replay position (in the
    /// background, never per request), in ms; at most half of
    /// READ_REPLICA_MAX_LAG_MS.
    #[arg(long, env = "READ_REPLICA_CHECK_INTERVAL_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub read_replica_check_interval_ms: u64,

    /// HTTP listener.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080", global = true)]
    pub listen_addr: SocketAddr,

    /// Kafka bootstrap servers; unset = publisher off.
    #[arg(long, env = "KAFKA_BROKERS", global = true)]
    pub kafka_brokers: Option<String>,

    /// Topic for campaign-scoped events (campaigns, tasks, content, analytics).
    #[arg(
        long,
        env = "KAFKA_TOPIC_CAMPAIGNS",
        default_value = "marketing.campaigns",
        global = true
    )]
    pub kafka_topic_campaigns: String,

    /// Topic for lead events.
    #[arg(
        long,
        env = "KAFKA_TOPIC_LEADS",
        default_value = "marketing.leads",
        global = true
    )]
    pub kafka_topic_leads: String,

    /// Partitions of each topic the publisher creates (existing topics are kept as they are).
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 6, global = true)]
    pub kafka_partitions: i32,

    /// Replication factor of each topic the publisher creates; -1 = the broker's default.
    #[arg(
        long,
        env = "KAFKA_REPLICATION_FACTOR",
        default_value_t = -1,
        allow_negative_numbers = true,
        global = true
    )]
    pub kafka_replication_factor: i32,

    /// Extra librdkafka producer properties, `key=value;key=value` (security,
    /// compression, batching). Properties the publisher's guarantees rest on are refused.
    #[arg(long, env = "KAFKA_PRODUCER_CONFIG", default_value = "", global = true)]
    pub kafka_producer_config: String,

    /// How long the oldest unacknowledged record may go without a delivery report
    /// before the publisher replaces its producer and sends again, in ms.
    #[arg(long, env = "KAFKA_STALL_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    pub kafka_stall_timeout_ms: u64,

    /// The event log in KurrentDB instead of Postgres: a KurrentDB connection
    /// string, e.g. `kurrentdb://host:2113?tls=false` or `esdb://…`
    /// (docs/kurrentdb.md). Unset: the log is the `events` table of DATABASE_URL.
    #[arg(long, env = "EVENT_STORE_URL", global = true)]
    pub event_store_url: Option<String>,

    /// Where media files live.
    #[arg(long, env = "MEDIA_DIR", default_value = "./data/media", global = true)]
    pub media_dir: PathBuf,

    /// Object storage for media instead of MEDIA_DIR: `s3://bucket[/prefix]`
    /// (credentials, region and an S3-compatible endpoint from the standard
    /// `AWS_*` variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT, AWS_ALLOW_HTTP), or `file:///dir`. Unset: MEDIA_DIR.
    #[arg(long, env = "MEDIA_STORE_URL", global = true)]
    pub media_store_url: Option<String>,

    /// Largest media upload, in bytes (default 25 MiB).
    #[arg(long, env = "MEDIA_MAX_BYTES", default_value_t = 25 * 1024 * 1024, global = true)]
    pub media_max_bytes: u64,

    /// `text` or `json` logs (`RUST_LOG` sets the level, default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,

    /// Most Postgres connections this process opens.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 32, global = true)]
    pub pool_size: usize,

    /// Longest time a request may take, in milliseconds.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000, global = true)]
    pub request_timeout_ms: u64,

    /// After SIGTERM/SIGINT, how long in-flight requests have to finish before
    /// their connections are closed, in milliseconds; background tasks then
    /// get up to 5 s more (docs/operations.md).
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 25_000, global = true)]
    pub shutdown_grace_ms: u64,

    /// Longest time a write waits for the read models before answering, in ms.
    #[arg(
        long,
        env = "READ_AFTER_WRITE_TIMEOUT_MS",
        default_value_t = 5_000,
        global = true
    )]
    pub read_after_write_timeout_ms: u64,

    /// Shards of each projection (1 to 64): events are divided by campaign,
    /// shards run concurrently and projector processes divide them. Changing
    /// it on a database that has been projected is a `marketing replay`
    /// (docs/operations.md).
    #[arg(long, env = "PROJECTION_SHARDS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64), global = true)]
    pub projection_shards: u32,

    /// Key-encryption key for the per-lead keys: 32 bytes, base64
    /// (`openssl rand -base64 32`). Unset: lead keys are stored unwrapped.
    /// See docs/leads.md for the threat model.
    #[arg(long, env = "LEAD_KEY_ENCRYPTION_KEY", hide_env_values = true, global = true)]
    pub lead_key_encryption_key: Option<Secret>,

    /// Longest time a CSV lead import may take, in milliseconds (10 minutes).
    #[arg(
        long,
        env = "LEAD_IMPORT_TIMEOUT_MS",
        default_value_t = 600_000,
        global = true
    )]
    pub lead_import_timeout_ms: u64,

    /// Largest CSV file a lead import accepts, in bytes (512 MiB).
    #[arg(long, env = "LEAD_IMPORT_MAX_BYTES", default_value_t = 512 * 1024 * 1024, global = true)]
    pub lead_import_max_bytes: u64,

    /// Most data rows a lead import accepts (header excluded).
    #[arg(
        long,
        env = "LEAD_IMPORT_MAX_ROWS",
        default_value_t = 1_000_000,
        global = true
    )]
    pub lead_import_max_rows: u64,

    /// Longest time a CSV analytics import may take, in milliseconds (10 minutes).
    #[arg(
        long,
        env = "ANALYTICS_IMPORT_TIMEOUT_MS",
        default_value_t = 600_000,
        global = true
    )]
    pub analytics_import_timeout_ms: u64,

    /// Largest CSV file an analytics import accepts, in bytes (512 MiB).
    #[arg(long, env = "ANALYTICS_IMPORT_MAX_BYTES", default_value_t = 512 * 1024 * 1024, global = true)]
    pub analytics_import_max_bytes: u64,

    /// Most data rows an analytics import accepts (header excluded).
    #[arg(
        long,
        env = "ANALYTICS_IMPORT_MAX_ROWS",
        default_value_t = 5_000_000,
        global = true
    )]
    pub analytics_import_max_rows: u64,
    /// Rows an asynchronous lead import (`Prefer: respond-async`) writes per
    /// transaction: the step in which its progress moves and a resumed job
    /// restarts.
    #[arg(long, env = "LEAD_IMPORT_CHUNK_ROWS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000), global = true)]
    pub lead_import_chunk_rows: u64,

    /// How long an asynchronous import's claim lasts without progress, in
    /// milliseconds: how soon another process takes over the job of one that died.
    #[arg(long, env = "LEAD_IMPORT_LEASE_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1_000..), global = true)]
    pub lead_import_lease_ms: u64,

    /// How long finished asynchronous imports, with the rows they could not
    /// import, are kept, in hours (7 days).
    #[arg(long, env = "LEAD_IMPORT_RETENTION_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub lead_import_retention_hours: u64,

    /// ISO 4217 currency of campaigns created without one (upper case).
    /// Campaigns stored before currencies existed are USD whatever this says.
    #[arg(long, env = "DEFAULT_CURRENCY", default_value = "USD",
          value_parser = parse_currency, global = true)]
    pub default_currency: domain::Currency,

    /// Let webhook endpoints point at loopback, private and link-local
    /// addresses (tests, private networks). Off: only public addresses.
    #[arg(long, env = "WEBHOOKS_ALLOW_PRIVATE_TARGETS", default_value_t = false,
          action = clap::ArgAction::Set, global = true)]
    pub webhooks_allow_private_targets: bool,

    /// The pause before a failed webhook delivery's first retry, in ms; it
    /// doubles per attempt (with jitter) up to WEBHOOKS_RETRY_MAX_MS.
    #[arg(long, env = "WEBHOOKS_RETRY_BASE_MS", default_value_t = 5_000, global = true)]
    pub webhooks_retry_base_ms: u64,

    /// The longest pause between two attempts at one webhook delivery, in ms.
    #[arg(
        long,
        env = "WEBHOOKS_RETRY_MAX_MS",
        default_value_t = 3_600_000,
        global = true
    )]
    pub webhooks_retry_max_ms: u64,

    /// How long a webhook delivery is retried before it is given up, and how
    /// long an endpoint may fail without a success before it is disabled, in
    /// seconds (3 days).
    #[arg(
        long,
        env = "WEBHOOKS_GIVE_UP_AFTER_SECS",
        default_value_t = 259_200,
        global = true
    )]
    pub webhooks_give_up_after_secs: u64,

    /// Requests per second each API key may make across the deployment (its
    /// sustained rate); 0 turns rate limits off. See docs/operations.md for
    /// how the processes share it and how exact that is.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = DEFAULT_RATE_LIMIT_PER_SECOND, global = true)]
    pub rate_limit_per_second: u32,

    /// Requests each API key may make at once before the per-second rate
    /// applies (the bucket's size); 0 turns rate limits off.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = DEFAULT_RATE_LIMIT_BURST, global = true)]
    pub rate_limit_burst: u32,

    /// The longest the webhook dispatcher waits between looks at its outbox
    /// when nothing is due, in ms.
    #[arg(long, env = "WEBHOOKS_IDLE_POLL_MS", default_value_t = 1_000, global = true)]
    pub webhooks_idle_poll_ms: u64,

    /// Shards of the webhook dispatcher (1 to 64): events are divided by
    /// campaign, and `marketing webhooks` processes divide the shards.
    /// Changing it needs no replay (docs/webhooks.md).
    #[arg(long, env = "WEBHOOKS_SHARDS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64), global = true)]
    pub webhooks_shards: u32,

    /// How long webhook attempts, and delivered or given-up deliveries, are
    /// kept before they are purged, in days (1 to 3650).
    #[arg(long, env = "WEBHOOKS_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650), global = true)]
    pub webhooks_retention_days: u64,
    /// How often `replay`, `verify`, `media-gc` and `import-leads` print a
    /// progress line when stderr is not a terminal (or with LOG_FORMAT=json),
    /// in ms. On a terminal they draw a bar instead.
    #[arg(long, env = "PROGRESS_INTERVAL_MS", default_value_t = 1_000, global = true)]
    pub progress_interval_ms: u64,

    /// OTLP/HTTP (protobuf) collector base URL, e.g. `http://otel-collector:4318`;
    /// spans go to `<url>/v1/traces`. Unset or empty = no trace export (the
    /// long-running roles only; docs/operations.md, "Tracing").
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// `service.name` of the exported spans; default `marketing-<role>`
    /// (`marketing-command-api`, `marketing-projector`, ...).
    #[arg(long, env = "OTEL_SERVICE_NAME", global = true)]
    pub otel_service_name: Option<String>,
}

/// Variables the binary reads besides the flags of [`Config`]: `RUST_LOG`
/// (the log filter), the object store's settings for an `s3://`
/// MEDIA_STORE_URL, and the OpenTelemetry SDK's own settings, read by it
/// while traces are exported (docs/operations.md, "Tracing"). The deployment
/// files are checked against these and the flags' variables
/// (crates/marketing/tests/manifests.rs).
pub const EXTERNAL_ENV: &[&str] = &[
    "RUST_LOG",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT",
    "AWS_ALLOW_HTTP",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
];

/// The session option that keeps Postgres' NOTICEs (`relation ... already
/// exists, skipping` from idempotent DDL) off a connection.
const QUIET_SESSION: &str = "-c client_min_messages=warning";

/// `database_url` with Postgres' notices turned off for its sessions, for the
/// one-shot commands, whose output is for people. A URL that already sets
/// `options` is left as it is: those are the operator's.
pub fn without_notices(database_url: &str) -> String {
    if database_url.contains("options=") {
        return database_url.to_owned();
    }
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        let separator = if database_url.contains('?') { '&' } else { '?' };
        format!("{database_url}{separator}options=-c%20client_min_messages%3Dwarning")
    } else {
        format!("{database_url} options='{QUIET_SESSION}'")
    }
}

/// The production default of `RATE_LIMIT_PER_SECOND`: what a busy sync job
/// needs, and the order of what comparable APIs allow per account.
pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 100;

/// The production default of `RATE_LIMIT_BURST`: two seconds' worth.
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 200;

/// A setting that must never be printed (`Debug` shows `Secret(..)`).
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl Config {
    /// The media store this configuration names: MEDIA_STORE_URL if set, else
    /// the local directory MEDIA_DIR.
    pub fn media_store(&self) -> Result<media::MediaStore, media::MediaError> {
        match &self.media_store_url {
            Some(url) => media::MediaStore::from_url(url, self.media_max_bytes),
            None => media::MediaStore::local(&self.media_dir, self.media_max_bytes),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The lead CSV import's limits (LEAD_IMPORT_MAX_BYTES, _MAX_ROWS).
    pub fn lead_import_limits(&self) -> command_api::csv_upload::ImportLimits {
        command_api::csv_upload::ImportLimits {
            max_bytes: self.lead_import_max_bytes,
            max_rows: self.lead_import_max_rows,
        }
    }

    /// The analytics CSV import's limits (ANALYTICS_IMPORT_MAX_BYTES, _MAX_ROWS).
    pub fn analytics_import_limits(&self) -> command_api::csv_upload::ImportLimits {
        command_api::csv_upload::ImportLimits {
            max_bytes: self.analytics_import_max_bytes,
            max_rows: self.analytics_import_max_rows,
        }
    }

    pub fn read_after_write_timeout(&self) -> Duration {
        Duration::from_millis(self.read_after_write_timeout_ms)
    }

    /// The replica reads' limits; checked, so a bad pair stops start-up with
    /// a message naming the variables.
    pub fn replica_settings(&self) -> Result<web::replica::ReplicaSettings, String> {
        let settings = web::replica::ReplicaSettings {
            max_lag: Duration::from_millis(self.read_replica_max_lag_ms),
            check_interval: Duration::from_millis(self.read_replica_check_interval_ms),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The publisher's settings, if `KAFKA_BROKERS` is set; checked, so a bad
    /// value stops start-up with a message naming the variable.
    pub fn publisher(&self) -> Result<Option<publisher::PublisherConfig>, publisher::ConfigError> {
        let Some(brokers) = &self.kafka_brokers else {
            return Ok(None);
        };
        let config = publisher::PublisherConfig {
            campaigns_topic: self.kafka_topic_campaigns.clone(),
            leads_topic: self.kafka_topic_leads.clone(),
            partitions: self.kafka_partitions,
            replication_factor: self.kafka_replication_factor,
            extra_properties: publisher::parse_properties(&self.kafka_producer_config)?,
            stall_timeout: Duration::from_millis(self.kafka_stall_timeout_ms.max(1)),
            ..publisher::PublisherConfig::new(brokers.clone())
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// The event log: KurrentDB when `EVENT_STORE_URL` is set, otherwise the
    /// `events` table reached through `pool`. A KurrentDB store ticks `wakeups`
    /// from its own `$all` subscription; a Postgres one needs the `LISTEN`
    /// listener for other processes' commits. Must run inside a Tokio runtime.
    pub fn event_store(
        &self,
        pool: deadpool_postgres::Pool,
        wakeups: event_store::Wakeups,
    ) -> anyhow::Result<std::sync::Arc<dyn event_store::EventStore>> {
        Ok(match &self.event_store_url {
            Some(url) => std::sync::Arc::new(
                event_store::KurrentEventStore::connect(url, domain::upcast::ALL, wakeups)
                    .context("cannot open the KurrentDB event store")?,
            ),
            None => std::sync::Arc::new(event_store::PgEventStore::new(pool, domain::upcast::ALL, wakeups)),
        })
    }

    /// The vault that opens lead personal data, with `LEAD_KEY_ENCRYPTION_KEY`.
    pub fn lead_vault(&self) -> anyhow::Result<lead_vault::LeadVault> {
        lead_vault::LeadVault::from_setting(self.lead_key_encryption_key.as_ref().map(|s| s.0.as_str()))
            .map_err(anyhow::Error::msg)
    }

    /// The webhook settings (docs/webhooks.md).
    pub fn webhooks(&self) -> webhooks::WebhooksConfig {
        webhooks::WebhooksConfig {
            allow_private_targets: self.webhooks_allow_private_targets,
            retry_base: Duration::from_millis(self.webhooks_retry_base_ms.max(1)),
            retry_max: Duration::from_millis(self.webhooks_retry_max_ms.max(1)),
            give_up_after: Duration::from_secs(self.webhooks_give_up_after_secs),
            idle_poll: Duration::from_millis(self.webhooks_idle_poll_ms.max(1)),
            shards: self.webhooks_shards,
            retention: Duration::from_secs(self.webhooks_retention_days * 24 * 3600),
            ..webhooks::WebhooksConfig::default()
        }
    }

    /// The per-key rate limits of a process serving `serves`; `None` when off.
    pub fn rate_limits(&self, serves: web::rate_limit::Serves) -> Option<web::rate_limit::RateLimits> {
        web::rate_limit::RateLimits::new(self.rate_limit_per_second, self.rate_limit_burst, serves)
    }

    /// The asynchronous lead import's worker settings.
    pub fn lead_import_worker(&self) -> command_api::leads::import_worker::WorkerConfig {
        command_api::leads::import_worker::WorkerConfig {
            chunk_rows: usize::try_from(self.lead_import_chunk_rows).unwrap_or(usize::MAX),
            lease: Duration::from_millis(self.lead_import_lease_ms),
            retention: Duration::from_secs(self.lead_import_retention_hours.saturating_mul(3600)),
        }
    }

    pub fn lead_import_timeout(&self) -> Duration {
        Duration::from_millis(self.lead_import_timeout_ms)
    }

    pub fn analytics_import_timeout(&self) -> Duration {
        Duration::from_millis(self.analytics_import_timeout_ms)
    }

    /// The configuration used when nothing is set, for tests and examples.
    pub fn for_database(database_url: &str) -> Self {
        Self {
            database_url: database_url.to_owned(),
            read_database_url: None,
            read_replica_max_lag_ms: 1_000,
            read_replica_check_interval_ms: 100,
            listen_addr: "127.0.0.1:0".parse().expect("valid address"),
            kafka_brokers: None,
            kafka_topic_campaigns: publisher::PublisherConfig::DEFAULT_CAMPAIGNS_TOPIC.to_owned(),
            kafka_topic_leads: publisher::PublisherConfig::DEFAULT_LEADS_TOPIC.to_owned(),
            kafka_partitions: publisher::PublisherConfig::DEFAULT_PARTITIONS,
            kafka_replication_factor: -1,
            kafka_producer_config: String::new(),
            kafka_stall_timeout_ms: 10_000,
            event_store_url: None,
            media_dir: PathBuf::from("./data/media"),
            media_store_url: None,
            media_max_bytes: 25 * 1024 * 1024,
            log_format: LogFormat::Text,
            pool_size: 16,
            request_timeout_ms: 60_000,
            shutdown_grace_ms: 25_000,
            // Generous: tests share one Postgres cluster, and every transaction
            // in it (another test's migrations, say) holds back the commit
            // horizon that projectors read up to. Slower, never a false 404.
            read_after_write_timeout_ms: 30_000,
            projection_shards: 2,
            lead_key_encryption_key: None,
            lead_import_timeout_ms: 600_000,
            lead_import_max_bytes: 512 * 1024 * 1024,
            lead_import_max_rows: 1_000_000,
            analytics_import_timeout_ms: 600_000,
            analytics_import_max_bytes: 512 * 1024 * 1024,
            analytics_import_max_rows: 5_000_000,
            lead_import_chunk_rows: 1_000,
            lead_import_lease_ms: 30_000,
            lead_import_retention_hours: 168,
            default_currency: domain::Currency::USD,
            webhooks_allow_private_targets: false,
            webhooks_retry_base_ms: 5_000,
            webhooks_retry_max_ms: 3_600_000,
            webhooks_give_up_after_secs: 259_200,
            webhooks_idle_poll_ms: 1_000,
            // Off: tests and benchmarks make requests as fast as they can and
            // are not about limits; those that are set them. The production
            // defaults are the environment's (DEFAULT_RATE_LIMIT_*).
            rate_limit_per_second: 0,
            rate_limit_burst: 0,
            webhooks_shards: 2,
            webhooks_retention_days: 30,
            progress_interval_ms: 1_000,
            otel_exporter_otlp_endpoint: None,
            otel_service_name: None,
        }
    }
}

/// `DEFAULT_CURRENCY`: an ISO 4217 code, checked at start-up.
fn parse_currency(raw: &str) -> Result<domain::Currency, String> {
    domain::Currency::parse("DEFAULT_CURRENCY", raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_sessions_ask_for_no_notices_in_either_url_form() {
        for (url, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432/marketing",
                "postgres://postgres@127.0.0.1:5432/marketing?options=-c%20client_min_messages%3Dwarning",
            ),
            (
                "postgresql://u@h/db?sslmode=disable",
                "postgresql://u@h/db?sslmode=disable&options=-c%20client_min_messages%3Dwarning",
            ),
            (
                "host=h dbname=db",
                "host=h dbname=db options='-c client_min_messages=warning'",
            ),
            (
                "postgres://h/db?options=-c%20x%3Dy",
                "postgres://h/db?options=-c%20x%3Dy",
            ),
        ] {
            let quiet = without_notices(url);
            assert_eq!(quiet, expected);
            let parsed: tokio_postgres::Config = quiet.parse().unwrap();
            if !url.contains("options=") {
                assert_eq!(parsed.get_options(), Some(QUIET_SESSION));
            }
        }
    }
}
