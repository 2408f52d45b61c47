//! Builds a role's process: pool, migrations, event store, projectors, HTTP.
//! `Application::build` binds the listener first (port 0 picks a free one), so
//! tests start the real wiring and learn the port.

use crate::config::Config;
use crate::ops;
use anyhow::Context;
use axum::Router;
use command_api::CommandState;
use event_store::leases::Leases;
use event_store::{connect_pool, spawn_listener, EventStore, Wakeups};
use projector::{
    projections_for, Consumer, Local, Progress, ProjectionRunner, ReadModelProgress, RunnerConfig, Shard,
};
use query_api::QueryState;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use web::replica::{ReadPool, Replica};
use web::ApiKeys;

/// What a process does. `Serve` is everything in one process (the publisher
/// only when `KAFKA_BROKERS` is set), the webhook dispatcher included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    CommandApi,
    QueryApi,
    Projector,
    Publisher,
    Webhooks,
}

impl Role {
    fn may_publish(self) -> bool {
        matches!(self, Role::Serve | Role::Publisher)
    }
    fn dispatches_webhooks(self) -> bool {
        matches!(self, Role::Serve | Role::Webhooks)
    }
    fn runs_projectors(self) -> bool {
        matches!(self, Role::Serve | Role::Projector)
    }
    fn serves_commands(self) -> bool {
        matches!(self, Role::Serve | Role::CommandApi)
    }
    fn serves_queries(self) -> bool {
        matches!(self, Role::Serve | Role::QueryApi)
    }
}

/// Postgres connections of the publisher: one holds its advisory lock, the others
/// read the log and write the checkpoint.
const PUBLISHER_POOL_SIZE: usize = 3;

/// How long background tasks (projectors, publisher, listener) have to finish
/// their batch and commit their checkpoint once the HTTP server has stopped.
/// A process exits within `SHUTDOWN_GRACE_MS` plus this after the signal.
pub const BACKGROUND_STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Application {
    port: u16,
    listener: TcpListener,
    router: Router,
    /// Stops the HTTP server (SIGTERM, or a test).
    shutdown: CancellationToken,
    /// Stops the background tasks, once the HTTP server has stopped: in-flight
    /// writes wait for the projectors (read-after-write), so they must outlive
    /// the requests.
    stop_background: CancellationToken,
    /// How long in-flight requests have after the shutdown signal.
    grace: Duration,
    background: Vec<JoinHandle<()>>,
    keys: ApiKeys,
}

/// Applies every schema migration (idempotent; safe to run concurrently).
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let pool = connect_pool(database_url, 1)?;
    let mut client = pool.get().await.context("cannot connect to Postgres")?;
    let client: &mut tokio_postgres::Client = &mut client;
    event_store::migrate(client).await?;
    projector::migrate(client).await?;
    web::migrate(client).await?;
    lead_vault::migrate(client).await?;
    webhooks::migrate(client).await?;
    Ok(())
}

/// Creates the database named in `database_url` if it does not exist, so
/// `marketing serve` works on a fresh machine with nothing but Postgres.
pub async fn ensure_database(database_url: &str) -> anyhow::Result<()> {
    let config: tokio_postgres::Config = database_url.parse().context("invalid DATABASE_URL")?;
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    if config.connect(tokio_postgres::NoTls).await.is_ok() {
        return Ok(());
    }
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin
        .connect(tokio_postgres::NoTls)
        .await
        .context("cannot connect to Postgres")?;
    tokio::spawn(connection);
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&format!("CREATE DATABASE {quoted}")).await {
        Ok(()) => tracing::info!(database = name, "created database"),
        // Someone else created it meanwhile: fine.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
        Err(e) => return Err(e).context("cannot create database"),
    }
    Ok(())
}

/// What the parts of one process share while it is being wired.
struct Core {
    role: Role,
    pool: deadpool_postgres::Pool,
    store: Arc<dyn EventStore>,
    wakeups: Wakeups,
    shutdown: CancellationToken,
    background: Vec<JoinHandle<()>>,
    keys: ApiKeys,
    media: Option<media::MediaStore>,
    vault: lead_vault::LeadVault,
    /// Wakes this process's webhook dispatcher (a manual retry, an endpoint
    /// enabled); other processes' dispatchers poll.
    webhooks_wake: Arc<tokio::sync::Notify>,
}

