//! The `leads` read model: one row per live lead, its resource JSON in `body`,
//! its personal data in clear (search needs it) only while it lives (see
//! [`crate::owned`] for how it is kept).
//!
//! Events carry personal data sealed with the lead's key; the projection opens
//! them with keys from the vault. A lead whose key is gone was erased: its
//! events are skipped, so replaying the log never brings an erased person back.
//!
//! The projection also finishes a campaign's deletion for its leads: on
//! `CampaignDeleted` it deletes their rows and erases their vault entries, in the
//! same transaction as its checkpoint, so it happens exactly once and survives
//! crashes. A lead created concurrently with that deletion (its event lands
//! after `CampaignDeleted`) is erased when it arrives.

use crate::owned::{field, owned_aggregate, Outcome, Owned, OwnedRows};
use crate::ProjectionError;
use async_trait::async_trait;
use domain::lead::{self, Lead, LeadEvent, LeadKey, LeadState};
use event_store::RecordedEvent;
use lead_vault::LeadVault;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

pub struct Leads {
    vault: LeadVault,
}

impl crate::LeadsProjection {
    pub fn new(vault: LeadVault) -> Self {
        Owned(Leads { vault })
    }
}

#[async_trait]
impl OwnedRows for Leads {
    owned_aggregate!(Lead, LeadState, LeadEvent, lead_id);
    /// The keys of the batch's leads.
    type Context = HashMap<Uuid, LeadKey>;

    const NAME: &'static str = "leads";
    const STREAM_PREFIX: &'static str = lead::STREAM_PREFIX;
    const TABLES: &'static [&'static str] = &["leads"];
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("status", "status"),
        ("created_at", "created_at::timestamptz"),
        ("search_text", "search_text"),
    ];

    fn values(item: &Lead, body: &Value) -> Vec<Option<String>> {
        let mut values: Vec<_> = ["status", "created_at"]
            .iter()
            .map(|key| field(body, key))
            .collect();
        values.push(item.state().map(LeadState::search_text));
        values
    }

    /// The keys of the leads the batch creates or updates (a deletion needs none).
    async fn context(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[&LeadEvent],
    ) -> Result<HashMap<Uuid, LeadKey>, ProjectionError> {
        let ids: Vec<Uuid> = events
            .iter()
            .filter(|e| !matches!(e, LeadEvent::Deleted(_)))
            .map(|e| e.lead_id())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        Ok(self.vault.keys(tx, &ids).await?)
    }

    fn fold(
        &self,
        keys: &HashMap<Uuid, LeadKey>,
        row: &mut Option<Lead>,
        recorded: &RecordedEvent,
        event: &LeadEvent,
    ) -> Result<(), ProjectionError> {
        if let LeadEvent::Deleted(_) = event {
            *row = None;
            return Ok(());
        }
        // No key: the lead was erased since; skip it (a creation stays out).
        let Some(key) = keys.get(&event.lead_id()) else {
            return Ok(());
        };
        row.get_or_insert_with(Lead::default)
            .apply(event, key, recorded.recorded_at, recorded.version)
            .map_err(|source| ProjectionError::Decrypt {
                position: recorded.position,
                source,
            })
    }

    /// Erases the vault entries of the deleted campaigns' leads, and of leads
    /// created in a campaign already deleted.
    async fn after(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        outcome: Outcome<'_, LeadEvent>,
    ) -> Result<(), ProjectionError> {
        for &campaign_id in outcome.deleted_campaigns {
            let erased = self.vault.erase_campaign(tx, campaign_id).await?;
            tracing::info!(%campaign_id, leads = erased, "erased the leads of a deleted campaign");
        }
        for &lead_id in outcome.orphans {
            self.vault.erase_lead(tx, lead_id).await?;
        }
        Ok(())
    }
}
