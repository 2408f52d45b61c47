//! The worker of asynchronous lead imports (`Prefer: respond-async`): runs in
//! every process that serves commands and takes queued jobs, one at a time.
//!
//! A job is **claimed with a lease**: `lease_owner` and `lease_until` on its
//! row, taken with `FOR UPDATE SKIP LOCKED` when the job is queued or its
//! lease ran out (its process died, or stopped). The spooled file is read
//! from the start and parsed with the synchronous import's own parser and
//! rules; rows up to the job's `last_line` were processed before and are
//! skipped. Every chunk of [`WorkerConfig::chunk_rows`] rows commits in **one
//! transaction**: first the lease is checked and renewed (`WHERE lease_owner =
//! me`, which also locks the row), then the email claims and keys, the
//! events, the chunk's error rows, and the counters with the new `last_line`.
//! So a worker that lost its lease cannot commit, and a resumed job restarts
//! exactly after the last committed chunk: no row is skipped, none is
//! imported twice (and the email claims would refuse a second lead anyway).
//!
//! One writer per job, not the synchronous import's two: `last_line` is a
//! prefix of the file only if chunks commit in file order.

use crate::csv_upload::{too_large_rows, Chunk, CsvSource};
use crate::kernel::load_root;
use crate::leads::import::{lead_header, prepare, valid_row, ImportContext, PreparedLead};
use crate::CommandState;
use anyhow::Context as _;
use domain::campaign::CampaignState;
use domain::ProjectSlug;
use event_store::{ExpectedVersion, StreamAppend};
use futures::StreamExt;
use lead_vault::{email_digest, NewLeadEntry};
use serde_json::Value;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use web::ApiError;

/// How often an idle worker looks for jobs of other processes (queued there,
/// or left by a process that died); jobs queued here wake it at once.
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often finished jobs past their retention are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// A job taken over this many times without finishing fails: whatever ends
/// its processes (it could be the file itself) would otherwise repeat forever.
pub const MAX_ATTEMPTS: i32 = 5;
/// A spooled file with no job row (its upload's process died before queuing
/// it) is deleted after this long: longer than any upload takes.
const ORPHAN_SPOOL_AGE: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Rows per chunk (one transaction, one step of the progress).
    pub chunk_rows: usize,
    /// How long a claim lasts without a committed chunk renewing it: how long
    /// a job of a process that died waits before another takes it over.
    pub lease: Duration,
    /// How long finished jobs and their error rows are kept.
    pub retention: Duration,
}

