//! Webhook endpoints: `POST`/`GET /webhooks`, `GET`/`PATCH`/`DELETE
//! /webhooks/{id}`, `POST /webhooks/{id}/rotate-secret`. Plain rows of
//! `webhook_endpoints`, scoped to the caller's project like every resource
//! (another project's endpoint answers 404).

use crate::config::{MAX_DESCRIPTION_CHARS, MAX_ENDPOINTS_PER_PROJECT, MAX_EVENT_TYPES, ROTATION_OVERLAP};
use crate::signature::new_secret;
use crate::{target, WebhooksState};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::ValidationErrors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio_postgres::Row;
use uuid::Uuid;
use web::extract::{parse_id, JsonBody};
use web::pagination::{decode_cursor, encode_cursor, parse_limit};
use web::{ApiError, Caller};

pub const NOT_FOUND: &str = "Webhook not found";
/// Longest event type accepted in `events`.
const MAX_TYPE_LEN: usize = 200;
/// What every event type starts with (see docs/events.md).
const TYPE_PREFIX: &str = "com.marketing.";

const COLUMNS: &str = "id, url, description, events, enabled, disabled_reason, created_at, updated_at";

/// An endpoint as the API shows it (never its secret, except right after
/// creation or rotation, as `secret`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// CloudEvent types delivered, or `["*"]` for all.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Set when the dispatcher disabled the endpoint (failing for too long).
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `whsec_...`: only in the answers to create and rotate-secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Endpoint {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            url: row.get("url"),
            description: row.get("description"),
            events: row.get("events"),
            enabled: row.get("enabled"),
            disabled_reason: row.get("disabled_reason"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            secret: None,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// `https://` or `http://`, at most 2048 bytes; must resolve to public addresses.
    pub url: String,
    /// 1 to 64 CloudEvent types, or `"*"` for every event.
    pub events: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "domain::input::double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// `true` re-enables an endpoint the dispatcher disabled.
    #[serde(default)]
    pub enabled: Option<bool>,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::Validation(ValidationErrors::single(field, message))
}

fn validate_events(events: &[String]) -> Result<(), ApiError> {
    if events.is_empty() || events.len() > MAX_EVENT_TYPES {
        return Err(invalid(
            "events",
            format!("events must list 1 to {MAX_EVENT_TYPES} event types, or \"*\""),
        ));
    }
    for (i, event) in events.iter().enumerate() {
        let well_formed = event == "*"
            || (event.len() <= MAX_TYPE_LEN
                && event.starts_with(TYPE_PREFIX)
                && event
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_'));
        if !well_formed {
            return Err(invalid(
                format!("events[{i}]"),
                "an event type looks like com.marketing.campaign.created.v1, or is \"*\"",
            ));
        }
    }
    Ok(())
}

fn validate_description(description: Option<&str>) -> Result<(), ApiError> {
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS) {
        return Err(invalid(
            "description",
            format!("description must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(())
}

async fn check_url(state: &WebhooksState, url: &str) -> Result<(), ApiError> {
    target::check(url, state.config.allow_private_targets)
        .await
        .map(|_| ())
        .map_err(|e| invalid("url", e.to_string()))
}

fn location(id: Uuid) -> String {
    format!("{}/webhooks/{id}", web::BASE_PATH)
}

/// Creates an endpoint; its secret is shown in this answer only.
#[utoipa::path(
    post, path = "/v1/dev/marketing/webhooks", tag = "webhooks",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = Endpoint),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 409, description = "The project has the most endpoints allowed", body = web::error::ErrorBody),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn create(
    State(state): State<WebhooksState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateEndpoint>,
) -> Result<Response, ApiError> {
    check_url(&state, &body.url).await?;
    validate_events(&body.events)?;
    validate_description(body.description.as_deref())?;
    let id = Uuid::new_v4();
    let secret = new_secret();
    let now = event_store::now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // Serialises creations per project, so the limit holds under concurrency.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('webhooks:' || $1))",
        &[&caller.project.as_str()],
    )
    .await?;
    let count: i64 = tx
        .query_one(
            "SELECT count(*) FROM webhook_endpoints WHERE project = $1",
            &[&caller.project.as_str()],
        )
        .await?
        .get(0);
    if count >= MAX_ENDPOINTS_PER_PROJECT {
        return Err(ApiError::Conflict(format!(
            "A project may have at most {MAX_ENDPOINTS_PER_PROJECT} webhook endpoints"
        )));
    }
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO webhook_endpoints
                     (id, project, url, description, events, secret, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &caller.project.as_str(),
                &body.url,
                &body.description,
                &body.events,
                &secret,
                &now,
            ],
        )
        .await?;
    tx.commit().await?;
    let mut endpoint = Endpoint::from_row(&row);
    endpoint.secret = Some(secret);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location(id))],
        axum::Json(endpoint),
    )
        .into_response())
}

/// The caller's endpoint `raw_id`, or 404.
pub async fn owned(state: &WebhooksState, caller: &Caller, raw_id: &str) -> Result<Endpoint, ApiError> {
    let id = parse_id(raw_id, NOT_FOUND)?;
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND project = $2"),
            &[&id, &caller.project.as_str()],
        )
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    Ok(Endpoint::from_row(&row))
}

