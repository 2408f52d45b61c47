//! Task reads: a campaign's tasks (filtered, paginated) and one task.

use crate::params::choice;
use crate::under_campaign::{get_one, list, ItemList};
use chrono::{DateTime, Utc};
use domain::task::TaskStatus;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio_postgres::Row;
use uuid::Uuid;
use web::{ApiError, Caller};

const NOT_FOUND: &str = "Task not found";

/// Keyset position of the last item on a page: oldest first by (created_at, id).
#[derive(Serialize, Deserialize)]
struct Cursor {
    created_at: DateTime<Utc>,
    id: Uuid,
}

impl From<&Row> for Cursor {
    fn from(row: &Row) -> Self {
        Self {
            created_at: row.get(1),
            id: row.get(2),
        }
    }
}

list! {
    /// List a campaign's tasks, oldest first.
    path = "/v1/dev/marketing/campaigns/{campaign_id}/tasks", tag = "tasks", scope = "campaigns:read",
    filters(
        ("status" = Option<TaskStatus>, Query, description = "Only tasks in this status"),
        ("assigned_to" = Option<Uuid>, Query, description = "Only tasks assigned to this user"),
    ),
    ok = "`{data, has_more, next_cursor}`",
    /// A page of tasks, for the OpenAPI document.
    page = TaskPage of domain::task::TaskResource,
    items = Tasks
}

/// The tasks list's filters.
struct Tasks {
    status: Option<TaskStatus>,
    assigned_to: Option<Uuid>,
}

impl ItemList for Tasks {
    type Cursor = Cursor;

    fn filters(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let status = choice(params, "status", TaskStatus::parse, TaskStatus::CHOICES)?;
        let assigned_to = match params.get("assigned_to") {
            None => None,
            Some(raw) => Some(
                Uuid::parse_str(raw)
                    .map_err(|_| ApiError::bad_request("assigned_to", "assigned_to must be a UUID"))?,
            ),
        };
        Ok(Self { status, assigned_to })
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
                    &self.status.map(TaskStatus::as_str),
                    &self.assigned_to,
                    &cursor.map(|c| c.created_at),
                    &cursor.map_or(Uuid::nil(), |c| c.id),
                    &fetch,
                ],
            )
            .await?;
        Ok(rows)
    }
}

get_one! {
    /// Get one task of a campaign.
    path = "/v1/dev/marketing/campaigns/{campaign_id}/tasks/{task_id}", tag = "tasks", scope = "campaigns:read", id = "task_id",
    body = domain::task::TaskResource,
    not_found = "Campaign not found, or Task not found",
    table = "tasks", NOT_FOUND
}
