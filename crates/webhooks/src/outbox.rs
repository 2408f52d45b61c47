//! The delivery outbox (`webhook_deliveries`): what is due, and recording
//! each attempt's outcome. Per endpoint, only the oldest pending delivery of
//! each aggregate is ever due, so a later event of an aggregate waits while an
//! earlier one is retried, and deliveries of one aggregate go out in log order.
//! Each shard's sender reads only its shard's rows; an aggregate's rows are
//! all in one shard.

use crate::config::WebhooksConfig;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use projector::Shard;
use std::time::Duration;
use uuid::Uuid;

/// A delivery to attempt now.
#[derive(Debug, Clone)]
pub struct Due {
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub attempts: i32,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub url: String,
    /// The current secret first, then the one before a rotation while it is
    /// still honoured.
    pub secrets: Vec<String>,
}

/// Up to `limit` due deliveries of `shard`, at most one per endpoint and
/// aggregate, and at most `per_endpoint` per endpoint counting those in flight
/// (`busy`, as endpoint and event ids), so the oldest due rows of one endpoint
/// cannot take every slot. An aggregate whose head is in flight has nothing due.
pub async fn due(
    pool: &Pool,
    shard: Shard,
    limit: i64,
    per_endpoint: i64,
    busy: &[(Uuid, Uuid)],
) -> Result<Vec<Due>, anyhow::Error> {
    let (busy_endpoints, busy_events): (Vec<Uuid>, Vec<Uuid>) = busy.iter().copied().unzip();
    let shard = shard.index as i32;
    let client = pool.get().await?;
    let rows = client
        .query(
            "WITH busy AS (
                 SELECT endpoint_id, count(*) AS n FROM unnest($2::uuid[]) AS b (endpoint_id) GROUP BY endpoint_id
             ), heads AS (
                 SELECT d.endpoint_id, d.event_id, d.event_type, d.attempts, d.first_attempt_at,
                        d.next_attempt_at, d.tx_id, d.position,
                        row_number() OVER (PARTITION BY d.endpoint_id
                                           ORDER BY d.next_attempt_at, d.tx_id, d.position) AS rank
                 FROM webhook_deliveries d
                 WHERE d.state = 'pending' AND d.shard = $4 AND d.next_attempt_at <= now()
                   AND NOT EXISTS (
                       SELECT 1 FROM webhook_deliveries p
                       WHERE p.endpoint_id = d.endpoint_id AND p.stream_id = d.stream_id
                         AND p.state = 'pending' AND (p.tx_id, p.position) < (d.tx_id, d.position))
                   AND (d.endpoint_id, d.event_id) NOT IN (SELECT * FROM unnest($2::uuid[], $3::uuid[]))
             )
             SELECT h.endpoint_id, h.event_id, h.event_type, h.attempts, h.first_attempt_at, e.url, e.secret,
                    CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END AS previous_secret
             FROM heads h JOIN webhook_endpoints e ON e.id = h.endpoint_id
             LEFT JOIN busy b ON b.endpoint_id = h.endpoint_id
             WHERE e.enabled AND h.rank + COALESCE(b.n, 0) <= $5
             ORDER BY h.next_attempt_at, h.tx_id, h.position
             LIMIT $1",
            &[&limit, &busy_endpoints, &busy_events, &shard, &per_endpoint],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Due {
            endpoint_id: row.get("endpoint_id"),
            event_id: row.get("event_id"),
            event_type: row.get("event_type"),
            attempts: row.get("attempts"),
            first_attempt_at: row.get("first_attempt_at"),
            url: row.get("url"),
            secrets: std::iter::once(row.get::<_, String>("secret"))
                .chain(row.get::<_, Option<String>>("previous_secret"))
                .collect(),
        })
        .collect())
}

/// How long until the next pending delivery of `shard` is due, if any is.
pub async fn next_due_in(pool: &Pool, shard: Shard) -> Result<Option<Duration>, anyhow::Error> {
    let shard = shard.index as i32;
    let client = pool.get().await?;
    let next: Option<DateTime<Utc>> = client
        .query_one(
            "SELECT min(d.next_attempt_at) FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.id = d.endpoint_id
             WHERE d.state = 'pending' AND d.shard = $1 AND e.enabled",
            &[&shard],
        )
        .await?
        .get(0);
    Ok(next.map(|at| (at - Utc::now()).to_std().unwrap_or_default()))
}