/// The project's endpoints, oldest first.
#[utoipa::path(
    get, path = "/v1/dev/marketing/webhooks", tag = "webhooks",
    params(
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "`{data: [Endpoint], has_more, next_cursor}`", body = EndpointPage),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn list(
    State(state): State<WebhooksState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = parse_limit(params.get("limit").map(String::as_str))?;
    let after: Option<(DateTime<Utc>, Uuid)> = params.get("cursor").map(|c| decode_cursor(c)).transpose()?;
    let (after_time, after_id) = after.unzip();
    let client = state.pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM webhook_endpoints
                 WHERE project = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
                 ORDER BY created_at, id LIMIT $4"
            ),
            &[&caller.project.as_str(), &after_time, &after_id, &(limit + 1)],
        )
        .await?;
    let mut data: Vec<Endpoint> = rows.iter().map(Endpoint::from_row).collect();
    let has_more = data.len() as i64 > limit;
    data.truncate(limit as usize);
    let next_cursor = has_more
        .then(|| data.last().map(|e| encode_cursor(&(e.created_at, e.id))))
        .flatten();
    Ok(web::pagination::page(&data, next_cursor))
}

#[utoipa::path(
    get, path = "/v1/dev/marketing/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = Uuid, Path)),
    responses(
        (status = 200, body = Endpoint),
        (status = 401, body = web::error::ErrorBody), (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn get_one(
    State(state): State<WebhooksState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(owned(&state, &caller, &webhook_id).await?).into_response())
}

/// Changes `url`, `events`, `description` or `enabled`; absent fields stay.
#[utoipa::path(
    patch, path = "/v1/dev/marketing/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = Uuid, Path)),
    request_body = UpdateEndpoint,
    responses(
        (status = 200, body = Endpoint),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn update(
    State(state): State<WebhooksState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
    JsonBody(body): JsonBody<UpdateEndpoint>,
) -> Result<Response, ApiError> {
    let current = owned(&state, &caller, &webhook_id).await?;
    if let Some(url) = &body.url {
        check_url(&state, url).await?;
    }
    if let Some(events) = &body.events {
        validate_events(events)?;
    }
    if let Some(description) = &body.description {
        validate_description(description.as_deref())?;
    }
    let url = body.url.unwrap_or(current.url);
    let events = body.events.unwrap_or(current.events);
    let description = body.description.unwrap_or(current.description);
    let enabled = body.enabled.unwrap_or(current.enabled);
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // Enabling clears what the dispatcher recorded when it disabled it, and
    // gives the deliveries that waited meanwhile a fresh retry window.
    if enabled && !current.enabled {
        tx.execute(
            "UPDATE webhook_deliveries SET first_attempt_at = NULL, next_attempt_at = now()
             WHERE endpoint_id = $1 AND state = 'pending'",
            &[&current.id],
        )
        .await?;
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE webhook_endpoints SET url = $2, events = $3, description = $4, enabled = $5,
                     disabled_reason = CASE WHEN $5 THEN NULL ELSE disabled_reason END,
                     failing_since = CASE WHEN $5 AND NOT enabled THEN NULL ELSE failing_since END,
                     updated_at = now()
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&current.id, &url, &events, &description, &enabled],
        )
        .await?;
    tx.commit().await?;
    state.wake.notify_waiters();
    Ok(axum::Json(Endpoint::from_row(&row)).into_response())
}

/// Deletes the endpoint and its pending deliveries.
#[utoipa::path(
    delete, path = "/v1/dev/marketing/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = web::error::ErrorBody), (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn delete(
    State(state): State<WebhooksState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&webhook_id, NOT_FOUND)?;
    let client = state.pool.get().await?;
    let deleted = client
        .execute(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND project = $2",
            &[&id, &caller.project.as_str()],
        )
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound(NOT_FOUND));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A new secret, shown only in this answer. Deliveries carry signatures with
/// both the new and the old secret for 24 hours, so a receiver can switch
/// without refusing any.
#[utoipa::path(
    post, path = "/v1/dev/marketing/webhooks/{webhook_id}/rotate-secret", tag = "webhooks",
    params(("webhook_id" = Uuid, Path)),
    responses(
        (status = 200, description = "The endpoint with its new `secret`", body = Endpoint),
        (status = 401, body = web::error::ErrorBody), (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["webhooks:manage"]))
)]
pub async fn rotate_secret(
    State(state): State<WebhooksState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
) -> Result<Response, ApiError> {
    let current = owned(&state, &caller, &webhook_id).await?;
    let secret = new_secret();
    let expires = event_store::now() + ROTATION_OVERLAP;
    let client = state.pool.get().await?;
    let row = client
        .query_one(
            &format!(
                "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = $3,
                     secret = $2, updated_at = now()
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&current.id, &secret, &expires],
        )
        .await?;
    let mut endpoint = Endpoint::from_row(&row);
    endpoint.secret = Some(secret);
    Ok(axum::Json(endpoint).into_response())
}

/// A page of endpoints, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct EndpointPage {
    pub data: Vec<Endpoint>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}
