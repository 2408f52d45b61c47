//! Zero-downtime rebuild of a projection (blue/green).
//!
//! 1. Empty copies of the projection's tables are created in a schema of their
//!    own (`replay_<name>`), with the same columns, indexes and constraints.
//! 2. The whole log is applied into them, from position zero, with the
//!    projection's own code: its SQL names tables unqualified, and the replay
//!    transactions put the replay schema first on the `search_path`. One
//!    reader feeds one applier per shard (at most [`MAX_APPLIERS`]), which
//!    apply concurrently, each the events of its own campaigns in log order.
//!    The indexes that applying does not need are built once the tables are
//!    full ([`defer_indexes`]). The live tables keep serving, and the live
//!    runner keeps them current, meanwhile.
//! 3. Once caught up, one short transaction locks the live tables and the
//!    projection's checkpoint, applies to the rebuilt tables whatever the live
//!    runner had applied beyond the rebuild (so nothing a client was told is
//!    visible disappears), drops the live tables, moves the rebuilt ones into
//!    `public` under the same index names, and keeps the checkpoint where it was
//!    (or moves it forward). With shards, every shard's checkpoint: the
//!    rebuilt tables are brought up to the furthest of them, and every shard of
//!    the layout being installed (`ReplayOptions::shards`, which may differ
//!    from the live one: this is how the shard count changes) starts there.
//!    The live runners continue onto the new tables.
//!    Readers wait for that lock for the few milliseconds the swap takes; they
//!    never see a half-built table.

use crate::{Projection, ProjectionError, Shard};
use deadpool_postgres::Pool;
use event_store::{EventStore, LogPosition, RecordedEvent};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub batch_size: usize,
    /// Swap the rebuilt tables in. `false` leaves them in `replay_<name>` (for
    /// comparing against the live ones) and changes nothing live.
    pub swap: bool,
    /// How many shards the projection has after the swap.
    pub shards: u32,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            batch_size: 2000,
            swap: true,
            shards: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    pub events: u64,
    pub position: LogPosition,
    pub schema: String,
    pub elapsed: Duration,
}

pub fn replay_schema(projection: &dyn Projection) -> String {
    format!("replay_{}", projection.name())
}

/// Rebuilds `projection`; `progress` is called after every batch with the
/// events applied so far and the position reached.
pub async fn replay(
    store: &dyn EventStore,
    pool: &Pool,
    projection: &dyn Projection,
    options: &ReplayOptions,
    mut progress: impl FnMut(u64, LogPosition),
) -> Result<ReplayOutcome, ProjectionError> {
    let started = Instant::now();
    let schema = replay_schema(projection);
    let ddl = pool.get().await?;
    // One replay per projection at a time; the lock dies with this connection.
    let lock_key = format!("replay:{}", projection.name());
    let free: bool = ddl
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&lock_key])
        .await?
        .get(0);
    if !free {
        return Err(event_store::StoreError::Other(format!(
            "a replay of {} is already running",
            projection.name()
        ))
        .into());
    }
    let result = rebuild(store, pool, projection, options, &schema, &mut progress).await;
    ddl.query_one("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key])
        .await?;
    let (events, position) = result?;
    Ok(ReplayOutcome {
        events,
        position,
        schema,
        elapsed: started.elapsed(),
    })
}

async fn rebuild(
    store: &dyn EventStore,
    pool: &Pool,
    projection: &dyn Projection,
    options: &ReplayOptions,
    schema: &str,
    progress: &mut impl FnMut(u64, LogPosition),
) -> Result<(u64, LogPosition), ProjectionError> {
    let client = pool.get().await?;
    let mut ddl = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};");
    for table in projection.tables() {
        ddl.push_str(&format!(
            "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL);"
        ));
    }
    client.batch_execute(&ddl).await?;
    let deferred = defer_indexes(&client, schema, projection.tables()).await?;
    drop(client);

    // One reader and one applier per partition, concurrently: the reader
    // fetches and decodes the next batch while the appliers write the
    // previous ones, each in a Postgres backend of its own. A partition is a
    // set of whole campaigns ([`Shard`]), as live shards are, so each
    // campaign's events are applied in log order by one applier, and the
    // appliers never touch one another's rows.
    let partitions: Vec<Shard> = Shard::all(options.shards.min(MAX_APPLIERS)).collect();
    let (senders, receivers): (Vec<_>, Vec<_>) = partitions
        .iter()
        .map(|_| tokio::sync::mpsc::channel::<Part>(2))
        .unzip();
    let read = read_ahead(store, projection, options.batch_size, &partitions, senders);
    let applied = std::cell::RefCell::new((0u64, progress));
    let search_path =
        format!("SET LOCAL search_path TO {schema}, public; SET LOCAL synchronous_commit = off");
    let appliers = receivers.into_iter().map(|mut received| {
        let (applied, search_path) = (&applied, &search_path);
        async move {
            while let Some(part) = received.recv().await {
                if !part.events.is_empty() {
                    let mut client = pool.get().await?;
                    let tx = client.transaction().await?;
                    tx.batch_execute(search_path).await?;
                    projection.apply(&tx, &part.events).await?;
                    tx.commit().await?;
                }
                let mut applied = applied.borrow_mut();
                applied.0 += part.covers;
                let events = applied.0;
                (applied.1)(events, part.to);
            }
            Ok::<_, ProjectionError>(())
        }
    });
    let ((mut events, position), _) = tokio::try_join!(read, futures::future::try_join_all(appliers))?;
    build_indexes(pool, &deferred).await?;
    if options.swap {
        events += swap(store, pool, projection, options, schema, position).await?;
    }
    Ok((events, position))
}

