//! Which shards of a projection have checkpoint rows: its layout.
//!
//! Each shard's checkpoint says which of *its* events are in the tables, so a
//! set of checkpoints is only meaningful for the shard count that wrote it.
//! Runners of another count would each start from the beginning over tables
//! that already hold everything, and apply it twice. So a count is installed,
//! never improvised:
//! - a fresh database gets the configured count, every shard at the start;
//! - a database with one unsharded checkpoint (every version before shards)
//!   is split into the configured count at that checkpoint, which is exact:
//!   the one reader had applied every event up to it;
//! - any other change of count is a `marketing replay`, whose swap installs
//!   the new count's rows at one position that every rebuilt shard has reached
//!   ([`install`]); until then a projector refuses to run the projection, and
//!   a runner never creates its own row.

use crate::{ProjectionError, Shard};
use event_store::follower::lock_key;
use event_store::LogPosition;

/// The checkpoint rows of every layout of `projection`, locked for update.
pub async fn lock_all(
    client: &tokio_postgres::Transaction<'_>,
    projection: &str,
) -> Result<Vec<(String, LogPosition)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT name, tx_id, position FROM projection_checkpoints
             WHERE name = $1 OR starts_with(name, $1 || ':')
             ORDER BY name FOR UPDATE",
            &[&projection],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let position = LogPosition {
                tx_id: row.get(1),
                position: row.get(2),
            };
            (row.get(0), position)
        })
        .collect())
}

/// Replaces every checkpoint row of `projection` with one per shard of
/// `count`, all at `at`. Sound only when the tables hold every event of the
/// projection up to `at` and none after.
pub async fn install(
    client: &tokio_postgres::Transaction<'_>,
    projection: &str,
    count: u32,
    at: LogPosition,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM projection_checkpoints WHERE name = $1 OR starts_with(name, $1 || ':')",
            &[&projection],
        )
        .await?;
    insert(client, projection, count, at).await
}

/// Rows for every shard of `count` at `at`, beside any there are (which, on a
/// fresh database, another process may be inserting at the same moment).
async fn insert(
    client: &tokio_postgres::Transaction<'_>,
    projection: &str,
    count: u32,
    at: LogPosition,
) -> Result<(), tokio_postgres::Error> {
    let names: Vec<String> = Shard::all(count).map(|s| s.reader_name(projection)).collect();
    client
        .execute(
            "INSERT INTO projection_checkpoints (name, tx_id, position)
             SELECT unnest($1::text[]), $2, $3
             ON CONFLICT (name) DO NOTHING",
            &[&names, &at.tx_id, &at.position],
        )
        .await?;
    Ok(())
}

/// Makes sure the checkpoint rows of `projection` are those of `count` shards
/// (see the module's rules), before its runners start.
pub async fn prepare(
    client: &mut tokio_postgres::Client,
    projection: &str,
    count: u32,
) -> Result<(), ProjectionError> {
    let tx = client.transaction().await?;
    let rows = lock_all(&tx, projection).await?;
    let wanted: Vec<String> = Shard::all(count).map(|s| s.reader_name(projection)).collect();
    let names: Vec<&str> = rows.iter().map(|(name, _)| name.as_str()).collect();
    if names == wanted.iter().map(String::as_str).collect::<Vec<_>>() {
        return Ok(());
    }
    if rows.is_empty() {
        insert(&tx, projection, count, LogPosition::START).await?;
        tx.commit().await?;
        return Ok(());
    }
    let unsharded = rows.len() == 1 && rows[0].0 == projection;
    if !unsharded {
        return Err(ProjectionError::Layout(format!(
            "projection {projection} has checkpoints for another shard count ({}); \
             run `marketing replay {projection}` with PROJECTION_SHARDS={count} to change it",
            names.join(", ")
        )));
    }
    // A process of an earlier version may still lead the unsharded reader:
    // splitting under it would let it run on. Its lock says whether it does.
    let free: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1)",
            &[&lock_key("", projection)],
        )
        .await?
        .get(0);
    if !free {
        return Err(ProjectionError::Layout(format!(
            "projection {projection} is still run unsharded by another process; stop it first"
        )));
    }
    install(&tx, projection, count, rows[0].1).await?;
    tx.commit().await?;
    tracing::info!(
        projection,
        shards = count,
        "split the projection's checkpoint into shards"
    );
    Ok(())
}
