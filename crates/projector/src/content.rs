//! The `content` read model: one row per live content item of a live campaign,
//! plus every media file any event attached (see `content_media` in V3).

use crate::tasks::{decode, Change};
use crate::{Projection, ProjectionError};
use async_trait::async_trait;
use domain::content::{self, Content, ContentEvent, ContentState};
use event_store::RecordedEvent;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

pub struct ContentProjection;

#[async_trait]
impl Projection for ContentProjection {
    fn name(&self) -> &'static str {
        "content"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["content_items", "content_deleted_campaigns", "content_media"]
    }

    /// Its own events, and campaign deletions (which hide its rows).
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("Content") || event_type == "CampaignDeleted"
    }

    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let decoded = decode::<ContentEvent>(events, content::STREAM_PREFIX)?;
        if decoded.is_empty() {
            return Ok(());
        }
        let mut content_ids = Vec::new();
        let mut campaign_ids = Vec::new();
        // Recorded whatever else happens (even for an item of a deleted
        // campaign): the log names the file, so retention must keep it.
        let mut media_refs = Vec::new();
        for (_, change) in &decoded {
            if let Change::Child(event) = change {
                content_ids.push(event.content_id());
                campaign_ids.push(event.campaign_id());
                if let Some(media) = event.attached_media() {
                    media_refs.push((event.content_id(), media.clone()));
                }
            }
        }
        let mut rows: HashMap<Uuid, Option<(String, Content)>> = HashMap::new();
        for row in tx
            .query(
                "SELECT id, project, body::text FROM content_items WHERE id = ANY($1)",
                &[&content_ids],
            )
            .await?
        {
            let body: String = row.get(2);
            let state: ContentState =
                serde_json::from_str(&body).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
            rows.insert(row.get(0), Some((row.get(1), Content::from_state(state))));
        }
        let mut tombstoned: HashSet<Uuid> = tx
            .query(
                "SELECT campaign_id FROM content_deleted_campaigns WHERE campaign_id = ANY($1)",
                &[&campaign_ids],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut newly_deleted_campaigns = Vec::new();
        for (recorded, change) in &decoded {
            match change {
                &Change::CampaignDeleted(campaign_id) => {
                    tombstoned.insert(campaign_id);
                    newly_deleted_campaigns.push(campaign_id);
                    for row in rows.values_mut() {
                        if row
                            .as_ref()
                            .is_some_and(|(_, c)| c.state().is_some_and(|s| s.campaign_id == campaign_id))
                        {
                            *row = None;
                        }
                    }
                }
                Change::Child(event) => {
                    let id = event.content_id();
                    if tombstoned.contains(&event.campaign_id()) {
                        rows.insert(id, None);
                        continue;
                    }
                    if let ContentEvent::Created(created) = event {
                        let mut item = Content::default();
                        item.apply(event, recorded.recorded_at, recorded.version);
                        rows.insert(id, Some((created.project.to_string(), item)));
                    } else if let Some(Some((_, item))) = rows.get_mut(&id) {
                        item.apply(event, recorded.recorded_at, recorded.version);
                        if item.state().is_none() {
                            rows.insert(id, None);
                        }
                    }
                }
            }
        }
        let mut bodies = Vec::new();
        let mut projects = Vec::new();
        let mut gone = Vec::new();
        for (id, row) in rows {
            match row.and_then(|(project, item)| item.state().map(|s| (project, s.clone()))) {
                Some((project, state)) => {
                    bodies.push(serde_json::to_string(&state).expect("content state serializes"));
                    projects.push(project);
                }
                None => gone.push(id),
            }
        }
        if !bodies.is_empty() {
            tx.execute(
                "INSERT INTO content_items (id, campaign_id, project, status, content_type_key,
                                            platform_key, scheduled_date, version, body)
                 SELECT (b->>'id')::uuid, (b->>'campaign_id')::uuid, p, b->>'status',
                        lower(b->>'content_type'), lower(b->>'platform'),
                        (b->>'scheduled_date')::timestamptz, (b->>'version')::bigint, b
                 FROM unnest($1::text[], $2::text[]) AS t(body, p),
                      LATERAL (SELECT t.body::json AS b) AS parsed
                 ON CONFLICT (id) DO UPDATE SET
                     status = excluded.status, content_type_key = excluded.content_type_key,
                     platform_key = excluded.platform_key, scheduled_date = excluded.scheduled_date,
                     version = excluded.version, body = excluded.body",
                &[&bodies, &projects],
            )
            .await?;
        }
        if !gone.is_empty() {
            tx.execute("DELETE FROM content_items WHERE id = ANY($1)", &[&gone])
                .await?;
        }
        if !media_refs.is_empty() {
            let ids: Vec<Uuid> = media_refs.iter().map(|(id, _)| *id).collect();
            let hashes: Vec<&str> = media_refs.iter().map(|(_, m)| m.sha256.as_str()).collect();
            let types: Vec<&str> = media_refs.iter().map(|(_, m)| m.media_type.as_str()).collect();
            let sizes: Vec<i64> = media_refs
                .iter()
                .map(|(_, m)| i64::try_from(m.size).unwrap_or(i64::MAX))
                .collect();
            let names: Vec<Option<&str>> = media_refs.iter().map(|(_, m)| m.file_name.as_deref()).collect();
            tx.execute(
                "INSERT INTO content_media (content_id, sha256, media_type, size, file_name)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[])
                 ON CONFLICT DO NOTHING",
                &[&ids, &hashes, &types, &sizes, &names],
            )
            .await?;
        }
        if !newly_deleted_campaigns.is_empty() {
            tx.execute(
                "INSERT INTO content_deleted_campaigns (campaign_id) SELECT unnest($1::uuid[])
                 ON CONFLICT DO NOTHING",
                &[&newly_deleted_campaigns],
            )
            .await?;
            tx.execute(
                "DELETE FROM content_items WHERE campaign_id = ANY($1)",
                &[&newly_deleted_campaigns],
            )
            .await?;
        }
        Ok(())
    }
}
