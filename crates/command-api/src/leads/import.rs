//! `POST /campaigns/{id}/leads/import`: CSV upload, streamed end to end.
//!
//! Three stages connected by small bounded channels, so memory stays flat
//! whatever the file size and the stages overlap:
//!
//! ```text
//! multipart field ──chunks (≤ 8)──► parser thread ──batches (≤ 2)──► 2 writer tasks ──► Postgres
//!   (this handler)                  (csv reader, validation,          (one transaction per batch:
//!                                    keys, encryption)                 claims + keys + events)
//! ```
//!
//! The handler forwards the upload's chunks as they arrive; a blocking thread
//! parses them with the `csv` crate's incremental reader, validates each row,
//! and seals it with a fresh key; [`WRITERS`] async tasks write the batches of
//! [`BATCH_ROWS`] leads, each batch in one transaction: the email claims (duplicates against
//! the campaign, and against other batches of the same file, fail their claim
//! and are skipped), the keys, and the events (`append_in_transaction`, one
//! statement for the whole batch). A slow stage slows the others down instead
//! of queueing data.

use crate::csv_upload::{
    file_field, forward, open_upload, push_bounded, respond, Chunk, CsvSource, Ending, RowError, UploadEnd,
    MAX_REPORTED_ROWS,
};
use crate::kernel::{Writer, CAMPAIGN_NOT_FOUND};
use crate::CommandState;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{Multipart, Path};
use axum::http::HeaderMap;
use axum::response::Response;
use domain::lead::{self, created_event, validate_create, CreateLead, LeadKey, ValidLead};
use domain::{DomainEvent, ProjectSlug};
use event_store::{ExpectedVersion, LogPosition, NewEvent, StreamAppend};
use lead_vault::{email_digest, generate_key, generate_nonce, NewLeadEntry};
use projector::Written as Appended;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;
use web::extract::parse_id;
use web::ApiError;

/// The route's path suffix, for its own request timeout (see `web::middleware`).
pub const PATH_SUFFIX: &str = "/leads/import";
/// Leads written per transaction.
pub const BATCH_ROWS: usize = 1_000;
/// Batch transactions in flight at once. Two keep the database busy while a
/// writer serializes its next batch or waits for a commit; more only contend.
pub const WRITERS: usize = 2;
/// Most distinct custom columns in a file. Each row still holds at most
/// [`lead::CUSTOM_FIELDS_MAX`] non-empty custom values, but an export has one column
/// per custom field name used by *any* lead, so a file must be allowed many
/// more columns than a lead has fields, or exports would not import back.
pub const MAX_CUSTOM_COLUMNS: usize = 1_000;
/// The six standard columns and the custom ones.
pub const MAX_COLUMNS: usize = lead::STANDARD_FIELDS.len() + MAX_CUSTOM_COLUMNS;
/// How long an import waits, after its last batch, for its leads to be
/// listable (read-after-write); it answers anyway when that passes.
pub const READ_MODEL_WAIT: Duration = Duration::from_secs(60);

/// The answer to an import: what happened to every row.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Data rows read (the header row excluded).
    pub rows: u64,
    /// Leads created.
    pub imported: u64,
    /// Rows skipped because their email already belongs to a lead of the
    /// campaign, or to another row of the file.
    pub duplicates: u64,
    /// Rows refused because they are invalid.
    pub failed: u64,
    /// Why rows failed, by line (the first 1,000).
    pub errors: Vec<RowError>,
    /// Which rows were duplicates, by line (the first 1,000).
    pub duplicate_rows: Vec<RowError>,
    /// True when `errors` or `duplicate_rows` were cut at 1,000 entries.
    pub truncated: bool,
}

impl ImportReport {
    fn fail(&mut self, line: u64, field: Option<String>, message: String) {
        self.failed += 1;
        push_bounded(
            &mut self.errors,
            &mut self.truncated,
            RowError { line, field, message },
        );
    }