/// Runs jobs until `shutdown`; `wake` is notified when a job is queued here.
pub async fn run(state: CommandState, config: WorkerConfig, wake: Arc<Notify>, shutdown: CancellationToken) {
    let me = Uuid::new_v4();
    let mut last_sweep: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        if last_sweep.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            last_sweep = Some(Instant::now());
            if let Err(error) = sweep(&state, config.retention).await {
                tracing::warn!(error = format!("{error:#}"), "lead import retention sweep failed");
            }
        }
        match claim(&state, me, config.lease).await {
            Ok(Some(job)) => {
                let id = job.id;
                if let Err(error) = run_job(&state, &config, me, job, &shutdown).await {
                    tracing::warn!(error = format!("{error:#}"), import_id = %id, "lead import interrupted; it resumes when its lease ends");
                    release(&state, me, id).await;
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(error = format!("{error:#}"), "cannot claim a lead import"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}

/// A job this worker holds the lease of.
struct Claimed {
    id: Uuid,
    project: String,
    campaign_id: Uuid,
    spool_key: Option<String>,
    metadata: Value,
    rows: i64,
    last_line: i64,
    attempts: i32,
}

async fn claim(state: &CommandState, me: Uuid, lease: Duration) -> anyhow::Result<Option<Claimed>> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "UPDATE lead_imports SET state = 'running', lease_owner = $1,
                 lease_until = now() + make_interval(secs => $2),
                 started_at = COALESCE(started_at, now()), attempts = attempts + 1
             WHERE id = (SELECT id FROM lead_imports
                         WHERE state IN ('queued', 'running') AND (lease_until IS NULL OR lease_until < now())
                         ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, project, campaign_id, spool_key, metadata, rows, last_line, attempts",
            &[&me, &lease.as_secs_f64()],
        )
        .await?;
    Ok(row.map(|row| Claimed {
        id: row.get(0),
        project: row.get(1),
        campaign_id: row.get(2),
        spool_key: row.get(3),
        metadata: row.get(4),
        rows: row.get(5),
        last_line: row.get(6),
        attempts: row.get(7),
    }))
}

/// Gives up the lease at once (shutdown, a failed chunk), so the next worker
/// need not wait for it to run out.
async fn release(state: &CommandState, me: Uuid, id: Uuid) {
    let released = async {
        state
            .pool
            .get()
            .await?
            .execute(
                "UPDATE lead_imports SET lease_until = NULL WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
                &[&id, &me],
            )
            .await?;
        anyhow::Ok(())
    };
    if let Err(error) = released.await {
        tracing::warn!(error = format!("{error:#}"), import_id = %id, "cannot release a lead import's lease; it lapses");
    }
}

/// How parsing the spooled file ended.
enum ParseEnd {
    Done,
    RowLimit,
    /// An unreadable record (or storage error) stopped reading.
    Stopped(String),
    /// The writer stopped taking chunks; its error is the outcome.
    Abandoned,
}

/// Runs a claimed job to its end, or returns why it stopped without one (it
/// is then resumed later, by this process or another).
async fn run_job(
    state: &CommandState,
    config: &WorkerConfig,
    me: Uuid,
    job: Claimed,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if job.attempts > MAX_ATTEMPTS {
        let why = format!(
            "the import was interrupted {MAX_ATTEMPTS} times without finishing; the counts say what was imported"
        );
        return finish(state, me, &job, Err(why)).await;
    }
    let project = ProjectSlug::parse(&job.project).map_err(anyhow::Error::msg)?;
    let campaign = load_root::<CampaignState>(state, job.campaign_id, &())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !campaign.state().is_some_and(|c| c.project == project) {
        return finish(state, me, &job, Err("the campaign was deleted".into())).await;
    }
    let Some(spool_key) = job.spool_key.clone() else {
        return finish(state, me, &job, Err("the uploaded file is gone".into())).await;
    };
    let bytes = match state.media.open_spooled(&spool_key).await {
        Ok(bytes) => bytes,
        Err(media::MediaError::NotFound) => {
            let why = "the uploaded file is not in the media store (every process that serves commands \
                       must share MEDIA_STORE_URL or MEDIA_DIR)";
            return finish(state, me, &job, Err(why.into())).await;
        }
        Err(other) => return Err(other.into()),
    };
    let mut metadata = job.metadata.clone();
    metadata["import_id"] = serde_json::json!(job.id);
    let context = ImportContext {
        campaign_id: job.campaign_id,
        project,
        metadata,
        max_rows: state.lead_import.max_rows,
    };
    let resume = Resume {
        after_line: u64::try_from(job.last_line).unwrap_or(0),
        rows_done: u64::try_from(job.rows).unwrap_or(0),
    };
    let (chunk_tx, chunk_rx) = mpsc::channel::<io::Result<Chunk>>(8);
    let (out_tx, mut out_rx) = mpsc::channel::<JobChunk>(2);
    let chunk_rows = config.chunk_rows.max(1);
    let parser =
        tokio::task::spawn_blocking(move || parse_job(chunk_rx, out_tx, &context, resume, chunk_rows));
    let reader = tokio::spawn(forward(bytes, chunk_tx));
    let mut written: anyhow::Result<()> = Ok(());
    while let Some(chunk) = out_rx.recv().await {
        if shutdown.is_cancelled() {
            written = Err(anyhow::anyhow!("the process is shutting down"));
            break;
        }
        if let Err(error) = commit_chunk(state, me, config.lease, &job, chunk).await {
            written = Err(error);
            break;
        }
    }
    drop(out_rx);
    reader.abort();
    let parsed = parser.await.context("the import parser panicked")?;
    written?;
    let outcome = match parsed {
        Err(refused) => Err(refused.to_string()),
        Ok(ParseEnd::Done) => Ok(()),
        Ok(ParseEnd::RowLimit) => Err(too_large_rows(state.lead_import.max_rows)),
        Ok(ParseEnd::Stopped(reason)) => Err(reason),
        Ok(ParseEnd::Abandoned) => anyhow::bail!("the import's writer stopped"),
    };
    finish(state, me, &job, outcome).await
}

/// Sends the spooled file's bytes to the parser thread, then the end.
async fn forward(
    mut bytes: futures::stream::BoxStream<'static, Result<bytes::Bytes, media::MediaError>>,
    chunks: mpsc::Sender<io::Result<Chunk>>,
) {
    while let Some(next) = bytes.next().await {
        let item = next.map(Chunk::Data).map_err(io::Error::other);
        let failed = item.is_err();
        if chunks.send(item).await.is_err() || failed {
            return;
        }
    }
    let _ = chunks.send(Ok(Chunk::End)).await;
}

/// Ends the job `completed` (`Ok`) or `failed` with the reason, and deletes
/// its spooled file. Only while this worker holds the lease.
async fn finish(
    state: &CommandState,
    me: Uuid,
    job: &Claimed,
    outcome: Result<(), String>,
) -> anyhow::Result<()> {
    let (end, failure) = match &outcome {
        Ok(()) => ("completed", None),
        Err(why) => ("failed", Some(why.as_str())),
    };
    let client = state.pool.get().await?;
    let ended = client
        .execute(
            "UPDATE lead_imports SET state = $3, failure = $4, finished_at = now(),
                 lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            &[&job.id, &me, &end, &failure],
        )
        .await?;
    anyhow::ensure!(ended == 1, "the lease was lost before the import could end");
    tracing::info!(import_id = %job.id, campaign_id = %job.campaign_id, state = end, failure, "lead import finished");
    if let Some(key) = &job.spool_key {
        delete_spool(state, &client, job.id, key).await;
    }
    Ok(())
}

/// Deletes a finished job's spooled file; on failure the sweep tries again.
async fn delete_spool(state: &CommandState, client: &deadpool_postgres::Client, id: Uuid, key: &str) {
    let deleted = async {
        state.media.delete_spooled(key).await?;
        client
            .execute("UPDATE lead_imports SET spool_key = NULL WHERE id = $1", &[&id])
            .await?;
        anyhow::Ok(())
    };
    if let Err(error) = deleted.await {
        tracing::warn!(error = format!("{error:#}"), import_id = %id, "cannot delete a finished import's file; the sweep retries");
    }
}

/// Deletes finished jobs (and their error rows) older than `retention`, the
/// files of finished jobs still spooled, and spooled files no job owns.
async fn sweep(state: &CommandState, retention: Duration) -> anyhow::Result<()> {
    let client = state.pool.get().await?;
    client
        .execute(
            "DELETE FROM lead_imports WHERE finished_at < now() - make_interval(secs => $1) AND spool_key IS NULL",
            &[&retention.as_secs_f64()],
        )
        .await?;
    let leftover = client
        .query(
            "SELECT id, spool_key FROM lead_imports WHERE finished_at IS NOT NULL AND spool_key IS NOT NULL",
            &[],
        )
        .await?;
    for row in leftover {
        delete_spool(state, &client, row.get(0), row.get::<_, &str>(1)).await;
    }
    for (name, modified) in state.media.spooled_names().await? {
        if (chrono::Utc::now() - modified).to_std().unwrap_or_default() < ORPHAN_SPOOL_AGE {
            continue;
        }
        let owned = client
            .query_opt("SELECT 1 FROM lead_imports WHERE spool_key = $1", &[&name])
            .await?
            .is_some();
        if !owned {
            state.media.delete_spooled(&name).await?;
        }
    }
    Ok(())
}

/// Where a resumed job starts: rows up to `after_line` were processed.
#[derive(Debug, Clone, Copy)]
struct Resume {
    after_line: u64,
    rows_done: u64,
}

/// A row that was not imported, with its fields as uploaded.
#[derive(Debug)]
struct Issue {
    line: u64,
    kind: &'static str,
    field: Option<String>,
    message: String,
    fields: Vec<String>,
}

/// What the parser hands the writer: the next rows of the file.
struct JobChunk {
    leads: Vec<(PreparedLead, Vec<String>)>,
    issues: Vec<Issue>,
    rows: u64,
    last_line: u64,
    /// The header row, with the first chunk.
    header: Option<Vec<String>>,
}

impl JobChunk {
    fn new(header: Option<Vec<String>>, capacity: usize) -> Self {
        Self {
            leads: Vec::with_capacity(capacity),
            issues: Vec::new(),
            rows: 0,
            last_line: 0,
            header,
        }
    }
}

fn text_fields(record: &csv::ByteRecord) -> Vec<String> {
    record
        .iter()
        .map(|raw| String::from_utf8_lossy(raw).into_owned())
        .collect()
}

/// The parser thread: the header, then chunks of rows after `resume`.
fn parse_job(
    chunks: mpsc::Receiver<io::Result<Chunk>>,
    out: mpsc::Sender<JobChunk>,
    context: &ImportContext,
    resume: Resume,
    chunk_rows: usize,
) -> Result<ParseEnd, ApiError> {
    let mut csv = CsvSource::new(chunks);
    let columns = lead_header(&mut csv)?;
    let mut header = text_fields(&csv.record);
    if let Some(first) = header.first_mut() {
        *first = first.trim_start_matches('\u{feff}').to_owned();
    }
    let mut chunk = JobChunk::new(Some(header), chunk_rows);
    let mut rows_total = resume.rows_done;
    // Duplicates inside one chunk are caught here; across chunks (and
    // against the campaign), by the claims when the chunk is written.
    let mut emails: HashMap<Vec<u8>, u64> = HashMap::with_capacity(chunk_rows);
    let end = loop {
        let line = match csv.next_row() {
            Ok(Some(line)) => line,
            Ok(None) => break ParseEnd::Done,
            Err(reason) => break ParseEnd::Stopped(reason),
        };
        if line <= resume.after_line {
            continue;
        }
        if rows_total == context.max_rows {
            break ParseEnd::RowLimit;
        }
        rows_total += 1;
        chunk.rows += 1;
        chunk.last_line = line;
        match valid_row(&columns, &csv.record) {
            Err((field, message)) => chunk.issues.push(Issue {
                line,
                kind: "invalid",
                field,
                message,
                fields: text_fields(&csv.record),
            }),
            Ok(valid) => {
                let digest = email_digest(context.campaign_id, &valid.personal.email);
                if let Some(first) = emails.get(&digest) {
                    chunk.issues.push(Issue {
                        line,
                        kind: "duplicate",
                        field: Some("email".into()),
                        message: format!("duplicate email: the same as line {first}"),
                        fields: text_fields(&csv.record),
                    });
                } else {
                    emails.insert(digest.clone(), line);
                    let fields = text_fields(&csv.record);
                    chunk.leads.push((prepare(context, line, digest, valid), fields));
                }
            }
        }
        if chunk.rows as usize == chunk_rows {
            emails.clear();
            let full = std::mem::replace(&mut chunk, JobChunk::new(None, chunk_rows));
            if out.blocking_send(full).is_err() {
                return Ok(ParseEnd::Abandoned);
            }
        }
    };
    // The last chunk goes even without rows: it may carry the header.
    if out.blocking_send(chunk).is_err() {
        return Ok(ParseEnd::Abandoned);
    }
    Ok(end)
}

/// One chunk in one transaction, under the lease: claims, keys, events, error
/// rows and progress.
async fn commit_chunk(
    state: &CommandState,
    me: Uuid,
    lease: Duration,
    job: &Claimed,
    chunk: JobChunk,
) -> anyhow::Result<()> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let held = tx
        .execute(
            "UPDATE lead_imports SET lease_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            &[&job.id, &me, &lease.as_secs_f64()],
        )
        .await?;
    anyhow::ensure!(held == 1, "another worker took the import over");
    let JobChunk {
        leads,
        mut issues,
        rows,
        last_line,
        header,
    } = chunk;
    let entries: Vec<NewLeadEntry<'_>> = leads
        .iter()
        .map(|(lead, _)| NewLeadEntry {
            lead_id: lead.lead_id,
            campaign_id: job.campaign_id,
            email_digest: lead.email_digest.clone(),
            key: &lead.key,
            idempotency: None,
        })
        .collect();
    let accepted = state.vault.register(&*tx, &entries).await?;
    drop(entries);
    let appends = split_accepted(leads, &accepted, &mut issues);
    if !appends.is_empty() {
        event_store::append_in_transaction(&tx, &appends).await?;
    }
    insert_issues(&tx, job.id, &issues).await?;
    let imported = appends.len() as i64;
    let duplicates = issues.iter().filter(|i| i.kind == "duplicate").count() as i64;
    let failed = issues.len() as i64 - duplicates;
    let header = header.map(|h| serde_json::json!(h));
    tx.execute(
        "UPDATE lead_imports SET rows = rows + $2, imported = imported + $3, duplicates = duplicates + $4,
             failed = failed + $5, last_line = GREATEST(last_line, $6), columns = COALESCE(columns, $7)
         WHERE id = $1",
        &[
            &job.id,
            &(rows as i64),
            &imported,
            &duplicates,
            &failed,
            &(last_line as i64),
            &header,
        ],
    )
    .await?;
    tx.commit().await?;
    state.store.notify_committed();
    metrics::counter!("marketing_lead_import_rows_total", "outcome" => "imported").increment(imported as u64);
    metrics::counter!("marketing_lead_import_rows_total", "outcome" => "duplicate")
        .increment(duplicates as u64);
    metrics::counter!("marketing_lead_import_rows_total", "outcome" => "failed").increment(failed as u64);
    Ok(())
}

/// The appends of the leads whose claims were accepted; the others are
/// duplicates, added to `issues`.
fn split_accepted(
    leads: Vec<(PreparedLead, Vec<String>)>,
    accepted: &std::collections::HashSet<Uuid>,
    issues: &mut Vec<Issue>,
) -> Vec<StreamAppend> {
    let recorded_at = event_store::now();
    let mut appends = Vec::with_capacity(accepted.len());
    for (lead, fields) in leads {
        if accepted.contains(&lead.lead_id) {
            let mut event = lead.event;
            event.recorded_at = recorded_at;
            appends.push(StreamAppend {
                stream_id: domain::lead::stream_id(lead.lead_id),
                expected: ExpectedVersion::NoStream,
                events: vec![event],
            });
        } else {
            issues.push(Issue {
                line: lead.line,
                kind: "duplicate",
                field: Some("email".into()),
                message: "duplicate email: a lead of this campaign (or another row of this file) has it"
                    .into(),
                fields,
            });
        }
    }
    appends
}

async fn insert_issues(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
    issues: &[Issue],
) -> anyhow::Result<()> {
    if issues.is_empty() {
        return Ok(());
    }
    let lines: Vec<i64> = issues.iter().map(|i| i.line as i64).collect();
    let kinds: Vec<&str> = issues.iter().map(|i| i.kind).collect();
    let fields: Vec<Option<&str>> = issues.iter().map(|i| i.field.as_deref()).collect();
    let messages: Vec<&str> = issues.iter().map(|i| i.message.as_str()).collect();
    let values: Vec<String> = issues
        .iter()
        .map(|i| serde_json::to_string(&i.fields).expect("strings serialize"))
        .collect();
    tx.execute(
        "INSERT INTO lead_import_errors (import_id, line, kind, field, message, fields)
         SELECT $1::uuid, l, k, f, m, v::jsonb
         FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) AS t(l, k, f, m, v)",
        &[&id, &lines, &kinds, &fields, &messages, &values],
    )
    .await?;
    Ok(())
}
