//! `GET /campaigns/{id}/history`: the audit trail of a campaign, straight from
//! the event log: its own events and those of its tasks, content, leads and
//! analytics, oldest first, with who did each. The log is read through
//! [`LogReader`]: the `events` table on Postgres, the log's index and the
//! store on KurrentDB.

use crate::params::page;
use crate::QueryState;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use event_store::{HistoryFilter, LogPosition, LogReader, RecordedEvent};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use web::extract::parse_id;
use web::pagination::encode_cursor;
use web::{ApiError, Caller};

const NOT_FOUND: &str = "Campaign not found";

/// One entry of the audit trail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// Global log position.
    pub position: i64,
    pub event_id: uuid::Uuid,
    pub stream_id: String,
    /// Version within its stream (0-based).
    pub version: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub recorded_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub data: Value,
    /// Who did it: `api_key_id`, `api_key_name`, `request_id`, and
    /// `trace_id`, the W3C trace the request was in (docs/operations.md,
    /// "Tracing").
    #[schema(value_type = Object)]
    pub actor: Value,
}

/// Turns a recorded event into an audit entry.
pub fn entry(event: RecordedEvent) -> HistoryEntry {
    let actor = json!({
        "api_key_id": event.metadata.get("api_key_id"),
        "api_key_name": event.metadata.get("api_key_name"),
        "request_id": event.metadata.get("request_id"),
        "trace_id": trace_context::TraceParent::of_metadata(&event.metadata)
            .map(|trace| trace.trace_id().to_string()),
    });
    HistoryEntry {
        position: event.position.position,
        event_id: event.event_id,
        stream_id: event.stream_id,
        version: event.version,
        event_type: event.event_type,
        schema_version: event.schema_version,
        recorded_at: event.recorded_at,
        data: std::sync::Arc::unwrap_or_clone(event.data),
        actor,
    }
}

/// Lead events hold personal data encrypted with the lead's key: show it
/// decrypted while the lead exists, and erased once its key was destroyed
/// (the same rule as for Kafka), to a key with the `leads:export` scope; to
/// any other, without the personal data (`"personal_data": "withheld"`).
/// Other events are shown as stored.
pub async fn reveal_personal_data(
    pool: &deadpool_postgres::Pool,
    vault: &lead_vault::LeadVault,
    events: &mut [RecordedEvent],
    may_see_personal_data: bool,
) -> Result<(), ApiError> {
    let lead_id = |e: &RecordedEvent| {
        e.stream_id
            .strip_prefix(domain::lead::STREAM_PREFIX)
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
    };
    if !may_see_personal_data {
        for event in events.iter_mut().filter(|e| lead_id(e).is_some()) {
            event.data = domain::lead::withheld_event(&event.event_type, &event.data)
                .map_err(ApiError::internal)?
                .into();
        }
        return Ok(());
    }
    let lead_ids: Vec<uuid::Uuid> = events.iter().filter_map(lead_id).collect();
    if lead_ids.is_empty() {
        return Ok(());
    }
    let client = pool.get().await?;
    let client: &tokio_postgres::Client = &client;
    let keys = vault.keys(client, &lead_ids).await.map_err(ApiError::internal)?;
    for event in events.iter_mut() {
        if let Some(id) = lead_id(event) {
            event.data = domain::lead::publishable_event(&event.event_type, &event.data, keys.get(&id))
                .map_err(ApiError::internal)?
                .into();
        }
    }
    Ok(())
}

/// The project that created a campaign, from its first event: history stays
/// readable by its project after the campaign is deleted.
pub async fn campaign_owner(
    pool: &deadpool_postgres::Pool,
    log: &LogReader,
    campaign_id: uuid::Uuid,
) -> Result<Option<String>, ApiError> {
    Ok(log
        .creator(pool, &domain::campaign::stream_id(campaign_id))
        .await?)
}