    fn duplicate(&mut self, line: u64, message: String) {
        self.duplicates += 1;
        push_bounded(
            &mut self.duplicate_rows,
            &mut self.truncated,
            RowError {
                line,
                field: Some("email".into()),
                message,
            },
        );
    }
}

/// The multipart form, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct ImportForm {
    /// A CSV file with a header row. Columns `name`, `email` (required),
    /// `phone`, `source`, `status`, `notes` are matched case-insensitively;
    /// every other column becomes a custom field.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// A row that passed validation, sealed and ready to write.
pub(crate) struct PreparedLead {
    pub(crate) lead_id: Uuid,
    pub(crate) line: u64,
    pub(crate) email_digest: Vec<u8>,
    pub(crate) key: LeadKey,
    pub(crate) event: NewEvent,
}

/// What the parser hands the writer.
struct Batch {
    leads: Vec<PreparedLead>,
}

/// What the parser found, apart from the rows it handed on.
struct ParseOutcome {
    report: ImportReport,
    /// The file has more rows than allowed: reading stopped there.
    row_limit_reached: bool,
    /// Reading stopped at an unreadable record (or a broken upload).
    stopped: Option<String>,
}

/// Everything about the request the parser needs, owned (it runs on a thread).
pub(crate) struct ImportContext {
    pub(crate) campaign_id: Uuid,
    pub(crate) project: ProjectSlug,
    pub(crate) metadata: Value,
    pub(crate) max_rows: u64,
}

/// Import leads from a CSV file.
///
/// Valid rows are imported, invalid rows are reported by line with the reason,
/// and rows whose email is already in the campaign (or elsewhere in the file) are
/// skipped and reported. A file that is not CSV, or has no `email` column, is a
/// 400 with nothing imported. Streams: memory stays flat whatever the size.
///
/// With `Prefer: respond-async` the file is stored and imported in the
/// background: `202` with the job's `Location` as soon as the upload is
/// stored (its progress: `GET .../leads/imports/{import_id}`; every row not
/// imported: `.../errors`).
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns/{campaign_id}/leads/import", tag = "leads",
    request_body(content = ImportForm, content_type = "multipart/form-data"),
    params(
        ("campaign_id" = Uuid, Path),
        ("Prefer" = Option<String>, Header, description = "`respond-async`: import in the background and answer 202 at once"),
    ),
    responses(
        (status = 200, description = "Report of the import", body = ImportReport),
        (status = 202, description = "Queued (`Prefer: respond-async`): the job, also at `Location`", body = lead_vault::imports::ImportJob,
            headers(
                ("Location" = String, description = "The job: `/v1/dev/marketing/campaigns/{campaign_id}/leads/imports/{import_id}`"),
                ("Preference-Applied" = String, description = "`respond-async`"),
            )
        ),
        (status = 400, description = "Not a CSV file, no email column, no `file` field, or an unreadable record (with the report so far)", body = web::error::ErrorBody),
        (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
        (status = 413, description = "File larger than LEAD_IMPORT_MAX_BYTES or with more rows than LEAD_IMPORT_MAX_ROWS (with the report of what was imported before the limit)", body = web::error::ErrorBody),
        (status = 415, description = "Not multipart/form-data", body = web::error::ErrorBody),
    ),
    security(("bearer" = ["leads:write"]))
)]
pub async fn import(
    writer: Writer,
    Path(campaign_id): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let limits = writer.state().lead_import;
    let mut multipart = open_upload(&headers, multipart, limits)?;
    writer.campaign(campaign_id).await?;
    let started = std::time::Instant::now();
    let field = file_field!(multipart)?;
    // The worker cannot write a log outside Postgres yet (docs/kurrentdb.md):
    // there the preference is not applied (RFC 7240 lets a server ignore it)
    // and the import runs synchronously.
    if super::import_async::wants_async(&headers) && writer.state().store.in_postgres() {
        return super::import_async::accept(&writer, campaign_id, field, limits).await;
    }
    let mut metadata = writer.metadata(campaign_id);
    metadata["import_id"] = json!(Uuid::now_v7());
    let context = ImportContext {
        campaign_id,
        project: writer.caller().project.clone(),
        metadata,
        max_rows: limits.max_rows,
    };
    let (upload_end, parsed, written) = run(writer.state(), field, context, limits.max_bytes).await?;
    let report = merge_report(
        parsed.report,
        written.duplicates,
        written.duplicate_count,
        written.imported,
    );
    let written_after = started.elapsed();
    if let Some(position) = written.last_position {
        writer
            .wait_for_read_models_within(position, &imported(campaign_id), READ_MODEL_WAIT)
            .await;
    }
    tracing::info!(
        %campaign_id,
        rows = report.rows,
        imported = report.imported,
        duplicates = report.duplicates,
        failed = report.failed,
        writing_seconds = written_after.as_secs_f64(),
        total_seconds = started.elapsed().as_secs_f64(),
        "lead import finished"
    );
    metrics::counter!("marketing_lead_import_rows_total", "outcome" => "imported").increment(report.imported);
    metrics::counter!("marketing_lead_import_rows_total", "outcome" => "duplicate")
        .increment(report.duplicates);
    metrics::counter!("marketing_lead_import_rows_total", "outcome" => "failed").increment(report.failed);
    let ending = Ending {
        upload: upload_end,
        row_limit_reached: parsed.row_limit_reached,
        stopped: parsed.stopped,
    };
    Ok(respond(report, ending, limits))
}

