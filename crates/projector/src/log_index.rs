//! The `log_index` read model: where each event of a log kept outside
//! Postgres is, and what the log's readers select on, for
//! [`event_store::LogReader`] (its columns: [`event_store::LOG_INDEX`]). It
//! reads every event, so every write waits for it like for any read model
//! that consumes it, and history shows the write. It runs only when the log
//! is in KurrentDB ([`crate::projections_for`]).

use crate::{Projection, ProjectionError};
use async_trait::async_trait;
use event_store::{RecordedEvent, LOG_INDEX};
use serde_json::Value;

pub struct LogIndexProjection;

/// What `->>` gives in SQL: a string's text, any other value's JSON, nothing
/// for null or absent. So the index holds what the Postgres readers compare.
fn text_of(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

#[async_trait]
impl Projection for LogIndexProjection {
    fn name(&self) -> &'static str {
        LOG_INDEX
    }

    fn tables(&self) -> &'static [&'static str] {
        &[LOG_INDEX]
    }

    /// One insert per batch; a row already there (a batch re-applied after a
    /// crash lost its checkpoint) is left as it is.
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        if events.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&RecordedEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
        let tx_ids: Vec<i64> = events.iter().map(|e| e.position.tx_id).collect();
        let positions: Vec<i64> = events.iter().map(|e| e.position.position).collect();
        let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let times: Vec<chrono::DateTime<chrono::Utc>> = events.iter().map(|e| e.recorded_at).collect();
        tx.execute(
            "INSERT INTO log_index (tx_id, position, stream_id, version, event_id, event_type,
                                    campaign_id, metadata_campaign_id, project, recorded_at)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::uuid[],
                                  $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[])
             ON CONFLICT DO NOTHING",
            &[
                &tx_ids,
                &positions,
                &streams,
                &versions,
                &ids,
                &types,
                &column(|e| text_of(&e.data, "campaign_id")),
                &column(|e| text_of(&e.metadata, "campaign_id")),
                &column(|e| text_of(&e.metadata, "project")),
                &times,
            ],
        )
        .await?;
        Ok(())
    }
}
