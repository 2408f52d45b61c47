//! Content-calendar reads: the calendar (filtered, windowed, sorted by
//! `scheduled_date`, paginated), one item, and its media file.

use crate::params::choice;
use crate::under_campaign::{ensure_campaign, get_one, list, ItemList, CAMPAIGN_NOT_FOUND};
use crate::QueryState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use domain::content::ContentStatus;
use media::MediaError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio_postgres::Row;
use uuid::Uuid;
use web::extract::parse_id;
use web::{ApiError, Caller};

const NOT_FOUND: &str = "Content not found";
const MEDIA_NOT_FOUND: &str = "Media not found";

/// Keyset position of the last item on a page: by (scheduled_date, id), items
/// without a date after all dated ones.
#[derive(Serialize, Deserialize)]
struct Cursor {
    scheduled_date: Option<DateTime<Utc>>,
    id: Uuid,
}

impl From<&Row> for Cursor {
    fn from(row: &Row) -> Self {
        Self {
            scheduled_date: row.get(1),
            id: row.get(2),
        }
    }
}

/// One bound of the calendar window, as given: an instant, or a whole UTC day.
enum Bound {
    Instant(DateTime<Utc>),
    Day(NaiveDate),
}

fn parse_bound(field: &str, raw: &str) -> Result<Bound, ApiError> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Bound::Instant(instant.with_timezone(&Utc)));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(Bound::Day)
        .map_err(|_| {
            ApiError::bad_request(
                field,
                format!(
                    "{field} must be an RFC 3339 timestamp (2024-06-15T10:00:00Z) or a date (2024-06-15)"
                ),
            )
        })
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// A calendar window as a half-open range `[from, until)`; `None` is unbounded.
type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The window as a half-open range `[from, until)`. Both ends are inclusive as
/// the client wrote them: `to=2024-06-30` covers all of June 30, and a `to`
/// timestamp covers that instant (the read model stores microseconds).
fn window(from: Option<&String>, to: Option<&String>) -> Result<Window, ApiError> {
    let from = from
        .map(|raw| parse_bound("from", raw))
        .transpose()?
        .map(|bound| match bound {
            Bound::Instant(at) => at,
            Bound::Day(day) => start_of(day),
        });
    let until = to
        .map(|raw| parse_bound("to", raw))
        .transpose()?
        .map(|bound| match bound {
            Bound::Instant(at) => at + TimeDelta::microseconds(1),
            Bound::Day(day) => start_of(day) + TimeDelta::days(1),
        });
    if let (Some(from), Some(until)) = (from, until) {
        if until <= from {
            return Err(ApiError::bad_request("to", "to must not be before from"));
        }
    }
    Ok((from, until))
}

/// A label filter (`platform`, `content_type`): matched case-insensitively.
fn label_filter(params: &HashMap<String, String>, field: &str) -> Result<Option<String>, ApiError> {
    match params.get(field).map(|v| v.trim()) {
        None => Ok(None),
        Some("") => Err(ApiError::bad_request(field, format!("{field} must not be empty"))),
        Some(value) => Ok(Some(value.to_lowercase())),
    }
}

list! {
    /// List a campaign's content calendar, by scheduled date.
    path = "/v1/dev/marketing/campaigns/{campaign_id}/content", tag = "content", scope = "campaigns:read",
    filters(
        ("status" = Option<ContentStatus>, Query, description = "Only items in this status"),
        ("platform" = Option<String>, Query, description = "Only items for this platform (case-insensitive)"),
        ("content_type" = Option<String>, Query, description = "Only items of this type (case-insensitive)"),
        ("from" = Option<String>, Query, description = "Calendar window start, inclusive: RFC 3339 timestamp or YYYY-MM-DD (UTC day). Items without a scheduled_date are left out when a window is given."),
        ("to" = Option<String>, Query, description = "Calendar window end, inclusive: RFC 3339 timestamp or YYYY-MM-DD (the whole UTC day)"),
    ),
    ok = "`{data, has_more, next_cursor}`, sorted by scheduled_date (unscheduled last), then id",
    /// A page of content items, for the OpenAPI document.
    page = ContentPage of domain::content::ContentResource,
    items = Calendar
}