impl Core {
    fn open(config: &Config, role: Role) -> anyhow::Result<Self> {
        let pool = connect_pool(&config.database_url, config.pool_size)?;
        let wakeups = Wakeups::new();
        let store = config.event_store(pool.clone(), wakeups.clone())?;
        let media = if role.serves_commands() || role.serves_queries() {
            Some(config.media_store().context("cannot open the media store")?)
        } else {
            None
        };
        let vault = config.lead_vault()?;
        if !vault.wraps_keys() && role != Role::QueryApi {
            tracing::warn!(
                "{} is not set: per-lead encryption keys are stored unwrapped (see docs/leads.md)",
                lead_vault::KEK_ENV
            );
        }
        let keys = if role.serves_commands() || role.serves_queries() {
            let serves = match role {
                Role::CommandApi => web::rate_limit::Serves::Commands,
                Role::QueryApi => web::rate_limit::Serves::Queries,
                _ => web::rate_limit::Serves::All,
            };
            let keys = ApiKeys::cached(pool.clone());
            match config.rate_limits(serves) {
                Some(limits) => keys.with_rate_limits(limits),
                None => keys,
            }
        } else {
            ApiKeys::new(pool.clone())
        };
        Ok(Self {
            role,
            keys,
            pool,
            store,
            wakeups,
            shutdown: CancellationToken::new(),
            background: Vec::new(),
            media,
            vault,
            webhooks_wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// `LISTEN` for commits of other processes, for the log's readers here.
    /// A log in KurrentDB needs none: its store ticks the wake-ups from its
    /// `$all` subscription.
    fn spawn_listener(&mut self, config: &Config) -> anyhow::Result<()> {
        if !self.store.in_postgres() {
            return Ok(());
        }
        let db_config: tokio_postgres::Config =
            config.database_url.parse().context("invalid DATABASE_URL")?;
        let listener = spawn_listener(db_config, self.wakeups.clone());
        let stop = self.shutdown.clone();
        self.background.push(tokio::spawn(async move {
            stop.cancelled().await;
            listener.abort();
        }));
        Ok(())
    }

    fn spawn_publisher(
        &mut self,
        config: &Config,
        publisher_config: publisher::PublisherConfig,
    ) -> anyhow::Result<()> {
        // Lead personal data goes out decrypted only while the lead's key
        // exists (crate::lead_gate; the rule is in publisher::gate).
        // A pool of its own (lock connection, log reads, checkpoint writes):
        // busy API requests must not delay publishing, nor the reverse.
        let publisher_pool = connect_pool(&config.database_url, PUBLISHER_POOL_SIZE)?;
        // On KurrentDB, a client (gRPC connection) of its own, for the same reason.
        let publisher_store = config.event_store(publisher_pool.clone(), self.wakeups.clone())?;
        let gate = Arc::new(crate::lead_gate::LeadDataGate::new(
            publisher_pool.clone(),
            self.vault.clone(),
        ));
        let publisher = publisher::Publisher::new(publisher_store, publisher_pool, publisher_config, gate)?;
        self.background
            .push(tokio::spawn(publisher.run(self.shutdown.clone())));
        Ok(())
    }

    /// The webhook dispatcher, on the process's pool: its statements are
    /// short, and a pool of its own would hold open connections of its own in
    /// every process (only its lock takes one out of the pool).
    fn spawn_dispatcher(&mut self, config: &Config) {
        let gate = Arc::new(crate::lead_gate::LeadDataGate::new(
            self.pool.clone(),
            self.vault.clone(),
        ));
        let dispatcher = webhooks::Dispatcher::new(
            self.store.clone(),
            self.pool.clone(),
            gate,
            config.webhooks(),
            self.webhooks_wake.clone(),
        );
        self.background
            .push(tokio::spawn(dispatcher.run(self.shutdown.clone())));
    }

    fn webhooks_state(&self, config: &Config) -> webhooks::WebhooksState {
        webhooks::WebhooksState {
            pool: self.pool.clone(),
            log: self.store.clone().log_reader(),
            keys: self.keys.clone(),
            gate: Arc::new(crate::lead_gate::LeadDataGate::new(
                self.pool.clone(),
                self.vault.clone(),
            )),
            config: Arc::new(config.webhooks()),
            wake: self.webhooks_wake.clone(),
        }
    }

    /// One runner per shard of each projection, all on one set of leases, so
    /// the projector processes divide the shards between them; their
    /// progress, for read-after-write here.
    async fn spawn_projectors(&mut self, shards: u32) -> anyhow::Result<Vec<(Consumer, Option<Local>)>> {
        let projections = projections_for(&self.vault, &self.store.clone().log_reader());
        let mut client = self.pool.get().await?;
        for projection in &projections {
            projector::prepare_shards(&mut client, projection.name(), shards).await?;
        }
        drop(client);
        let leases = Leases::new(self.pool.clone(), projections.len() * shards as usize);
        let mut progress = Vec::new();
        for projection in projections {
            for shard in Shard::all(shards) {
                let consumer = Consumer::shard_of(&*projection, shard);
                let runner = ProjectionRunner::shard(
                    self.store.clone(),
                    self.pool.clone(),
                    projection.clone(),
                    shard,
                    RunnerConfig::default(),
                )
                .with_leases(leases.clone());
                let local = Local {
                    progress: runner.progress(),
                    leading: runner.leading(),
                };
                progress.push((consumer, Some(local)));
                self.background
                    .push(tokio::spawn(runner.run(self.shutdown.clone())));
            }
        }
        Ok(progress)
    }

    /// The streaming replica of `READ_DATABASE_URL` and its watcher, for a
    /// role that serves reads (they may use it) or writes (they wait for it).
    fn open_replica(&mut self, config: &Config) -> anyhow::Result<Option<Replica>> {
        let Some(read_url) = &config.read_database_url else {
            return Ok(None);
        };
        if !(self.role.serves_commands() || self.role.serves_queries()) {
            return Ok(None);
        }
        let settings = config.replica_settings().map_err(anyhow::Error::msg)?;
        // Connections open on first use: a command API, which only waits,
        // never opens one here.
        let reads = connect_pool(read_url, config.pool_size).context("invalid READ_DATABASE_URL")?;
        let (replica, watcher) = Replica::spawn(
            reads,
            connect_pool(&config.database_url, 1)?,
            connect_pool(read_url, 1).context("invalid READ_DATABASE_URL")?,
            settings,
            self.shutdown.clone(),
        );
        self.background.push(watcher);
        Ok(Some(replica))
    }

    /// The command and query routes this role serves.
    fn api(
        &mut self,
        config: &Config,
        local_runners: Vec<(Consumer, Option<Local>)>,
        replica: Option<Replica>,
    ) -> anyhow::Result<Router> {
        let mut api = Router::new();
        if self.role.serves_commands() || self.role.serves_queries() {
            // Two connections: the key cache's poll (a single-row read every
            // 200 ms) never waits long behind the rate-limit heartbeat (every
            // second) or the last-use writer (every 15 s).
            let poll_pool = connect_pool(&config.database_url, 2)?;
            self.background
                .extend(self.keys.spawn_background(poll_pool, self.shutdown.clone()));
        }
        if self.role.serves_commands() {
            // Without projectors here, every shard is read from its checkpoint row.
            let consumers = if self.role.runs_projectors() {
                local_runners
            } else {
                projections_for(&self.vault, &self.store.clone().log_reader())
                    .iter()
                    .flat_map(|p| {
                        Shard::all(config.projection_shards).map(|s| (Consumer::shard_of(&**p, s), None))
                    })
                    .collect()
            };
            let progress: Arc<dyn ReadModelProgress> =
                Arc::new(Progress::new(Some(self.pool.clone()), consumers));
            let state = CommandState {
                store: self.store.clone(),
                progress,
                keys: self.keys.clone(),
                pool: self.pool.clone(),
                read_after_write_timeout: config.read_after_write_timeout(),
                replica: replica.clone(),
                media: self.media.clone().context("media store")?,
                vault: self.vault.clone(),
                lead_import: config.lead_import_limits(),
                analytics_import: config.analytics_import_limits(),
                import_wake: Arc::new(tokio::sync::Notify::new()),
                default_currency: config.default_currency,
            };
            // Asynchronous lead imports run where commands are served.
            self.background
                .push(tokio::spawn(command_api::leads::import_worker::run(
                    state.clone(),
                    config.lead_import_worker(),
                    state.import_wake.clone(),
                    self.shutdown.clone(),
                )));
            api = api.merge(command_api::router(state));
            self.background
                .push(spawn_idempotency_purge(self.pool.clone(), self.shutdown.clone()));
            api = api.merge(webhooks::management_router(self.webhooks_state(config)));
        }
        if self.role.serves_queries() {
            api = api.merge(query_api::router(QueryState {
                pool: self.pool.clone(),
                reads: ReadPool::with_replica(self.pool.clone(), replica),
                keys: self.keys.clone(),
                media: self.media.clone().context("media store")?,
                vault: self.vault.clone(),
                log: self.store.clone().log_reader(),
            }));
            api = api.merge(webhooks::feed_router(self.webhooks_state(config)));
            // The web console is a client of the read (and, in `serve`, the
            // write) routes on the same origin: served wherever reads are.
            api = api.merge(console::router());
        }
        Ok(api)
    }
}

impl Application {
    pub async fn build(config: Config, role: Role) -> anyhow::Result<Self> {
        // Install the metrics recorder before anything records: counters and
        // gauges recorded before it exists would be lost.
        crate::telemetry::metrics_handle();
        if role == Role::Serve {
            ensure_database(&config.database_url).await?;
            migrate(&config.database_url).await?;
        }
        let publisher_config = if role.may_publish() {
            config.publisher().context("invalid Kafka settings")?
        } else {
            None
        };
        if role == Role::Publisher && publisher_config.is_none() {
            anyhow::bail!("the publisher needs KAFKA_BROKERS (the Kafka bootstrap servers)");
        }
        let mut core = Core::open(&config, role)?;
        if role.runs_projectors() || publisher_config.is_some() || role.dispatches_webhooks() {
            core.spawn_listener(&config)?;
        }
        if role.dispatches_webhooks() {
            core.spawn_dispatcher(&config);
        }
        if let Some(publisher_config) = publisher_config {
            core.spawn_publisher(&config, publisher_config)?;
        }
        let local_runners = if role.runs_projectors() {
            core.spawn_projectors(config.projection_shards).await?
        } else {
            Vec::new()
        };
        let replica = core.open_replica(&config)?;
        let api = core.api(&config, local_runners, replica.clone())?;
        let router = Router::new().merge(api).merge(ops::router(ops::OpsState {
            pool: core.pool.clone(),
            store: core.store.clone(),
            replica,
        }));
        let timeouts = web::middleware::RequestTimeouts {
            default: config.request_timeout(),
            // Imports read the whole upload before answering.
            overrides: vec![
                (
                    command_api::leads::import::PATH_SUFFIX,
                    config.lead_import_timeout(),
                ),
                (
                    command_api::analytics::import::PATH_SUFFIX,
                    config.analytics_import_timeout(),
                ),
            ],
        };
        let router = web::middleware::apply_with_timeouts(router, timeouts);

        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            port,
            listener,
            router,
            shutdown: CancellationToken::new(),
            stop_background: core.shutdown,
            grace: config.shutdown_grace(),
            background: core.background,
            keys: core.keys,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// This process's API keys, with its key cache (tests look into it).
    pub fn api_keys(&self) -> ApiKeys {
        self.keys.clone()
    }

    /// Cancel this to stop the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled: stops accepting, lets
    /// in-flight requests finish (for at most the grace period; connections
    /// still open then are cut when the process exits), then stops the
    /// background tasks, which finish their current batch and commit their
    /// checkpoints (for at most [`BACKGROUND_STOP_TIMEOUT`]), and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(port = self.port, "listening");
        let server = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(self.shutdown.clone().cancelled_owned())
            .into_future();
        let (shutdown, grace) = (self.shutdown.clone(), self.grace);
        // The grace period starts at the signal, not at start-up.
        let grace_over = async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = server => served.context("HTTP server failed")?,
            () = grace_over => tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "requests still in flight at the end of the shutdown grace period; giving up on them"
            ),
        }
        self.stop_background.cancel();
        let deadline = tokio::time::Instant::now() + BACKGROUND_STOP_TIMEOUT;
        for mut task in self.background {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!("a background task did not stop within {BACKGROUND_STOP_TIMEOUT:?}");
                task.abort();
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn spawn_idempotency_purge(pool: deadpool_postgres::Pool, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            }
            if let Err(error) = web::idempotency::purge_expired(&pool).await {
                tracing::warn!(%error, "cannot purge expired idempotency keys");
            }
        }
    })
}
