//! The framework of read models whose rows are each owned by a campaign
//! (tasks, content items, leads): one row per live child of a live campaign,
//! its resource JSON in `body` (exactly as the command side returns it; type
//! `json` keeps the field order) plus the columns the query API filters on.
//!
//! A model ([`OwnedRows`]) says how to decode, fold and lay out its rows;
//! [`Owned`] does the rest, the same way for each: per batch it
//! 1. decodes its own streams' events and campaign deletions;
//! 2. loads the rows the batch touches (one probe per id) and the campaigns'
//!    tombstones ([`crate::tombstones`]);
//! 3. folds every event in memory with the domain's own `apply`: a
//!    `CampaignDeleted` hides the campaign's rows and leaves a tombstone, a
//!    child of a tombstoned campaign stays out;
//! 4. writes back with one upsert (columns as arrays, `unnest`), one delete,
//!    and the tombstones: a few statements however large the batch.

use crate::{decode, tombstones, Projection, ProjectionError, Reads, CAMPAIGN_DELETIONS};
use async_trait::async_trait;
use domain::campaign::CampaignEvent;
use domain::DomainEvent;
use event_store::RecordedEvent;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// What a batch says, in log order.
pub enum Change<E> {
    Child(E),
    CampaignDeleted(Uuid),
}

/// A batch's changes, each with its recorded event.
pub type Changes<'a, E> = Vec<(&'a RecordedEvent, Change<E>)>;

/// What a batch did beyond its rows, for [`OwnedRows::after`].
pub struct Outcome<'a, E> {
    pub changes: &'a [(&'a RecordedEvent, Change<E>)],
    /// Campaigns whose `CampaignDeleted` the batch applied.
    pub deleted_campaigns: &'a [Uuid],
    /// Children created in a campaign already deleted (they stay out).
    pub orphans: &'a [Uuid],
}

/// One read model of campaign-owned rows.
#[async_trait]
pub trait OwnedRows: Send + Sync + 'static {
    type Event: DomainEvent + Send + Sync;
    /// The domain aggregate of one row.
    type Item: Send + Sync;
    /// What folding the batch needs besides the rows (the leads' keys).
    type Context: Default + Send + Sync;

    /// The projection's name.
    const NAME: &'static str;
    /// The child streams' prefix.
    const STREAM_PREFIX: &'static str;
    /// Every table the projection owns ([`Projection::tables`]), the rows'
    /// table first: columns `id`, `project`, `body`, `campaign_id`, `version`
    /// and [`Self::COLUMNS`].
    const TABLES: &'static [&'static str];
    /// The other columns: `(name, SQL expression)`, the expression over the
    /// text value of the same name (from [`OwnedRows::values`]).
    const COLUMNS: &'static [(&'static str, &'static str)];

    /// The row's id and its campaign's.
    fn ids(event: &Self::Event) -> (Uuid, Uuid);

    /// The project of a creation event; `None` for every other event.
    fn created_in(event: &Self::Event) -> Option<String>;

    /// The aggregate of a stored body.
    fn parse(body: &str) -> Result<Self::Item, serde_json::Error>;

    /// The row's resource JSON; `None` once gone.
    fn body(item: &Self::Item) -> Option<Value>;

    /// The campaign of a live row.
    fn campaign(item: &Self::Item) -> Option<Uuid>;

    /// The values of [`Self::COLUMNS`], in order, as text (`None`: NULL).
    /// `body` is the row's resource JSON ([`field`] reads one of its values).
    fn values(item: &Self::Item, body: &Value) -> Vec<Option<String>>;

    /// Loads what folding the batch's child events needs.
    async fn context(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[&Self::Event],
    ) -> Result<Self::Context, ProjectionError> {
        let _ = (tx, events);
        Ok(Self::Context::default())
    }

    /// Folds one event into its row: `row` is `None` for a creation (and should
    /// become the new row); set it to `None` when the row goes.
    fn fold(
        &self,
        context: &Self::Context,
        row: &mut Option<Self::Item>,
        recorded: &RecordedEvent,
        event: &Self::Event,
    ) -> Result<(), ProjectionError>;

    /// Work beyond the rows, in the same transaction.
    async fn after(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        outcome: Outcome<'_, Self::Event>,
    ) -> Result<(), ProjectionError> {
        let _ = (tx, outcome);
        Ok(())
    }
}

