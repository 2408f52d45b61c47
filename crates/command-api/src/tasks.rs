//! Campaign task writes: create, update, delete.

use crate::kernel::{respond, Resource, Write, Writer};
use crate::under_campaign::{delete_item, ItemChange, NewItem};
use axum::http::StatusCode;
use axum::response::Response;
use domain::task::{CreateTask, TaskCommand, TaskError, TaskState, UpdateTask};
use std::convert::Infallible;
use uuid::Uuid;
use web::extract::JsonBody;
use web::{ApiError, BASE_PATH};

const NOT_FOUND: &str = "Task not found";

impl Resource for TaskState {
    const NOT_FOUND: &'static str = NOT_FOUND;

    fn to_api_error(error: TaskError) -> ApiError {
        match error {
            TaskError::Invalid(errors) => ApiError::Validation(errors),
            TaskError::NotFound => ApiError::NotFound(NOT_FOUND),
            TaskError::AlreadyExists => ApiError::Conflict("A task with this id already exists".into()),
        }
    }

    fn fold_error(never: Infallible) -> ApiError {
        match never {}
    }

    fn is_create(command: &TaskCommand) -> bool {
        matches!(command, TaskCommand::Create { .. })
    }

    fn campaign_id(&self) -> Uuid {
        self.campaign_id
    }

    fn location(&self) -> String {
        format!("{BASE_PATH}/campaigns/{}/tasks/{}", self.campaign_id, self.id)
    }
}

/// Create a task for a campaign.
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns/{campaign_id}/tasks", tag = "tasks",
    request_body = CreateTask,
    params(
        ("campaign_id" = Uuid, Path),
        crate::IdempotencyKeyHeader,
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
    security(("bearer" = ["campaigns:write"]))
)]
pub async fn create(writer: Writer, request: NewItem<JsonBody<CreateTask>>) -> Result<Response, ApiError> {
    let (campaign, place) = request.place(&writer, "task").await?;
    let write = Write::<TaskState>::new(place.id, TaskCommand::Create(place, Box::new(request.body.0)));
    respond(
        StatusCode::CREATED,
        &writer.execute(write.under(&campaign)).await?,
    )
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
    security(("bearer" = ["campaigns:write"]))
)]
pub async fn update(writer: Writer, request: ItemChange<JsonBody<UpdateTask>>) -> Result<Response, ApiError> {
    let (campaign, task_id) = request.target::<TaskState>(&writer).await?;
    let command = TaskCommand::Update(Box::new(request.body.0));
    let write = Write::<TaskState>::new(task_id, command).under(&campaign);
    respond(
        StatusCode::OK,
        &writer.execute(write.if_match(request.if_match)).await?,
    )
}

delete_item! {
    /// Delete a task. Its history stays in the log.
    path = "/v1/dev/marketing/campaigns/{campaign_id}/tasks/{task_id}", tag = "tasks", scope = "campaigns:write", id = "task_id", not_found = "",
    TaskState, TaskCommand::Delete,
    run = |writer, write| writer.execute(write)
}
