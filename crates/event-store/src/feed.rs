//! Tenant reads: one project's events in log order, for the event feed.

use crate::horizon::PRECISE_SQL;
use crate::postgres::decode_row;
use crate::{LogPosition, RecordedEvent, StoreError, Upcaster};
use deadpool_postgres::Pool;
use std::sync::LazyLock;

/// The statement of [`read_project`], with the precise commit horizon inline
/// (crate::horizon): a request reads once, so it pays for the exact value
/// instead of sharing a cached one.
static PROJECT_EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT position, tx_id, event_id, stream_id, version, event_type, schema_version,
                    data, metadata, recorded_at
             FROM events
             WHERE metadata->>'project' = $1
               AND (tx_id, position) > ($2, $3)
               AND tx_id < GREATEST(pg_snapshot_xmin(pg_current_snapshot())::text::bigint, ({horizon}))
               AND ($4::text IS NULL OR data->>'campaign_id' = $4 OR metadata->>'campaign_id' = $4)
             ORDER BY tx_id, position
             LIMIT $5",
        horizon = PRECISE_SQL
    )
});

/// Up to `limit` events of `project` (the `project` of their metadata)
/// strictly after `after` in log order, upcast like every other read;
/// with `campaign_id`, only those that name that campaign in their data or
/// metadata. Like `read_all`, it only returns events below the commit
/// horizon, so a reader paging with the last position it saw never skips an
/// event that commits late, and never sees one twice.
pub async fn read_project(
    pool: &Pool,
    upcasters: &[Upcaster],
    project: &str,
    campaign_id: Option<&str>,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(&PROJECT_EVENTS_SQL).await?;
    let rows = client
        .query(
            &statement,
            &[&project, &after.tx_id, &after.position, &campaign_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(|row| decode_row(upcasters, row)).collect())
}

/// The events with these ids, upcast, in log order.
pub async fn read_events(
    pool: &Pool,
    upcasters: &[Upcaster],
    event_ids: &[uuid::Uuid],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT position, tx_id, event_id, stream_id, version, event_type, schema_version,
                    data, metadata, recorded_at
             FROM events WHERE event_id = ANY($1) ORDER BY tx_id, position",
        )
        .await?;
    let rows = client.query(&statement, &[&event_ids]).await?;
    Ok(rows.iter().map(|row| decode_row(upcasters, row)).collect())
}
