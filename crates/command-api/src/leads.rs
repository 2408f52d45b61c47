//! Lead writes: create, update, delete (here) and CSV import ([`import`]).
//!
//! Every write runs in one Postgres transaction that holds the event append
//! together with the lead's vault rows (key, email claim): see [`VaultHooks`].

pub mod batch;
pub mod import;
pub mod import_async;
pub mod import_worker;
pub mod upsert;

use crate::kernel::{respond, Hooks, Resource, Write, Writer};
use crate::under_campaign::{delete_item, ItemChange, NewItem};
use crate::CommandState;
use async_trait::async_trait;
use axum::http::StatusCode;
use axum::response::Response;
use domain::aggregate::Root;
use domain::lead::{CreateLead, LeadCommand, LeadError, LeadKey, LeadKeys, LeadState, UpdateLead};
use domain::DomainEvent as _;
use lead_vault::{email_digest, generate_key, generate_nonce, NewLeadEntry};
use uuid::Uuid;
use web::extract::JsonBody;
use web::{ApiError, BASE_PATH};

const NOT_FOUND: &str = "Lead not found";
/// Never names the address: responses may be stored for idempotent replay.
pub(crate) const DUPLICATE_EMAIL: &str = "A lead with this email already exists in this campaign";

impl Resource for LeadState {
    const NOT_FOUND: &'static str = NOT_FOUND;

    fn to_api_error(error: LeadError) -> ApiError {
        match error {
            LeadError::Invalid(errors) => ApiError::Validation(errors),
            LeadError::NotFound => ApiError::NotFound(NOT_FOUND),
            LeadError::AlreadyExists => ApiError::Conflict("A lead with this id already exists".into()),
            crypto @ LeadError::Crypto(_) => ApiError::internal(crypto),
        }
    }

    /// A key that does not open the lead's events: never the client's fault.
    fn fold_error(error: LeadError) -> ApiError {
        ApiError::internal(error)
    }

    fn is_create(command: &LeadCommand) -> bool {
        matches!(command, LeadCommand::Create { .. })
    }

    fn campaign_id(&self) -> Uuid {
        self.campaign_id
    }

    fn location(&self) -> String {
        format!("{BASE_PATH}/campaigns/{}/leads/{}", self.campaign_id, self.id)
    }
}

fn vault_error(error: lead_vault::VaultError) -> ApiError {
    ApiError::internal(error)
}

/// The vault's side of a lead write, in the append's transaction:
///
/// * two creates (or imports, or an update) racing for one email in one
///   campaign cannot both succeed: the unique claim index decides, and the
///   loser's transaction rolls back with its events;
/// * a lead's key exists exactly when its `LeadCreated` does, and disappears in
///   the very transaction that appends `LeadDeleted` (crypto-shredding);
/// * a deleted lead frees its email in that same transaction.
///
/// With the log in KurrentDB there is no such transaction: the claim commits
/// first, then the events are appended, and a refused append releases it
/// again; an address change claims the new address before its event and
/// releases the old one after; a delete erases after `LeadDeleted`. A claim
/// left by a crash in between is released by the next claimant of the
/// address ([`release_if_stale`]); docs/kurrentdb.md says what differs.
struct VaultHooks<'a> {
    writer: &'a Writer,
    /// The key made for a lead being created.
    new_key: Option<LeadKey>,
    /// For an upsert's update: the email digest the lead was found by. The
    /// update commits only while the lead still holds that claim (its row is
    /// locked until the commit), so a concurrent change of address cannot
    /// make the upsert change a lead that no longer has the email.
    keyed_by: Option<Vec<u8>>,
}

/// A lead write's change of email claims: `(campaign, released, claimed)`.
fn email_change(before: &Root<LeadState>, after: &Root<LeadState>) -> Option<(Uuid, Vec<u8>, Vec<u8>)> {
    let (old, new) = (before.state()?, after.state()?);
    let from = email_digest(old.campaign_id, &old.email);
    let to = email_digest(new.campaign_id, &new.email);
    (from != to).then_some((new.campaign_id, from, to))
}

