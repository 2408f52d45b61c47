//! Read models and the machinery that keeps them current.
//!
//! A [`Projection`] folds events into tables. A [`ProjectionRunner`] feeds it the
//! whole log in commit-safe order, and commits each batch of read-model writes
//! together with the projection's checkpoint, so a crash anywhere either keeps a
//! whole batch or none of it: no event is skipped or applied twice. Several
//! processes may run the same projection; an advisory lock makes one of them the
//! active one and the others stand by to take over.

mod analytics;
mod campaigns;
mod content;
mod leads;
mod progress;
mod replay;
mod runner;
mod tasks;

pub use analytics::AnalyticsProjection;
pub use campaigns::CampaignsProjection;
pub use content::ContentProjection;
pub use leads::LeadsProjection;
pub use progress::{InProcessProgress, PolledProgress, ReadModelProgress};
pub use replay::{replay, ReplayOptions, ReplayOutcome};
pub use runner::{ProjectionRunner, RunnerConfig};
pub use tasks::TasksProjection;

use async_trait::async_trait;
use event_store::RecordedEvent;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Creates or upgrades the read-model tables.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), event_store::StoreError> {
    event_store::run_migrations(client, embedded::migrations::runner(), "read_model_migrations").await
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("connection pool error: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("event store error: {0}")]
    Store(#[from] event_store::StoreError),
    #[error("cannot decode event at {position:?}: {source}")]
    Decode {
        position: event_store::LogPosition,
        #[source]
        source: domain::DecodeError,
    },
    #[error("read-model row is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open lead event at {position:?}: {source}")]
    Decrypt {
        position: event_store::LogPosition,
        #[source]
        source: domain::lead::LeadError,
    },
    #[error("lead vault: {0}")]
    Vault(#[from] lead_vault::VaultError),
}

/// Folds events into read-model tables.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name; keys the checkpoint row and the advisory lock.
    fn name(&self) -> &'static str;

    /// The tables this projection owns. `replay` rebuilds exactly these, so
    /// `apply` must write only to them, by unqualified name (replay resolves the
    /// names to fresh copies through `search_path`).
    fn tables(&self) -> &'static [&'static str];

    /// The stream id prefixes whose events this projection reads, or `None`
    /// for every stream. Events of other streams still reach `apply` (so the
    /// checkpoint moves past them) but with `null` data: a projection that
    /// names its streams must look only at those. Saves every projection from
    /// decoding, say, a million imported lead events it does not use.
    fn stream_prefixes(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Whether events of this type change this projection's tables. A batch
    /// with none of them is skipped without a transaction (the runner still
    /// moves past it, and read-after-write waits do not pay for it). Must be
    /// `true` for every type `apply` acts on; the default handles everything.
    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    /// Applies a batch, in log order, inside `tx`. The runner commits `tx` together
    /// with the new checkpoint, or rolls both back.
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError>;
}

/// Every projection the service runs, in a stable order. `vault` opens the
/// personal data of lead events.
pub fn all_projections(vault: &lead_vault::LeadVault) -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(CampaignsProjection),
        std::sync::Arc::new(TasksProjection),
        std::sync::Arc::new(ContentProjection),
        std::sync::Arc::new(AnalyticsProjection),
        std::sync::Arc::new(LeadsProjection::new(vault.clone())),
    ]
}
