//! Zero-downtime rebuild of a projection (blue/green).
//!
//! 1. Empty copies of the projection's tables are created in a schema of their
//!    own (`replay_<name>`), with the same columns, indexes and constraints.
//! 2. The whole log is applied into them, from position zero, with the
//!    projection's own code: its SQL names tables unqualified, and the replay
//!    transactions put the replay schema first on the `search_path`. The live
//!    tables keep serving, and the live runner keeps them current, meanwhile.
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

use crate::{Projection, ProjectionError};
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
    drop(client);

    // Read the next batch while the previous one is applied: the read and
    // the apply are different Postgres backends, and this process decodes one
    // batch while Postgres writes the other.
    let (batches, mut received) = tokio::sync::mpsc::channel::<Vec<RecordedEvent>>(2);
    let read = read_ahead(store, projection, options.batch_size, batches);
    let apply = async {
        let search_path =
            format!("SET LOCAL search_path TO {schema}, public; SET LOCAL synchronous_commit = off");
        let mut position = LogPosition::START;
        let mut applied = 0u64;
        while let Some(events) = received.recv().await {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(&search_path).await?;
            projection.apply(&tx, &events).await?;
            tx.commit().await?;
            position = events.last().expect("batches are not empty").position;
            applied += events.len() as u64;
            progress(applied, position);
        }
        Ok::<_, ProjectionError>((applied, position))
    };
    let ((), (mut applied, position)) = tokio::try_join!(read, apply)?;
    if options.swap {
        applied += swap(store, pool, projection, options, schema, position).await?;
    }
    Ok((applied, position))
}

/// Reads the whole readable log in batches into `batches`, with the bodies
/// of the streams `projection` does not read left out.
async fn read_ahead(
    store: &dyn EventStore,
    projection: &dyn Projection,
    batch_size: usize,
    batches: tokio::sync::mpsc::Sender<Vec<RecordedEvent>>,
) -> Result<(), ProjectionError> {
    let prefixes: Option<Vec<&str>> = projection
        .reads()
        .map(|reads| reads.iter().map(|r| r.stream_prefix).collect());
    let mut position = LogPosition::START;
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
            if batches.send(events).await.is_err() {
                return Ok(()); // the applier failed; its error is the one to report
            }
        }
        if done {
            return Ok(());
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