/// The calendar's filters: labels lowercased, the window as `[from, until)`.
struct Calendar {
    status: Option<ContentStatus>,
    platform: Option<String>,
    content_type: Option<String>,
    window: Window,
}

impl ItemList for Calendar {
    type Cursor = Cursor;

    fn filters(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        Ok(Self {
            status: choice(params, "status", ContentStatus::parse, ContentStatus::CHOICES)?,
            platform: label_filter(params, "platform")?,
            content_type: label_filter(params, "content_type")?,
            window: window(params.get("from"), params.get("to"))?,
        })
    }

    async fn rows(
        &self,
        client: &deadpool_postgres::Client,
        campaign_id: Uuid,
        caller: &Caller,
        cursor: Option<&Cursor>,
        fetch: i64,
    ) -> Result<Vec<Row>, ApiError> {
        let statement = client
            .prepare_cached(
                "SELECT body::text, scheduled_date, id FROM content_items
                 WHERE campaign_id = $1 AND project = $2
                   AND ($3::text IS NULL OR status = $3)
                   AND ($4::text IS NULL OR platform_key = $4)
                   AND ($5::text IS NULL OR content_type_key = $5)
                   AND ($6::timestamptz IS NULL OR scheduled_date >= $6)
                   AND ($7::timestamptz IS NULL OR scheduled_date < $7)
                   AND (NOT $8::bool
                        OR ($9::timestamptz IS NOT NULL
                            AND (scheduled_date > $9 OR (scheduled_date = $9 AND id > $10) OR scheduled_date IS NULL))
                        OR ($9::timestamptz IS NULL AND scheduled_date IS NULL AND id > $10))
                 ORDER BY scheduled_date ASC NULLS LAST, id ASC
                 LIMIT $11",
            )
            .await?;
        let (from, until) = self.window;
        let rows = client
            .query(
                &statement,
                &[
                    &campaign_id,
                    &caller.project.as_str(),
                    &self.status.map(ContentStatus::as_str),
                    &self.platform,
                    &self.content_type,
                    &from,
                    &until,
                    &cursor.is_some(),
                    &cursor.and_then(|c| c.scheduled_date),
                    &cursor.map_or(Uuid::nil(), |c| c.id),
                    &fetch,
                ],
            )
            .await?;
        Ok(rows)
    }
}

get_one! {
    /// Get one content item.
    path = "/v1/dev/marketing/campaigns/{campaign_id}/content/{content_id}", tag = "content", scope = "campaigns:read", id = "content_id",
    body = domain::content::ContentResource,
    not_found = "Campaign not found, or Content not found",
    table = "content_items", NOT_FOUND
}

/// `inline; filename="..."; filename*=UTF-8''...`: an ASCII fallback and the
/// exact name (RFC 6266), neither able to break out of the header.
fn content_disposition(file_name: &str) -> HeaderValue {
    let ascii: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in file_name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "inline; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("inline"))
}