/// Drops the indexes of the rebuilt tables that applying the log does not
/// need, and returns the statements that make them again. Building an index
/// once over a full table is far cheaper than maintaining it row by row (a
/// trigram GIN index most of all). Kept: unique indexes (primary keys and
/// `ON CONFLICT` targets), and on each table the narrowest btree index led by
/// `campaign_id`, through which a `CampaignDeleted` finds the rows it hides
/// (`tombstones::record`); without it each deletion would scan the table.
async fn defer_indexes(
    client: &tokio_postgres::Client,
    schema: &str,
    tables: &[&str],
) -> Result<Vec<String>, ProjectionError> {
    let mut deferred = Vec::new();
    for table in tables {
        let rows = client
            .query(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique,
                        am.amname = 'btree' AND a.attname IS NOT DISTINCT FROM 'campaign_id',
                        i.indnkeyatts
                 FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_am am ON am.oid = c.relam
                 JOIN pg_class t ON t.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace
                 LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
                 WHERE n.nspname = $1 AND t.relname = $2
                 ORDER BY i.indnkeyatts, c.relname",
                &[&schema, table],
            )
            .await?;
        let mut kept_campaign_index = false;
        for row in rows {
            let (name, definition): (String, String) = (row.get(0), row.get(1));
            let (unique, by_campaign): (bool, bool) = (row.get(2), row.get(3));
            if unique || (by_campaign && !kept_campaign_index) {
                kept_campaign_index |= by_campaign;
                continue;
            }
            client
                .batch_execute(&format!("DROP INDEX {schema}.{name}"))
                .await?;
            deferred.push(definition);
        }
    }
    Ok(deferred)
}

/// Builds the indexes [`defer_indexes`] left out, before the tables are
/// compared or swapped in.
async fn build_indexes(pool: &Pool, definitions: &[String]) -> Result<(), ProjectionError> {
    if definitions.is_empty() {
        return Ok(());
    }
    let client = pool.get().await?;
    // A session setting of this connection only: sorting in memory builds
    // the indexes faster than spilling to disk at the 64 MB default.
    client.batch_execute("SET maintenance_work_mem = '256MB'").await?;
    for definition in definitions {
        client.batch_execute(definition).await?;
    }
    client.batch_execute("RESET maintenance_work_mem").await?;
    Ok(())
}

/// The most appliers a rebuild runs at once, whatever the shard count: each
/// holds a pooled connection while it applies.
const MAX_APPLIERS: u32 = 4;

/// One partition's share of a batch read from the log.
struct Part {
    /// The partition's events of the batch that the projection reads.
    events: Vec<RecordedEvent>,
    /// How many events of the log this share accounts for (the first
    /// partition's also counts the events no partition reads), for progress.
    covers: u64,
    /// The batch's last position.
    to: LogPosition,
}