/// What an import writes: lead creations, on lead streams of one campaign.
fn imported(campaign_id: Uuid) -> [Appended<'static>; 1] {
    [Appended {
        stream_id: lead::STREAM_PREFIX,
        event_type: "LeadCreated",
        campaign_id: Some(campaign_id),
    }]
}

/// The pipeline: the upload forwarded in chunks to the parser thread, whose
/// batches [`WRITERS`] writers append concurrently.
async fn run(
    state: &CommandState,
    field: Field<'_>,
    context: ImportContext,
    max_bytes: u64,
) -> Result<(Option<UploadEnd>, ParseOutcome, Written), ApiError> {
    let campaign_id = context.campaign_id;
    let (chunk_tx, chunk_rx) = mpsc::channel::<io::Result<Chunk>>(8);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(2);
    let parser = tokio::task::spawn_blocking(move || parse(chunk_rx, batch_tx, &context));
    let batch_rx = Arc::new(tokio::sync::Mutex::new(batch_rx));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| tokio::spawn(write_batches(state.clone(), batch_rx.clone(), campaign_id)))
        .collect();
    let upload_end = forward(field, chunk_tx, max_bytes).await;
    let parsed = parser.await.map_err(ApiError::internal)??;
    let mut written = Written::default();
    for writer in writers {
        written.merge(writer.await.map_err(ApiError::internal)??);
    }
    Ok((upload_end, parsed, written))
}

/// The parser's report with the writers' duplicates (found by the claim index)
/// merged in, in line order.
fn merge_report(
    mut report: ImportReport,
    duplicates: Vec<(u64, String)>,
    duplicate_count: u64,
    imported: u64,
) -> ImportReport {
    report.imported = imported;
    report.duplicates += duplicate_count;
    if duplicate_count > duplicates.len() as u64 {
        report.truncated = true;
    }
    for (line, message) in duplicates {
        push_bounded(
            &mut report.duplicate_rows,
            &mut report.truncated,
            RowError {
                line,
                field: Some("email".into()),
                message,
            },
        );
    }
    report.duplicate_rows.sort_by_key(|row| row.line);
    report
}

/// Where each column goes: a standard lead field (one of
/// `lead::STANDARD_FIELDS`), or a custom field under the column's name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Column {
    Standard(&'static str),
    Custom(String),
}