fn parse_time(params: &HashMap<String, String>, field: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    params
        .get(field)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::bad_request(field, format!("{field} must be an RFC 3339 timestamp")))
        })
        .transpose()
}

/// The audit trail of a campaign, oldest first. Lead personal data is shown
/// only to keys that also have the `leads:export` scope.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}/history", tag = "audit",
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("type" = Option<String>, Query, description = "Only events of this type, e.g. CampaignUpdated"),
        ("from" = Option<DateTime<Utc>>, Query, description = "Recorded at or after (RFC 3339)"),
        ("to" = Option<DateTime<Utc>>, Query, description = "Recorded before (RFC 3339)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "`{data: [HistoryEntry], has_more, next_cursor}`", body = HistoryPage),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["history:read"]))
)]
pub async fn history(
    State(state): State<QueryState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, NOT_FOUND)?;
    // One database for the whole read: the replica or the primary.
    let pool = state.reads.pool();
    if campaign_owner(pool, &state.log, campaign_id).await?.as_deref() != Some(caller.project.as_str()) {
        return Err(ApiError::NotFound(NOT_FOUND));
    }
    let filter = HistoryFilter {
        event_type: params.get("type").cloned(),
        from: parse_time(&params, "from")?,
        to: parse_time(&params, "to")?,
    };
    let (limit, after) = page::<LogPosition>(&params)?;
    let after = after.unwrap_or(LogPosition::START);
    let mut events = state
        .log
        .correlated(
            pool,
            domain::upcast::ALL,
            &campaign_id.to_string(),
            &filter,
            after,
            limit + 1,
        )
        .await?;
    let has_more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let may_see_personal_data = caller.may(web::Scope::LeadsExport);
    reveal_personal_data(pool, &state.vault, &mut events, may_see_personal_data).await?;
    let next_cursor = has_more.then(|| encode_cursor(&events.last().expect("non-empty page").position));
    let data: Vec<HistoryEntry> = events.into_iter().map(entry).collect();
    Ok(web::pagination::page(&data, next_cursor))
}

/// A page of the audit trail, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct HistoryPage {
    pub data: Vec<HistoryEntry>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// The result of re-checking the hash chains of a campaign's streams.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChainCheck {
    /// True when every stream's chain holds.
    pub intact: bool,
    /// Streams checked: the campaign's own and those of its tasks, content,
    /// leads and analytics.
    pub streams: u64,
    /// Events checked, each from version 0 of its stream.
    pub events: u64,
    /// SHA-256 over each stream id and its newest hash: keep it where the
    /// database administrator cannot write, and compare it later.
    pub digest: String,
    /// The first place a chain does not hold, when one does not.
    pub first_break: Option<ChainBreakBody>,
}

/// Where a chain does not hold.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChainBreakBody {
    pub stream_id: String,
    pub version: i64,
    pub reason: String,
}

/// Re-checks the hash chain of every stream of the campaign, as `marketing
/// verify` does for the whole log: an altered, removed or reordered event is
/// reported with the first place its chain breaks.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}/history/verify", tag = "audit",
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The check's result (a broken chain is a 200 with `intact: false`)", body = ChainCheck),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["history:read"]))
)]
pub async fn verify(
    State(state): State<QueryState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
) -> Result<axum::Json<ChainCheck>, ApiError> {
    let campaign_id = parse_id(&campaign_id, NOT_FOUND)?;
    let pool = state.reads.pool();
    if campaign_owner(pool, &state.log, campaign_id).await?.as_deref() != Some(caller.project.as_str()) {
        return Err(ApiError::NotFound(NOT_FOUND));
    }
    let report = state.log.verify_campaign(pool, &campaign_id.to_string()).await?;
    Ok(axum::Json(ChainCheck {
        intact: report.first_break.is_none(),
        streams: report.streams,
        events: report.events,
        digest: report.log_digest,
        first_break: report.first_break.map(|b| ChainBreakBody {
            stream_id: b.stream_id,
            version: b.version,
            reason: b.reason,
        }),
    }))
}
