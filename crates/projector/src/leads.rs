//! The `leads` read model: one row per live lead, its resource JSON in `body`,
//! its personal data in clear (search needs it) only while it lives.
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

use crate::{Projection, ProjectionError};
use async_trait::async_trait;
use domain::campaign::{self, CampaignEvent};
use domain::lead::{self, Lead, LeadEvent, LeadState};
use domain::DomainEvent;
use event_store::RecordedEvent;
use lead_vault::LeadVault;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

pub struct LeadsProjection {
    vault: LeadVault,
}

impl LeadsProjection {
    pub fn new(vault: LeadVault) -> Self {
        Self { vault }
    }
}

/// What a batch does, in log order.
enum Change<'a> {
    Lead(&'a RecordedEvent, LeadEvent),
    CampaignDeleted(Uuid),
}

/// A batch's view of one lead row: `None` once deleted (or erased).
struct Row {
    lead: Lead,
    project: String,
}

#[async_trait]
impl Projection for LeadsProjection {
    fn name(&self) -> &'static str {
        "leads"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["leads", "lead_erased_campaigns"]
    }

    /// Its own events, and campaign deletions (which hide its rows).
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("Lead") || event_type == "CampaignDeleted"
    }

    /// Lead streams, and campaign streams for `CampaignDeleted`.
    fn stream_prefixes(&self) -> Option<&'static [&'static str]> {
        Some(&[lead::STREAM_PREFIX, campaign::STREAM_PREFIX])
    }

    /// Loads what the batch needs (keys, touched rows, erased campaigns) with
    /// three queries, folds every event in memory, then writes back with one
    /// upsert and one delete, however many events the batch holds.
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut changes = Vec::new();
        for event in events {
            if event.stream_id.starts_with(lead::STREAM_PREFIX) {
                let decoded =
                    LeadEvent::from_data(&event.event_type, event.data.clone()).map_err(|source| {
                        ProjectionError::Decode {
                            position: event.position,
                            source,
                        }
                    })?;
                changes.push(Change::Lead(event, decoded));
            } else if event.stream_id.starts_with(campaign::STREAM_PREFIX)
                && event.event_type == "CampaignDeleted"
            {
                match CampaignEvent::from_data(&event.event_type, event.data.clone()) {
                    Ok(CampaignEvent::Deleted(e)) => changes.push(Change::CampaignDeleted(e.campaign_id)),
                    Ok(_) => {}
                    Err(source) => {
                        return Err(ProjectionError::Decode {
                            position: event.position,
                            source,
                        })
                    }
                }
            }
        }
        if changes.is_empty() {
            return Ok(());
        }

        let mut created_here = HashSet::new();
        let mut need_keys = HashSet::new();
        let mut need_rows = HashSet::new();
        let mut created_in = HashSet::new();
        for change in &changes {
            if let Change::Lead(_, event) = change {
                let id = event.lead_id();
                match event {
                    LeadEvent::Created(e) => {
                        created_here.insert(id);
                        created_in.insert(e.campaign_id);
                        need_keys.insert(id);
                    }
                    LeadEvent::Updated(_) => {
                        need_keys.insert(id);
                        if !created_here.contains(&id) {
                            need_rows.insert(id);
                        }
                    }
                    LeadEvent::Deleted(_) => {}
                }
            }
        }
        let need_keys: Vec<Uuid> = need_keys.into_iter().collect();
        let keys = self.vault.keys(tx, &need_keys).await?;
        let mut rows: HashMap<Uuid, Option<Row>> = HashMap::new();
        if !need_rows.is_empty() {
            let ids: Vec<Uuid> = need_rows.into_iter().collect();
            for row in tx
                .query(
                    // A probe per id (see `LeadVault::keys` for why not `= ANY`).
                    "SELECT l.id, l.project, l.body::text
                     FROM unnest($1::uuid[]) AS wanted(id),
                          LATERAL (SELECT id, project, body FROM leads WHERE id = wanted.id LIMIT 1) AS l",
                    &[&ids],
                )
                .await?
            {
                let body: String = row.get(2);
                let state: LeadState = serde_json::from_str(&body).map_err(|e| {
                    ProjectionError::Store(event_store::StoreError::Other(format!(
                        "leads row {} has a malformed body: {e}",
                        row.get::<_, Uuid>(0)
                    )))
                })?;
                rows.insert(
                    row.get(0),
                    Some(Row {
                        lead: Lead::from_state(state),
                        project: row.get(1),
                    }),
                );
            }
        }
        let mut erased_campaigns: HashSet<Uuid> = HashSet::new();
        if !created_in.is_empty() {
            let ids: Vec<Uuid> = created_in.into_iter().collect();
            for row in tx
                .query(
                    "SELECT campaign_id FROM lead_erased_campaigns WHERE campaign_id = ANY($1)",
                    &[&ids],
                )
                .await?
            {
                erased_campaigns.insert(row.get(0));
            }
        }

        let mut newly_erased_campaigns = Vec::new();
        let mut late_leads = Vec::new();
        for change in &changes {
            match change {
                Change::CampaignDeleted(campaign_id) => {
                    if erased_campaigns.insert(*campaign_id) {
                        newly_erased_campaigns.push(*campaign_id);
                    }
                    for row in rows.values_mut() {
                        if row
                            .as_ref()
                            .and_then(|r| r.lead.state())
                            .is_some_and(|s| s.campaign_id == *campaign_id)
                        {
                            *row = None;
                        }
                    }
                }
                Change::Lead(recorded, event) => {
                    let id = event.lead_id();
                    match event {
                        LeadEvent::Created(e) => {
                            if erased_campaigns.contains(&e.campaign_id) {
                                late_leads.push(id);
                                rows.insert(id, None);
                                continue;
                            }
                            // No key: the lead was erased since; skip it.
                            let Some(key) = keys.get(&id) else {
                                rows.insert(id, None);
                                continue;
                            };
                            let mut lead = Lead::default();
                            lead.apply(event, key, recorded.recorded_at, recorded.version)
                                .map_err(|source| ProjectionError::Decrypt {
                                    position: recorded.position,
                                    source,
                                })?;
                            rows.insert(
                                id,
                                Some(Row {
                                    lead,
                                    project: e.project.to_string(),
                                }),
                            );
                        }
                        LeadEvent::Updated(_) => {
                            let (Some(Some(row)), Some(key)) = (rows.get_mut(&id), keys.get(&id)) else {
                                continue;
                            };
                            row.lead
                                .apply(event, key, recorded.recorded_at, recorded.version)
                                .map_err(|source| ProjectionError::Decrypt {
                                    position: recorded.position,
                                    source,
                                })?;
                        }
                        LeadEvent::Deleted(_) => {
                            rows.insert(id, None);
                        }
                    }
                }
            }
        }

        if !newly_erased_campaigns.is_empty() {
            tx.execute(
                "INSERT INTO lead_erased_campaigns (campaign_id) SELECT unnest($1::uuid[])
                 ON CONFLICT (campaign_id) DO NOTHING",
                &[&newly_erased_campaigns],
            )
            .await?;
            tx.execute(
                "DELETE FROM leads WHERE campaign_id = ANY($1)",
                &[&newly_erased_campaigns],
            )
            .await?;
            for campaign_id in &newly_erased_campaigns {
                let erased = self.vault.erase_campaign(tx, *campaign_id).await?;
                tracing::info!(%campaign_id, leads = erased, "erased the leads of a deleted campaign");
            }
        }
        for lead_id in late_leads {
            self.vault.erase_lead(tx, lead_id).await?;
        }

        let mut upserts = Upserts::default();
        let mut deleted = Vec::new();
        for (id, row) in rows {
            match row.as_ref().and_then(|r| r.lead.state().map(|s| (s, &r.project))) {
                Some((state, project)) => upserts.push(state, project),
                None => deleted.push(id),
            }
        }
        if !upserts.ids.is_empty() {
            tx.execute(
                "INSERT INTO leads (id, campaign_id, project, status, created_at, version, search_text, body)
                 SELECT id, campaign_id, project, status, created_at, version, search_text, body::json
                 FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[],
                             $6::int8[], $7::text[], $8::text[])
                      AS t(id, campaign_id, project, status, created_at, version, search_text, body)
                 ON CONFLICT (id) DO UPDATE SET
                     status = excluded.status, version = excluded.version,
                     search_text = excluded.search_text, body = excluded.body",
                &[
                    &upserts.ids,
                    &upserts.campaign_ids,
                    &upserts.projects,
                    &upserts.statuses,
                    &upserts.created_at,
                    &upserts.versions,
                    &upserts.search_texts,
                    &upserts.bodies,
                ],
            )
            .await?;
        }
        if !deleted.is_empty() {
            tx.execute("DELETE FROM leads WHERE id = ANY($1)", &[&deleted])
                .await?;
        }
        Ok(())
    }
}

/// The upsert's parameters, column by column.
#[derive(Default)]
struct Upserts {
    ids: Vec<Uuid>,
    campaign_ids: Vec<Uuid>,
    projects: Vec<String>,
    statuses: Vec<&'static str>,
    created_at: Vec<chrono::DateTime<chrono::Utc>>,
    versions: Vec<i64>,
    search_texts: Vec<String>,
    /// Sent as text: a json parameter would be re-serialized.
    bodies: Vec<String>,
}

impl Upserts {
    fn push(&mut self, state: &LeadState, project: &str) {
        self.ids.push(state.id);
        self.campaign_ids.push(state.campaign_id);
        self.projects.push(project.to_owned());
        self.statuses.push(state.status.as_str());
        self.created_at.push(state.created_at);
        self.versions.push(state.version);
        self.search_texts.push(state.search_text());
        self.bodies
            .push(serde_json::to_string(state).expect("lead state serializes"));
    }
}