/// The [`OwnedRows`] items every model spells the same way, for an aggregate
/// `$item` with state `$state` (with `campaign_id`), `from_state` and `state()`,
/// whose events `$event` have `Created(e)` with `e.project`, `$id()` and
/// `campaign_id()`. With `fold`, also the plain fold (the domain's `apply`)
/// and no context.
macro_rules! owned_aggregate {
    ($item:ty, $state:ty, $event:ident, $id:ident) => {
        type Event = $event;
        type Item = $item;

        fn ids(event: &$event) -> (::uuid::Uuid, ::uuid::Uuid) {
            (event.$id(), event.campaign_id())
        }

        fn created_in(event: &$event) -> Option<String> {
            match event {
                $event::Created(created) => Some(created.project.to_string()),
                _ => None,
            }
        }

        fn parse(body: &str) -> Result<$item, serde_json::Error> {
            Ok(<$item>::from_state(serde_json::from_str::<$state>(body)?))
        }

        fn body(item: &$item) -> Option<serde_json::Value> {
            item.state()
                .map(|state| serde_json::to_value(state).expect("state serializes"))
        }

        fn campaign(item: &$item) -> Option<::uuid::Uuid> {
            item.state().map(|state| state.campaign_id)
        }
    };
    ($item:ty, $state:ty, $event:ident, $id:ident, fold) => {
        owned_aggregate!($item, $state, $event, $id);
        type Context = ();

        fn fold(
            &self,
            _: &(),
            row: &mut Option<$item>,
            recorded: &event_store::RecordedEvent,
            event: &$event,
        ) -> Result<(), crate::ProjectionError> {
            let item = row.get_or_insert_with(<$item>::default);
            item.apply(event, recorded.recorded_at, recorded.version);
            if item.state().is_none() {
                *row = None;
            }
            Ok(())
        }
    };
}
pub(crate) use owned_aggregate;

/// A campaign-owned read model as a [`Projection`].
#[derive(Default)]
pub struct Owned<M>(pub(crate) M);

/// A row of the batch: `None` once gone; the project comes from the creation.
type Rows<I> = HashMap<Uuid, Option<(String, I)>>;

impl<M: OwnedRows> Owned<M> {
    const READS: [Reads; 2] = [Reads::stream(M::STREAM_PREFIX), CAMPAIGN_DELETIONS];

    fn decode<'a>(&self, events: &'a [RecordedEvent]) -> Result<Changes<'a, M::Event>, ProjectionError> {
        let [own, deletions] = &Self::READS;
        let mut changes = Vec::new();
        for event in events {
            if own.matches(event) {
                changes.push((event, Change::Child(decode(event)?)));
            } else if deletions.matches(event) {
                if let CampaignEvent::Deleted(deleted) = decode(event)? {
                    changes.push((event, Change::CampaignDeleted(deleted.campaign_id)));
                }
            }
        }
        Ok(changes)
    }

    /// The stored rows that the batch's events other than creations touch.
    async fn load_rows(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        children: &[&M::Event],
    ) -> Result<Rows<M::Item>, ProjectionError> {
        let mut created = HashSet::new();
        let mut wanted = HashSet::new();
        for event in children {
            let (id, _) = M::ids(event);
            if M::created_in(event).is_some() {
                created.insert(id);
            } else if !created.contains(&id) {
                wanted.insert(id);
            }
        }
        let mut rows = HashMap::new();
        if wanted.is_empty() {
            return Ok(rows);
        }
        let ids: Vec<Uuid> = wanted.into_iter().collect();
        // A probe per id: a plain `= ANY($1)` may be planned as a scan of the
        // whole table (see `LeadVault::keys`).
        let query = format!(
            "SELECT r.id, r.project, r.body::text FROM unnest($1::uuid[]) AS wanted(id),
                    LATERAL (SELECT id, project, body FROM {} WHERE id = wanted.id LIMIT 1) AS r",
            table::<M>()
        );
        for row in tx.query(&query, &[&ids]).await? {
            let id: Uuid = row.get(0);
            let item = M::parse(row.get(2))
                .map_err(|e| ProjectionError::Corrupt(format!("{} row {id}: {e}", table::<M>())))?;
            rows.insert(id, Some((row.get(1), item)));
        }
        Ok(rows)
    }

    /// Folds the batch into `rows`; returns the campaigns it deleted and the
    /// orphans it kept out.
    fn fold(
        &self,
        context: &M::Context,
        changes: &[(&RecordedEvent, Change<M::Event>)],
        rows: &mut Rows<M::Item>,
        tombstoned: &mut HashSet<Uuid>,
    ) -> Result<(Vec<Uuid>, Vec<Uuid>), ProjectionError> {
        let mut deleted_campaigns = Vec::new();
        let mut orphans = Vec::new();
        for (recorded, change) in changes {
            let event = match change {
                &Change::CampaignDeleted(campaign_id) => {
                    tombstoned.insert(campaign_id);
                    if !deleted_campaigns.contains(&campaign_id) {
                        deleted_campaigns.push(campaign_id);
                    }
                    for row in rows.values_mut() {
                        if row.as_ref().and_then(|(_, item)| M::campaign(item)) == Some(campaign_id) {
                            *row = None;
                        }
                    }
                    continue;
                }
                Change::Child(event) => event,
            };
            let (id, campaign_id) = M::ids(event);
            let created_in = M::created_in(event);
            if tombstoned.contains(&campaign_id) {
                if created_in.is_some() {
                    orphans.push(id);
                }
                rows.insert(id, None);
            } else if let Some(project) = created_in {
                let mut item = None;
                self.0.fold(context, &mut item, recorded, event)?;
                rows.insert(id, item.map(|item| (project, item)));
            } else if let Some(row @ Some(_)) = rows.get_mut(&id) {
                let (project, item) = row.take().expect("row is live");
                let mut item = Some(item);
                self.0.fold(context, &mut item, recorded, event)?;
                *row = item.map(|item| (project, item));
            }
        }
        Ok((deleted_campaigns, orphans))
    }

    /// Writes the folded rows back: one upsert, one delete.
    async fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        rows: Rows<M::Item>,
    ) -> Result<(), ProjectionError> {
        let mut ids = Vec::new();
        let mut projects = Vec::new();
        let mut bodies = Vec::new();
        let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); COMMON_COLUMNS.len() + M::COLUMNS.len()];
        let mut gone = Vec::new();
        for (id, row) in rows {
            let Some((project, item, body)) =
                row.and_then(|(project, item)| M::body(&item).map(|body| (project, item, body)))
            else {
                gone.push(id);
                continue;
            };
            let common = COMMON_COLUMNS.iter().map(|(name, _)| field(&body, name));
            let values = common.chain(M::values(&item, &body));
            for (column, value) in columns.iter_mut().zip(values) {
                column.push(value);
            }
            ids.push(id);
            projects.push(project);
            // Sent as text: a jsonb parameter would reorder the keys.
            bodies.push(body.to_string());
        }
        if !ids.is_empty() {
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&ids, &projects];
            params.extend(
                columns
                    .iter()
                    .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync)),
            );
            params.push(&bodies);
            tx.execute(&upsert_statement::<M>(), &params).await?;
        }
        if !gone.is_empty() {
            let delete = format!("DELETE FROM {} WHERE id = ANY($1)", table::<M>());
            tx.execute(&delete, &[&gone]).await?;
        }
        Ok(())
    }
}