/// Maps the header row: standard columns by name, case-insensitively; every
/// other column is a custom field under its (trimmed) header. A header that
/// is not UTF-8 text, or has no `email` column, means the file is not a lead
/// CSV: 400, before anything is imported.
/// The header row of a lead CSV, mapped to its columns.
pub(crate) fn lead_header(csv: &mut CsvSource) -> Result<Vec<Column>, ApiError> {
    map_header(
        csv.header("the file is not a lead CSV: it is empty; expected a header row with an `email` column")?,
    )
}

fn map_header(header: &csv::ByteRecord) -> Result<Vec<Column>, ApiError> {
    let not_csv = |why: &str| ApiError::bad_request("file", format!("the file is not a lead CSV: {why}"));
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(not_csv(
            "it is empty; expected a header row with an `email` column",
        ));
    }
    if header.len() > MAX_COLUMNS {
        return Err(not_csv(&format!(
            "it has {} columns; at most {MAX_COLUMNS} (the {} standard ones and {MAX_CUSTOM_COLUMNS} custom ones)",
            header.len(),
            lead::STANDARD_FIELDS.len()
        )));
    }
    let mut columns = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let raw = if i == 0 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let text = std::str::from_utf8(raw).map_err(|_| not_csv("the header row is not UTF-8 text"))?;
        let name = text.trim();
        if name.is_empty() {
            return Err(not_csv(&format!("header column {} is empty", i + 1)));
        }
        if name.chars().any(char::is_control) || name.chars().count() > lead::CUSTOM_KEY_MAX {
            return Err(not_csv(&format!(
                "header column {} is not a column name (control characters, or longer than {} characters)",
                i + 1,
                lead::CUSTOM_KEY_MAX
            )));
        }
        let lower = name.to_lowercase();
        let column = match lead::STANDARD_FIELDS.iter().find(|f| **f == lower) {
            Some(field) => Column::Standard(field),
            None => Column::Custom(name.to_owned()),
        };
        if columns.contains(&column) {
            return Err(not_csv(&format!("column {name:?} appears twice")));
        }
        columns.push(column);
    }
    if !columns.contains(&Column::Standard("email")) {
        return Err(ApiError::bad_request("file", "the CSV has no `email` column"));
    }
    Ok(columns)
}

/// Turns one record into a create command, or says why it cannot be one.
fn row_to_input(
    columns: &[Column],
    record: &csv::ByteRecord,
) -> Result<CreateLead, (Option<String>, String)> {
    if record.len() != columns.len() {
        return Err((
            None,
            format!("expected {} fields, found {}", columns.len(), record.len()),
        ));
    }
    let mut input = CreateLead::default();
    let mut custom = lead::CustomFields::new();
    for (column, raw) in columns.iter().zip(record.iter()) {
        let value = std::str::from_utf8(raw)
            .map_err(|_| (field_name(column), "is not valid UTF-8 text".to_owned()))?
            .to_owned();
        if let Some(c) = web::text_guard::first_refused(&value) {
            return Err((field_name(column), web::text_guard::refusal_message(c)));
        }
        match column {
            Column::Standard(field) => input
                .set_field(field, value)
                .map_err(|message| (Some((*field).to_owned()), message))?,
            Column::Custom(name) => {
                custom.insert(name.clone(), value);
            }
        }
    }
    input.custom_fields = Some(custom);
    Ok(input)
}

fn field_name(column: &Column) -> Option<String> {
    Some(match column {
        Column::Standard(field) => (*field).to_owned(),
        Column::Custom(name) => format!("custom_fields.{name}"),
    })
}

