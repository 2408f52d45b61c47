//! Writes to aggregates that live under a campaign (tasks, content items).
//!
//! The steps are the campaign's (load by folding, tenancy, If-Match, decide,
//! append at the loaded version, retry on a race, wait for the read models), plus
//! two checks at command time: the campaign exists and belongs to the caller's
//! project ("Campaign not found" otherwise), and the child belongs to the campaign
//! named in the URL (its own "not found" otherwise, as if it did not exist).

use crate::campaigns::{self, wait_for_read_models};
use crate::CommandState;
use axum::http::header::{CONTENT_TYPE, ETAG, LOCATION};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::content::{Content, ContentCommand, ContentError, ContentEvent};
use domain::task::{Task, TaskCommand, TaskError, TaskEvent};
use domain::DomainEvent;
use event_store::{AppendError, ExpectedVersion, NewEvent};
use media::StagedMedia;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;
use web::extract::{etag, IfMatchVersion};
use web::idempotency::IdSource;
use web::{ApiError, Caller};

/// Attempts at a write that keeps losing races before it answers 409.
const MAX_ATTEMPTS: usize = 5;

/// Who is writing, for the event metadata and for deriving ids.
pub(crate) struct WriteContext<'a> {
    pub caller: &'a Caller,
    pub request_id: &'a str,
    pub ids: &'a IdSource,
}

/// What the executor needs to know about a child aggregate.
pub(crate) trait Child: Default + Clone + Send + Sync {
    type Event: DomainEvent + Send + Sync;
    type Command: Clone + Send + Sync;
    type Error;
    /// The 404 message, e.g. "Task not found".
    const NOT_FOUND: &'static str;
    /// For messages and metric labels.
    const KIND: &'static str;
    fn stream_id(id: Uuid) -> String;
    fn is_create(command: &Self::Command) -> bool;
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
    fn apply(&mut self, event: &Self::Event, recorded_at: DateTime<Utc>, version: i64);
    fn stream_version(&self) -> Option<i64>;
    /// `(campaign id, version)` of the live child, `None` if gone or never existed.
    fn live(&self) -> Option<(Uuid, i64)>;
    fn to_api_error(error: Self::Error) -> ApiError;
}

impl Child for Task {
    type Event = TaskEvent;
    type Command = TaskCommand;
    type Error = TaskError;
    const NOT_FOUND: &'static str = "Task not found";
    const KIND: &'static str = "task";
    fn stream_id(id: Uuid) -> String {
        domain::task::stream_id(id)
    }
    fn is_create(command: &TaskCommand) -> bool {
        matches!(command, TaskCommand::Create { .. })
    }
    fn handle(&self, command: TaskCommand) -> Result<Vec<TaskEvent>, TaskError> {
        Task::handle(self, command)
    }
    fn apply(&mut self, event: &TaskEvent, recorded_at: DateTime<Utc>, version: i64) {
        Task::apply(self, event, recorded_at, version)
    }
    fn stream_version(&self) -> Option<i64> {
        self.version()
    }
    fn live(&self) -> Option<(Uuid, i64)> {
        self.state().map(|s| (s.campaign_id, s.version))
    }
    fn to_api_error(error: TaskError) -> ApiError {
        match error {
            TaskError::Invalid(errors) => ApiError::Validation(errors),
            TaskError::NotFound => ApiError::NotFound(Self::NOT_FOUND),
            TaskError::AlreadyExists => ApiError::Conflict("A task with this id already exists".into()),
        }
    }
}

impl Child for Content {
    type Event = ContentEvent;
    type Command = ContentCommand;
    type Error = ContentError;
    const NOT_FOUND: &'static str = "Content not found";
    const KIND: &'static str = "content";
    fn stream_id(id: Uuid) -> String {
        domain::content::stream_id(id)
    }
    fn is_create(command: &ContentCommand) -> bool {
        matches!(command, ContentCommand::Create { .. })
    }
    fn handle(&self, command: ContentCommand) -> Result<Vec<ContentEvent>, ContentError> {
        Content::handle(self, command)
    }
    fn apply(&mut self, event: &ContentEvent, recorded_at: DateTime<Utc>, version: i64) {
        Content::apply(self, event, recorded_at, version)
    }
    fn stream_version(&self) -> Option<i64> {
        self.version()
    }
    fn live(&self) -> Option<(Uuid, i64)> {
        self.state().map(|s| (s.campaign_id, s.version))
    }
    fn to_api_error(error: ContentError) -> ApiError {
        match error {
            ContentError::Invalid(errors) => ApiError::Validation(errors),
            ContentError::NotFound => ApiError::NotFound(Self::NOT_FOUND),
            ContentError::AlreadyExists => {
                ApiError::Conflict("A content item with this id already exists".into())
            }
        }
    }
}

