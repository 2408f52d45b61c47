//! The `campaigns` read model: one row per live campaign, its resource JSON in
//! `body`, folded with the domain's own `Campaign::apply`, so the row is the
//! very resource the command side returns.

use crate::{decode, Projection, ProjectionError, Reads};
use async_trait::async_trait;
use domain::campaign::{Campaign, CampaignEvent, STREAM_PREFIX};
use event_store::RecordedEvent;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use tokio_postgres::types::Type;
use uuid::Uuid;

pub struct CampaignsProjection;

/// A batch's view of one campaign row: `None` once deleted.
type Rows = HashMap<Uuid, Option<Campaign>>;

const READS: [Reads; 1] = [Reads::stream(STREAM_PREFIX)];

#[async_trait]
impl Projection for CampaignsProjection {
    fn name(&self) -> &'static str {
        "campaigns"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["campaigns"]
    }

    fn reads(&self) -> Option<&'static [Reads]> {
        Some(&READS)
    }

    /// Loads the rows the batch touches, folds every event in memory, then writes
    /// the results back with one upsert and one delete: two statements per batch
    /// however many events it holds.
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut decoded = Vec::new();
        for event in events.iter().filter(|e| READS[0].matches(e)) {
            decoded.push((event, decode::<CampaignEvent>(event)?));
        }
        if decoded.is_empty() {
            return Ok(());
        }
        let mut rows = load(tx, &stored_ids(&decoded)).await?;
        for (recorded, event) in &decoded {
            let id = event.campaign_id();
            if let CampaignEvent::Created(_) = event {
                rows.insert(id, Some(Campaign::default()));
            }
            if let Some(Some(campaign)) = rows.get_mut(&id) {
                campaign.apply(event, recorded.recorded_at, recorded.version);
                if campaign.state().is_none() {
                    rows.insert(id, None);
                }
            }
        }
        write(tx, rows).await
    }
}

/// The campaigns whose stored row the batch needs: those whose first event in
/// it is not their creation (a creation starts the row afresh, so a batch of
/// creates, the common case, reads nothing).
fn stored_ids(decoded: &[(&RecordedEvent, CampaignEvent)]) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    decoded
        .iter()
        .filter(|(_, event)| seen.insert(event.campaign_id()))
        .filter(|(_, event)| !matches!(event, CampaignEvent::Created(_)))
        .map(|(_, event)| event.campaign_id())
        .collect()
}

/// The stored campaigns among `ids`, as aggregates. Typed parameters: one
/// round trip, no separate prepare.
async fn load(tx: &tokio_postgres::Transaction<'_>, ids: &[Uuid]) -> Result<Rows, ProjectionError> {
    let mut rows = Rows::new();
    if ids.is_empty() {
        return Ok(rows);
    }
    for row in tx
        .query_typed(
            "SELECT id, body FROM campaigns WHERE id = ANY($1)",
            &[(&ids, Type::UUID_ARRAY)],
        )
        .await?
    {
        let id: Uuid = row.get(0);
        rows.insert(id, Some(rehydrate(id, &row.get::<_, Value>(1))?));
    }
    Ok(rows)
}

/// The aggregate of a stored resource, ready to fold further events.
fn rehydrate(id: Uuid, body: &Value) -> Result<Campaign, ProjectionError> {
    let state = serde_json::from_value(body.clone())
        .map_err(|e| ProjectionError::Corrupt(format!("campaign {id}: {e}")))?;
    Ok(Campaign::from_state(state))
}

/// One upsert of the live campaigns, one delete of the gone ones.
async fn write(tx: &tokio_postgres::Transaction<'_>, rows: Rows) -> Result<(), ProjectionError> {
    // The filter columns go as arrays of their own, so Postgres does not
    // re-parse each body once per column (`json ->>` parses the whole text).
    let mut ids = Vec::new();
    let mut projects = Vec::new();
    let mut statuses = Vec::new();
    let mut types = Vec::new();
    let mut created_at: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
    let mut name_keys = Vec::new();
    let mut start_dates = Vec::new();
    let mut end_dates = Vec::new();
    let mut versions = Vec::new();
    let mut bodies = Vec::new();
    let mut deleted = Vec::new();
    for (id, row) in rows {
        let Some(state) = row.as_ref().and_then(Campaign::state) else {
            deleted.push(id);
            continue;
        };
        let body = serde_json::to_value(state).expect("campaign state serializes");
        let text = |key: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        ids.push(id);
        projects.push(text("project"));
        statuses.push(text("status"));
        types.push(text("type"));
        created_at.push(state.created_at);
        // Lowercased here, as the list lowercases its search term: one rule.
        name_keys.push(state.details.name.to_lowercase());
        start_dates.push(state.details.start_date);
        end_dates.push(state.details.end_date);
        versions.push(state.version);
        // Sent as text: a jsonb parameter would reorder the keys.
        bodies.push(body.to_string());
    }
    if !bodies.is_empty() {
        tx.execute_typed(
            "INSERT INTO campaigns (id, project, status, campaign_type, created_at, version, body,
                                    name_key, start_date, end_date)
             SELECT id, project, status, campaign_type, created_at, version, body::json,
                    name_key, start_date, end_date
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                         $6::int8[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])
                  AS u(id, project, status, campaign_type, created_at, version, body,
                       name_key, start_date, end_date)
             ON CONFLICT (id) DO UPDATE SET
                 status = excluded.status, campaign_type = excluded.campaign_type,
                 version = excluded.version, body = excluded.body, name_key = excluded.name_key,
                 start_date = excluded.start_date, end_date = excluded.end_date",
            &[
                (&ids, Type::UUID_ARRAY),
                (&projects, Type::TEXT_ARRAY),
                (&statuses, Type::TEXT_ARRAY),
                (&types, Type::TEXT_ARRAY),
                (&created_at, Type::TIMESTAMPTZ_ARRAY),
                (&versions, Type::INT8_ARRAY),
                (&bodies, Type::TEXT_ARRAY),
                (&name_keys, Type::TEXT_ARRAY),
                (&start_dates, Type::TIMESTAMPTZ_ARRAY),
                (&end_dates, Type::TIMESTAMPTZ_ARRAY),
            ],
        )
        .await?;
    }
    if !deleted.is_empty() {
        tx.execute_typed(
            "DELETE FROM campaigns WHERE id = ANY($1)",
            &[(&deleted, Type::UUID_ARRAY)],
        )
        .await?;
    }
    Ok(())
}
