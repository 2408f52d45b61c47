//! The `campaigns` read model: one row per live campaign, its resource JSON in `body`.

use crate::{Projection, ProjectionError};
use async_trait::async_trait;
use domain::campaign::{Campaign, CampaignEvent, STREAM_PREFIX};
use domain::DomainEvent;
use event_store::RecordedEvent;
use serde_json::{Map, Value};
use std::collections::HashMap;
use uuid::Uuid;

pub struct CampaignsProjection;

/// A batch's view of one campaign row: `None` once deleted.
type Rows = HashMap<Uuid, Option<Map<String, Value>>>;

#[async_trait]
impl Projection for CampaignsProjection {
    fn name(&self) -> &'static str {
        "campaigns"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["campaigns"]
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("Campaign")
    }

    fn stream_prefixes(&self) -> Option<&'static [&'static str]> {
        Some(&[STREAM_PREFIX])
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
        for event in events.iter().filter(|e| e.stream_id.starts_with(STREAM_PREFIX)) {
            let campaign_event =
                CampaignEvent::from_data(&event.event_type, event.data.clone()).map_err(|source| {
                    ProjectionError::Decode {
                        position: event.position,
                        source,
                    }
                })?;
            decoded.push((event, campaign_event));
        }
        if decoded.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = decoded.iter().map(|(_, e)| campaign_id(e)).collect();
        let mut rows: Rows = HashMap::new();
        for row in tx
            .query("SELECT id, body FROM campaigns WHERE id = ANY($1)", &[&ids])
            .await?
        {
            if let Value::Object(body) = row.get::<_, Value>(1) {
                rows.insert(row.get(0), Some(body));
            }
        }
        for (recorded, event) in &decoded {
            fold(&mut rows, recorded, event);
        }
        // The filter columns go as arrays of their own, so Postgres does not
        // re-parse each body once per column (`json ->>` parses the whole text).
        let mut ids = Vec::new();
        let mut projects = Vec::new();
        let mut statuses = Vec::new();
        let mut types = Vec::new();
        let mut created_at: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
        let mut versions = Vec::new();
        let mut bodies = Vec::new();
        let mut deleted = Vec::new();
        for (id, row) in rows {
            let Some(body) = row else {
                deleted.push(id);
                continue;
            };
            let text = |key: &str| {
                body.get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let created = body
                .get("created_at")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or_else(|| ProjectionError::Corrupt(format!("campaign {id} has no created_at")))?;
            ids.push(id);
            projects.push(text("project"));
            statuses.push(text("status"));
            types.push(text("type"));
            created_at.push(created);
            versions.push(body.get("version").and_then(Value::as_i64).unwrap_or_default());
            // Sent as text: a jsonb parameter would reorder the keys.
            bodies.push(Value::Object(body).to_string());
        }
        if !bodies.is_empty() {
            tx.execute(
                "INSERT INTO campaigns (id, project, status, campaign_type, created_at, version, body)
                 SELECT id, project, status, campaign_type, created_at, version, body::json
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                             $6::int8[], $7::text[])
                      AS u(id, project, status, campaign_type, created_at, version, body)
                 ON CONFLICT (id) DO UPDATE SET
                     status = excluded.status, campaign_type = excluded.campaign_type,
                     version = excluded.version, body = excluded.body",
                &[
                    &ids,
                    &projects,
                    &statuses,
                    &types,
                    &created_at,
                    &versions,
                    &bodies,
                ],
            )
            .await?;
        }
        if !deleted.is_empty() {
            tx.execute("DELETE FROM campaigns WHERE id = ANY($1)", &[&deleted])
                .await?;
        }
        Ok(())
    }
}

fn campaign_id(event: &CampaignEvent) -> Uuid {
    match event {
        CampaignEvent::Created(e) => e.campaign_id,
        CampaignEvent::Updated(e) => e.campaign_id,
        CampaignEvent::StatusChanged(e) => e.campaign_id,
        CampaignEvent::Deleted(e) => e.campaign_id,
    }
}

/// The same resource the command side returns: created by the domain's own fold,
/// then kept current by merging each change under the resource's own keys.
fn fold(rows: &mut Rows, recorded: &RecordedEvent, event: &CampaignEvent) {
    let id = campaign_id(event);
    let stamp = |body: &mut Map<String, Value>| {
        body.insert(
            "updated_at".into(),
            serde_json::to_value(recorded.recorded_at).expect("timestamp"),
        );
        body.insert("version".into(), Value::from(recorded.version));
    };
    match event {
        CampaignEvent::Created(_) => {
            let mut campaign = Campaign::default();
            campaign.apply(event, recorded.recorded_at, recorded.version);
            let body = serde_json::to_value(campaign.state()).expect("campaign state serializes");
            if let Value::Object(body) = body {
                rows.insert(id, Some(body));
            }
        }
        CampaignEvent::Updated(e) => {
            if let Some(Some(body)) = rows.get_mut(&id) {
                if let Value::Object(changes) = serde_json::to_value(&e.changes).expect("changes serialize") {
                    body.extend(changes);
                }
                stamp(body);
            }
        }
        CampaignEvent::StatusChanged(e) => {
            if let Some(Some(body)) = rows.get_mut(&id) {
                body.insert("status".into(), Value::from(e.to.as_str()));
                stamp(body);
            }
        }
        CampaignEvent::Deleted(_) => {
            rows.insert(id, None);
        }
    }
}
