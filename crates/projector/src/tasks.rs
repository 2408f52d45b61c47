//! The `tasks` read model: one row per live task of a live campaign (see
//! [`crate::owned`] for how it is kept).

use crate::owned::{field, owned_aggregate, Owned, OwnedRows};
use async_trait::async_trait;
use domain::task::{self, Task, TaskEvent, TaskState};
use serde_json::Value;

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

    owned_aggregate!(Task, TaskState, TaskEvent, task_id, fold);

    fn values(_: &Task, body: &Value) -> Vec<Option<String>> {
        Self::COLUMNS.iter().map(|(name, _)| field(body, name)).collect()
    }
}
