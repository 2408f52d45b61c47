//! Reads of the log by what its events say (a campaign's history, a
//! project's feed, events by id), on either backend: [`LogReader`].
//!
//! On Postgres the log is the `events` table, and these reads query it
//! directly (`history.rs`, `feed.rs`, `verify.rs`). On KurrentDB there is no
//! table to query: a projection keeps [`LOG_INDEX`] in Postgres, one row per
//! event with where it is (position, stream, version) and what a reader
//! selects on (type, campaign, project, time), but no body; a read finds its
//! places there and loads the events from the store
//! ([`EventStore::read_versions`]). The index is a read model like the
//! others, so what a write must show in history it waits for
//! (docs/kurrentdb.md, "Campaign history and the event feed").

use crate::feed::{read_events, read_project};
use crate::history::{read_correlated, HistoryFilter};
#[cfg(feature = "kurrentdb")]
use crate::KurrentEventStore;
use crate::{
    verify_campaign, verify_with_progress, LogPosition, RecordedEvent, StoreError, StreamVersion, Upcaster,
    VerifyReport,
};
use deadpool_postgres::Pool;
#[cfg(feature = "kurrentdb")]
use std::sync::Arc;

/// The projection, and its table, that indexes a log kept outside Postgres.
/// Its columns: `tx_id`, `position` (the event's [`LogPosition`]),
/// `stream_id`, `version`, `event_id`, `event_type`, `campaign_id` (the
/// data's, as history selects), `metadata_campaign_id`, `project` (the
/// metadata's, as the feed selects) and `recorded_at`.
pub const LOG_INDEX: &str = "log_index";

/// How to read the log by content; [`crate::EventStore::log_reader`] says
/// which for a store. Every method takes the Postgres pool to query: the
/// database of the `events` table, or of the index.
#[derive(Clone)]
pub enum LogReader {
    /// The log is the `events` table of the pool's database.
    Postgres,
    /// The log is in KurrentDB; the pool's database holds its index.
    #[cfg(feature = "kurrentdb")]
    Kurrent(Arc<KurrentEventStore>),
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_indexed() {
            "LogReader::Kurrent"
        } else {
            "LogReader::Postgres"
        })
    }
}

/// Events of the index's readers counted when measuring their own lag: they
/// are counted in the store, one read per thousand.
#[cfg(feature = "kurrentdb")]
const INDEX_LAG_CAP: usize = 10_000;

impl LogReader {
    /// True when reads go through the [`LOG_INDEX`] projection, which must
    /// then run beside the other projections.
    pub fn is_indexed(&self) -> bool {
        !matches!(self, LogReader::Postgres)
    }