/// The campaign exists, is not deleted, and belongs to the caller's project.
pub(crate) async fn ensure_campaign(
    state: &CommandState,
    caller: &Caller,
    campaign_id: Uuid,
) -> Result<(), ApiError> {
    let campaign = campaigns::load(state, campaign_id).await?;
    match campaign.state() {
        Some(live) if live.project == caller.project => Ok(()),
        _ => Err(ApiError::NotFound(campaigns::NOT_FOUND)),
    }
}

async fn load<A: Child>(state: &CommandState, id: Uuid) -> Result<A, ApiError> {
    let mut aggregate = A::default();
    for recorded in state.store.read_stream(&A::stream_id(id)).await? {
        let event = A::Event::from_data(&recorded.event_type, recorded.data).map_err(ApiError::internal)?;
        aggregate.apply(&event, recorded.recorded_at, recorded.version);
    }
    Ok(aggregate)
}

fn stale<A: Child>() -> ApiError {
    ApiError::PreconditionFailed(format!(
        "The {} has changed since the version in If-Match",
        A::KIND
    ))
}

/// Runs one command against one child of `campaign_id`. `media`, if given, is
/// moved into place only once the command is accepted and just before its events
/// are appended, so a refused command leaves no file behind and an appended event
/// never names a missing one.
pub(crate) async fn execute<A: Child>(
    state: &CommandState,
    ctx: &WriteContext<'_>,
    campaign_id: Uuid,
    id: Uuid,
    if_match: Option<IfMatchVersion>,
    command: A::Command,
    mut media: Option<&mut StagedMedia>,
) -> Result<A, ApiError> {
    ensure_campaign(state, ctx.caller, campaign_id).await?;
    let creating = A::is_create(&command);
    for attempt in 0..MAX_ATTEMPTS {
        let mut aggregate = if creating && attempt == 0 {
            A::default()
        } else {
            load::<A>(state, id).await?
        };
        if !creating {
            let Some((owner, version)) = aggregate.live() else {
                return Err(ApiError::NotFound(A::NOT_FOUND));
            };
            if owner != campaign_id {
                return Err(ApiError::NotFound(A::NOT_FOUND));
            }
            match if_match {
                None | Some(IfMatchVersion::Any) => {}
                Some(IfMatchVersion::Exact(v)) if v == version => {}
                Some(_) => return Err(stale::<A>()),
            }
        }
        let events = aggregate.handle(command.clone()).map_err(A::to_api_error)?;
        if events.is_empty() {
            return Ok(aggregate);
        }
        if let Some(media) = media.as_deref_mut() {
            media.commit().await.map_err(ApiError::internal)?;
        }
        let recorded_at = event_store::now();
        let metadata = json!({
            "project": ctx.caller.project,
            "api_key_id": ctx.caller.key_id,
            "api_key_name": ctx.caller.key_name,
            "request_id": ctx.request_id,
            "correlation_id": ctx.request_id,
            "campaign_id": campaign_id,
        });
        let new_events = events
            .iter()
            .enumerate()
            .map(|(n, event)| NewEvent {
                event_id: ctx.ids.id("event", n),
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                data: event.to_data(),
                metadata: metadata.clone(),
                recorded_at,
            })
            .collect();
        let expected = aggregate
            .stream_version()
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        match state.store.append(&A::stream_id(id), expected, new_events).await {
            Ok(outcome) => {
                if outcome.already_stored {
                    aggregate = load::<A>(state, id).await?;
                } else {
                    let first = outcome.last_version - events.len() as i64 + 1;
                    for (n, event) in events.iter().enumerate() {
                        aggregate.apply(event, recorded_at, first + n as i64);
                    }
                }
                wait_for_read_models(state, outcome.last_position).await;
                return Ok(aggregate);
            }
            Err(AppendError::Conflict { .. }) => {
                if matches!(if_match, Some(IfMatchVersion::Exact(_))) {
                    return Err(stale::<A>());
                }
                if creating {
                    return Err(ApiError::Conflict(format!(
                        "A {} with this id already exists",
                        A::KIND
                    )));
                }
                metrics::counter!("marketing_write_conflicts_total", "aggregate" => A::KIND).increment(1);
            }
            Err(other) => return Err(ApiError::internal(other)),
        }
    }
    Err(ApiError::Conflict(format!(
        "The {} is being modified concurrently; retry the request",
        A::KIND
    )))
}

/// A resource with its ETag, and a Location when it was just created.
pub(crate) fn resource_response<T: Serialize>(
    status: StatusCode,
    resource: &T,
    version: i64,
    location: Option<String>,
) -> Response {
    let body = serde_json::to_vec(resource).expect("resources serialize");
    let mut response = (status, [(CONTENT_TYPE, "application/json")], body).into_response();
    let headers = response.headers_mut();
    headers.insert(ETAG, etag(version).parse().expect("valid etag"));
    if let Some(url) = location {
        headers.insert(LOCATION, url.parse().expect("valid location"));
    }
    response
}
