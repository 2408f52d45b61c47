//! Sends one shard's due deliveries: one signed `POST` per delivery, at most
//! [`MAX_IN_FLIGHT`] at once and [`MAX_IN_FLIGHT_PER_ENDPOINT`] to one
//! endpoint, each attempt recorded in the outbox. Runs only while its
//! dispatcher leads the shard (the shard's follower starts and stops it with
//! its sessions). An attempt cut short by a shutdown or a crash is not recorded,
//! so the next instance sends it again: receivers dedupe on `webhook-id`.

use crate::config::{WebhooksConfig, DELIVERY_TIMEOUT, MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_ENDPOINT};
use crate::outbound::{self, Outbound};
use crate::outbox::{self, Due, Outcome};
use crate::signature::{self, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::target::{self, GuardedResolver};
use deadpool_postgres::Pool;
use event_store::LogReader;
use projector::Shard;
use publisher::DataGate;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// How long the sender waits before looking again for events the log's
/// index does not hold yet.
const INDEX_WAIT: Duration = Duration::from_millis(50);

/// The user agent of every delivery.
const USER_AGENT: &str = concat!("marketing-webhooks/", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct Sender {
    pub pool: Pool,
    /// Where the events' bodies are read (`EventStore::log_reader`).
    pub log: LogReader,
    pub gate: Arc<dyn DataGate>,
    pub config: Arc<WebhooksConfig>,
    /// Wakes every shard's sender of this process (a manual retry, an
    /// endpoint enabled): `notify_waiters`.
    pub wake: Arc<Notify>,
    /// Wakes this shard's sender when its fan-out queued deliveries.
    pub queued: Arc<Notify>,
    pub shard: Shard,
    client: reqwest::Client,
}

/// The delivery client: 10 s per attempt, no redirects (a 3xx is a failed
/// attempt, so a public target cannot send a delivery inward), names resolved
/// through the address guard.
pub fn http_client(allow_private: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .connect_timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .user_agent(USER_AGENT)
        .build()
        .expect("the TLS backend initialises")
}

/// The error and its causes, one line: reqwest's own message omits them.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

impl Sender {
    pub fn new(
        pool: Pool,
        log: LogReader,
        gate: Arc<dyn DataGate>,
        config: Arc<WebhooksConfig>,
        wake: Arc<Notify>,
        shard: Shard,
    ) -> Self {
        let client = http_client(config.allow_private_targets);
        Self {
            pool,
            log,
            gate,
            config,
            wake,
            queued: Arc::new(Notify::new()),
            shard,
            client,
        }
    }

    /// Until `stop`: keeps up to [`MAX_IN_FLIGHT`] deliveries in flight,
    /// starting due ones as others finish, so a slow endpoint holds only its
    /// own slots (at most [`MAX_IN_FLIGHT_PER_ENDPOINT`]); sleeps until
    /// something may be due when nothing is.
    pub async fn run(self, stop: CancellationToken) {
        let mut in_flight: JoinSet<(Uuid, Uuid)> = JoinSet::new();
        let mut busy: HashSet<(Uuid, Uuid)> = HashSet::new();
        while !stop.is_cancelled() {
            // Armed before the outbox is read, so a wake-up during the read
            // is not lost (`notify_waiters` keeps no permit).
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let room = MAX_IN_FLIGHT - in_flight.len();
            let pause = match self.start_due(room, &mut busy, &mut in_flight).await {
                Ok((started, _)) if started > 0 && started == room => None,
                Ok((_, true)) => Some(INDEX_WAIT),
                Ok(_) if !in_flight.is_empty() => Some(self.config.idle_poll),
                Ok(_) => Some(self.until_due().await),
                Err(error) => {
                    metrics::counter!("marketing_webhook_errors_total").increment(1);
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "cannot read the webhook outbox; retrying"
                    );
                    Some(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok(key) = done {
                        busy.remove(&key);
                    }
                }
                _ = &mut woken, if pause.is_some() => {}
                _ = self.queued.notified(), if pause.is_some() => {}
                _ = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
            }
        }
        // Attempts cut short here are not recorded: the next leader makes them.
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
    }

    /// How long until the next pending delivery is due (at most `idle_poll`).
    async fn until_due(&self) -> Duration {
        match outbox::next_due_in(&self.pool, self.shard).await {
            Ok(Some(due_in)) => due_in.min(self.config.idle_poll),
            Ok(None) => self.config.idle_poll,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "cannot read the webhook outbox");
                self.config.idle_poll
            }
        }
    }

    /// Starts up to `room` due deliveries; how many it started, and whether
    /// some were left for the log's index to catch up with.
    async fn start_due(
        &self,
        room: usize,
        busy: &mut HashSet<(Uuid, Uuid)>,
        in_flight: &mut JoinSet<(Uuid, Uuid)>,
    ) -> Result<(usize, bool), anyhow::Error> {
        if room == 0 {
            return Ok((0, false));
        }
        let busy_now: Vec<(Uuid, Uuid)> = busy.iter().copied().collect();
        let due = outbox::due(
            &self.pool,
            self.shard,
            room as i64,
            MAX_IN_FLIGHT_PER_ENDPOINT as i64,
            &busy_now,
        )
        .await?;
        let (due, deferred) = self.indexed(due).await?;
        if due.is_empty() {
            return Ok((0, deferred));
        }
        let bodies = self.bodies(&due).await?;
        let started = due.len();
        for delivery in due {
            let key = (delivery.endpoint_id, delivery.event_id);
            busy.insert(key);
            // Rendered once per event, though several endpoints may get it.
            let body = bodies.get(&delivery.event_id).cloned();
            let sender = self.clone();
            let span = tracing::info_span!("webhook_delivery", endpoint_id = %key.0, event_id = %key.1);
            in_flight.spawn(
                async move {
                    let outcome = sender.attempt(&delivery, body.as_ref()).await;
                    if let Err(error) =
                        outbox::record(&sender.pool, &sender.config, &delivery, &outcome).await
                    {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "cannot record a webhook attempt; it will be made again"
                        );
                    }
                    key
                }
                .instrument(span),
            );
        }
        Ok((started, deferred))
    }

    /// The deliveries whose events the log's index holds, and whether any
    /// were left out. The fan-out follows the store, the index is a
    /// projection that may be a moment behind it (KurrentDB only): a delivery
    /// of an event not indexed yet waits for it rather than fail an attempt.
    async fn indexed(&self, mut due: Vec<Due>) -> Result<(Vec<Due>, bool), anyhow::Error> {
        let ids: Vec<Uuid> = due.iter().map(|d| d.event_id).collect();
        let waiting = self.log.unindexed(&self.pool, &ids).await?;
        if waiting.is_empty() {
            return Ok((due, false));
        }
        due.retain(|d| !waiting.contains(&d.event_id));
        Ok((due, true))
    }

    /// The bodies of the round's events, rendered now (the personal-data
    /// gate applies at every attempt).
    async fn bodies(&self, due: &[Due]) -> Result<HashMap<Uuid, Vec<u8>>, anyhow::Error> {
        let mut ids: Vec<Uuid> = due.iter().map(|d| d.event_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let events = self.log.events(&self.pool, domain::upcast::ALL, &ids).await?;
        let rendered: Vec<Outbound> = outbound::render(&*self.gate, events).await?;
        Ok(rendered
            .into_iter()
            .map(|o| {
                let body = serde_json::to_vec(&o.body).expect("JSON values serialize");
                (o.event_id, body)
            })
            .collect())
    }

    async fn attempt(&self, due: &Due, body: Option<&Vec<u8>>) -> Outcome {
        let started = Instant::now();
        let failed = |error: String| Outcome {
            status: None,
            latency: started.elapsed(),
            error: Some(error),
        };
        let Some(body) = body else {
            return failed("the event is no longer readable".to_owned());
        };
        let url = match target::parse(&due.url)
            .and_then(|url| target::check_literal(&url, self.config.allow_private_targets).map(|()| url))
        {
            Ok(url) => url,
            Err(error) => return failed(error.to_string()),
        };
        let id = due.event_id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let secrets: Vec<&str> = due.secrets.iter().map(String::as_str).collect();
        let signature = match signature::header_value(&secrets, &id, timestamp, body) {
            Ok(signature) => signature,
            Err(error) => return failed(error.to_string()),
        };
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(ID_HEADER, &id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body.clone())
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => {
                let status = response.status();
                Outcome {
                    status: Some(status.as_u16()),
                    latency: started.elapsed(),
                    error: (!status.is_success()).then(|| format!("the endpoint answered {status}")),
                }
            }
            Err(error) => failed(describe(&error)),
        };
        let result = if outcome.succeeded() {
            "delivered"
        } else {
            "failed"
        };
        metrics::counter!("marketing_webhook_attempts_total", "result" => result).increment(1);
        metrics::histogram!("marketing_webhook_attempt_seconds").record(outcome.latency.as_secs_f64());
        outcome
    }
}
