//! The dispatcher's shards: their checkpoint rows, and changing their count.
//!
//! Shard `i` of `n` is the reader `webhooks:i/n` (`webhooks` when `n` is 1,
//! the name of every version before shards): a checkpoint row and a lock key
//! (tag `webhooks:`) of its own. It fans out only the events of its shard
//! (`projector::Shard`: by campaign) and sends only the deliveries whose
//! `shard` column names it.
//!
//! Unlike a projection's, the dispatcher's count can change without a
//! rebuild, because fan-out is idempotent: an outbox row is keyed by endpoint
//! and event (`ON CONFLICT DO NOTHING`). So when the rows found are those of
//! another count, and no process still leads any of them, the new count's rows
//! are installed at the *earliest* of the old checkpoints (events between it
//! and the later ones are fanned out again and land on the rows already
//! there), and every pending delivery moves to the new shard of its campaign
//! (one aggregate's deliveries move together, so their order holds).

use crate::dispatcher::DispatchError;
use event_store::follower::lock_key;
use event_store::LogPosition;
use projector::Shard;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The lock key of a dispatcher reader (a shard's reader name).
pub fn reader_lock_key(reader: &str) -> i64 {
    lock_key("webhooks:", reader)
}

/// Makes sure the checkpoint rows of the dispatcher `name` are those of
/// `count` shards (see the module's rules). An error while another process
/// still leads a shard of another count: the caller retries.
pub async fn prepare(
    client: &mut tokio_postgres::Client,
    name: &str,
    count: u32,
) -> Result<(), DispatchError> {
    let tx = client.transaction().await?;
    let rows = projector::lock_shard_checkpoints(&tx, name).await?;
    let wanted: Vec<String> = Shard::all(count).map(|s| s.reader_name(name)).collect();
    if rows.iter().map(|(n, _)| n).eq(wanted.iter()) {
        return Ok(());
    }
    let Some(earliest) = rows.iter().map(|(_, at)| *at).min() else {
        // A fresh database: every shard from the start of the log.
        projector::install_shards(&tx, name, count, LogPosition::START).await?;
        tx.commit().await?;
        return Ok(());
    };
    // Held until this transaction ends: no process of the old count can start
    // leading meanwhile, and one that leads now makes this wait.
    for (reader, _) in &rows {
        let free: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1)",
                &[&reader_lock_key(reader)],
            )
            .await?
            .get(0);
        if !free {
            return Err(DispatchError::Layout(format!(
                "the webhook dispatcher shard {reader} is still led by another process \
                 (of another WEBHOOKS_SHARDS); waiting for it to stop"
            )));
        }
    }
    projector::install_shards(&tx, name, count, earliest).await?;
    reshard_pending(&tx, count).await?;
    tx.commit().await?;
    tracing::info!(
        shards = count,
        from = rows.len(),
        "changed the webhook dispatcher's shard count"
    );
    Ok(())
}

/// Moves every pending delivery to the shard, of `count`, of its campaign.
async fn reshard_pending(tx: &tokio_postgres::Transaction<'_>, count: u32) -> Result<(), DispatchError> {
    let campaigns: Vec<Option<Uuid>> = tx
        .query(
            "SELECT DISTINCT campaign_id FROM webhook_deliveries WHERE state = 'pending'",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut by_shard: BTreeMap<i32, Vec<Uuid>> = BTreeMap::new();
    for campaign in campaigns.into_iter().flatten() {
        by_shard
            .entry(Shard::of(campaign, count).index as i32)
            .or_default()
            .push(campaign);
    }
    tx.execute(
        "UPDATE webhook_deliveries SET shard = 0 WHERE state = 'pending' AND campaign_id IS NULL",
        &[],
    )
    .await?;
    for (shard, campaigns) in by_shard {
        tx.execute(
            "UPDATE webhook_deliveries SET shard = $1 WHERE state = 'pending' AND campaign_id = ANY($2)",
            &[&shard, &campaigns],
        )
        .await?;
    }
    Ok(())
}
