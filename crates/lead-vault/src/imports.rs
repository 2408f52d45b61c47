//! Asynchronous lead import jobs (`lead_imports`, `lead_import_errors`): the
//! job as the API shows it, read the same way by the command side (its `202`)
//! and the query side (its `GET`). The worker that runs jobs is
//! `command_api::leads::import_worker`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

/// A job's state: `queued` until a worker takes it, `running` (also while it
/// waits to be resumed after its process died), then `completed` or `failed`.
pub const STATES: [&str; 4] = ["queued", "running", "completed", "failed"];

/// An import job, as `GET .../leads/imports/{import_id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = LeadImport)]
pub struct ImportJob {
    pub id: Uuid,
    pub campaign_id: Uuid,
    /// `queued`, `running`, `completed` or `failed`.
    #[schema(pattern = "^(queued|running|completed|failed)$")]
    pub state: String,
    /// Data rows processed so far (the header row excluded).
    pub rows: i64,
    /// Leads created so far.
    pub imported: i64,
    /// Rows skipped so far because their email was already taken.
    pub duplicates: i64,
    /// Invalid rows so far.
    pub failed: i64,
    /// Physical line of the last row processed (0 before the first).
    pub last_line: i64,
    /// Size of the uploaded file, in bytes.
    pub file_bytes: i64,
    /// Why the job failed (`failed` only); the counts say what was done before.
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, campaign_id, state, rows, imported, duplicates, failed, last_line, \
                       file_bytes, failure, created_at, started_at, finished_at";

impl From<&Row> for ImportJob {
    fn from(row: &Row) -> Self {
        Self {
            id: row.get(0),
            campaign_id: row.get(1),
            state: row.get(2),
            rows: row.get(3),
            imported: row.get(4),
            duplicates: row.get(5),
            failed: row.get(6),
            last_line: row.get(7),
            file_bytes: row.get(8),
            failure: row.get(9),
            created_at: row.get(10),
            started_at: row.get(11),
            finished_at: row.get(12),
        }
    }
}

/// A new job, queued: its file is already spooled.
pub struct NewJob<'a> {
    pub id: Uuid,
    pub project: &'a str,
    pub campaign_id: Uuid,
    pub spool_key: &'a str,
    pub file_bytes: i64,
    pub metadata: &'a serde_json::Value,
}

/// Inserts a queued job and returns it as shown.
pub async fn insert(
    client: &(impl GenericClient + Sync),
    job: &NewJob<'_>,
) -> Result<ImportJob, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO lead_imports (id, project, campaign_id, state, spool_key, file_bytes, metadata)
                 VALUES ($1, $2, $3, 'queued', $4, $5, $6) RETURNING {COLUMNS}"
            ),
            &[
                &job.id,
                &job.project,
                &job.campaign_id,
                &job.spool_key,
                &job.file_bytes,
                job.metadata,
            ],
        )
        .await?;
    Ok(ImportJob::from(&row))
}

/// The job `id` of this campaign and project, if there is one.
pub async fn load(
    client: &(impl GenericClient + Sync),
    project: &str,
    campaign_id: Uuid,
    id: Uuid,
) -> Result<Option<ImportJob>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM lead_imports WHERE id = $1 AND campaign_id = $2 AND project = $3"
            ),
            &[&id, &campaign_id, &project],
        )
        .await?;
    Ok(row.as_ref().map(ImportJob::from))
}

/// The header row of the job's file (`None` until the worker read it).
pub async fn columns(
    client: &(impl GenericClient + Sync),
    id: Uuid,
) -> Result<Option<Vec<String>>, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT columns FROM lead_imports WHERE id = $1", &[&id])
        .await?;
    let columns: Option<serde_json::Value> = row.get(0);
    Ok(columns.and_then(|c| serde_json::from_value(c).ok()))
}
