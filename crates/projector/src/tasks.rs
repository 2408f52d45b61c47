//! The `tasks` read model: one row per live task of a live campaign.

use crate::{Projection, ProjectionError};
use async_trait::async_trait;
use domain::campaign::{self, CampaignEvent};
use domain::task::{self, Task, TaskEvent, TaskState};
use domain::DomainEvent;
use event_store::RecordedEvent;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

pub struct TasksProjection;

/// What a batch says, in log order.
pub(crate) enum Change<E> {
    Child(E),
    CampaignDeleted(Uuid),
}

/// Decodes the events a child projection (tasks, content) cares about: its own
/// stream's events and campaign deletions.
pub(crate) fn decode<'a, E: DomainEvent>(
    events: &'a [RecordedEvent],
    prefix: &str,
) -> Result<Vec<(&'a RecordedEvent, Change<E>)>, ProjectionError> {
    let mut decoded = Vec::new();
    for event in events {
        let fail = |source| ProjectionError::Decode {
            position: event.position,
            source,
        };
        if event.stream_id.starts_with(prefix) {
            let child = E::from_data(&event.event_type, event.data.clone()).map_err(fail)?;
            decoded.push((event, Change::Child(child)));
        } else if event.stream_id.starts_with(campaign::STREAM_PREFIX)
            && event.event_type == "CampaignDeleted"
        {
            if let CampaignEvent::Deleted(deleted) =
                CampaignEvent::from_data(&event.event_type, event.data.clone()).map_err(fail)?
            {
                decoded.push((event, Change::CampaignDeleted(deleted.campaign_id)));
            }
        }
    }
    Ok(decoded)
}

#[async_trait]
impl Projection for TasksProjection {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tasks", "tasks_deleted_campaigns"]
    }

    /// Its own events, and campaign deletions (which hide its rows).
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("Task") || event_type == "CampaignDeleted"
    }

    /// Loads the rows the batch touches, folds every event in memory with the
    /// domain's own `apply`, then writes back with a few set-based statements.
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let decoded = decode::<TaskEvent>(events, task::STREAM_PREFIX)?;
        if decoded.is_empty() {
            return Ok(());
        }
        let mut task_ids = Vec::new();
        let mut campaign_ids = Vec::new();
        for (_, change) in &decoded {
            if let Change::Child(event) = change {
                task_ids.push(event.task_id());
                campaign_ids.push(event.campaign_id());
            }
        }
        // task id -> (project, task); `None` once gone.
        let mut rows: HashMap<Uuid, Option<(String, Task)>> = HashMap::new();
        for row in tx
            .query(
                "SELECT id, project, body::text FROM tasks WHERE id = ANY($1)",
                &[&task_ids],
            )
            .await?
        {
            let body: String = row.get(2);
            let state: TaskState =
                serde_json::from_str(&body).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
            rows.insert(row.get(0), Some((row.get(1), Task::from_state(state))));
        }
        let mut tombstoned: HashSet<Uuid> = tx
            .query(
                "SELECT campaign_id FROM tasks_deleted_campaigns WHERE campaign_id = ANY($1)",
                &[&campaign_ids],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut newly_deleted_campaigns = Vec::new();
        for (recorded, change) in &decoded {
            match change {
                &Change::CampaignDeleted(campaign_id) => {
                    tombstoned.insert(campaign_id);
                    newly_deleted_campaigns.push(campaign_id);
                    for row in rows.values_mut() {
                        if row
                            .as_ref()
                            .is_some_and(|(_, t)| t.state().is_some_and(|s| s.campaign_id == campaign_id))
                        {
                            *row = None;
                        }
                    }
                }
                Change::Child(event) => {
                    let id = event.task_id();
                    if tombstoned.contains(&event.campaign_id()) {
                        rows.insert(id, None);
                        continue;
                    }
                    if let TaskEvent::Created(created) = event {
                        let mut task = Task::default();
                        task.apply(event, recorded.recorded_at, recorded.version);
                        rows.insert(id, Some((created.project.to_string(), task)));
                    } else if let Some(Some((_, task))) = rows.get_mut(&id) {
                        task.apply(event, recorded.recorded_at, recorded.version);
                        if task.state().is_none() {
                            rows.insert(id, None);
                        }
                    }
                }
            }
        }
        let mut bodies = Vec::new();
        let mut projects = Vec::new();
        let mut gone = Vec::new();
        for (id, row) in rows {
            match row.and_then(|(project, task)| task.state().map(|s| (project, s.clone()))) {
                Some((project, state)) => {
                    // Sent as text: a jsonb parameter would reorder the keys.
                    bodies.push(serde_json::to_string(&state).expect("task state serializes"));
                    projects.push(project);
                }
                None => gone.push(id),
            }
        }
        if !bodies.is_empty() {
            tx.execute(
                "INSERT INTO tasks (id, campaign_id, project, status, assigned_to, created_at, version, body)
                 SELECT (b->>'id')::uuid, (b->>'campaign_id')::uuid, p, b->>'status',
                        (b->>'assigned_to')::uuid, (b->>'created_at')::timestamptz,
                        (b->>'version')::bigint, b
                 FROM unnest($1::text[], $2::text[]) AS t(body, p),
                      LATERAL (SELECT t.body::json AS b) AS parsed
                 ON CONFLICT (id) DO UPDATE SET
                     status = excluded.status, assigned_to = excluded.assigned_to,
                     version = excluded.version, body = excluded.body",
                &[&bodies, &projects],
            )
            .await?;
        }
        if !gone.is_empty() {
            tx.execute("DELETE FROM tasks WHERE id = ANY($1)", &[&gone])
                .await?;
        }
        if !newly_deleted_campaigns.is_empty() {
            tx.execute(
                "INSERT INTO tasks_deleted_campaigns (campaign_id) SELECT unnest($1::uuid[])
                 ON CONFLICT DO NOTHING",
                &[&newly_deleted_campaigns],
            )
            .await?;
            tx.execute(
                "DELETE FROM tasks WHERE campaign_id = ANY($1)",
                &[&newly_deleted_campaigns],
            )
            .await?;
        }
        Ok(())
    }
}