/// What one attempt gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Option<u16>,
    pub latency: Duration,
    pub error: Option<String>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Where a delivery stands after an attempt.
enum Next {
    Delivered,
    Retry(DateTime<Utc>),
    GiveUp,
}

fn next_step(config: &WebhooksConfig, due: &Due, outcome: &Outcome, now: DateTime<Utc>) -> Next {
    if outcome.succeeded() {
        return Next::Delivered;
    }
    // The same test as for disabling the endpoint (its failure run started
    // at or before this delivery's first attempt), so an endpoint that fails
    // throughout is disabled by the attempt that gives up on its delivery.
    let first = due.first_attempt_at.unwrap_or(now);
    if now - first >= chrono::TimeDelta::from_std(config.give_up_after).unwrap_or(chrono::TimeDelta::MAX) {
        Next::GiveUp
    } else {
        Next::Retry(now + config.backoff(due.attempts as u32 + 1))
    }
}

/// Records an attempt, moves the delivery on, and keeps the endpoint's
/// failure run: a success ends it; an endpoint failing for `give_up_after`
/// without a success is disabled, with the reason.
pub async fn record(
    pool: &Pool,
    config: &WebhooksConfig,
    due: &Due,
    outcome: &Outcome,
) -> Result<(), anyhow::Error> {
    let now = Utc::now();
    let next = next_step(config, due, outcome, now);
    let (state, next_retry) = match next {
        Next::Delivered => ("delivered", None),
        Next::Retry(at) => ("pending", Some(at)),
        Next::GiveUp => ("failed", None),
    };
    let attempt = due.attempts + 1;
    let latency_ms = i64::try_from(outcome.latency.as_millis()).unwrap_or(i64::MAX);
    let status = outcome.status.map(i32::from);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Compare-and-set on the attempt count: an attempt recorded by another
    // instance (during a fail-over) is not counted twice.
    let moved = tx
        .execute(
            "UPDATE webhook_deliveries SET state = $3, attempts = $4,
                 next_attempt_at = COALESCE($5, next_attempt_at),
                 first_attempt_at = COALESCE(first_attempt_at, $6),
                 finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE $6 END
             WHERE endpoint_id = $1 AND event_id = $2 AND attempts = $7 AND state = 'pending'",
            &[
                &due.endpoint_id,
                &due.event_id,
                &state,
                &attempt,
                &next_retry,
                &now,
                &due.attempts,
            ],
        )
        .await?;
    if moved == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO webhook_attempts
             (endpoint_id, event_id, event_type, attempt, attempted_at, status_code, latency_ms, error, next_retry_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[&due.endpoint_id, &due.event_id, &due.event_type, &attempt, &now, &status, &latency_ms, &outcome.error, &next_retry],
    )
    .await?;
    if outcome.succeeded() {
        tx.execute(
            "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
            &[&due.endpoint_id],
        )
        .await?;
    } else {
        record_failure(&tx, config, due.endpoint_id, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn record_failure(
    tx: &tokio_postgres::Transaction<'_>,
    config: &WebhooksConfig,
    endpoint_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), anyhow::Error> {
    let since: DateTime<Utc> = tx
        .query_one(
            "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2)
             WHERE id = $1 RETURNING failing_since",
            &[&endpoint_id, &now],
        )
        .await?
        .get(0);
    let limit = chrono::TimeDelta::from_std(config.give_up_after).unwrap_or(chrono::TimeDelta::MAX);
    if now - since >= limit {
        let reason = format!(
            "disabled at {}: every delivery failed since {}",
            now.to_rfc3339(),
            since.to_rfc3339()
        );
        tracing::warn!(%endpoint_id, %reason, "webhook endpoint disabled");
        metrics::counter!("marketing_webhook_endpoints_disabled_total").increment(1);
        tx.execute(
            "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now() WHERE id = $1",
            &[&endpoint_id, &reason],
        )
        .await?;
    }
    Ok(())
}
