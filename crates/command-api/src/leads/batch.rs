//! `POST /campaigns/{id}/leads/batch`: up to [`MAX_ITEMS`] creates or upserts
//! in one request, answered `207` with one result per item, in order.
//!
//! A batch is not atomic; each item is. Items run one after the other, in
//! order, each as the single write it stands for (`POST .../leads` or
//! `PUT .../leads/by-email/{email}`: its own transaction, its own email claim),
//! so an item succeeds or fails whole and a later item sees an earlier one
//! (two items with one address: in `create` mode the second is a `409` naming
//! the first, in `upsert` mode it updates it). Only the read-after-write wait
//! is shared: the batch answers once the read models hold its last write.
//!
//! A client error of an item (400, 409) is that item's result; a server
//! failure (500, 503) ends the batch with that status, the items before it
//! kept. Retrying it is safe: with the same `Idempotency-Key` every item
//! derives the same ids as the first time (`Writer::batch_item`), so the
//! items that got in are recognized rather than created twice; without one,
//! an upsert batch is idempotent anyway.

use super::execute;
use super::upsert::upsert;
use crate::kernel::{CheckedCampaign, Deferred, Write, Writer, CAMPAIGN_NOT_FOUND};
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::aggregate::Placement;
use domain::input::from_json_value;
use domain::lead::{CreateLead, LeadCommand, UpdateLead};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use web::extract::{parse_id, JsonBody};
use web::ApiError;

/// Most items in one batch. The body is also bounded by the JSON body limit
/// (1 MiB), which 500 leads of ordinary size stay well inside.
pub const MAX_ITEMS: usize = 500;

/// What each item of a batch is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchMode {
    /// Each item is a `POST .../leads` body: a new lead, or a `409` naming the
    /// lead that has its email.
    #[default]
    Create,
    /// Each item is a `PUT .../leads/by-email/{email}` body with its `email`:
    /// the lead with that address is updated, or created.
    Upsert,
}

/// Body of `POST .../leads/batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 500 leads: in `create` mode each the body of a lead's create
    /// (`CreateLead`), in `upsert` mode the body of an upsert with its `email`
    /// (`UpdateLead`). Items may be anything here: each is checked on its own,
    /// and one that is not a valid lead is a `400` in its result, not a
    /// refusal of the batch.
    #[schema(value_type = Vec<serde_json::Value>, min_items = 1, max_items = 500)]
    pub leads: Vec<Value>,
    /// `create` (the default) or `upsert`.
    #[serde(default)]
    pub mode: BatchMode,
}

/// One item's outcome, at the item's index.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    /// The status the item alone would have answered: `201` created, `200`
    /// updated (upsert), `400` invalid, `409` duplicate email.
    pub status: u16,
    /// The lead written (`201`, `200`); `null` otherwise.
    pub id: Option<Uuid>,
    /// The error envelope (`message`, `code`, `field`, `existing_id`) for a
    /// failed item; `null` otherwise.
    #[schema(value_type = Option<web::error::ErrorBody>)]
    pub error: Option<Value>,
}

/// The `207` answer: `results[i]` is the outcome of `leads[i]`. It names
/// leads by id only: no personal data, so a stored idempotent replay of it
/// holds none either.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchResult>,
    /// Items that created a lead.
    pub created: u64,
    /// Items that updated one (upsert mode).
    pub updated: u64,
    /// Items that failed (their result has the error).
    pub failed: u64,
}

