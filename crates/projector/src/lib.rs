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
mod layout;
mod leads;
mod log_index;
mod owned;
mod progress;
mod replay;
mod runner;
mod shard;
mod tasks;
pub mod tombstones;

pub use analytics::AnalyticsProjection;
pub use campaigns::CampaignsProjection;
/// The `content` read model ([`content`]).
pub type ContentProjection = owned::Owned<content::ContentItems>;
/// The `leads` read model ([`leads`]).
pub type LeadsProjection = owned::Owned<leads::Leads>;
pub use layout::{install as install_shards, lock_all as lock_shard_checkpoints, prepare as prepare_shards};
pub use log_index::LogIndexProjection;
pub use progress::{Consumer, Local, Progress, ReadModelProgress, Written};
pub use replay::{replay, ReplayOptions, ReplayOutcome};
pub use runner::{ProjectionRunner, RunnerConfig};
pub use shard::{campaign_of, Shard, MAX_SHARDS};
/// The `tasks` read model ([`tasks`]).
pub type TasksProjection = owned::Owned<tasks::Tasks>;

use async_trait::async_trait;
use event_store::RecordedEvent;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Creates or upgrades the read-model tables.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), event_store::StoreError> {
    migrations::run_migrations(client, embedded::migrations::runner(), "read_model_migrations").await?;
    Ok(())
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
    #[error("{0}")]
    Layout(String),
}

/// The events of one kind of stream that a projection reads: every event of
/// streams whose id starts with `stream_prefix`, or only those of the listed
/// types.
#[derive(Debug, Clone, Copy)]
pub struct Reads {
    pub stream_prefix: &'static str,
    pub event_types: Option<&'static [&'static str]>,
}

impl Reads {
    /// Every event of the streams with this prefix.
    pub const fn stream(stream_prefix: &'static str) -> Self {
        Self {
            stream_prefix,
            event_types: None,
        }
    }

    /// Only these event types of the streams with this prefix.
    pub const fn only(stream_prefix: &'static str, event_types: &'static [&'static str]) -> Self {
        Self {
            stream_prefix,
            event_types: Some(event_types),
        }
    }

    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.matches_type(&event.stream_id, &event.event_type)
    }

    /// Whether an event of `event_type` on stream `stream_id` is read.
    pub fn matches_type(&self, stream_id: &str, event_type: &str) -> bool {
        stream_id.starts_with(self.stream_prefix)
            && self.event_types.is_none_or(|types| types.contains(&event_type))
    }
}

/// Campaign deletions, which every projection of campaign-owned rows reads
/// (they hide its rows, and leave a tombstone: see [`tombstones`]).
pub const CAMPAIGN_DELETIONS: Reads = Reads::only(domain::campaign::STREAM_PREFIX, &["CampaignDeleted"]);

/// Folds events into read-model tables.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name; keys the checkpoint row and the advisory lock.
    fn name(&self) -> &'static str;

    /// The tables this projection owns. `replay` rebuilds exactly these, so
    /// `apply` must write only to them (and to the shared tombstones, see
    /// [`tombstones`]), by unqualified name (replay resolves the names to fresh
    /// copies through `search_path`).
    fn tables(&self) -> &'static [&'static str];

    /// The one statement of which events this projection reads, or `None` for
    /// every event of every stream. The runner derives everything else from it:
    /// events of other streams still reach `apply` (so the checkpoint moves past
    /// them) but with `null` data (`EventStore::read_all_matching`), so no
    /// projection decodes, say, a million imported lead events it does not
    /// use; and a batch with none of the events it reads is skipped without a
    /// transaction (the runner still moves past it, and read-after-write waits
    /// do not pay for it). `apply` must look only at events that match.
    fn reads(&self) -> Option<&'static [Reads]> {
        None
    }

    /// For a projection that reads every stream (`reads` is `None`): whether
    /// events of this type change its tables, with the same effect on skipped
    /// batches. Must be `true` for every type `apply` acts on.
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

/// Whether `projection` reads `event` (see [`Projection::reads`]).
pub fn reads_event(projection: &dyn Projection, event: &RecordedEvent) -> bool {
    projection.handles(&event.event_type)
        && projection
            .reads()
            .is_none_or(|reads| reads.iter().any(|r| r.matches(event)))
}

/// Decodes a recorded event into the domain's event type.
pub(crate) fn decode<E: domain::DomainEvent>(event: &RecordedEvent) -> Result<E, ProjectionError> {
    E::from_data_ref(&event.event_type, &event.data).map_err(|source| ProjectionError::Decode {
        position: event.position,
        source,
    })
}

/// Every projection the service runs, in a stable order. `vault` opens the
/// personal data of lead events.
pub fn all_projections(vault: &lead_vault::LeadVault) -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(CampaignsProjection),
        std::sync::Arc::new(TasksProjection::default()),
        std::sync::Arc::new(ContentProjection::default()),
        std::sync::Arc::new(AnalyticsProjection),
        std::sync::Arc::new(LeadsProjection::new(vault.clone())),
    ]
}

/// Every projection the service runs over a log read by `log`: those of
/// [`all_projections`], and the [`LogIndexProjection`] when the log is not in
/// Postgres (its readers need the index: [`event_store::LogReader`]).
pub fn projections_for(
    vault: &lead_vault::LeadVault,
    log: &event_store::LogReader,
) -> Vec<std::sync::Arc<dyn Projection>> {
    let mut projections = all_projections(vault);
    if log.is_indexed() {
        projections.push(std::sync::Arc::new(LogIndexProjection));
    }
    projections
}
