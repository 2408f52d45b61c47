//! Tracking analytics: `POST /campaigns/{id}/analytics`.
//!
//! Each request becomes one `AnalyticsRecorded` event on a stream of its own
//! (`analytics-<record id>`, see `domain::analytics`), appended as "no stream
//! yet". Concurrent tracks for one campaign therefore never contend for a stream
//! version: 200 of them at once all succeed, and the rollup projection adds them
//! up. The campaign is checked (exists, not deleted, caller's project) by folding
//! its stream just before the append.
//!
//! Retries: the record id and event id derive from the `Idempotency-Key`
//! ([`IdSource`]), so a retried request, even one whose first attempt crashed
//! before the idempotency middleware stored its response, appends nothing new
//! and answers with the record already stored.

use crate::campaigns::{load, wait_for_read_models};
use crate::CommandState;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::analytics::{
    stream_id, AnalyticsError, AnalyticsEvent, AnalyticsRecord, AnalyticsRecordState, Track, TrackAnalytics,
};
use domain::DomainEvent;
use event_store::{AppendError, ExpectedVersion, NewEvent};
use serde_json::json;
use uuid::Uuid;
use web::extract::{parse_id, JsonBody, RequestId};
use web::idempotency::IdSource;
use web::{ApiError, Caller, BASE_PATH};

const NOT_FOUND: &str = "Campaign not found";

fn to_api_error(error: AnalyticsError) -> ApiError {
    match error {
        AnalyticsError::Invalid(errors) => ApiError::Validation(errors),
        AnalyticsError::CampaignNotFound => ApiError::NotFound(NOT_FOUND),
        AnalyticsError::AlreadyRecorded => {
            ApiError::Conflict("An analytics record with this id already exists".into())
        }
    }
}

/// Loads a record by folding its stream (used to answer a retried request).
async fn load_record(state: &CommandState, record_id: Uuid) -> Result<AnalyticsRecord, ApiError> {
    let mut record = AnalyticsRecord::default();
    for recorded in state.store.read_stream(&stream_id(record_id)).await? {
        let event =
            AnalyticsEvent::from_data(&recorded.event_type, recorded.data).map_err(ApiError::internal)?;
        record.apply(&event, recorded.recorded_at, recorded.version);
    }
    Ok(record)
}

/// `?start_date=D&end_date=D&source=S`: where the record shows up in reads.
fn location(record: &AnalyticsRecordState) -> String {
    format!(
        "{BASE_PATH}/campaigns/{}/analytics?start_date={date}&end_date={date}&source={}",
        record.campaign_id,
        percent_encode(&record.source),
        date = record.date,
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Record one day's metrics for one source. Records for the same day and source add up.
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns/{campaign_id}/analytics", tag = "analytics",
    request_body = TrackAnalytics,
    params(
        ("campaign_id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body count once and replay the first response"),
    ),
    responses(
        (status = 201, description = "Recorded; `Location` is the analytics query that shows the record's day and source",
         body = AnalyticsRecordState, headers(("Location" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found (or another project's)", body = web::error::ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = web::error::ErrorBody),
        (status = 413, body = web::error::ErrorBody), (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn track(
    State(state): State<CommandState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ids: IdSource,
    Path(campaign_id): Path<String>,
    JsonBody(input): JsonBody<TrackAnalytics>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, NOT_FOUND)?;
    let campaign = load(&state, campaign_id).await?;
    let record_id = ids.id("analytics", 0);
    let mut record = AnalyticsRecord::default();
    let events = record
        .handle(Track {
            record_id,
            project: &caller.project,
            campaign: &campaign,
            input,
        })
        .map_err(to_api_error)?;
    let recorded_at = event_store::now();
    let metadata = json!({
        "project": caller.project,
        "api_key_id": caller.key_id,
        "api_key_name": caller.key_name,
        "request_id": request_id,
        "correlation_id": request_id,
        "campaign_id": campaign_id,
    });
    let new_events = events
        .iter()
        .enumerate()
        .map(|(n, event)| NewEvent {
            // Namespaced apart from other resources' event ids: a key reused (after
            // its 24 hours) for a track must not collide with, say, a campaign's event.
            event_id: ids.id("analytics-event", n),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            data: event.to_data(),
            metadata: metadata.clone(),
            recorded_at,
        })
        .collect();
    let outcome = match state
        .store
        .append(&stream_id(record_id), ExpectedVersion::NoStream, new_events)
        .await
    {
        Ok(outcome) => outcome,
        // Retries are recognised as already stored; these only happen when an
        // Idempotency-Key is reused for a different request after it expired.
        Err(AppendError::Conflict { .. } | AppendError::EventIdReused(_)) => {
            return Err(ApiError::Conflict(
                "Idempotency-Key was already used with a different request".into(),
            ))
        }
        Err(other) => return Err(ApiError::internal(other)),
    };
    if outcome.already_stored {
        // A retry of a request that went through: answer with what is stored,
        // counted once.
        record = load_record(&state, record_id).await?;
    } else {
        for (n, event) in events.iter().enumerate() {
            record.apply(event, recorded_at, n as i64);
        }
    }
    wait_for_read_models(&state, outcome.last_position).await;
    let resource = record
        .state()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("analytics record {record_id} is empty")))?;
    let body = serde_json::to_vec(resource).expect("analytics record serializes");
    let mut response = (StatusCode::CREATED, [(CONTENT_TYPE, "application/json")], body).into_response();
    response.headers_mut().insert(
        LOCATION,
        location(resource)
            .parse()
            .expect("percent-encoded location is a valid header"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn sources_are_percent_encoded_in_locations() {
        assert_eq!(percent_encode("facebook"), "facebook");
        assert_eq!(percent_encode("google ads & co"), "google%20ads%20%26%20co");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
