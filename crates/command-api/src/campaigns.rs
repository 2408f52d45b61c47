//! Campaign writes: create, update, change status, delete.

use crate::kernel::{respond, Resource, Write, Writer, CAMPAIGN_NOT_FOUND};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use domain::campaign::{
    CampaignCommand, CampaignError, CampaignState, CampaignStatus, CreateCampaign, UpdateCampaign,
};
use domain::ProjectSlug;
use serde::Deserialize;
use std::convert::Infallible;
use uuid::Uuid;
use web::extract::{parse_id, IfMatch, JsonBody};
use web::{ApiError, BASE_PATH};

/// Body of `PATCH /campaigns/{id}/status`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub status: CampaignStatus,
}

impl Resource for CampaignState {
    const NOT_FOUND: &'static str = CAMPAIGN_NOT_FOUND;

    fn to_api_error(error: CampaignError) -> ApiError {
        match error {
            CampaignError::Invalid(errors) => ApiError::Validation(errors),
            CampaignError::NotFound => ApiError::NotFound(CAMPAIGN_NOT_FOUND),
            CampaignError::AlreadyExists => {
                ApiError::Conflict("A campaign with this id already exists".into())
            }
            illegal @ CampaignError::IllegalTransition { .. } => ApiError::Conflict(illegal.to_string()),
        }
    }

    fn fold_error(never: Infallible) -> ApiError {
        match never {}
    }

    fn is_create(command: &CampaignCommand) -> bool {
        matches!(command, CampaignCommand::Create { .. })
    }

    fn campaign_id(&self) -> Uuid {
        self.id
    }

    fn project(&self) -> Option<&ProjectSlug> {
        Some(&self.project)
    }

    fn location(&self) -> String {
        format!("{BASE_PATH}/campaigns/{}", self.id)
    }
}

/// Create a campaign.
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns", tag = "campaigns",
    request_body = CreateCampaign,
    params(crate::IdempotencyKeyHeader),
    responses(
        (status = 201, description = "Created", body = domain::campaign::CampaignResource,
         headers(("Location" = String), ("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 409, description = "Initial status not draft/active, or Idempotency-Key reuse", body = web::error::ErrorBody),
        (status = 413, body = web::error::ErrorBody), (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["campaigns:write"]))
)]
pub async fn create(
    writer: Writer,
    JsonBody(mut input): JsonBody<CreateCampaign>,
) -> Result<Response, ApiError> {
    let campaign_id = writer.ids().id("campaign", 0);
    input.currency.get_or_insert(writer.state().default_currency);
    let command = CampaignCommand::Create {
        campaign_id,
        project: writer.caller().project.clone(),
        input: Box::new(input),
    };
    let campaign = writer
        .execute(Write::<CampaignState>::new(campaign_id, command))
        .await?;
    respond(StatusCode::CREATED, &campaign)
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
    security(("bearer" = ["campaigns:write"]))
)]
pub async fn update(
    writer: Writer,
    Path(campaign_id): Path<String>,
    IfMatch(if_match): IfMatch,
    JsonBody(input): JsonBody<UpdateCampaign>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let command = CampaignCommand::Update(Box::new(input));
    let write = Write::<CampaignState>::new(campaign_id, command).if_match(if_match);
    respond(StatusCode::OK, &writer.execute(write).await?)
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
    security(("bearer" = ["campaigns:write"]))
)]
pub async fn change_status(
    writer: Writer,
    Path(campaign_id): Path<String>,
    IfMatch(if_match): IfMatch,
    JsonBody(change): JsonBody<StatusChange>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let command = CampaignCommand::ChangeStatus(change.status);
    let write = Write::<CampaignState>::new(campaign_id, command).if_match(if_match);
    respond(StatusCode::OK, &writer.execute(write).await?)
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
    security(("bearer" = ["campaigns:write"]))
)]
pub async fn delete(
    writer: Writer,
    Path(campaign_id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> Result<StatusCode, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let write = Write::<CampaignState>::new(campaign_id, CampaignCommand::Delete).if_match(if_match);
    writer.execute(write).await?;
    Ok(StatusCode::NO_CONTENT)
}
