//! The task aggregate: one event stream per task (`task-<uuid>`). A task belongs to
//! one campaign; every event names that campaign, so projections and consumers can
//! group tasks without loading the task's history.
//!
//! Whether the campaign exists (and belongs to the caller's project) is checked by
//! the command side before it asks the task to decide: that needs the campaign's
//! stream, and the domain does no I/O.

use crate::aggregate::{change, Placement, PlainAggregate, Recorded, Root, Stamped};
use crate::changes::{changed, not_null};
use crate::input::{
    check_optional_text, check_text, double_option_datetime, double_option_uuid, optional_datetime,
    optional_uuid,
};
use crate::{changes, choice_enum, domain_events, update_body, ProjectSlug, ValidationErrors};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Every task event stream is named `task-<uuid>`.
pub const STREAM_PREFIX: &str = "task-";

pub fn stream_id(task_id: Uuid) -> String {
    format!("{STREAM_PREFIX}{task_id}")
}

const TITLE_MAX: usize = 200;
const DESCRIPTION_MAX: usize = 10_000;

choice_enum! {
    /// Where a task stands. Any status may follow any other: teams reopen completed
    /// tasks and revive cancelled ones, and the audit trail keeps every move.
    pub enum TaskStatus {
        Pending,
        InProgress,
        Completed,
        Cancelled,
    }
}

/// Everything about a task but identity, status and timestamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetails {
    pub title: String,
    pub description: Option<String>,
    pub assigned_to: Option<Uuid>,
    pub due_date: Option<DateTime<Utc>>,
}

/// Body of `POST /campaigns/{campaign_id}/tasks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTask {
    #[cfg_attr(feature = "openapi", schema(example = "Create ad copy"))]
    pub title: String,
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(example = "Write compelling ad copy for Facebook")
    )]
    pub description: Option<String>,
    /// The user responsible, as a UUID.
    #[serde(default, deserialize_with = "optional_uuid")]
    pub assigned_to: Option<Uuid>,
    /// RFC 3339, e.g. `2024-06-15T00:00:00Z`.
    #[serde(default, deserialize_with = "optional_datetime")]
    pub due_date: Option<DateTime<Utc>>,
    /// Defaults to `pending`.
    #[serde(default)]
    pub status: Option<TaskStatus>,
}

update_body! {
    /// Body of `PUT /campaigns/{campaign_id}/tasks/{task_id}`: a partial update. An
    /// absent field stays as it is; `null` clears an optional one. Read-only fields a
    /// client may echo back from a GET are ignored.
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(default)]
    #[serde(deny_unknown_fields)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub struct UpdateTask {
        title: String,
        description: String,
        assigned_to: Uuid = "double_option_uuid",
        due_date: DateTime<Utc> = "double_option_datetime",
        status: TaskStatus,
    }
    ignores echoed read_only_id = "id", read_only_campaign_id = "campaign_id", read_only_created_at = "created_at", read_only_updated_at = "updated_at", read_only_version = "version"
}

changes! {
    /// The fields an update changed, as stored in `TaskUpdated` (status changes are
    /// their own event, so auditors see `from` and `to`).
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(default)]
    pub struct TaskChanges for TaskState {
        title: String,
        description: Option<String>,
        assigned_to: Option<Uuid>,
        due_date: Option<DateTime<Utc>>,
    }
}

// ---------------------------------------------------------------------------
// Events

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCreated {
    pub task_id: Uuid,
    pub campaign_id: Uuid,
    pub project: ProjectSlug,
    pub status: TaskStatus,
    pub details: TaskDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdated {
    pub task_id: Uuid,
    pub campaign_id: Uuid,
    pub changes: TaskChanges,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatusChanged {
    pub task_id: Uuid,
    pub campaign_id: Uuid,
    pub from: TaskStatus,
    pub to: TaskStatus,
}

domain_events! {
    /// Everything that happens to a task.
    #[derive(Debug, Clone, PartialEq)]
    pub enum TaskEvent: "task events" {
        Created(TaskCreated) = "TaskCreated",
        Updated(TaskUpdated) = "TaskUpdated",
        StatusChanged(TaskStatusChanged) = "TaskStatusChanged",
        Deleted(TaskDeleted) = "TaskDeleted",
    }
    every event has { task_id: Uuid, campaign_id: Uuid }
    which is all TaskDeleted carries
}

// ---------------------------------------------------------------------------
// State

/// A live task as clients see it. Serialized, it is the resource (flat, stable
/// field order); deserialized, it lets a projection fold events into a stored row
/// with this same code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    // The document's description of the resource, as published.
    schema(as = Task, description = "The resource's shape for the OpenAPI document.")
)]
pub struct TaskState {
    pub id: Uuid,
    pub campaign_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(example = "Create ad copy"))]
    pub title: String,
    pub description: Option<String>,
    pub assigned_to: Option<Uuid>,
    pub due_date: Option<DateTime<Utc>>,
    pub status: TaskStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    // 0-based: the version of the last event.
    /// Stream version; also the `ETag`.
    pub version: i64,
}