#[async_trait]
impl Hooks<LeadState> for VaultHooks<'_> {
    /// A new lead gets a new key; an existing one is opened with its stored
    /// key, and is "not found" once that key is gone (the lead was erased).
    /// The nonce is fresh for every decision.
    async fn context(
        &mut self,
        state: &CommandState,
        lead_id: Uuid,
        new: bool,
    ) -> Result<Option<LeadKeys>, ApiError> {
        let key = if new {
            let key = generate_key();
            self.new_key = Some(key.clone());
            key
        } else {
            let client = state.pool.get().await?;
            match state.vault.key(&**client, lead_id).await.map_err(vault_error)? {
                Some(key) => key,
                None => return Ok(None),
            }
        };
        Ok(Some(LeadKeys {
            key,
            nonce: generate_nonce(),
        }))
    }

    fn transactional(&self) -> bool {
        true
    }

    async fn in_transaction(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
        before: &Root<LeadState>,
        after: &Root<LeadState>,
    ) -> Result<(), ApiError> {
        let state = self.writer.state();
        let vault = &state.vault;
        match (before.state(), after.state()) {
            (None, Some(new)) => {
                let key = self.new_key.as_ref().ok_or(ApiError::NotFound(NOT_FOUND))?;
                let entry = NewLeadEntry {
                    lead_id: new.id,
                    campaign_id: new.campaign_id,
                    email_digest: email_digest(new.campaign_id, &new.email),
                    key,
                    idempotency: self
                        .writer
                        .idempotency()
                        .map(|k| (k.project.clone(), k.key.clone())),
                };
                for _ in 0..CLAIM_ATTEMPTS {
                    let claimed = vault
                        .register(&**tx, std::slice::from_ref(&entry))
                        .await
                        .map_err(vault_error)?;
                    if !claimed.is_empty() {
                        return Ok(());
                    }
                    duplicate_of(tx, state, new.campaign_id, &entry.email_digest).await?;
                }
                return Err(email_contended());
            }
            (Some(_), Some(new)) if self.keyed_by.is_some() => {
                let digest = self.keyed_by.as_deref().unwrap_or_default();
                if !vault
                    .lock_claim(&**tx, new.campaign_id, digest, new.id)
                    .await
                    .map_err(vault_error)?
                {
                    return Err(ApiError::NotFound(NOT_FOUND));
                }
            }
            (Some(_), Some(new)) => {
                let Some((campaign_id, from, to)) = email_change(before, after) else {
                    return Ok(());
                };
                let in_postgres = state.store.in_postgres();
                for _ in 0..CLAIM_ATTEMPTS {
                    let claimed = if in_postgres {
                        vault.move_email(&**tx, new.id, campaign_id, &from, &to).await
                    } else {
                        vault.claim_email(&**tx, new.id, campaign_id, &to).await
                    };
                    if claimed.map_err(vault_error)? {
                        return Ok(());
                    }
                    duplicate_of(tx, state, campaign_id, &to).await?;
                }
                return Err(email_contended());
            }
            // Outside Postgres the erasure follows `LeadDeleted` (`after_append`).
            (Some(old), None) if state.store.in_postgres() => {
                vault.erase_lead(&**tx, old.id).await.map_err(vault_error)?
            }
            (Some(_), None) | (None, None) => {}
        }
        Ok(())
    }

    /// Releases what `in_transaction` claimed: a new lead's entry (only if it
    /// still has the key made here), or an address change's new claim.
    async fn refused(&mut self, state: &CommandState, before: &Root<LeadState>, after: &Root<LeadState>) {
        if let Err(error) = self.release_claimed(state, before, after).await {
            // The claim stays until the next claimant finds it stale.
            tracing::warn!(%error, "cannot release the email claim of a refused lead write");
        }
    }

    async fn after_append(
        &mut self,
        state: &CommandState,
        before: &Root<LeadState>,
        after: &Root<LeadState>,
    ) -> Result<(), ApiError> {
        let client = state.pool.get().await?;
        match (before.state(), after.state()) {
            (Some(old), None) => state.vault.erase_lead(&**client, old.id).await,
            _ => match email_change(before, after) {
                Some((campaign_id, from, _)) => {
                    let lead_id = after.state().map(|l| l.id).unwrap_or_default();
                    state
                        .vault
                        .release_email(&**client, lead_id, campaign_id, &from)
                        .await
                }
                None => Ok(()),
            },
        }
        .map_err(vault_error)
    }
}

