//! Campaign writes: create, update, change status, delete.

use crate::CommandState;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, ETAG, LOCATION};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::campaign::{
    stream_id, Campaign, CampaignCommand, CampaignError, CampaignEvent, CampaignState, CampaignStatus,
    CreateCampaign, UpdateCampaign,
};
use domain::DomainEvent;
use event_store::{AppendError, ExpectedVersion, NewEvent};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use web::extract::{etag, parse_id, IfMatch, IfMatchVersion, JsonBody, RequestId};
use web::idempotency::IdSource;
use web::{ApiError, Caller, BASE_PATH};

const NOT_FOUND: &str = "Campaign not found";
/// Attempts at a write that keeps losing races before it answers 409.
const MAX_ATTEMPTS: usize = 5;

/// Body of `PATCH /campaigns/{id}/status`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub status: CampaignStatus,
}

/// Who is writing, for the event metadata and for deriving ids.
struct WriteContext<'a> {
    caller: &'a Caller,
    request_id: &'a str,
    ids: &'a IdSource,
}

fn to_api_error(error: CampaignError) -> ApiError {
    match error {
        CampaignError::Invalid(errors) => ApiError::Validation(errors),
        CampaignError::NotFound => ApiError::NotFound(NOT_FOUND),
        CampaignError::AlreadyExists => ApiError::Conflict("A campaign with this id already exists".into()),
        illegal @ CampaignError::IllegalTransition { .. } => ApiError::Conflict(illegal.to_string()),
    }
}

/// Loads a campaign by folding its stream.
pub async fn load(state: &CommandState, campaign_id: Uuid) -> Result<Campaign, ApiError> {
    let mut campaign = Campaign::default();
    for recorded in state.store.read_stream(&stream_id(campaign_id)).await? {
        let event =
            CampaignEvent::from_data(&recorded.event_type, recorded.data).map_err(ApiError::internal)?;
        campaign.apply(&event, recorded.recorded_at, recorded.version);
    }
    Ok(campaign)
}