/// Reads the whole readable log in batches, with the bodies of the streams
/// `projection` does not read left out, and sends each partition its share of
/// every batch. Returns how many events it read and the last position.
async fn read_ahead(
    store: &dyn EventStore,
    projection: &dyn Projection,
    batch_size: usize,
    partitions: &[Shard],
    senders: Vec<tokio::sync::mpsc::Sender<Part>>,
) -> Result<(u64, LogPosition), ProjectionError> {
    let prefixes: Option<Vec<&str>> = projection
        .reads()
        .map(|reads| reads.iter().map(|r| r.stream_prefix).collect());
    let mut position = LogPosition::START;
    let mut read = 0u64;
    loop {
        let events = match &prefixes {
            Some(prefixes) => store.read_all_matching(position, batch_size, prefixes).await?,
            None => store.read_all(position, batch_size).await?,
        };
        // A short batch means we are at the head of what is readable: the
        // rest is for the live runner after the swap.
        let done = events.len() < batch_size;
        if let Some(last) = events.last() {
            position = last.position;
            read += events.len() as u64;
            let mut parts: Vec<Part> = partitions
                .iter()
                .map(|_| Part {
                    events: Vec::new(),
                    covers: 0,
                    to: position,
                })
                .collect();
            parts[0].covers = events.len() as u64;
            for event in events {
                if !crate::reads_event(projection, &event) {
                    continue;
                }
                let part = partitions
                    .iter()
                    .position(|p| p.holds_event(&event))
                    .expect("every event is in one partition");
                parts[0].covers -= 1;
                parts[part].covers += 1;
                parts[part].events.push(event);
            }
            for (part, sender) in parts.into_iter().zip(&senders) {
                if sender.send(part).await.is_err() {
                    // An applier failed; its error is the one to report.
                    return Ok((read, position));
                }
            }
        }
        if done {
            return Ok((read, position));
        }
    }
}

/// Swaps the rebuilt tables in. Returns how many events it applied to them on
/// the way (those the live runner had applied after the rebuild's last batch).
async fn swap(
    store: &dyn EventStore,
    pool: &Pool,
    projection: &dyn Projection,
    options: &ReplayOptions,
    schema: &str,
    rebuilt_to: LogPosition,
) -> Result<u64, ProjectionError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL lock_timeout = '30s'").await?;
    let tables = projection.tables();
    let live: Vec<String> = tables.iter().map(|t| format!("public.{t}")).collect();
    // Tables first, then the checkpoint row: the live runner takes them in the
    // same order (it writes its tables before its checkpoint), so no deadlock.
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        live.join(", ")
    ))
    .await?;
    // Every shard's checkpoint row, of whatever layout is live.
    let live_checkpoint = crate::layout::lock_all(&tx, projection.name())
        .await?
        .into_iter()
        .map(|(_, position)| position)
        .max()
        .unwrap_or(LogPosition::START);
    // The live tables may already hold events the rebuild has not applied, and a
    // client may have been told its write is visible. Bring the rebuilt tables
    // up to the furthest live checkpoint inside this transaction (every event
    // of every shard up to it), so the swap takes no shard backwards.
    tx.batch_execute(&format!("SET LOCAL search_path TO {schema}, public"))
        .await?;
    let mut position = rebuilt_to;
    let mut caught_up = 0u64;
    while position < live_checkpoint {
        let mut events = store.read_all(position, options.batch_size).await?;
        events.retain(|e| e.position <= live_checkpoint);
        let Some(last) = events.last() else { break };
        position = last.position;
        caught_up += events.len() as u64;
        projection.apply(&tx, &events).await?;
    }
    for table in tables {
        // Index names as the migrations made them, to restore on the new table:
        // matched by definition, since LIKE names its copies after the columns.
        let originals = index_definitions(&tx, "public", table).await?;
        let copies = index_definitions(&tx, schema, table).await?;
        tx.batch_execute(&format!(
            "DROP TABLE public.{table}; ALTER TABLE {schema}.{table} SET SCHEMA public;"
        ))
        .await?;
        for (copy_name, copy_shape) in &copies {
            if let Some((original_name, _)) = originals.iter().find(|(_, shape)| shape == copy_shape) {
                if original_name != copy_name {
                    tx.batch_execute(&format!(
                        "ALTER INDEX public.{copy_name} RENAME TO {original_name}"
                    ))
                    .await?;
                }
            }
        }
    }
    let checkpoint = position.max(live_checkpoint);
    crate::layout::install(&tx, projection.name(), options.shards, checkpoint).await?;
    tx.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await?;
    tx.commit().await?;
    Ok(caught_up)
}

/// `(index name, shape)` of a table's indexes, where the shape is the
/// definition with the index and table names taken out.
async fn index_definitions(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, String)>, ProjectionError> {
    let rows = tx
        .query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
            &[&schema, &table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let name: String = row.get(0);
            let definition: String = row.get(1);
            let unique = definition.starts_with("CREATE UNIQUE");
            let shape = definition
                .split_once(" USING ")
                .map_or(definition.clone(), |(_, rest)| rest.to_owned());
            (name, format!("{unique}:{shape}"))
        })
        .collect())
}
