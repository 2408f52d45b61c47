//! The `tasks` read model: one row per live task of a live campaign (see
//! [`crate::owned`] for how it is kept).

use crate::owned::{field, owned_aggregate, OwnedRows};
use async_trait::async_trait;
use domain::task::{self, Task, TaskEvent, TaskState};
use serde_json::Value;

#[derive(Default)]
pub struct Tasks;

#[async_trait]
impl OwnedRows for Tasks {
    owned_aggregate!(Task, TaskState, TaskEvent, task_id, fold);

    const NAME: &'static str = "tasks";
    const STREAM_PREFIX: &'static str = task::STREAM_PREFIX;
    const TABLES: &'static [&'static str] = &["tasks"];
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("status", "status"),
        ("assigned_to", "assigned_to::uuid"),
        ("created_at", "created_at::timestamptz"),
    ];

    fn values(_: &Task, body: &Value) -> Vec<Option<String>> {
        Self::COLUMNS.iter().map(|(name, _)| field(body, name)).collect()
    }
}
