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
//! (`web::idempotency::IdSource`), so a retried request, even one whose first attempt crashed
//! before the idempotency middleware stored its response, appends nothing new
//! and answers with the record already stored.

pub mod import;

use crate::kernel::{respond, Resource, Write, Writer, CAMPAIGN_NOT_FOUND};
use crate::under_campaign::NewItem;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::analytics::{
    AnalyticsError, AnalyticsRecordState, DayKey, Restate, RestateAnalytics, RestatedDayState, Track,
    TrackAnalytics,
};
use std::convert::Infallible;
use uuid::Uuid;
use web::extract::{parse_id, JsonBody};
use web::{ApiError, BASE_PATH};

fn analytics_api_error(error: AnalyticsError) -> ApiError {
    match error {
        AnalyticsError::Invalid(errors) => ApiError::Validation(errors),
        AnalyticsError::CampaignNotFound => ApiError::NotFound(CAMPAIGN_NOT_FOUND),
        AnalyticsError::AlreadyRecorded => {
            ApiError::Conflict("An analytics record with this id already exists".into())
        }
    }
}

impl Resource for AnalyticsRecordState {
    const NOT_FOUND: &'static str = CAMPAIGN_NOT_FOUND;
    // Namespaced apart from other resources' event ids: a key reused (after
    // its 24 hours) for a track must not collide with, say, a campaign's event.
    const EVENT_IDS: &'static str = "analytics-event";

    fn to_api_error(error: AnalyticsError) -> ApiError {
        analytics_api_error(error)
    }

    fn fold_error(never: Infallible) -> ApiError {
        match never {}
    }

    fn is_create(_: &Track) -> bool {
        true
    }

    fn campaign_id(&self) -> Uuid {
        self.campaign_id
    }

    fn location(&self) -> String {
        location(self)
    }

    /// Records never change: no versions, no ETag.
    fn etag(&self) -> Option<i64> {
        None
    }
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
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Retries with the same key and body count once and replay the first response"),
    ),
    responses(
        (status = 201, description = "Recorded; `Location` is the analytics query that shows the record's day and source",
         body = AnalyticsRecordState, headers(("Location" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found (or another project's)", body = web::error::ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = web::error::ErrorBody),
        (status = 413, body = web::error::ErrorBody), (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["analytics:write"]))
)]
pub async fn track(writer: Writer, request: NewItem<JsonBody<TrackAnalytics>>) -> Result<Response, ApiError> {
    let (campaign, place) = request.place(&writer, "analytics").await?;
    let command = Track {
        record_id: place.id,
        project: place.project,
        campaign: campaign.root().clone(),
        input: request.body.0,
        at: chrono::Utc::now(),
    };
    let write = Write::<AnalyticsRecordState>::new(place.id, command).under(&campaign);
    respond(StatusCode::CREATED, &writer.execute(write).await?)
}

impl Resource for RestatedDayState {
    const NOT_FOUND: &'static str = CAMPAIGN_NOT_FOUND;
    const EVENT_IDS: &'static str = "analytics-restated-event";

    fn to_api_error(error: AnalyticsError) -> ApiError {
        analytics_api_error(error)
    }

    fn fold_error(never: Infallible) -> ApiError {
        match never {}
    }

    fn is_create(_: &Restate) -> bool {
        false
    }

    fn is_upsert(_: &Restate) -> bool {
        true
    }

    fn campaign_id(&self) -> Uuid {
        self.campaign_id
    }

    fn location(&self) -> String {
        format!(
            "{BASE_PATH}/campaigns/{}/analytics/{}/{}",
            self.campaign_id,
            self.date,
            percent_encode(&self.source)
        )
    }
}

/// `PUT .../campaigns/{campaign_id}/analytics/{date}/{source}`: the path as
/// given, then the JSON body.
pub struct DayRequest {
    path: (String, String, String),
    body: RestateAnalytics,
}

impl<S: Send + Sync> FromRequest<S> for DayRequest {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Path(path) = Path::<(String, String, String)>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let JsonBody(body) =
            JsonBody::<RestateAnalytics>::from_request(Request::from_parts(parts, body), state)
                .await
                .map_err(IntoResponse::into_response)?;
        Ok(Self { path, body })
    }
}

/// Restate one day and source: its metrics become exactly these, superseding
/// every earlier record (`POST`) and restatement (`PUT`) of that day and
/// source. The same metrics again change nothing (no event), which is what
/// makes a retry safe without an `Idempotency-Key` (that layer serves POSTs).
#[utoipa::path(
    put, path = "/v1/dev/marketing/campaigns/{campaign_id}/analytics/{date}/{source}", tag = "analytics",
    request_body = RestateAnalytics,
    params(
        ("campaign_id" = Uuid, Path),
        ("date" = String, Path, description = "The day, YYYY-MM-DD (2000-01-01 to 2099-12-31)"),
        ("source" = String, Path, description = "The source, case-insensitive (percent-encoded)"),
    ),
    responses(
        (status = 200, description = "The day and source as restated (unchanged, same `ETag`, when the metrics were the same)",
         body = RestatedDayState, headers(("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found (or another project's)", body = web::error::ErrorBody),
        (status = 409, description = "Too many concurrent restatements of the key", body = web::error::ErrorBody),
        (status = 413, body = web::error::ErrorBody), (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["analytics:write"]))
)]
pub async fn restate(writer: Writer, request: DayRequest) -> Result<Response, ApiError> {
    let (campaign_id, date, source) = &request.path;
    let campaign = writer
        .campaign(parse_id(campaign_id, CAMPAIGN_NOT_FOUND)?)
        .await?;
    let key = DayKey::parse(campaign.id(), date, source).map_err(ApiError::Validation)?;
    let id = key.id();
    let command = Restate {
        key,
        project: writer.caller().project.clone(),
        campaign: campaign.root().clone(),
        input: request.body,
    };
    let write = Write::<RestatedDayState>::new(id, command).under(&campaign);
    respond(StatusCode::OK, &writer.execute(write).await?)
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