impl Stamped for TaskState {
    fn stamp(&mut self, at: Recorded) {
        self.updated_at = at.at;
        self.version = at.version;
    }
}

impl TaskState {
    fn details(&self) -> TaskDetails {
        TaskDetails {
            title: self.title.clone(),
            description: self.description.clone(),
            assigned_to: self.assigned_to,
            due_date: self.due_date,
        }
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("Task not found")]
    NotFound,
    #[error("task already exists")]
    AlreadyExists,
}

#[derive(Debug, Clone)]
pub enum TaskCommand {
    Create(Placement, Box<CreateTask>),
    Update(Box<UpdateTask>),
    Delete,
}

/// The aggregate: a task folded from its stream (see [`Root`]).
pub type Task = Root<TaskState>;

impl PlainAggregate for TaskState {
    const KIND: &'static str = "task";
    const STREAM_PREFIX: &'static str = STREAM_PREFIX;
    type Event = TaskEvent;
    type Command = TaskCommand;
    type Error = TaskError;

    fn decide(root: &Task, command: TaskCommand) -> Result<Vec<TaskEvent>, TaskError> {
        match command {
            TaskCommand::Create(place, input) => {
                root.empty_or(TaskError::AlreadyExists)?;
                let details = TaskDetails {
                    title: input.title,
                    description: input.description,
                    assigned_to: input.assigned_to,
                    due_date: input.due_date,
                };
                validate_details(&details).map_err(TaskError::Invalid)?;
                Ok(vec![TaskEvent::Created(TaskCreated {
                    task_id: place.id,
                    campaign_id: place.campaign_id,
                    project: place.project,
                    status: input.status.unwrap_or(TaskStatus::Pending),
                    details,
                })])
            }
            TaskCommand::Update(input) => update(root.live_or(TaskError::NotFound)?, *input),
            TaskCommand::Delete => {
                let state = root.live_or(TaskError::NotFound)?;
                Ok(vec![TaskEvent::Deleted(TaskDeleted {
                    task_id: state.id,
                    campaign_id: state.campaign_id,
                })])
            }
        }
    }

    fn evolve(state: &mut Option<Self>, event: &TaskEvent, at: Recorded) {
        match event {
            TaskEvent::Created(e) => {
                *state = Some(TaskState {
                    id: e.task_id,
                    campaign_id: e.campaign_id,
                    title: e.details.title.clone(),
                    description: e.details.description.clone(),
                    assigned_to: e.details.assigned_to,
                    due_date: e.details.due_date,
                    status: e.status,
                    created_at: at.at,
                    updated_at: at.at,
                    version: at.version,
                });
            }
            TaskEvent::Updated(e) => change(state, at, |state| e.changes.apply_to(state)),
            TaskEvent::StatusChanged(e) => change(state, at, |state| state.status = e.to),
            TaskEvent::Deleted(_) => *state = None,
        }
    }

    fn version(&self) -> i64 {
        self.version
    }
}

fn update(state: &TaskState, input: UpdateTask) -> Result<Vec<TaskEvent>, TaskError> {
    let mut invalid = ValidationErrors::new();
    let title = changed(not_null(&mut invalid, "title", input.title), &state.title);
    let status = changed(not_null(&mut invalid, "status", input.status), &state.status);
    if !invalid.is_empty() {
        return Err(TaskError::Invalid(invalid));
    }
    let changes = TaskChanges {
        title,
        description: changed(input.description, &state.description),
        assigned_to: changed(input.assigned_to, &state.assigned_to),
        due_date: changed(input.due_date, &state.due_date),
    };
    let mut merged = state.clone();
    changes.apply_to(&mut merged);
    validate_details(&merged.details()).map_err(TaskError::Invalid)?;
    let mut events = Vec::new();
    if !changes.is_empty() {
        events.push(TaskEvent::Updated(TaskUpdated {
            task_id: state.id,
            campaign_id: state.campaign_id,
            changes,
        }));
    }
    if let Some(to) = status {
        events.push(TaskEvent::StatusChanged(TaskStatusChanged {
            task_id: state.id,
            campaign_id: state.campaign_id,
            from: state.status,
            to,
        }));
    }
    Ok(events)
}

/// Every rule on a task's attributes, checked on create and after merging an update.
pub fn validate_details(d: &TaskDetails) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_text(&mut errors, "title", &d.title, TITLE_MAX);
    check_optional_text(
        &mut errors,
        "description",
        d.description.as_deref(),
        DESCRIPTION_MAX,
    );
    errors.into_result(())
}

#[cfg(test)]
mod tests;

/// The resource's schema, by the name the handlers' OpenAPI entries use.
#[cfg(feature = "openapi")]
pub type TaskResource = TaskState;