    /// Up to `limit` events whose data carries `"campaign_id": key`, strictly
    /// after `after`, in log order (see [`read_correlated`]).
    pub async fn correlated(
        &self,
        pool: &Pool,
        upcasters: &[Upcaster],
        key: &str,
        filter: &HistoryFilter,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match self {
            LogReader::Postgres => read_correlated(pool, upcasters, key, filter, after, limit).await,
            #[cfg(feature = "kurrentdb")]
            LogReader::Kurrent(store) => {
                // A campaign's events are all in one shard of the index, and
                // each shard applies its events in log order: what is there is
                // a prefix of the campaign's history, so no page skips one.
                let places = places(
                    pool,
                    "SELECT stream_id, version FROM log_index
                     WHERE campaign_id = $1 AND (tx_id, position) > ($2, $3)
                       AND ($4::text IS NULL OR event_type = $4)
                       AND ($5::timestamptz IS NULL OR recorded_at >= $5)
                       AND ($6::timestamptz IS NULL OR recorded_at < $6)
                     ORDER BY tx_id, position LIMIT $7",
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
                crate::EventStore::read_versions(store.as_ref(), &places).await
            }
        }
    }

    /// Up to `limit` events of `project` strictly after `after`, in log order,
    /// optionally of one campaign (see [`read_project`]).
    pub async fn project(
        &self,
        pool: &Pool,
        upcasters: &[Upcaster],
        project: &str,
        campaign_id: Option<&str>,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match self {
            LogReader::Postgres => read_project(pool, upcasters, project, campaign_id, after, limit).await,
            #[cfg(feature = "kurrentdb")]
            LogReader::Kurrent(store) => {
                // A project spans campaigns, so shards of the index: only rows
                // every shard has passed are returned, so that a reader paging
                // by position never skips a row a slower shard adds later.
                let places = places(
                    pool,
                    "SELECT stream_id, version FROM log_index i
                     WHERE project = $1 AND (tx_id, position) > ($2, $3)
                       AND ($4::text IS NULL OR campaign_id = $4 OR metadata_campaign_id = $4)
                       AND NOT EXISTS (
                           SELECT 1 FROM projection_checkpoints c
                           WHERE (c.name = 'log_index' OR starts_with(c.name, 'log_index:'))
                             AND (c.tx_id, c.position) < (i.tx_id, i.position))
                     ORDER BY tx_id, position LIMIT $5",
                    &[&project, &after.tx_id, &after.position, &campaign_id, &limit],
                )
                .await?;
                crate::EventStore::read_versions(store.as_ref(), &places).await
            }
        }
    }

    /// The events with these ids, in log order (those not indexed yet are
    /// left out on KurrentDB).
    pub async fn events(
        &self,
        pool: &Pool,
        upcasters: &[Upcaster],
        event_ids: &[uuid::Uuid],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match self {
            LogReader::Postgres => read_events(pool, upcasters, event_ids).await,
            #[cfg(feature = "kurrentdb")]
            LogReader::Kurrent(store) => {
                let places = places(
                    pool,
                    "SELECT stream_id, version FROM log_index WHERE event_id = ANY($1)",
                    &[&event_ids],
                )
                .await?;
                crate::EventStore::read_versions(store.as_ref(), &places).await
            }
        }
    }

    /// Those of `event_ids` that the index does not hold yet: always none on
    /// Postgres, where the log is its own index.
    pub async fn unindexed(
        &self,
        pool: &Pool,
        event_ids: &[uuid::Uuid],
    ) -> Result<std::collections::HashSet<uuid::Uuid>, StoreError> {
        let mut missing: std::collections::HashSet<uuid::Uuid> = match self {
            LogReader::Postgres => return Ok(Default::default()),
            #[cfg(feature = "kurrentdb")]
            LogReader::Kurrent(_) => event_ids.iter().copied().collect(),
        };
        let client = pool.get().await?;
        let rows = client
            .query(
                "SELECT event_id FROM log_index WHERE event_id = ANY($1)",
                &[&event_ids],
            )
            .await?;
        for row in rows {
            missing.remove(&row.get::<_, uuid::Uuid>(0));
        }
        Ok(missing)
    }

    /// The `project` of the data of `stream_id`'s first event: who created
    /// the aggregate (a campaign's owner, even once it is deleted).
    pub async fn creator(&self, pool: &Pool, stream_id: &str) -> Result<Option<String>, StoreError> {
        match self {
            LogReader::Postgres => {
                let client = pool.get().await?;
                let row = client
                    .query_opt(
                        "SELECT data->>'project' FROM events WHERE stream_id = $1 AND version = 0",
                        &[&stream_id],
                    )
                    .await?;
                Ok(row.and_then(|r| r.get(0)))
            }
            #[cfg(feature = "kurrentdb")]
            LogReader::Kurrent(store) => {
                let first = StreamVersion {
                    stream_id: stream_id.to_owned(),
                    version: 0,
                };
                let events = crate::EventStore::read_versions(store.as_ref(), &[first]).await?;
                Ok(events
                    .first()
                    .and_then(|e| e.data.get("project")?.as_str().map(str::to_owned)))
            }
        }
    }

    /// Re-checks the hash chain of every stream with an event that names
    /// `campaign_id` in its data (see [`verify_campaign`]).
    pub async fn verify_campaign(&self, pool: &Pool, campaign_id: &str) -> Result<VerifyReport, StoreError> {
        match self {
            LogReader::Postgres => verify_campaign(pool, campaign_id).await,
            #[cfg(feature = "kurrentdb")]
            LogReader::Kurrent(store) => {
                let client = pool.get().await?;
                let rows = client
                    .query(
                        "SELECT DISTINCT stream_id FROM log_index WHERE campaign_id = $1 ORDER BY stream_id",
                        &[&campaign_id],
                    )
                    .await?;
                let streams: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
                store.verify_streams(&streams).await
            }
        }
    }

    /// `marketing verify`: every stream's hash chain re-checked, calling
    /// `progress` with the events checked so far now and then.
    pub async fn verify(&self, pool: &Pool, progress: impl FnMut(u64)) -> Result<VerifyReport, StoreError> {
        match self {
            LogReader::Postgres => verify_with_progress(pool, progress).await,
            #[cfg(feature = "kurrentdb")]
            LogReader::Kurrent(store) => store.verify_with_progress(progress).await,
        }
    }

    /// Events in the log (on KurrentDB: in its index), the total a whole-log
    /// pass's progress counts towards.
    pub async fn count(&self, pool: &Pool) -> Result<u64, StoreError> {
        let client = pool.get().await?;
        let sql = format!("SELECT count(*) FROM {}", self.table());
        let count: i64 = client.query_one(sql.as_str(), &[]).await?.get(0);
        Ok(count.max(0) as u64)
    }

    /// Each follower's reader name and how many events of the log are after
    /// its checkpoint, counted up to `cap`. On KurrentDB the events are
    /// counted in the index, except for the index's own readers, whose lag is
    /// counted in the store (up to a smaller cap, and over every shard's
    /// events).
    pub async fn lag(&self, pool: &Pool, cap: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let client = pool.get().await?;
        let sql = format!(
            "SELECT c.name, c.tx_id, c.position,
                    (SELECT count(*) FROM (SELECT 1 FROM {} e
                        WHERE (e.tx_id, e.position) > (c.tx_id, c.position) LIMIT $1) AS pending)
             FROM projection_checkpoints c",
            self.table()
        );
        let rows = client.query(sql.as_str(), &[&cap]).await?;
        drop(client);
        let mut lags = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.get(0);
            let checkpoint = LogPosition {
                tx_id: row.get(1),
                position: row.get(2),
            };
            let lag = match self {
                #[cfg(feature = "kurrentdb")]
                LogReader::Kurrent(store) if name == LOG_INDEX || name.starts_with("log_index:") => {
                    events_after(store.as_ref(), checkpoint).await? as i64
                }
                _ => {
                    let _ = checkpoint;
                    row.get(3)
                }
            };
            lags.push((name, lag));
        }
        Ok(lags)
    }

    fn table(&self) -> &'static str {
        if self.is_indexed() {
            LOG_INDEX
        } else {
            "events"
        }
    }
}

/// Events of `store` after `after`, counted up to [`INDEX_LAG_CAP`].
#[cfg(feature = "kurrentdb")]
async fn events_after(store: &KurrentEventStore, mut after: LogPosition) -> Result<usize, StoreError> {
    let mut counted = 0;
    while counted < INDEX_LAG_CAP {
        let batch = crate::EventStore::read_all(store, after, 1000).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        counted += batch.len();
    }
    Ok(counted.min(INDEX_LAG_CAP))
}

/// The `(stream_id, version)` rows of an index query.
#[cfg(feature = "kurrentdb")]
async fn places(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<StreamVersion>, StoreError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(sql).await?;
    let rows = client.query(&statement, params).await?;
    Ok(rows
        .iter()
        .map(|row| StreamVersion {
            stream_id: row.get(0),
            version: row.get(1),
        })
        .collect())
}
