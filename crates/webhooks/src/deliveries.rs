//! `GET /webhooks/{id}/deliveries` (every attempt, newest first) and
//! `POST /webhooks/{id}/deliveries/{event_id}/retry` (send an event again).

use crate::endpoints::owned;
use crate::WebhooksState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;
use web::extract::parse_id;
use web::pagination::{decode_cursor, encode_cursor, parse_limit};
use web::{ApiError, Caller};

const DELIVERY_NOT_FOUND: &str = "Delivery not found";

/// One attempt to deliver an event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub event_id: Uuid,
    /// The CloudEvent type.
    pub event_type: String,
    /// 1 for the first attempt at this event.
    pub attempt: i32,
    pub attempted_at: DateTime<Utc>,
    /// The HTTP status the endpoint answered; absent if it did not answer.
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    /// Why the attempt failed; absent on success.
    pub error: Option<String>,
    /// When the next attempt is due; absent after a success or once given up.
    pub next_retry_at: Option<DateTime<Utc>>,
    pub succeeded: bool,
}

/// The endpoint's delivery attempts, newest first.
#[utoipa::path(
    get, path = "/v1/dev/marketing/webhooks/{webhook_id}/deliveries", tag = "webhooks", operation_id = "list_deliveries",
    params(
        ("webhook_id" = Uuid, Path),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "`{data: [Attempt], has_more, next_cursor}`", body = AttemptPage),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn list(
    State(state): State<WebhooksState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let endpoint = owned(&state, &caller, &webhook_id).await?;
    let limit = parse_limit(params.get("limit").map(String::as_str))?;
    let before: Option<i64> = params.get("cursor").map(|c| decode_cursor(c)).transpose()?;
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT id, event_id, event_type, attempt, attempted_at, status_code, latency_ms, error, next_retry_at
             FROM webhook_attempts WHERE endpoint_id = $1 AND ($2::int8 IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3",
            &[&endpoint.id, &before, &(limit + 1)],
        )
        .await?;
    let has_more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next_cursor = has_more
        .then(|| page.last().map(|row| encode_cursor(&row.get::<_, i64>("id"))))
        .flatten();
    let data: Vec<Attempt> = page
        .iter()
        .map(|row| {
            let status_code: Option<i32> = row.get("status_code");
            Attempt {
                event_id: row.get("event_id"),
                event_type: row.get("event_type"),
                attempt: row.get("attempt"),
                attempted_at: row.get("attempted_at"),
                status_code,
                latency_ms: row.get("latency_ms"),
                error: row.get("error"),
                next_retry_at: row.get("next_retry_at"),
                succeeded: status_code.is_some_and(|s| (200..300).contains(&s)),
            }
        })
        .collect();
    Ok(web::pagination::page(&data, next_cursor))
}

/// Where a delivery stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub event_id: Uuid,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
}

/// Queues the event for delivery to this endpoint again, now, with a fresh
/// retry window (whether it was delivered, given up or is still pending).
#[utoipa::path(
    post, path = "/v1/dev/marketing/webhooks/{webhook_id}/deliveries/{event_id}/retry", tag = "webhooks",
    params(("webhook_id" = Uuid, Path), ("event_id" = Uuid, Path)),
    responses(
        (status = 202, description = "Queued", body = Delivery),
        (status = 401, body = web::error::ErrorBody), (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn retry(
    State(state): State<WebhooksState>,
    caller: Caller,
    Path((webhook_id, event_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let endpoint = owned(&state, &caller, &webhook_id).await?;
    let event_id = parse_id(&event_id, DELIVERY_NOT_FOUND)?;
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now(), first_attempt_at = NULL, finished_at = NULL
             WHERE endpoint_id = $1 AND event_id = $2
             RETURNING event_id, state, attempts, next_attempt_at",
            &[&endpoint.id, &event_id],
        )
        .await?
        .ok_or(ApiError::NotFound(DELIVERY_NOT_FOUND))?;
    state.wake.notify_waiters();
    let delivery = Delivery {
        event_id: row.get(0),
        state: row.get(1),
        attempts: row.get(2),
        next_attempt_at: row.get(3),
    };
    Ok((StatusCode::ACCEPTED, axum::Json(delivery)).into_response())
}

/// A page of attempts, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct AttemptPage {
    pub data: Vec<Attempt>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}
