//! Lead writes: create, update, delete (here) and CSV import ([`import`]).
//!
//! Every write runs in one Postgres transaction that holds the event append
//! together with the lead's vault rows (key, email claim), so
//!
//! * two creates (or imports, or an update) racing for one email in one
//!   campaign cannot both succeed: the unique claim index decides, and the
//!   loser's transaction rolls back with its events;
//! * a lead's key exists exactly when its `LeadCreated` does, and disappears in
//!   the very transaction that appends `LeadDeleted` (crypto-shredding);
//! * a deleted lead frees its email in that same transaction.

pub mod import;

use crate::CommandState;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, ETAG, LOCATION};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use domain::lead::{stream_id, Lead, LeadCommand, LeadError, LeadEvent, LeadKey, LeadState};
use domain::lead::{CreateLead, UpdateLead};
use domain::DomainEvent;
use event_store::{AppendError, ExpectedVersion, LogPosition, NewEvent, StreamAppend};
use lead_vault::{email_digest, generate_key, generate_nonce, NewLeadEntry};
use serde_json::{json, Value};
use uuid::Uuid;
use web::extract::{etag, parse_id, IfMatch, IfMatchVersion, JsonBody, RequestId};
use web::idempotency::{IdSource, IdempotencyKey};
use web::{ApiError, Caller, BASE_PATH};

pub(crate) const CAMPAIGN_NOT_FOUND: &str = "Campaign not found";
const NOT_FOUND: &str = "Lead not found";
/// Never names the address: responses may be stored for idempotent replay.
pub(crate) const DUPLICATE_EMAIL: &str = "A lead with this email already exists in this campaign";
/// Attempts at a write that keeps losing races before it answers 409.
const MAX_ATTEMPTS: usize = 5;

fn to_api_error(error: LeadError) -> ApiError {
    match error {
        LeadError::Invalid(errors) => ApiError::Validation(errors),
        LeadError::NotFound => ApiError::NotFound(NOT_FOUND),
        LeadError::AlreadyExists => ApiError::Conflict("A lead with this id already exists".into()),
        crypto @ LeadError::Crypto(_) => ApiError::internal(crypto),
    }
}

fn vault_error(error: lead_vault::VaultError) -> ApiError {
    ApiError::internal(error)
}

/// Who wrote an event, as recorded in its metadata.
pub(crate) fn metadata(caller: &Caller, request_id: &str) -> Value {
    json!({
        "project": caller.project,
        "api_key_id": caller.key_id,
        "api_key_name": caller.key_name,
        "request_id": request_id,
        "correlation_id": request_id,
    })
}

/// A lead request's campaign must exist, be live and belong to the caller's
/// project; checked at command time from the campaign's own stream.
pub(crate) async fn check_campaign(
    state: &CommandState,
    caller: &Caller,
    campaign_id: Uuid,
) -> Result<(), ApiError> {
    let campaign = crate::campaigns::load(state, campaign_id).await?;
    match campaign.state() {
        Some(live) if live.project == caller.project => Ok(()),
        _ => Err(ApiError::NotFound(CAMPAIGN_NOT_FOUND)),
    }
}

/// A lead folded from its stream, with the key that opened it. `None` when the
/// stream does not exist or its key is gone (the lead was erased).
async fn load(state: &CommandState, lead_id: Uuid) -> Result<Option<(Lead, LeadKey)>, ApiError> {
    let recorded = state.store.read_stream(&stream_id(lead_id)).await?;
    if recorded.is_empty() {
        return Ok(None);
    }
    let client = state.pool.get().await?;
    let Some(key) = state.vault.key(&**client, lead_id).await.map_err(vault_error)? else {
        return Ok(None);
    };
    let mut lead = Lead::default();
    for event in recorded {
        let decoded = LeadEvent::from_data(&event.event_type, event.data).map_err(ApiError::internal)?;
        lead.apply(&decoded, &key, event.recorded_at, event.version)
            .map_err(to_api_error)?;
    }
    Ok(Some((lead, key)))
}

fn new_events(
    events: &[LeadEvent],
    ids: &IdSource,
    metadata: &Value,
    recorded_at: chrono::DateTime<chrono::Utc>,
) -> Vec<NewEvent> {
    events
        .iter()
        .enumerate()
        .map(|(n, event)| NewEvent {
            event_id: ids.id("event", n),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            data: event.to_data(),
            metadata: metadata.clone(),
            recorded_at,
        })
        .collect()
}

/// Read-after-write: hold the answer until the projections have the events,
/// within `timeout`. If they are far behind, the write still succeeded, so it
/// is answered anyway, counted and logged.
pub(crate) async fn wait_for_read_models(
    state: &CommandState,
    position: LogPosition,
    timeout: std::time::Duration,
) {
    if !state.progress.wait_for(position, timeout).await {
        metrics::counter!("marketing_read_after_write_timeouts_total").increment(1);
        tracing::warn!(
            ?position,
            "read models did not catch up before the write answered"
        );
    }
}