/// The parser thread: header, then rows, in batches to the writer.
fn parse(
    chunks: mpsc::Receiver<io::Result<Chunk>>,
    batches: mpsc::Sender<Batch>,
    context: &ImportContext,
) -> Result<ParseOutcome, ApiError> {
    let mut csv = CsvSource::new(chunks);
    let columns = lead_header(&mut csv)?;
    let mut outcome = ParseOutcome {
        report: ImportReport::default(),
        row_limit_reached: false,
        stopped: None,
    };
    let mut batch: Vec<PreparedLead> = Vec::with_capacity(BATCH_ROWS);
    // Duplicates inside one batch are caught here; across batches, the claim
    // index catches them when the later batch is written.
    let mut batch_emails: HashMap<Vec<u8>, u64> = HashMap::with_capacity(BATCH_ROWS);
    loop {
        let line = match csv.next_row() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(reason) => {
                outcome.stopped = Some(reason);
                break;
            }
        };
        if outcome.report.rows == context.max_rows {
            outcome.row_limit_reached = true;
            break;
        }
        outcome.report.rows += 1;
        let valid = match valid_row(&columns, &csv.record) {
            Ok(valid) => valid,
            Err((field, message)) => {
                outcome.report.fail(line, field, message);
                continue;
            }
        };
        let digest = email_digest(context.campaign_id, &valid.personal.email);
        if let Some(first) = batch_emails.get(&digest) {
            outcome
                .report
                .duplicate(line, format!("duplicate email: the same as line {first}"));
            continue;
        }
        batch_emails.insert(digest.clone(), line);
        batch.push(prepare(context, line, digest, valid));
        if batch.len() == BATCH_ROWS {
            batch_emails.clear();
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            if batches.blocking_send(Batch { leads: full }).is_err() {
                // The writer stopped (it failed); its error is the answer.
                return Ok(outcome);
            }
        }
    }
    if !batch.is_empty() {
        let _ = batches.blocking_send(Batch { leads: batch });
    }
    Ok(outcome)
}

/// One record as a valid lead, or the field and message of the first problem.
pub(crate) fn valid_row(
    columns: &[Column],
    record: &csv::ByteRecord,
) -> Result<ValidLead, (Option<String>, String)> {
    let input = row_to_input(columns, record).map_err(|(field, message)| {
        let message = match &field {
            Some(f) if !message.starts_with(f.as_str()) => format!("{f} {message}"),
            _ => message,
        };
        (field, message)
    })?;
    validate_create(input).map_err(|errors| {
        let field = errors.first().map(|e| e.field.clone());
        let message = errors
            .0
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        (field, message)
    })
}

/// A valid row sealed with a new key, ready for the writer.
pub(crate) fn prepare(
    context: &ImportContext,
    line: u64,
    email_digest: Vec<u8>,
    valid: ValidLead,
) -> PreparedLead {
    let lead_id = Uuid::now_v7();
    let key = generate_key();
    let event = created_event(
        lead_id,
        context.campaign_id,
        context.project.clone(),
        valid,
        &key,
        generate_nonce(),
    );
    PreparedLead {
        lead_id,
        line,
        email_digest,
        key,
        event: NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            data: event.to_data(),
            metadata: context.metadata.clone(),
            // Set by the writer when the batch is appended.
            recorded_at: chrono::DateTime::<chrono::Utc>::MIN_UTC,
        },
    }
}

#[derive(Default)]
struct Written {
    imported: u64,
    duplicate_count: u64,
    /// `(line, message)` of duplicates, the first [`MAX_REPORTED_ROWS`].
    duplicates: Vec<(u64, String)>,
    last_position: Option<LogPosition>,
}

impl Written {
    fn merge(&mut self, other: Written) {
        self.imported += other.imported;
        self.duplicate_count += other.duplicate_count;
        let room = MAX_REPORTED_ROWS.saturating_sub(self.duplicates.len());
        self.duplicates.extend(other.duplicates.into_iter().take(room));
        self.last_position = self.last_position.max(other.last_position);
    }
}

