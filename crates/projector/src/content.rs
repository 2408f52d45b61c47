//! The `content` read model: one row per live content item of a live campaign
//! (see [`crate::owned`] for how it is kept), plus every media file any event
//! attached (see `content_media` in V3).

use crate::owned::{field, owned_aggregate, Change, Outcome, OwnedRows};
use crate::ProjectionError;
use async_trait::async_trait;
use domain::content::{self, Content, ContentEvent, ContentState};
use serde_json::Value;
use uuid::Uuid;

#[derive(Default)]
pub struct ContentItems;

#[async_trait]
impl OwnedRows for ContentItems {
    owned_aggregate!(Content, ContentState, ContentEvent, content_id, fold);

    const NAME: &'static str = "content";
    const STREAM_PREFIX: &'static str = content::STREAM_PREFIX;
    const TABLES: &'static [&'static str] = &["content_items", "content_media"];
    // Keys lowercased, so filters match case-insensitively on an index.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("status", "status"),
        ("content_type_key", "lower(content_type_key)"),
        ("platform_key", "lower(platform_key)"),
        ("scheduled_date", "scheduled_date::timestamptz"),
    ];

    fn values(_: &Content, body: &Value) -> Vec<Option<String>> {
        ["status", "content_type", "platform", "scheduled_date"]
            .iter()
            .map(|key| field(body, key))
            .collect()
    }

    /// Records every attached file whatever else happens (even for an item of
    /// a deleted campaign): the log names the file, so retention must keep it.
    async fn after(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        outcome: Outcome<'_, ContentEvent>,
    ) -> Result<(), ProjectionError> {
        let media: Vec<_> = outcome
            .changes
            .iter()
            .filter_map(|(_, change)| match change {
                Change::Child(event) => event.attached_media().map(|m| (event.content_id(), m)),
                Change::CampaignDeleted(_) => None,
            })
            .collect();
        if media.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = media.iter().map(|(id, _)| *id).collect();
        let hashes: Vec<&str> = media.iter().map(|(_, m)| m.sha256.as_str()).collect();
        let types: Vec<&str> = media.iter().map(|(_, m)| m.media_type.as_str()).collect();
        let sizes: Vec<i64> = media
            .iter()
            .map(|(_, m)| i64::try_from(m.size).unwrap_or(i64::MAX))
            .collect();
        let names: Vec<Option<&str>> = media.iter().map(|(_, m)| m.file_name.as_deref()).collect();
        tx.execute(
            "INSERT INTO content_media (content_id, sha256, media_type, size, file_name)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[])
             ON CONFLICT DO NOTHING",
            &[&ids, &hashes, &types, &sizes, &names],
        )
        .await?;
        Ok(())
    }
}