impl VaultHooks<'_> {
    async fn release_claimed(
        &self,
        state: &CommandState,
        before: &Root<LeadState>,
        after: &Root<LeadState>,
    ) -> Result<(), ApiError> {
        let client = state.pool.get().await?;
        match (before.state(), after.state()) {
            (None, Some(new)) => {
                let ours = state.vault.key(&**client, new.id).await.map_err(vault_error)?;
                if ours.is_some() && ours == self.new_key {
                    state
                        .vault
                        .erase_lead(&**client, new.id)
                        .await
                        .map_err(vault_error)?;
                }
            }
            (Some(_), Some(new)) if self.keyed_by.is_none() => {
                if let Some((campaign_id, _, to)) = email_change(before, after) {
                    state
                        .vault
                        .release_email(&**client, new.id, campaign_id, &to)
                        .await
                        .map_err(vault_error)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Claims tried in one transaction when the holder of an email keeps
/// vanishing between a failed claim and its lookup (deleted at that moment).
const CLAIM_ATTEMPTS: usize = 3;

/// How long a claim whose lead has no event yet counts as a creation still in
/// flight (log outside Postgres): after it, the claim is a crash's leftover.
pub(crate) const CLAIM_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// After a failed claim: the `409` naming the lead that holds the email, or
/// `Ok` if that lead released it in the meantime (the claim is then retried).
async fn duplicate_of(
    tx: &deadpool_postgres::Transaction<'_>,
    state: &CommandState,
    campaign_id: Uuid,
    digest: &[u8],
) -> Result<(), ApiError> {
    let holder = state
        .vault
        .holder(&**tx, campaign_id, digest)
        .await
        .map_err(vault_error)?;
    match holder {
        Some(existing_id) if !release_if_stale(tx, state, existing_id).await? => Err(ApiError::Duplicate {
            message: DUPLICATE_EMAIL.into(),
            existing_id,
        }),
        _ => Ok(()),
    }
}

/// Log outside Postgres only: releases (erases) the vault entry of a claim's
/// holder that a crash left behind, and says so: a lead whose stream ends
/// with `LeadDeleted` (the crash came between it and the erasure), or one
/// whose stream never appeared within [`CLAIM_GRACE`] of its claim (the crash
/// came between the claim and `LeadCreated`).
pub(crate) async fn release_if_stale(
    tx: &deadpool_postgres::Transaction<'_>,
    state: &CommandState,
    holder: Uuid,
) -> Result<bool, ApiError> {
    if state.store.in_postgres() {
        return Ok(false);
    }
    let stream = state.store.read_stream(&domain::lead::stream_id(holder)).await?;
    let stale = match stream.last() {
        Some(last) => matches!(
            domain::lead::LeadEvent::from_data_ref(&last.event_type, &last.data),
            Ok(domain::lead::LeadEvent::Deleted(_))
        ),
        None => state
            .vault
            .registered_before(&**tx, holder, CLAIM_GRACE)
            .await
            .map_err(vault_error)?,
    };
    if stale {
        tracing::info!(lead_id = %holder, "releasing an email claim left behind by an interrupted write");
        state.vault.erase_lead(&**tx, holder).await.map_err(vault_error)?;
    }
    Ok(stale)
}

fn email_contended() -> ApiError {
    ApiError::Conflict("The email is being claimed and released concurrently; retry the request".into())
}

async fn execute(writer: &Writer, write: Write<'_, LeadState>) -> Result<Root<LeadState>, ApiError> {
    execute_keyed(writer, write, None).await
}

/// [`execute`], for an update that must only apply while the lead holds the
/// email of `keyed_by` (a digest; see [`VaultHooks::keyed_by`]).
async fn execute_keyed(
    writer: &Writer,
    write: Write<'_, LeadState>,
    keyed_by: Option<Vec<u8>>,
) -> Result<Root<LeadState>, ApiError> {
    let mut hooks = VaultHooks {
        writer,
        new_key: None,
        keyed_by,
    };
    writer.execute_with(write, &mut hooks).await
}

/// Create a lead. The email must be unique in the campaign (case-insensitively).
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns/{campaign_id}/leads", tag = "leads",
    request_body = CreateLead,
    params(("campaign_id" = Uuid, Path), crate::IdempotencyKeyHeader),
    responses(
        (status = 201, description = "Created", body = domain::lead::LeadResource,
         headers(("Location" = String), ("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
        (status = 409, description = "A lead with this email already exists in this campaign (`existing_id` names it)", body = web::error::ErrorBody),
        (status = 413, body = web::error::ErrorBody), (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["leads:write"]))
)]
pub async fn create(writer: Writer, request: NewItem<JsonBody<CreateLead>>) -> Result<Response, ApiError> {
    let (campaign, place) = request.place(&writer, "lead").await?;
    let write = Write::new(place.id, LeadCommand::Create(place, Box::new(request.body.0)));
    let lead = execute(&writer, write.under(&campaign)).await?;
    respond(StatusCode::CREATED, &lead)
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
        (status = 409, description = "The new email belongs to another lead of the campaign (`existing_id` names it)", body = web::error::ErrorBody),
        (status = 412, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["leads:write"]))
)]
pub async fn update(writer: Writer, request: ItemChange<JsonBody<UpdateLead>>) -> Result<Response, ApiError> {
    let (campaign, lead_id) = request.target::<LeadState>(&writer).await?;
    let command = LeadCommand::Update(Box::new(request.body.0));
    let write = Write::new(lead_id, command).under(&campaign);
    respond(
        StatusCode::OK,
        &execute(&writer, write.if_match(request.if_match)).await?,
    )
}

delete_item! {
    /// Delete a lead: its personal data is crypto-shredded (its key destroyed), its
    /// email freed; the log keeps that it existed and was deleted.
    path = "/v1/dev/marketing/campaigns/{campaign_id}/leads/{lead_id}", tag = "leads", scope = "leads:write", id = "lead_id",
    not_found = "Campaign not found / Lead not found",
    LeadState, LeadCommand::Delete,
    run = |writer, write| execute(writer, write)
}