fn resource_response(status: StatusCode, lead: &LeadState, location: bool) -> Response {
    let body = serde_json::to_vec(lead).expect("lead serializes");
    let mut response = (status, [(CONTENT_TYPE, "application/json")], body).into_response();
    let headers = response.headers_mut();
    headers.insert(ETAG, etag(lead.version).parse().expect("valid etag"));
    if location {
        let url = format!("{BASE_PATH}/campaigns/{}/leads/{}", lead.campaign_id, lead.id);
        headers.insert(LOCATION, url.parse().expect("valid location"));
    }
    response
}

/// Create a lead. The email must be unique in the campaign (case-insensitively).
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns/{campaign_id}/leads", tag = "leads",
    request_body = CreateLead,
    params(("campaign_id" = Uuid, Path),
           ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body replay the first response")),
    responses(
        (status = 201, description = "Created", body = domain::lead::LeadResource,
         headers(("Location" = String), ("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
        (status = 409, description = "A lead with this email already exists in this campaign", body = web::error::ErrorBody),
        (status = 413, body = web::error::ErrorBody), (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<CommandState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ids: IdSource,
    idempotency: Option<Extension<IdempotencyKey>>,
    Path(campaign_id): Path<String>,
    JsonBody(input): JsonBody<CreateLead>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    check_campaign(&state, &caller, campaign_id).await?;
    let lead_id = ids.id("lead", 0);
    let key = generate_key();
    let command = LeadCommand::Create {
        lead_id,
        campaign_id,
        project: caller.project.clone(),
        input: Box::new(input),
    };
    let events = Lead::default()
        .handle(command, &key, generate_nonce())
        .map_err(to_api_error)?;
    let recorded_at = event_store::now();
    let mut lead = Lead::default();
    for (version, event) in events.iter().enumerate() {
        lead.apply(event, &key, recorded_at, version as i64)
            .map_err(to_api_error)?;
    }
    let state_now = lead.state().ok_or(ApiError::NotFound(NOT_FOUND))?.clone();
    let new_events = new_events(&events, &ids, &metadata(&caller, &request_id), recorded_at);
    let first_event_id = new_events[0].event_id;
    let entry = NewLeadEntry {
        lead_id,
        campaign_id,
        email_digest: email_digest(campaign_id, &state_now.email),
        key: &key,
        idempotency: idempotency.map(|Extension(k)| (k.project, k.key)),
    };
    let appends = [StreamAppend {
        stream_id: stream_id(lead_id),
        expected: ExpectedVersion::NoStream,
        events: new_events,
    }];

    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let claimed = state
        .vault
        .register(&*tx, std::slice::from_ref(&entry))
        .await
        .map_err(vault_error)?;
    if claimed.is_empty() {
        // Release the connection first: the check takes another one, and a
        // request holding one while waiting for a second can starve the pool.
        drop(tx);
        drop(client);
        return replayed_create(&state, lead_id, first_event_id, || {
            ApiError::Conflict(DUPLICATE_EMAIL.into())
        })
        .await;
    }
    let outcome = match event_store::append_in_transaction(&tx, &appends).await {
        Ok(outcomes) => outcomes[0].clone(),
        Err(AppendError::Conflict { .. }) => {
            drop(tx);
            drop(client);
            return replayed_create(&state, lead_id, first_event_id, || {
                ApiError::Conflict("A lead with this id already exists".into())
            })
            .await;
        }
        Err(other) => return Err(ApiError::internal(other)),
    };
    tx.commit().await?;
    drop(client);
    state.store.notify_committed();
    wait_for_read_models(&state, outcome.last_position, state.read_after_write_timeout).await;
    Ok(resource_response(StatusCode::CREATED, &state_now, true))
}

/// A create whose claim or append failed may be the retry of one that already
/// went through (the same Idempotency-Key derives the same ids): then answer
/// with what is stored. Otherwise it is the conflict `otherwise` describes.
async fn replayed_create(
    state: &CommandState,
    lead_id: Uuid,
    first_event_id: Uuid,
    otherwise: impl FnOnce() -> ApiError,
) -> Result<Response, ApiError> {
    let stored = state.store.read_stream(&stream_id(lead_id)).await?;
    if stored.first().map(|e| e.event_id) != Some(first_event_id) {
        return Err(otherwise());
    }
    let (lead, _) = load(state, lead_id).await?.ok_or(ApiError::NotFound(NOT_FOUND))?;
    let live = lead.state().ok_or(ApiError::NotFound(NOT_FOUND))?;
    Ok(resource_response(StatusCode::CREATED, live, true))
}

/// Who is writing, for the event metadata and for deriving ids.
struct WriteContext<'a> {
    caller: &'a Caller,
    request_id: &'a str,
    ids: &'a IdSource,
}

/// Runs an update or a delete against one lead of one campaign: load, check
/// tenancy and If-Match, decide, then append together with the vault change
/// (email claim moved, or everything erased) in one transaction; retry on a
/// concurrent write unless the client pinned a version.
async fn execute(
    state: &CommandState,
    ctx: &WriteContext<'_>,
    campaign_id: Uuid,
    lead_id: Uuid,
    if_match: Option<IfMatchVersion>,
    command: LeadCommand,
) -> Result<Lead, ApiError> {
    check_campaign(state, ctx.caller, campaign_id).await?;
    for _ in 0..MAX_ATTEMPTS {
        let Some((lead, key)) = load(state, lead_id).await? else {
            return Err(ApiError::NotFound(NOT_FOUND));
        };
        let current = match lead.state() {
            Some(live) if live.campaign_id == campaign_id => live.clone(),
            _ => return Err(ApiError::NotFound(NOT_FOUND)),
        };
        match if_match {
            None | Some(IfMatchVersion::Any) => {}
            Some(IfMatchVersion::Exact(v)) if v == current.version => {}
            Some(_) => return Err(stale()),
        }
        let events = lead
            .handle(command.clone(), &key, generate_nonce())
            .map_err(to_api_error)?;
        if events.is_empty() {
            return Ok(lead);
        }
        let recorded_at = event_store::now();
        let mut after = lead.clone();
        for (n, event) in events.iter().enumerate() {
            after
                .apply(event, &key, recorded_at, current.version + 1 + n as i64)
                .map_err(to_api_error)?;
        }
        let appends = [StreamAppend {
            stream_id: stream_id(lead_id),
            expected: ExpectedVersion::Exact(current.version),
            events: new_events(
                &events,
                ctx.ids,
                &metadata(ctx.caller, ctx.request_id),
                recorded_at,
            ),
        }];

        let mut client = state.pool.get().await?;
        let tx = client.transaction().await?;
        match after.state() {
            Some(next) => {
                let (old, new) = (
                    email_digest(campaign_id, &current.email),
                    email_digest(campaign_id, &next.email),
                );
                if old != new
                    && !state
                        .vault
                        .move_email(&*tx, lead_id, campaign_id, &old, &new)
                        .await
                        .map_err(vault_error)?
                {
                    return Err(ApiError::Conflict(DUPLICATE_EMAIL.into()));
                }
            }
            None => state.vault.erase_lead(&*tx, lead_id).await.map_err(vault_error)?,
        }
        match event_store::append_in_transaction(&tx, &appends).await {
            Ok(outcomes) => {
                tx.commit().await?;
                drop(client);
                state.store.notify_committed();
                wait_for_read_models(state, outcomes[0].last_position, state.read_after_write_timeout).await;
                return Ok(after);
            }
            Err(AppendError::Conflict { .. }) => {
                drop(tx);
                drop(client);
                if matches!(if_match, Some(IfMatchVersion::Exact(_))) {
                    return Err(stale());
                }
                metrics::counter!("marketing_write_conflicts_total", "aggregate" => "lead").increment(1);
            }
            Err(other) => return Err(ApiError::internal(other)),
        }
    }
    Err(ApiError::Conflict(
        "The lead is being modified concurrently; retry the request".into(),
    ))
}

fn stale() -> ApiError {
    ApiError::PreconditionFailed("The lead has changed since the version in If-Match".into())
}

/// Update a lead (partial: absent fields stay, `null` clears; `custom_fields`
/// replaces the whole map).
#[utoipa::path(
    put, path = "/v1/dev/marketing/campaigns/{campaign_id}/leads/{lead_id}", tag = "leads",
    request_body = UpdateLead,
    params(("campaign_id" = Uuid, Path), ("lead_id" = Uuid, Path),
           ("If-Match" = Option<String>, Header, description = "ETag from a GET; a stale one is 412")),
    responses(
        (status = 200, body = domain::lead::LeadResource, headers(("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found / Lead not found", body = web::error::ErrorBody),
        (status = 409, description = "The new email belongs to another lead of the campaign", body = web::error::ErrorBody),
        (status = 412, body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<CommandState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ids: IdSource,
    Path((campaign_id, lead_id)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
    JsonBody(input): JsonBody<UpdateLead>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let lead_id = parse_id(&lead_id, NOT_FOUND)?;
    let lead = execute(
        &state,
        &WriteContext {
            caller: &caller,
            request_id: &request_id,
            ids: &ids,
        },
        campaign_id,
        lead_id,
        if_match,
        LeadCommand::Update(Box::new(input)),
    )
    .await?;
    let live = lead.state().ok_or(ApiError::NotFound(NOT_FOUND))?;
    Ok(resource_response(StatusCode::OK, live, false))
}

/// Delete a lead: its personal data is crypto-shredded (its key destroyed), its
/// email freed; the log keeps that it existed and was deleted.
#[utoipa::path(
    delete, path = "/v1/dev/marketing/campaigns/{campaign_id}/leads/{lead_id}", tag = "leads",
    params(("campaign_id" = Uuid, Path), ("lead_id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found / Lead not found", body = web::error::ErrorBody),
        (status = 412, body = web::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<CommandState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ids: IdSource,
    Path((campaign_id, lead_id)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
) -> Result<StatusCode, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let lead_id = parse_id(&lead_id, NOT_FOUND)?;
    execute(
        &state,
        &WriteContext {
            caller: &caller,
            request_id: &request_id,
            ids: &ids,
        },
        campaign_id,
        lead_id,
        if_match,
        LeadCommand::Delete,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