/// A writer task: one transaction per batch (claims, keys, events). Several
/// share the parser's channel; each takes the next batch when it is free.
/// Batches are taken in file order and stamped when taken, so leads keep the
/// file's order in lists and exports even when two commit out of order.
async fn write_batches(
    state: CommandState,
    batches: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>,
    campaign_id: Uuid,
) -> Result<Written, ApiError> {
    let mut written = Written::default();
    let mut waited = Duration::ZERO;
    let mut wait_started = std::time::Instant::now();
    loop {
        let (next, recorded_at) = {
            let mut receiver = batches.lock().await;
            let next = receiver.recv().await;
            (next, event_store::now())
        };
        let Some(Batch { leads }) = next else { break };
        waited += wait_started.elapsed();
        written.merge(write_batch(&state, campaign_id, leads, recorded_at).await?);
        wait_started = std::time::Instant::now();
    }
    tracing::debug!(
        waited_for_parser_seconds = waited.as_secs_f64(),
        "lead import writer done"
    );
    Ok(written)
}

/// One batch: its claims and keys, then the events of the leads that won
/// their claim, in one transaction on Postgres (claims first, then the
/// appends, on KurrentDB: `append_claimed`).
async fn write_batch(
    state: &CommandState,
    campaign_id: Uuid,
    leads: Vec<PreparedLead>,
    recorded_at: chrono::DateTime<chrono::Utc>,
) -> Result<Written, ApiError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let accepted = claim_batch(state, &tx, campaign_id, &leads).await?;
    let mut written = Written::default();
    let appends = written.leave_out_duplicates(leads, &accepted, recorded_at);
    if appends.is_empty() {
        tx.commit().await?;
        return Ok(written);
    }
    let count = appends.len() as u64;
    let outcomes = if state.store.in_postgres() {
        let outcomes = event_store::append_in_transaction(&tx, &appends)
            .await
            .map_err(ApiError::internal)?;
        tx.commit().await?;
        state.store.notify_committed();
        outcomes
    } else {
        tx.commit().await?;
        drop(client);
        append_claimed(state, appends).await?
    };
    written.last_position = outcomes.iter().map(|o| o.last_position).max();
    written.imported += count;
    Ok(written)
}

/// Claims the batch's addresses and stores its keys, in `tx`: the ids of the
/// leads whose claim succeeded (on KurrentDB after reclaiming stale claims).
async fn claim_batch(
    state: &CommandState,
    tx: &deadpool_postgres::Transaction<'_>,
    campaign_id: Uuid,
    leads: &[PreparedLead],
) -> Result<std::collections::HashSet<Uuid>, ApiError> {
    let entries: Vec<NewLeadEntry<'_>> = leads
        .iter()
        .map(|lead| NewLeadEntry {
            lead_id: lead.lead_id,
            campaign_id,
            email_digest: lead.email_digest.clone(),
            key: &lead.key,
            idempotency: None,
        })
        .collect();
    let mut accepted = state
        .vault
        .register(&**tx, &entries)
        .await
        .map_err(ApiError::internal)?;
    if !state.store.in_postgres() {
        reclaim_stale(state, tx, &entries, &mut accepted).await?;
    }
    Ok(accepted)
}

impl Written {
    /// The appends of the leads that won their claim, stamped `recorded_at`;
    /// the others are counted (and the first reported) as duplicates.
    fn leave_out_duplicates(
        &mut self,
        leads: Vec<PreparedLead>,
        accepted: &std::collections::HashSet<Uuid>,
        recorded_at: chrono::DateTime<chrono::Utc>,
    ) -> Vec<StreamAppend> {
        let mut appends = Vec::with_capacity(accepted.len());
        for lead in leads {
            if accepted.contains(&lead.lead_id) {
                let mut event = lead.event;
                event.recorded_at = recorded_at;
                appends.push(StreamAppend {
                    stream_id: lead::stream_id(lead.lead_id),
                    expected: ExpectedVersion::NoStream,
                    events: vec![event],
                });
                continue;
            }
            self.duplicate_count += 1;
            if self.duplicates.len() < MAX_REPORTED_ROWS {
                self.duplicates.push((
                    lead.line,
                    "duplicate email: a lead of this campaign (or another row of this file) has it".into(),
                ));
            }
        }
        appends
    }
}

