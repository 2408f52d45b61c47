//! The `tasks` read model: one row per live task of a live campaign (see
//! [`crate::owned`] for how it is kept).

use crate::owned::{field, Owned, OwnedRows};
use crate::ProjectionError;
use async_trait::async_trait;
use domain::task::{self, Task, TaskEvent, TaskState};
use event_store::RecordedEvent;
use serde_json::Value;
use uuid::Uuid;

pub type TasksProjection = Owned<Tasks>;

#[derive(Default)]
pub struct Tasks;

#[async_trait]
impl OwnedRows for Tasks {
    type Event = TaskEvent;
    type Item = Task;
    type Context = ();

    const NAME: &'static str = "tasks";
    const STREAM_PREFIX: &'static str = task::STREAM_PREFIX;
    const TABLE: &'static str = "tasks";
    const TABLES: &'static [&'static str] = &["tasks"];
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("campaign_id", "campaign_id::uuid"),
        ("status", "status"),
        ("assigned_to", "assigned_to::uuid"),
        ("created_at", "created_at::timestamptz"),
        ("version", "version::bigint"),
    ];

    fn ids(event: &TaskEvent) -> (Uuid, Uuid) {
        (event.task_id(), event.campaign_id())
    }

    fn created_in(event: &TaskEvent) -> Option<String> {
        match event {
            TaskEvent::Created(created) => Some(created.project.to_string()),
            _ => None,
        }
    }

    fn parse(body: &str) -> Result<Task, serde_json::Error> {
        Ok(Task::from_state(serde_json::from_str::<TaskState>(body)?))
    }

    fn body(item: &Task) -> Option<Value> {
        item.state()
            .map(|state| serde_json::to_value(state).expect("task state serializes"))
    }

    fn campaign(item: &Task) -> Option<Uuid> {
        item.state().map(|state| state.campaign_id)
    }

    fn values(_: &Task, body: &Value) -> Vec<Option<String>> {
        Self::COLUMNS.iter().map(|(name, _)| field(body, name)).collect()
    }

    async fn context(&self, _: &tokio_postgres::Transaction<'_>, _: &[&TaskEvent]) -> Result<(), ProjectionError> {
        Ok(())
    }

    fn fold(
        &self,
        _: &(),
        row: &mut Option<Task>,
        recorded: &RecordedEvent,
        event: &TaskEvent,
    ) -> Result<(), ProjectionError> {
        let task = row.get_or_insert_with(Task::default);
        task.apply(event, recorded.recorded_at, recorded.version);
        if task.state().is_none() {
            *row = None;
        }
        Ok(())
    }
}