/// Create or upsert up to 500 leads; one result per item, in order.
///
/// Not atomic: each item is written (or refused) whole and on its own, in
/// order; see `docs/leads.md`, "Batch".
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns/{campaign_id}/leads/batch", tag = "leads",
    request_body = BatchRequest,
    params(("campaign_id" = Uuid, Path), crate::IdempotencyKeyHeader),
    responses(
        (status = 207, description = "One result per item, in order", body = BatchResponse),
        (status = 400, description = "Not a batch: no `leads`, more than 500 or none, an unknown `mode`", body = web::error::ErrorBody),
        (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body, or still running", body = web::error::ErrorBody),
        (status = 413, body = web::error::ErrorBody), (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["leads:write"]))
)]
pub async fn batch(
    writer: Writer,
    path: Result<Path<String>, PathRejection>,
    body: JsonBody<BatchRequest>,
) -> Result<Response, ApiError> {
    let Ok(Path(campaign_id)) = path else {
        return Err(ApiError::NotFound(CAMPAIGN_NOT_FOUND));
    };
    let BatchRequest { leads, mode } = body.0;
    if leads.is_empty() || leads.len() > MAX_ITEMS {
        return Err(ApiError::bad_request(
            "leads",
            format!(
                "leads must hold 1 to {MAX_ITEMS} leads (this batch has {})",
                leads.len()
            ),
        ));
    }
    let campaign = writer
        .campaign(parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?)
        .await?;
    let deferred = Deferred::default();
    let mut answer = BatchResponse {
        results: Vec::with_capacity(leads.len()),
        created: 0,
        updated: 0,
        failed: 0,
    };
    for (n, item) in leads.into_iter().enumerate() {
        let item_writer = writer.batch_item(n, &deferred);
        let outcome = run_item(&item_writer, &campaign, mode, item).await;
        answer.results.push(match outcome {
            Ok((status, id)) => {
                if status == StatusCode::CREATED {
                    answer.created += 1;
                } else {
                    answer.updated += 1;
                }
                BatchResult {
                    status: status.as_u16(),
                    id: Some(id),
                    error: None,
                }
            }
            Err(error) if error.status().is_server_error() => return Err(error),
            Err(error) => {
                answer.failed += 1;
                BatchResult {
                    status: error.status().as_u16(),
                    id: None,
                    error: Some(error.body()),
                }
            }
        });
    }
    if let Some(position) = deferred.last() {
        writer
            .wait_for_read_models(position, &written(campaign.id()))
            .await;
    }
    Ok((StatusCode::MULTI_STATUS, Json(answer)).into_response())
}

/// What a batch writes: lead creations and updates in one campaign.
fn written(campaign_id: Uuid) -> [projector::Written<'static>; 2] {
    ["LeadCreated", "LeadUpdated"].map(|event_type| projector::Written {
        stream_id: domain::lead::STREAM_PREFIX,
        event_type,
        campaign_id: Some(campaign_id),
    })
}

/// One item: parsed on its own (its errors name fields of the item), then
/// written as the single request it stands for.
async fn run_item(
    writer: &Writer,
    campaign: &CheckedCampaign,
    mode: BatchMode,
    item: Value,
) -> Result<(StatusCode, Uuid), ApiError> {
    if !item.is_object() {
        return Err(ApiError::bad_request("body", "each lead must be a JSON object"));
    }
    match mode {
        BatchMode::Create => {
            let input: CreateLead = from_json_value(item)?;
            let place = Placement {
                id: writer.ids().id("lead", 0),
                campaign_id: campaign.id(),
                project: writer.caller().project.clone(),
            };
            let write = Write::new(place.id, LeadCommand::Create(place, Box::new(input))).under(campaign);
            let lead = execute(writer, write).await?;
            Ok((StatusCode::CREATED, lead_id(&lead)?))
        }
        BatchMode::Upsert => {
            let input: UpdateLead = from_json_value(item)?;
            let Some(Some(email)) = input.email.clone() else {
                return Err(ApiError::bad_request(
                    "email",
                    "email is required: an upsert is keyed by it",
                ));
            };
            let upserted = upsert(writer, campaign, &email, input).await?;
            Ok((upserted.status(), lead_id(upserted.lead())?))
        }
    }
}

fn lead_id(lead: &domain::lead::Lead) -> Result<Uuid, ApiError> {
    lead.state()
        .map(|l| l.id)
        .ok_or(ApiError::NotFound("Lead not found"))
}