/// A log outside Postgres (KurrentDB): the entries whose claim failed because
/// a crash left the address claimed (`leads::release_if_stale`) claim it now.
async fn reclaim_stale(
    state: &CommandState,
    tx: &deadpool_postgres::Transaction<'_>,
    entries: &[NewLeadEntry<'_>],
    accepted: &mut std::collections::HashSet<Uuid>,
) -> Result<(), ApiError> {
    let mut released = Vec::new();
    for (n, entry) in entries.iter().enumerate() {
        if accepted.contains(&entry.lead_id) {
            continue;
        }
        let holder = state
            .vault
            .holder(&**tx, entry.campaign_id, &entry.email_digest)
            .await
            .map_err(ApiError::internal)?;
        if let Some(holder) = holder {
            if super::release_if_stale(tx, state, holder).await? {
                released.push(n);
            }
        }
    }
    let retry: Vec<NewLeadEntry<'_>> = released
        .into_iter()
        .map(|n| NewLeadEntry {
            idempotency: None,
            email_digest: entries[n].email_digest.clone(),
            ..entries[n]
        })
        .collect();
    let claimed = state
        .vault
        .register(&**tx, &retry)
        .await
        .map_err(ApiError::internal)?;
    accepted.extend(claimed);
    Ok(())
}

/// A log outside Postgres (KurrentDB): the batch's claims and keys are
/// committed; now its leads' streams, one after the other (`append_many` is
/// not atomic there). If that fails part-way, the claims of the leads whose
/// stream did not appear are released, so the report's "not imported" rows
/// can be imported again; a lead whose stream cannot even be checked keeps
/// its claim until the next claimant of its address finds it stale
/// (docs/kurrentdb.md, "CSV imports").
async fn append_claimed(
    state: &CommandState,
    appends: Vec<StreamAppend>,
) -> Result<Vec<event_store::AppendOutcome>, ApiError> {
    let streams: Vec<String> = appends.iter().map(|a| a.stream_id.clone()).collect();
    let failure = match state.store.append_many(appends).await {
        Ok(outcomes) => return Ok(outcomes),
        Err(failure) => failure,
    };
    let client = state.pool.get().await?;
    for stream_id in streams {
        if state.store.read_stream(&stream_id).await?.is_empty() {
            let lead_id = stream_id
                .strip_prefix(lead::STREAM_PREFIX)
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("not a lead stream: {stream_id}")))?;
            state
                .vault
                .erase_lead(&**client, lead_id)
                .await
                .map_err(ApiError::internal)?;
        }
    }
    Err(ApiError::internal(failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv_upload::MAX_RECORD_BYTES;
    use bytes::Bytes;

    /// Runs the parser over `csv` delivered in `chunk`-byte pieces.
    fn parse_all(
        csv: &[u8],
        chunk: usize,
        max_rows: u64,
    ) -> (Result<ParseOutcome, ApiError>, Vec<(u64, String)>) {
        let (chunk_tx, chunk_rx) = mpsc::channel(csv.len() / chunk + 3);
        for piece in csv.chunks(chunk) {
            chunk_tx
                .try_send(Ok(Chunk::Data(Bytes::copy_from_slice(piece))))
                .unwrap();
        }
        chunk_tx.try_send(Ok(Chunk::End)).unwrap();
        drop(chunk_tx);
        let (batch_tx, mut batch_rx) = mpsc::channel(1_000);
        let context = ImportContext {
            campaign_id: Uuid::from_u128(1),
            project: ProjectSlug::parse("acme").unwrap(),
            metadata: json!({}),
            max_rows,
        };
        let outcome = parse(chunk_rx, batch_tx, &context);
        let mut accepted = Vec::new();
        while let Ok(batch) = batch_rx.try_recv() {
            for lead in batch.leads {
                accepted.push((lead.line, lead.event.event_type.clone()));
            }
        }
        (outcome, accepted)
    }

    #[test]
    fn line_numbers_count_breaks_inside_quotes_and_blank_lines() {
        let csv = b"email,notes\r\na@example.com,\"one\r\ntwo\nthree\"\r\n\r\nb@example.com,x\nbad,\n";
        for chunk in [1, 3, 7, 1024] {
            let (outcome, accepted) = parse_all(csv, chunk, 10);
            let outcome = outcome.unwrap();
            let lines: Vec<u64> = accepted.iter().map(|(line, _)| *line).collect();
            assert_eq!(lines, vec![2, 6], "chunk {chunk}");
            assert_eq!(outcome.report.errors[0].line, 7, "chunk {chunk}");
            assert_eq!(outcome.report.rows, 3);
        }
    }

    #[test]
    fn an_abandoned_upload_does_not_import_its_cut_off_last_row() {
        let (chunk_tx, chunk_rx) = mpsc::channel(4);
        chunk_tx
            .try_send(Ok(Chunk::Data(Bytes::from_static(
                b"email,notes\na@example.com,complete\nb@example.com,cut of",
            ))))
            .unwrap();
        drop(chunk_tx);
        let (batch_tx, mut batch_rx) = mpsc::channel(4);
        let context = ImportContext {
            campaign_id: Uuid::from_u128(1),
            project: ProjectSlug::parse("acme").unwrap(),
            metadata: json!({}),
            max_rows: 10,
        };
        let outcome = parse(chunk_rx, batch_tx, &context).unwrap();
        assert!(outcome.stopped.unwrap().contains("abandoned"));
        let batch = batch_rx.try_recv().unwrap();
        assert_eq!(batch.leads.len(), 1, "only the complete row");
    }

    #[test]
    fn rows_beyond_the_limit_are_not_read() {
        let (outcome, accepted) = parse_all(b"email\na@example.com\nb@example.com\nc@example.com\n", 5, 2);
        let outcome = outcome.unwrap();
        assert!(outcome.row_limit_reached);
        assert_eq!((outcome.report.rows, accepted.len()), (2, 2));
    }

    #[test]
    fn oversized_records_stop_the_import_with_a_reason() {
        let mut csv = b"email,notes\na@example.com,\"".to_vec();
        csv.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 100 * 1024));
        csv.extend_from_slice(b"\"\nb@example.com,y\n");
        let (outcome, accepted) = parse_all(&csv, 64 * 1024, 10);
        let outcome = outcome.unwrap();
        assert!(accepted.is_empty());
        let reason = outcome.stopped.unwrap();
        assert!(reason.contains("larger than"), "{reason}");
    }

    #[test]
    fn headers_map_by_name_case_insensitively_and_keep_other_columns() {
        let header = csv::ByteRecord::from(vec!["\u{feff}E-Mail", "EMAIL", " Name ", "Tier"]);
        let columns = map_header(&header).unwrap();
        assert_eq!(
            columns,
            vec![
                Column::Custom("E-Mail".into()),
                Column::Standard("email"),
                Column::Standard("name"),
                Column::Custom("Tier".into())
            ]
        );
        assert!(map_header(&csv::ByteRecord::from(vec!["name", "phone"])).is_err());
        assert!(map_header(&csv::ByteRecord::from(vec!["email", "Email"])).is_err());
        let wide: Vec<String> = std::iter::once("email".to_owned())
            .chain((0..MAX_COLUMNS).map(|i| format!("c{i}")))
            .collect();
        assert!(map_header(&csv::ByteRecord::from(wide)).is_err());
    }
}
