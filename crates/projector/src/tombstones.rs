//! Campaign tombstones: the campaigns whose `CampaignDeleted` a projection has
//! applied, in one table for every projection (`campaign_tombstones`, keyed by
//! projection name).
//!
//! A child row (task, content item, lead, analytics record) created
//! concurrently with its campaign's deletion can land in the log after the
//! `CampaignDeleted`; a projection that finds its campaign here keeps it out.
//!
//! The table is shared, so it is in no projection's `tables()`: a replay
//! (`marketing replay`) writes to and reads from the live rows. A tombstone is
//! a fact of the log that never goes away (a deleted campaign stays deleted),
//! so a rebuild that meets it early only hides rows that the same
//! `CampaignDeleted` removes later anyway: the rebuilt tables are the same.

use crate::ProjectionError;
use std::collections::HashSet;
use uuid::Uuid;

/// Which of `campaigns` `projection` has seen deleted.
pub async fn load(
    tx: &tokio_postgres::Transaction<'_>,
    projection: &str,
    campaigns: &[Uuid],
) -> Result<HashSet<Uuid>, ProjectionError> {
    if campaigns.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = tx
        .query(
            "SELECT campaign_id FROM campaign_tombstones
             WHERE projection = $1 AND campaign_id = ANY($2)",
            &[&projection, &campaigns],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Records that `projection` has applied the deletion of `campaigns`, and
/// deletes their rows from each of `tables` (by `campaign_id`).
pub async fn record(
    tx: &tokio_postgres::Transaction<'_>,
    projection: &str,
    campaigns: &[Uuid],
    tables: &[&str],
) -> Result<(), ProjectionError> {
    if campaigns.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO campaign_tombstones (projection, campaign_id)
         SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING",
        &[&projection, &campaigns],
    )
    .await?;
    for table in tables {
        tx.execute(
            &format!("DELETE FROM {table} WHERE campaign_id = ANY($1)"),
            &[&campaigns],
        )
        .await?;
    }
    Ok(())
}
