//! Campaign reads.

use crate::json_response;
use crate::params::{choice, page};
use crate::QueryState;
use axum::extract::{Path, Query, State};
use axum::http::header::ETAG;
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::campaign::{CampaignStatus, CampaignType};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;
use web::extract::{etag, parse_id};
use web::{ApiError, Caller};

const NOT_FOUND: &str = "Campaign not found";

/// Keyset position of the last item on a page: newest first by (created_at, id).
#[derive(Serialize, Deserialize)]
struct Cursor {
    created_at: DateTime<Utc>,
    id: Uuid,
}

/// List the project's campaigns, newest first.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns", tag = "campaigns",
    params(
        ("status" = Option<CampaignStatus>, Query, description = "Only campaigns in this status"),
        ("type" = Option<CampaignType>, Query, description = "Only campaigns of this type"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "`{data, has_more, next_cursor}`", body = CampaignPage),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["campaigns:read"]))
)]
pub async fn list(
    State(state): State<QueryState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let status = choice(&params, "status", CampaignStatus::parse, CampaignStatus::CHOICES)?;
    let campaign_type = match params.get("type") {
        None => None,
        Some(raw) => Some(
            CampaignType::parse(raw)
                .ok_or_else(|| ApiError::bad_request("type", format!("unknown campaign type {raw:?}")))?,
        ),
    };
    let (limit, cursor) = page::<Cursor>(&params)?;
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT body::text, created_at, id FROM campaigns
             WHERE project = $1
               AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR campaign_type = $3)
               AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
             ORDER BY created_at DESC, id DESC
             LIMIT $6",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &caller.project.as_str(),
                &status.map(CampaignStatus::as_str),
                &campaign_type.map(CampaignType::as_str),
                &cursor.as_ref().map(|c| c.created_at),
                &cursor.as_ref().map_or(Uuid::nil(), |c| c.id),
                &(limit + 1),
            ],
        )
        .await?;
    Ok(crate::page_response(&rows, limit, |row| Cursor {
        created_at: row.get(1),
        id: row.get(2),
    }))
}

/// Get one campaign.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}", tag = "campaigns",
    params(("campaign_id" = Uuid, Path)),
    responses(
        (status = 200, body = domain::campaign::CampaignResource, headers(("ETag" = String))),
        (status = 401, body = web::error::ErrorBody), (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["campaigns:read"]))
)]
pub async fn get_one(
    State(state): State<QueryState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
) -> Result<Response, ApiError> {
    // The caller is authenticated first (from the key cache on the hot path),
    // so a malformed id tells an unauthenticated caller nothing; then one
    // primary-key read.
    let campaign_id = parse_id(&campaign_id, NOT_FOUND)?;
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached("SELECT body::text, version FROM campaigns WHERE id = $1 AND project = $2")
        .await?;
    let row = client
        .query_opt(&statement, &[&campaign_id, &caller.project.as_str()])
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    let mut response = json_response(row.get::<_, String>(0));
    response
        .headers_mut()
        .insert(ETAG, etag(row.get(1)).parse().expect("valid etag"));
    Ok(response)
}

/// A page of campaigns, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct CampaignPage {
    pub data: Vec<domain::campaign::CampaignResource>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}