/// Download a content item's media: its current file, or with `sha256` a file
/// an earlier version of the item carried.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}/content/{content_id}/media", tag = "content",
    params(
        ("campaign_id" = Uuid, Path), ("content_id" = Uuid, Path),
        ("sha256" = Option<String>, Query, description = "A file from the item's history (see its events); default: the current media"),
        ("If-None-Match" = Option<String>, Header, description = "The file's ETag (its sha256): 304 if unchanged"),
    ),
    responses(
        (status = 200, description = "The bytes as uploaded, with the sniffed media type",
         content(
            ("image/png"), ("image/jpeg"), ("image/gif"), ("image/webp"), ("application/pdf"), ("video/mp4")
         ),
         headers(("ETag" = String, description = "\"<sha256>\""), ("Content-Disposition" = String))),
        (status = 304, description = "Not modified"),
        (status = 400, body = web::error::ErrorBody),
        (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found, Content not found, or Media not found", body = web::error::ErrorBody),
    ),
    security(("bearer" = ["campaigns:read"]))
)]
pub async fn download_media(
    State(state): State<QueryState>,
    caller: Caller,
    Path((campaign_id, content_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let content_id = parse_id(&content_id, NOT_FOUND)?;
    let wanted = params.get("sha256").map(|raw| raw.to_ascii_lowercase());
    if let Some(raw) = &wanted {
        if raw.len() != 64 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request(
                "sha256",
                "sha256 must be 64 hexadecimal digits",
            ));
        }
    }
    let (sha256, media_type, file_name) =
        find_media(&state, &caller, campaign_id, content_id, wanted.clone()).await?;
    let tag = format!("\"{sha256}\"");
    let cache = if wanted.is_some() {
        // A file under its hash never changes.
        "private, max-age=31536000, immutable"
    } else {
        "private, no-cache"
    };
    let not_modified = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag || t.trim() == "*")
        });
    if not_modified {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(ETAG, tag.parse().expect("valid etag"));
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        return Ok(response);
    }
    let (size, stream) = state.media.open(&sha256).await.map_err(|error| match error {
        // The read model names it, so the store must have it: a server fault.
        MediaError::NotFound => ApiError::internal(anyhow::anyhow!("stored media file {sha256} is missing")),
        other => ApiError::internal(other),
    })?;
    let name = file_name.unwrap_or_else(|| format!("{}.{}", &sha256[..12], media::extension(&media_type)));
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&media_type).map_err(ApiError::internal)?,
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(ETAG, tag.parse().expect("valid etag"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CONTENT_DISPOSITION, content_disposition(&name));
    Ok(response)
}

/// The file to serve: the one asked for by hash (if this item's own history
/// attached it) or the item's current one, with its media type and name.
async fn find_media(
    state: &QueryState,
    caller: &Caller,
    campaign_id: Uuid,
    content_id: Uuid,
    wanted: Option<String>,
) -> Result<(String, String, Option<String>), ApiError> {
    let client = state.reads.get().await?;
    ensure_campaign(&client, campaign_id, caller).await?;
    let statement = client
        .prepare_cached(
            "SELECT body->'media'->>'sha256' FROM content_items
             WHERE id = $1 AND campaign_id = $2 AND project = $3",
        )
        .await?;
    let current: Option<String> = client
        .query_opt(&statement, &[&content_id, &campaign_id, &caller.project.as_str()])
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?
        .get(0);
    let Some(sha256) = wanted.or(current) else {
        return Err(ApiError::NotFound(MEDIA_NOT_FOUND));
    };
    // Only files this item's own history attached are served.
    let statement = client
        .prepare_cached(
            "SELECT media_type, size, file_name FROM content_media WHERE content_id = $1 AND sha256 = $2",
        )
        .await?;
    let row = client
        .query_opt(&statement, &[&content_id, &sha256])
        .await?
        .ok_or(ApiError::NotFound(MEDIA_NOT_FOUND))?;
    Ok((sha256, row.get(0), row.get(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_inclusive_as_written() {
        let (from, until) = window(Some(&"2024-06-01".into()), Some(&"2024-06-30".into())).unwrap();
        assert_eq!(from.unwrap().to_rfc3339(), "2024-06-01T00:00:00+00:00");
        assert_eq!(until.unwrap().to_rfc3339(), "2024-07-01T00:00:00+00:00");
        let (_, until) = window(None, Some(&"2024-06-15T10:00:00Z".into())).unwrap();
        assert_eq!(until.unwrap().to_rfc3339(), "2024-06-15T10:00:00.000001+00:00");
        assert!(window(Some(&"2024-06-02".into()), Some(&"2024-06-01".into())).is_err());
        assert!(window(Some(&"June".into()), None).is_err());
        assert!(window(None, Some(&"2024-02-30".into())).is_err());
    }

    #[test]
    fn content_disposition_cannot_be_broken_out_of() {
        let header = content_disposition("évil\"; x=\".png");
        let text = header.to_str().unwrap();
        assert!(
            text.starts_with("inline; filename=\"_vil_; x=_.png\"; filename*=UTF-8''"),
            "{text}"
        );
        assert!(text.ends_with("%C3%A9vil%22%3B%20x%3D%22.png"), "{text}");
    }
}
