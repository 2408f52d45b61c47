//! Schema migrations, shared by every crate that owns tables (event log, read
//! models, API keys, lead vault). Each such crate embeds its own migrations with
//! `refinery::embed_migrations!` and hands the runner to [`run_migrations`]
//! with a history table of its own, so each crate owns its schema and none
//! depends on another just to migrate.

/// Why a migration run failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// Taking or releasing the migration lock failed.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// A migration itself failed (or the history does not match the embedded set).
    #[error("migration failed: {0}")]
    Failed(String),
}

/// The cluster-wide advisory lock every migration run holds.
const MIGRATION_LOCK: i64 = 0x6d61_726b_6574_0001;

/// Applies one crate's embedded migrations under a cluster-wide advisory lock, so
/// several processes starting at once do not race each other. Each crate keeps
/// its own history table (`history_table`), so each owns its schema.
pub async fn run_migrations(
    client: &mut tokio_postgres::Client,
    runner: refinery::Runner,
    history_table: &str,
) -> Result<(), MigrationError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let mut runner = runner;
    let result = runner
        .set_migration_table_name(history_table)
        .run_async(client)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
        .map(|_| ())
        .map_err(|e| MigrationError::Failed(e.to_string()))
}
