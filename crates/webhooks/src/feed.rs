//! `GET /events`: the caller's project's public events, oldest first, in the
//! log's commit-safe order. The cursor is a log position, so a client paging
//! while others write never skips or repeats an event (the read takes only
//! events below the commit horizon on Postgres, and only index rows every
//! shard of the index has passed on KurrentDB; see `LogReader::project`).

use crate::outbound::{self, Outbound};
use crate::WebhooksState;
use axum::extract::{Query, State};
use axum::response::Response;
use event_store::LogPosition;
use serde_json::Value;
use std::collections::HashMap;
use web::pagination::{decode_cursor, parse_limit};
use web::{ApiError, Caller};

/// Events read from the log per round of a page.
const SCAN_CHUNK: i64 = 500;
/// Most events one page reads from the log before it answers (with
/// `has_more` and a cursor past what it read), so a narrow `type` filter over
/// a long log costs bounded work per request.
pub const SCAN_BUDGET: usize = 10_000;
/// Most types in the `type` filter.
pub const MAX_TYPES: usize = 64;

/// The `type` filter: CloudEvent types, comma-separated.
fn parse_types(raw: Option<&String>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let types: Vec<String> = raw.split(',').map(|t| t.trim().to_owned()).collect();
    if types.iter().any(String::is_empty) || types.len() > MAX_TYPES {
        return Err(ApiError::bad_request(
            "type",
            format!("type must be 1 to {MAX_TYPES} comma-separated event types"),
        ));
    }
    Ok(Some(types))
}

/// The gate failed (it reads lead keys): a 503 if the database is away now,
/// as for every other read; a 500 otherwise.
async fn gate_failure(state: &WebhooksState, error: publisher::GateError) -> ApiError {
    let reachable = match state.pool.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.map_err(ApiError::from),
        Err(error) => Err(ApiError::from(error)),
    };
    match reachable {
        Err(unavailable @ ApiError::Unavailable(_)) => unavailable,
        _ => ApiError::internal(error),
    }
}

/// One page: the matching events after `after` (at most `limit`), and where
/// the next page starts if the log holds more right now.
struct Page {
    items: Vec<Outbound>,
    next: Option<LogPosition>,
}

async fn read_page(
    state: &WebhooksState,
    project: &str,
    campaign_id: Option<&str>,
    types: Option<&[String]>,
    mut after: LogPosition,
    limit: usize,
) -> Result<Page, ApiError> {
    let mut items = Vec::new();
    let mut scanned = 0;
    loop {
        let chunk = state
            .log
            .project(
                &state.pool,
                domain::upcast::ALL,
                project,
                campaign_id,
                after,
                SCAN_CHUNK,
            )
            .await?;
        let read = chunk.len();
        scanned += read;
        if let Some(last) = chunk.last() {
            after = last.position;
        }
        let rendered = match outbound::render(&*state.gate, chunk).await {
            Ok(rendered) => rendered,
            Err(error) => return Err(gate_failure(state, error).await),
        };
        items.extend(
            rendered
                .into_iter()
                .filter(|o| types.is_none_or(|t| t.contains(&o.event_type))),
        );
        if items.len() > limit {
            items.truncate(limit);
            let next = items.last().map(|o| o.position);
            return Ok(Page { items, next });
        }
        if (read as i64) < SCAN_CHUNK {
            return Ok(Page { items, next: None });
        }
        if scanned >= SCAN_BUDGET {
            return Ok(Page {
                items,
                next: Some(after),
            });
        }
    }
}

/// The project's events, oldest first.
#[utoipa::path(
    get, path = "/v1/dev/marketing/events", tag = "events",
    params(
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page, or the `position` of the last event processed"),
        ("type" = Option<String>, Query, description = "Only these CloudEvent types, comma-separated, e.g. com.marketing.campaign.created.v1"),
        ("campaign_id" = Option<uuid::Uuid>, Query, description = "Only events of this campaign and what belongs to it"),
    ),
    responses(
        (status = 200, description = "`{data: [CloudEvent + position], has_more, next_cursor}`", body = EventPage),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["events:read"]))
)]
pub async fn list(
    State(state): State<WebhooksState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = parse_limit(params.get("limit").map(String::as_str))?;
    let after = match params.get("cursor") {
        Some(raw) => decode_cursor::<LogPosition>(raw)?,
        None => LogPosition::START,
    };
    let types = parse_types(params.get("type"))?;
    let campaign_id = params
        .get("campaign_id")
        .map(|raw| {
            uuid::Uuid::parse_str(raw)
                .map(|id| id.to_string())
                .map_err(|_| ApiError::bad_request("campaign_id", "campaign_id must be a UUID"))
        })
        .transpose()?;
    let page = read_page(
        &state,
        caller.project.as_str(),
        campaign_id.as_deref(),
        types.as_deref(),
        after,
        usize::try_from(limit).unwrap_or(0),
    )
    .await?;
    let data: Vec<Value> = page.items.into_iter().map(|o| Value::Object(o.body)).collect();
    let next_cursor = page.next.map(outbound::cursor);
    Ok(web::pagination::page(&data, next_cursor))
}

/// One event of the feed (and the body of a webhook): a CloudEvent in JSON
/// structured mode, plus `position`.
#[allow(dead_code)]
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct FeedEvent {
    #[schema(example = "1.0")]
    pub specversion: String,
    /// The event id; the Kafka record's `ce_id`, the webhook's `webhook-id`.
    pub id: uuid::Uuid,
    #[schema(example = "urn:marketing:project:acme")]
    pub source: String,
    #[serde(rename = "type")]
    #[schema(example = "com.marketing.campaign.created.v1")]
    pub event_type: String,
    #[schema(example = "campaigns/0b0c0a3e-7a51-4d2b-9a57-1f2f7d3c0a01")]
    pub subject: String,
    pub time: chrono::DateTime<chrono::Utc>,
    #[schema(example = "application/json")]
    pub datacontenttype: String,
    pub streamid: String,
    pub streamversion: i64,
    pub project: Option<String>,
    pub campaignid: Option<uuid::Uuid>,
    pub correlationid: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    /// A cursor: pass it as `cursor` to read the events after this one.
    pub position: String,
}

/// A page of the feed, for the OpenAPI document.
#[allow(dead_code)]
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub data: Vec<FeedEvent>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}