/// The columns of every owned-rows table besides `id`, `project` and `body`,
/// as in [`OwnedRows::COLUMNS`]; their values are the body's fields.
const COMMON_COLUMNS: [(&str, &str); 2] = [
    ("campaign_id", "campaign_id::uuid"),
    ("version", "version::bigint"),
];

/// The rows' table of `M`.
fn table<M: OwnedRows>() -> &'static str {
    M::TABLES[0]
}

/// `INSERT ... SELECT FROM unnest(...) ON CONFLICT (id) DO UPDATE`: the upsert
/// of every owned-rows table, its columns sent as arrays (`id` uuid, the rest
/// text, converted by each column's expression).
fn upsert_statement<M: OwnedRows>() -> String {
    let table = table::<M>();
    let columns: Vec<(&str, &str)> = COMMON_COLUMNS.iter().chain(M::COLUMNS).copied().collect();
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let expressions: Vec<&str> = columns.iter().map(|(_, expression)| *expression).collect();
    let arrays: Vec<String> = (0..columns.len())
        .map(|i| format!("${}::text[]", i + 3))
        .collect();
    let updates: Vec<String> = ["project"]
        .iter()
        .chain(&names)
        .chain(&["body"])
        .map(|name| format!("{name} = excluded.{name}"))
        .collect();
    format!(
        "INSERT INTO {table} (id, project, {names}, body)
         SELECT id, project, {expressions}, body::json
         FROM unnest($1::uuid[], $2::text[], {arrays}, ${body}::text[]) AS u(id, project, {names}, body)
         ON CONFLICT (id) DO UPDATE SET {updates}",
        names = names.join(", "),
        expressions = expressions.join(", "),
        arrays = arrays.join(", "),
        body = columns.len() + 3,
        updates = updates.join(", "),
    )
}

/// The text of a body field, as `body->>'key'` gives it.
pub fn field(body: &Value, key: &str) -> Option<String> {
    match body.get(key)? {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

#[async_trait]
impl<M: OwnedRows> Projection for Owned<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        M::TABLES
    }

    /// Its own streams, and campaign deletions (which hide its rows).
    fn reads(&self) -> Option<&'static [Reads]> {
        Some(&Self::READS)
    }

    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let changes = self.decode(events)?;
        if changes.is_empty() {
            return Ok(());
        }
        let children: Vec<&M::Event> = changes
            .iter()
            .filter_map(|(_, change)| match change {
                Change::Child(event) => Some(event),
                Change::CampaignDeleted(_) => None,
            })
            .collect();
        let context = self.0.context(tx, &children).await?;
        let mut rows = self.load_rows(tx, &children).await?;
        let campaigns: Vec<Uuid> = children
            .iter()
            .map(|e| M::ids(e).1)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut tombstoned = tombstones::load(tx, M::NAME, &campaigns).await?;
        let (deleted_campaigns, orphans) = self.fold(&context, &changes, &mut rows, &mut tombstoned)?;
        tombstones::record(tx, M::NAME, &deleted_campaigns, &[table::<M>()]).await?;
        let outcome = Outcome {
            changes: &changes,
            deleted_campaigns: &deleted_campaigns,
            orphans: &orphans,
        };
        self.0.after(tx, outcome).await?;
        self.write(tx, rows).await
    }
}
