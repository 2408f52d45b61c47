//! Task reads: a campaign's tasks (filtered, paginated) and one task.

use crate::params::{choice, page};
use crate::under_campaign::{ensure_campaign, get_one, CAMPAIGN_NOT_FOUND};
use crate::QueryState;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::task::TaskStatus;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;
use web::extract::parse_id;
use web::{ApiError, Caller};

const NOT_FOUND: &str = "Task not found";

/// Keyset position of the last item on a page: oldest first by (created_at, id).
#[derive(Serialize, Deserialize)]
struct Cursor {
    created_at: DateTime<Utc>,
    id: Uuid,
}

/// List a campaign's tasks, oldest first.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}/tasks", tag = "tasks",
    params(
        ("campaign_id" = Uuid, Path),
        ("status" = Option<TaskStatus>, Query, description = "Only tasks in this status"),
        ("assigned_to" = Option<Uuid>, Query, description = "Only tasks assigned to this user"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "`{data, has_more, next_cursor}`", body = TaskPage),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<QueryState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let status = choice(&params, "status", TaskStatus::parse, TaskStatus::CHOICES)?;
    let assigned_to = match params.get("assigned_to") {
        None => None,
        Some(raw) => Some(
            Uuid::parse_str(raw)
                .map_err(|_| ApiError::bad_request("assigned_to", "assigned_to must be a UUID"))?,
        ),
    };
    let (limit, cursor) = page::<Cursor>(&params)?;
    let client = state.pool.get().await?;
    ensure_campaign(&client, campaign_id, &caller).await?;
    let statement = client
        .prepare_cached(
            "SELECT body::text, created_at, id FROM tasks
             WHERE campaign_id = $1 AND project = $2
               AND ($3::text IS NULL OR status = $3)
               AND ($4::uuid IS NULL OR assigned_to = $4)
               AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6))
             ORDER BY created_at, id
             LIMIT $7",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &campaign_id,
                &caller.project.as_str(),
                &status.map(TaskStatus::as_str),
                &assigned_to,
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

get_one! {
    /// Get one task of a campaign.
    path = "/v1/dev/marketing/campaigns/{campaign_id}/tasks/{task_id}", tag = "tasks", id = "task_id",
    body = domain::task::TaskResource,
    not_found = "Campaign not found, or Task not found",
    table = "tasks", NOT_FOUND
}

/// A page of tasks, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct TaskPage {
    pub data: Vec<domain::task::TaskResource>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}
