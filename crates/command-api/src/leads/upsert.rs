//! `PUT /campaigns/{id}/leads/by-email/{email}`: create the lead with that
//! address, or update the one that has it.
//!
//! There is no check-then-create window: the email claim (the unique index of
//! `lead_email_claims`) decides. An upsert looks up the claim's holder; with
//! none it creates, and a create that loses the claim to a concurrent one gets
//! the winner's id back (the `409`'s `existing_id`) and updates that lead
//! instead. The update commits only while its lead still holds the claim
//! (`VaultHooks::keyed_by`). So under any number of concurrent upserts of one
//! address exactly one lead exists, one of them answers `201` and every other
//! `200`.

use super::{execute, execute_keyed, vault_error};
use crate::kernel::{respond, CheckedCampaign, Write, Writer, CAMPAIGN_NOT_FOUND};
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use domain::aggregate::{Placement, Root};
use domain::lead::{normalized_email, LeadCommand, LeadState, UpdateLead};
use lead_vault::email_digest;
use uuid::Uuid;
use web::extract::{parse_id, JsonBody};
use web::ApiError;

/// Rounds of look-up, create or update before an upsert gives up with a
/// `409`. Each round is one kernel write, which itself retries a lost race
/// five times; a round is lost only when another writer won, so this bounds
/// an upsert among about fifty writers of one lead at once.
const ROUNDS: usize = 10;

/// What an upsert did.
pub(crate) enum Upserted {
    Created(Root<LeadState>),
    Updated(Root<LeadState>),
}

impl Upserted {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Created(_) => StatusCode::CREATED,
            Self::Updated(_) => StatusCode::OK,
        }
    }

    pub(crate) fn lead(&self) -> &Root<LeadState> {
        match self {
            Self::Created(lead) | Self::Updated(lead) => lead,
        }
    }
}

/// The lead of `campaign` that holds `email` now, if any.
async fn holder(writer: &Writer, campaign_id: Uuid, digest: &[u8]) -> Result<Option<Uuid>, ApiError> {
    let state = writer.state();
    let client = state.pool.get().await?;
    state
        .vault
        .holder(&**client, campaign_id, digest)
        .await
        .map_err(vault_error)
}

/// Creates the lead with `email` in `campaign` from `body`, or applies `body`
/// to the lead that has it (see the module docs).
pub(crate) async fn upsert(
    writer: &Writer,
    campaign: &CheckedCampaign,
    email: &str,
    body: UpdateLead,
) -> Result<Upserted, ApiError> {
    let body = body.for_upsert(email)?;
    let campaign_id = campaign.id();
    let digest = email_digest(campaign_id, email);
    let mut found = holder(writer, campaign_id, &digest).await?;
    for _ in 0..ROUNDS {
        match found {
            Some(lead_id) => {
                let command = LeadCommand::Update(Box::new(body.clone()));
                let write = Write::new(lead_id, command).under(campaign);
                match execute_keyed(writer, write, Some(digest.clone())).await {
                    // An update that changed nothing ran no transaction:
                    // make sure the lead still has the address.
                    Ok(lead)
                        if lead
                            .state()
                            .is_some_and(|l| normalized_email(&l.email) == normalized_email(email)) =>
                    {
                        return Ok(Upserted::Updated(lead))
                    }
                    // Deleted, or moved to another address, since the look-up.
                    Ok(_) | Err(ApiError::NotFound(_)) => {
                        found = holder(writer, campaign_id, &digest).await?;
                    }
                    // Lost every race of one round to concurrent updates.
                    Err(ApiError::Conflict(_)) => {}
                    Err(other) => return Err(other),
                }
            }
            None => {
                let place = Placement {
                    id: writer.ids().id("lead", 0),
                    campaign_id,
                    project: writer.caller().project.clone(),
                };
                let create = Box::new(body.clone().into_create(email));
                let write = Write::new(place.id, LeadCommand::Create(place, create)).under(campaign);
                match execute(writer, write).await {
                    Ok(lead) => return Ok(Upserted::Created(lead)),
                    Err(ApiError::Duplicate { existing_id, .. }) => found = Some(existing_id),
                    Err(other) => return Err(other),
                }
            }
        }
    }
    Err(ApiError::Conflict(
        "The lead is being modified concurrently; retry the request".into(),
    ))
}

/// Create or update the lead with this email (an upsert, keyed by the
/// address, case-insensitively).
///
/// The body is a lead update (partial: absent fields stay, `null` clears);
/// when no lead of the campaign has the address, the lead is created from the
/// fields given. The body's `email`, if present, must be the path's address
/// (an upsert never changes an address). Concurrent upserts of one address
/// make exactly one lead.
#[utoipa::path(
    put, path = "/v1/dev/marketing/campaigns/{campaign_id}/leads/by-email/{email}", tag = "leads",
    request_body = UpdateLead,
    params(("campaign_id" = Uuid, Path), ("email" = String, Path, description = "The lead's email address (percent-encoded)")),
    responses(
        (status = 200, description = "Updated the lead that has this email", body = domain::lead::LeadResource,
         headers(("ETag" = String))),
        (status = 201, description = "Created a lead with this email", body = domain::lead::LeadResource,
         headers(("Location" = String), ("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
        (status = 409, description = "The lead kept being modified concurrently; retry", body = web::error::ErrorBody),
        (status = 413, body = web::error::ErrorBody), (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["leads:write"]))
)]
pub async fn upsert_by_email(
    writer: Writer,
    path: Result<Path<(String, String)>, PathRejection>,
    body: JsonBody<UpdateLead>,
) -> Result<Response, ApiError> {
    // A path that does not decode to text (`%FF`) names no address.
    let Path((campaign_id, email)) =
        path.map_err(|_| ApiError::bad_request("email", "email must be percent-encoded UTF-8 text"))?;
    let campaign = writer
        .campaign(parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?)
        .await?;
    let upserted = upsert(&writer, &campaign, &email, body.0).await?;
    respond(upserted.status(), upserted.lead())
}
