//! Campaign task writes: create, update, delete.

use crate::children::{execute, resource_response, WriteContext};
use crate::CommandState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::task::{CreateTask, Task, TaskCommand, TaskState, UpdateTask};
use web::extract::{parse_id, IfMatch, JsonBody, RequestId};
use web::idempotency::IdSource;
use web::{ApiError, Caller, BASE_PATH};

const CAMPAIGN_NOT_FOUND: &str = "Campaign not found";
const NOT_FOUND: &str = "Task not found";

fn live(task: &Task) -> Result<&TaskState, ApiError> {
    task.state().ok_or(ApiError::NotFound(NOT_FOUND))
}

/// Create a task for a campaign.
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns/{campaign_id}/tasks", tag = "tasks",
    request_body = CreateTask,
    params(
        ("campaign_id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body replay the first response"),
    ),
    responses(
        (status = 201, description = "Created", body = domain::task::TaskResource,
         headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Invalid field, e.g. `assigned_to` not a UUID", body = web::error::ErrorBody),
        (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
        (status = 409, description = "Idempotency-Key reuse", body = web::error::ErrorBody),
        (status = 413, body = web::error::ErrorBody), (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<CommandState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ids: IdSource,
    Path(campaign_id): Path<String>,
    JsonBody(input): JsonBody<CreateTask>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let task_id = ids.id("task", 0);
    let ctx = WriteContext {
        caller: &caller,
        request_id: &request_id,
        ids: &ids,
    };
    let command = TaskCommand::Create {
        task_id,
        campaign_id,
        project: caller.project.clone(),
        input: Box::new(input),
    };
    let task: Task = execute(&state, &ctx, campaign_id, task_id, None, command, None).await?;
    let task = live(&task)?;
    let location = format!("{BASE_PATH}/campaigns/{campaign_id}/tasks/{}", task.id);
    Ok(resource_response(
        StatusCode::CREATED,
        task,
        task.version,
        Some(location),
    ))
}

/// Update a task (partial: absent fields stay, `null` clears).
#[utoipa::path(
    put, path = "/v1/dev/marketing/campaigns/{campaign_id}/tasks/{task_id}", tag = "tasks",
    request_body = UpdateTask,
    params(
        ("campaign_id" = Uuid, Path), ("task_id" = Uuid, Path),
        ("If-Match" = Option<String>, Header, description = "ETag from a GET; a stale one is 412"),
    ),
    responses(
        (status = 200, body = domain::task::TaskResource, headers(("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found, or Task not found (also for a task of another campaign)", body = web::error::ErrorBody),
        (status = 412, body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<CommandState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ids: IdSource,
    Path((campaign_id, task_id)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
    JsonBody(input): JsonBody<UpdateTask>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let task_id = parse_id(&task_id, NOT_FOUND)?;
    let ctx = WriteContext {
        caller: &caller,
        request_id: &request_id,
        ids: &ids,
    };
    let command = TaskCommand::Update(Box::new(input));
    let task: Task = execute(&state, &ctx, campaign_id, task_id, if_match, command, None).await?;
    let task = live(&task)?;
    Ok(resource_response(StatusCode::OK, task, task.version, None))
}

/// Delete a task. Its history stays in the log.
#[utoipa::path(
    delete, path = "/v1/dev/marketing/campaigns/{campaign_id}/tasks/{task_id}", tag = "tasks",
    params(("campaign_id" = Uuid, Path), ("task_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = web::error::ErrorBody), (status = 404, body = web::error::ErrorBody),
        (status = 412, body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<CommandState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ids: IdSource,
    Path((campaign_id, task_id)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
) -> Result<StatusCode, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let task_id = parse_id(&task_id, NOT_FOUND)?;
    let ctx = WriteContext {
        caller: &caller,
        request_id: &request_id,
        ids: &ids,
    };
    execute::<Task>(
        &state,
        &ctx,
        campaign_id,
        task_id,
        if_match,
        TaskCommand::Delete,
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