/// Runs one command against one campaign. See the crate docs for the steps.
async fn execute(
    state: &CommandState,
    ctx: &WriteContext<'_>,
    campaign_id: Uuid,
    if_match: Option<IfMatchVersion>,
    command: CampaignCommand,
) -> Result<Campaign, ApiError> {
    let creating = matches!(command, CampaignCommand::Create { .. });
    for attempt in 0..MAX_ATTEMPTS {
        // A new id cannot have history: skip the read on the first try.
        let mut campaign = if creating && attempt == 0 {
            Campaign::default()
        } else {
            load(state, campaign_id).await?
        };
        if let Some(live) = campaign.state() {
            if live.project != ctx.caller.project {
                return Err(ApiError::NotFound(NOT_FOUND));
            }
        }
        if !creating {
            check_precondition(&campaign, if_match)?;
        }
        let events = campaign.handle(command.clone()).map_err(to_api_error)?;
        if events.is_empty() {
            return Ok(campaign);
        }
        let recorded_at = event_store::now();
        let metadata = json!({
            "project": ctx.caller.project,
            "api_key_id": ctx.caller.key_id,
            "api_key_name": ctx.caller.key_name,
            "request_id": ctx.request_id,
            "correlation_id": ctx.request_id,
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
        let expected = campaign
            .version()
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        match state
            .store
            .append(&stream_id(campaign_id), expected, new_events)
            .await
        {
            Ok(outcome) => {
                if outcome.already_stored {
                    // A retry of a request that already went through: answer with
                    // what is stored (the idempotent result), not a second change.
                    campaign = load(state, campaign_id).await?;
                } else {
                    let first = outcome.last_version - events.len() as i64 + 1;
                    for (n, event) in events.iter().enumerate() {
                        campaign.apply(event, recorded_at, first + n as i64);
                    }
                }
                wait_for_read_models(state, outcome.last_position).await;
                return Ok(campaign);
            }
            Err(AppendError::Conflict { .. }) => {
                if matches!(if_match, Some(IfMatchVersion::Exact(_))) {
                    return Err(stale());
                }
                if creating {
                    return Err(to_api_error(CampaignError::AlreadyExists));
                }
                metrics::counter!("marketing_write_conflicts_total", "aggregate" => "campaign").increment(1);
            }
            Err(other) => return Err(ApiError::internal(other)),
        }
    }
    Err(ApiError::Conflict(
        "The campaign is being modified concurrently; retry the request".into(),
    ))
}

fn stale() -> ApiError {
    ApiError::PreconditionFailed("The campaign has changed since the version in If-Match".into())
}

fn check_precondition(campaign: &Campaign, if_match: Option<IfMatchVersion>) -> Result<(), ApiError> {
    let Some(live) = campaign.state() else {
        return Err(ApiError::NotFound(NOT_FOUND));
    };
    match if_match {
        None | Some(IfMatchVersion::Any) => Ok(()),
        Some(IfMatchVersion::Exact(v)) if v == live.version => Ok(()),
        Some(_) => Err(stale()),
    }
}

/// Read-after-write: hold the answer until the projections have the events.
/// Bounded: if they are far behind (or down) the write still succeeded, so it is
/// answered anyway, counted and logged.
pub(crate) async fn wait_for_read_models(state: &CommandState, position: event_store::LogPosition) {
    if !state
        .progress
        .wait_for(position, state.read_after_write_timeout)
        .await
    {
        metrics::counter!("marketing_read_after_write_timeouts_total").increment(1);
        tracing::warn!(
            ?position,
            "read models did not catch up before the write answered"
        );
    }
}

fn resource_response(status: StatusCode, campaign: &CampaignState, location: bool) -> Response {
    let body = serde_json::to_vec(campaign).expect("campaign serializes");
    let mut response = (status, [(CONTENT_TYPE, "application/json")], body).into_response();
    let headers = response.headers_mut();
    headers.insert(ETAG, etag(campaign.version).parse().expect("valid etag"));
    if location {
        let url = format!("{BASE_PATH}/campaigns/{}", campaign.id);
        headers.insert(LOCATION, url.parse().expect("valid location"));
    }
    response
}

fn live(campaign: &Campaign) -> Result<&CampaignState, ApiError> {
    campaign.state().ok_or(ApiError::NotFound(NOT_FOUND))
}

/// Create a campaign.
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns", tag = "campaigns",
    request_body = CreateCampaign,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body replay the first response")),
    responses(
        (status = 201, description = "Created", body = domain::campaign::CampaignResource,
         headers(("Location" = String), ("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 409, description = "Initial status not draft/active, or Idempotency-Key reuse", body = web::error::ErrorBody),
        (status = 413, body = web::error::ErrorBody), (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<CommandState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ids: IdSource,
    JsonBody(input): JsonBody<CreateCampaign>,
) -> Result<Response, ApiError> {
    let campaign_id = ids.id("campaign", 0);
    let ctx = WriteContext {
        caller: &caller,
        request_id: &request_id,
        ids: &ids,
    };
    let command = CampaignCommand::Create {
        campaign_id,
        project: caller.project.clone(),
        input: Box::new(input),
    };
    let campaign = execute(&state, &ctx, campaign_id, None, command).await?;
    Ok(resource_response(StatusCode::CREATED, live(&campaign)?, true))
}

/// Update a campaign's core attributes (partial: absent fields stay, `null` clears).
#[utoipa::path(
    put, path = "/v1/dev/marketing/campaigns/{campaign_id}", tag = "campaigns",
    request_body = UpdateCampaign,
    params(("campaign_id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "ETag from a GET; a stale one is 412")),
    responses(
        (status = 200, body = domain::campaign::CampaignResource, headers(("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, body = web::error::ErrorBody), (status = 412, body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<CommandState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ids: IdSource,
    Path(campaign_id): Path<String>,
    IfMatch(if_match): IfMatch,
    JsonBody(input): JsonBody<UpdateCampaign>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, NOT_FOUND)?;
    let ctx = WriteContext {
        caller: &caller,
        request_id: &request_id,
        ids: &ids,
    };
    let campaign = execute(
        &state,
        &ctx,
        campaign_id,
        if_match,
        CampaignCommand::Update(Box::new(input)),
    )
    .await?;
    Ok(resource_response(StatusCode::OK, live(&campaign)?, false))
}

/// Change a campaign's status along the lifecycle.
#[utoipa::path(
    patch, path = "/v1/dev/marketing/campaigns/{campaign_id}/status", tag = "campaigns",
    request_body = StatusChange,
    params(("campaign_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses(
        (status = 200, body = domain::campaign::CampaignResource, headers(("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, body = web::error::ErrorBody),
        (status = 409, description = "Transition not allowed", body = web::error::ErrorBody),
        (status = 412, body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn change_status(
    State(state): State<CommandState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ids: IdSource,
    Path(campaign_id): Path<String>,
    IfMatch(if_match): IfMatch,
    JsonBody(change): JsonBody<StatusChange>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, NOT_FOUND)?;
    let ctx = WriteContext {
        caller: &caller,
        request_id: &request_id,
        ids: &ids,
    };
    let command = CampaignCommand::ChangeStatus(change.status);
    let campaign = execute(&state, &ctx, campaign_id, if_match, command).await?;
    Ok(resource_response(StatusCode::OK, live(&campaign)?, false))
}

/// Delete a campaign. Its history stays in the log.
#[utoipa::path(
    delete, path = "/v1/dev/marketing/campaigns/{campaign_id}", tag = "campaigns",
    params(("campaign_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
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
    Path(campaign_id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> Result<StatusCode, ApiError> {
    let campaign_id = parse_id(&campaign_id, NOT_FOUND)?;
    let ctx = WriteContext {
        caller: &caller,
        request_id: &request_id,
        ids: &ids,
    };
    execute(&state, &ctx, campaign_id, if_match, CampaignCommand::Delete).await?;
    Ok(StatusCode::NO_CONTENT)
}
