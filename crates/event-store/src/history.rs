//! Audit reads: every event correlated with one key (a campaign id), in log order.

use crate::horizon::PRECISE_SQL;
use crate::postgres::decode_row;
use crate::{LogPosition, RecordedEvent, StoreError, Upcaster};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use std::sync::LazyLock;

#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub event_type: Option<String>,
    /// Inclusive lower bound on `recorded_at`.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `recorded_at`.
    pub to: Option<DateTime<Utc>>,
}

/// The statement of [`read_correlated`], with the precise commit horizon inline
/// (crate::horizon): a request reads once, so it pays for the exact value
/// instead of sharing a cached one.
static CORRELATED_EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT position, tx_id, event_id, stream_id, version, event_type, schema_version,
                    data, metadata, recorded_at
             FROM events
             WHERE data ? 'campaign_id' AND data->>'campaign_id' = $1
               AND (tx_id, position) > ($2, $3)
               AND tx_id < GREATEST(pg_snapshot_xmin(pg_current_snapshot())::text::bigint, ({horizon}))
               AND ($4::text IS NULL OR event_type = $4)
               AND ($5::timestamptz IS NULL OR recorded_at >= $5)
               AND ($6::timestamptz IS NULL OR recorded_at < $6)
             ORDER BY tx_id, position
             LIMIT $7",
        horizon = PRECISE_SQL
    )
});

/// Up to `limit` events whose data carries `"campaign_id": key`, strictly after
/// `after` in log order, upcast like every other read. Like `read_all`, it only
/// returns events below the commit horizon, so paging never skips one that
/// commits late.
pub async fn read_correlated(
    pool: &Pool,
    upcasters: &[Upcaster],
    key: &str,
    filter: &HistoryFilter,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(&CORRELATED_EVENTS_SQL).await?;
    let rows = client
        .query(
            &statement,
            &[
                &key,
                &after.tx_id,
                &after.position,
                &filter.event_type,
                &filter.from,
                &filter.to,
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(|row| decode_row(upcasters, row)).collect())
}
