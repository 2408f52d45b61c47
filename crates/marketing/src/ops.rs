//! Endpoints outside the base path: health, readiness, metrics, OpenAPI.

use crate::openapi;
use crate::telemetry::metrics_handle;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use event_store::EventStore;
use serde_json::json;
use std::sync::Arc;

#[derive(Clone)]
pub struct OpsState {
    pub pool: Pool,
    pub store: Arc<dyn EventStore>,
    /// The replica reads may use, for its gauges.
    pub replica: Option<web::replica::Replica>,
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers.
async fn readyz(State(state): State<OpsState>) -> Response {
    let ready = async {
        let client = state.pool.get().await.ok()?;
        client.query_one("SELECT 1", &[]).await.ok()
    }
    .await
    .is_some();
    if ready {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        // Bounded by the pool's wait and create timeouts, so a load balancer's
        // probe gets its answer even while Postgres hangs.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, web::error::RETRY_AFTER_SECONDS.to_string())],
            Json(json!({ "message": web::error::DATABASE_UNAVAILABLE, "code": "not_ready" })),
        )
            .into_response()
    }
}

/// Most events counted per projection when measuring lag: enough to alert on,
/// cheap to count.
const LAG_COUNT_CAP: i64 = 1_000_000;

/// Prometheus text, plus gauges computed now: log head and each projection's
/// lag in events (capped).
async fn metrics(State(state): State<OpsState>) -> Response {
    if let Err(error) = refresh_log_gauges(&state).await {
        tracing::warn!(%error, "cannot compute projection lag");
    }
    if let Some(replica) = &state.replica {
        replica.record_gauges();
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
        .into_response()
}

async fn refresh_log_gauges(state: &OpsState) -> anyhow::Result<()> {
    if let Some(head) = state.store.head().await? {
        metrics::gauge!("marketing_event_log_head_position").set(head.position as f64);
    }
    let lags = state
        .store
        .clone()
        .log_reader()
        .lag(&state.pool, LAG_COUNT_CAP)
        .await?;
    for (name, lag) in lags {
        // A shard's reader is `<projection>:<index>/<count>`.
        match name.split_once(':') {
            Some((projection, shard)) => metrics::gauge!("marketing_projection_lag_events",
                "projection" => projection.to_owned(), "shard" => shard.to_owned())
            .set(lag as f64),
            None => metrics::gauge!("marketing_projection_lag_events", "projection" => name).set(lag as f64),
        }
    }
    let client = state.pool.get().await?;
    // Every reader of the log stops at the oldest transaction that may still
    // append (event_store::horizon): one that holds a transaction id, in this
    // database or in none known. A long one delays every projection and so
    // every read-after-write; read-only transactions and other databases'
    // do not.
    let oldest: f64 = client
        .query_one(
            "SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0)::float8
             FROM pg_stat_activity
             WHERE xact_start IS NOT NULL AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()
               AND (datname IS NULL OR datname = current_database())",
            &[],
        )
        .await?
        .get(0);
    metrics::gauge!("marketing_oldest_transaction_age_seconds").set(oldest);
    Ok(())
}

async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(openapi::document())
}
