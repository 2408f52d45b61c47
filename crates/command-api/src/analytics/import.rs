//! `POST /campaigns/{id}/analytics/import`: bulk backfill from a CSV file,
//! streamed end to end like the lead import (`crate::csv_upload`):
//!
//! ```text
//! multipart field ──chunks (≤ 8)──► parser thread ──batches (≤ 2)──► one writer task ──► Postgres
//!   (this handler)                  (csv reader, the domain's          (one append_many per batch:
//!                                    row checks)                        one statement, one transaction)
//! ```
//!
//! Each valid row becomes one event (`domain::analytics::import`): in
//! `replace` mode (the default) an `AnalyticsRestated` on its day and source's
//! stream, exactly what a `PUT` of that day appends, skipped when the day
//! already holds those figures; in `add` mode an `AnalyticsRecorded` on a
//! stream of its own, what a `POST` appends. Invalid rows are reported by line
//! and skipped; the valid ones land (as in the lead import), so a corrected
//! file can be imported again in `replace` mode without counting anything twice.
//!
//! One writer, so the log holds the rows in file order: a day and source
//! that appears twice in a file ends as its last row says, and in `add` mode
//! a `last` metric keeps the file's last value. The parser runs ahead on its
//! own thread, so parsing and writing overlap; a batch is one statement,
//! planned (its day streams read, its events built) while the batch before it
//! is being appended.

use crate::csv_upload::{
    file_field, forward, open_upload, push_bounded, respond, too_large_file, Chunk, CsvSource, Ending,
    ImportLimits, RowError, UploadEnd,
};
use crate::kernel::{Writer, CAMPAIGN_NOT_FOUND};
use crate::CommandState;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{Multipart, Path, Query};
use axum::http::HeaderMap;
use axum::response::Response;
use domain::analytics::import::{map_header, parse_row, Column, ImportMode, ImportRow};
use domain::analytics::{self, AnalyticsEvent, Metrics};
use domain::campaign::CampaignState;
use domain::{Currency, DomainEvent};
use event_store::{AppendError, ExpectedVersion, LogPosition, NewEvent, StreamAppend};
use projector::Written as Appended;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;
use web::extract::parse_id;
use web::ApiError;

/// The route's path suffix, for its own request timeout (see `web::middleware`).
pub const PATH_SUFFIX: &str = "/analytics/import";
/// Rows appended per statement.
pub const BATCH_ROWS: usize = 2_000;
/// How long an import waits, after its last batch, for the rollups to include
/// it (read-after-write); it answers anyway when that passes.
pub const READ_MODEL_WAIT: Duration = Duration::from_secs(60);
/// Batches the writer appends before the rollups have applied the one
/// before them: enough to overlap writing with projecting, few enough that
/// the rollups read the import's events from the store's tail cache
/// (`event_store::tail`, 4,096 events) instead of each of their shards
/// reading them again from the database (12 µs of Postgres time per row
/// when the rollups fell further behind).
const BATCHES_AHEAD: usize = 2;
/// Attempts at a `replace` batch whose day streams a concurrent `PUT` moved.
const CONFLICT_ATTEMPTS: usize = 5;

/// What happened to every row of an import.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct AnalyticsImportReport {
    /// `replace` or `add`, as applied.
    pub mode: &'static str,
    /// Data rows read (the header row excluded).
    pub rows: u64,
    /// Rows appended: a restatement each (`replace`) or a record each (`add`).
    pub imported: u64,
    /// `replace` rows whose day and source already held exactly these
    /// figures: nothing appended (as for a repeated `PUT`).
    pub unchanged: u64,
    /// Rows refused because they are invalid; nothing of them was written.
    pub failed: u64,
    /// Why rows failed, by line (the first 1,000).
    pub errors: Vec<RowError>,
    /// True when `errors` was cut at 1,000 entries.
    pub truncated: bool,
}

/// The multipart form, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct AnalyticsImportForm {
    /// A CSV file with a header row: `date` and `source` (required),
    /// `impressions`, `clicks`, `conversions`, `cost`, `revenue`, `currency`
    /// (matched case-insensitively); every other column is a custom metric.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// The query parameters, for the OpenAPI document (read by [`mode`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ImportQuery {
    /// `replace` (default): each row restates its day and source, so a
    /// re-import changes nothing; `add`: each row adds to its day and source.
    #[param(pattern = "^(replace|add)$")]
    mode: Option<String>,
}

/// Everything the parser needs, owned (it runs on a thread).
struct ParseContext {
    currency: Currency,
    max_rows: u64,
}

/// What the parser found, apart from the rows it handed on.
struct ParseOutcome {
    report: AnalyticsImportReport,
    row_limit_reached: bool,
    stopped: Option<String>,
}

/// Everything the writer needs.
struct WriteContext {
    campaign: CampaignState,
    mode: ImportMode,
    metadata: Value,
}

#[derive(Default)]
struct Written {
    imported: u64,
    unchanged: u64,
    last_position: Option<LogPosition>,
}

/// Import a campaign's analytics from a CSV file.
///
/// One row per day and source. Valid rows are imported, invalid rows are
/// reported by line with the reason (and written nowhere). A file that is not
/// CSV, or has no `date` or `source` column, is a 400 with nothing imported.
/// Streams: memory stays flat whatever the size.
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns/{campaign_id}/analytics/import", tag = "analytics",
    request_body(content = AnalyticsImportForm, content_type = "multipart/form-data"),
    params(("campaign_id" = Uuid, Path), ImportQuery),
    responses(
        (status = 200, description = "Report of the import", body = AnalyticsImportReport),
        (status = 400, description = "Not an analytics CSV, no `file` field, a bad `mode`, or an unreadable record (with the report so far)", body = web::error::ErrorBody),
        (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
        (status = 409, description = "Concurrent restatements of the same days kept conflicting (the batches before were imported)", body = web::error::ErrorBody),
        (status = 413, description = "File larger than ANALYTICS_IMPORT_MAX_BYTES or with more rows than ANALYTICS_IMPORT_MAX_ROWS (with the report of what was imported before the limit)", body = web::error::ErrorBody),
        (status = 415, description = "Not multipart/form-data", body = web::error::ErrorBody),
    ),
    security(("bearer" = ["analytics:write"]))
)]
pub async fn import(
    writer: Writer,
    Path(campaign_id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let limits = writer.state().analytics_import;
    let mode = mode(query)?;
    let mut multipart = open_upload(&headers, multipart, limits)?;
    let campaign = writer.campaign(campaign_id).await?.live().clone();
    let started = std::time::Instant::now();
    let field = file_field!(multipart)?;
    let mut metadata = writer.metadata(campaign_id);
    metadata["import_id"] = json!(Uuid::now_v7());
    let parse_context = ParseContext {
        currency: campaign.details.currency,
        max_rows: limits.max_rows,
    };
    let write_context = WriteContext {
        campaign,
        mode,
        metadata,
    };
    let (upload_end, parsed, written) =
        run(writer.state(), field, parse_context, write_context, limits).await?;
    let mut report = parsed.report;
    report.mode = mode.as_str();
    report.imported = written.imported;
    report.unchanged = written.unchanged;
    let written_after = started.elapsed();
    if let Some(position) = written.last_position {
        writer
            .wait_for_read_models_within(position, &imported(campaign_id, mode), READ_MODEL_WAIT)
            .await;
    }
    tracing::info!(
        %campaign_id,
        mode = mode.as_str(),
        rows = report.rows,
        imported = report.imported,
        unchanged = report.unchanged,
        failed = report.failed,
        writing_seconds = written_after.as_secs_f64(),
        total_seconds = started.elapsed().as_secs_f64(),
        "analytics import finished"
    );
    let ending = Ending {
        upload: upload_end,
        row_limit_reached: parsed.row_limit_reached,
        stopped: parsed.stopped,
    };
    Ok(respond(report, ending, limits))
}

/// `mode` from the query string: the only parameter, at most once.
fn mode(
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<ImportMode, ApiError> {
    let Query(pairs) =
        query.map_err(|e| ApiError::bad_request("query", format!("invalid query string: {e}")))?;
    let mut mode = None;
    for (name, value) in pairs {
        if name != "mode" {
            return Err(ApiError::bad_request(
                name.clone(),
                format!("unknown query parameter {name:?}; expected mode"),
            ));
        }
        if mode.is_some() {
            return Err(ApiError::bad_request("mode", "mode is given more than once"));
        }
        mode = Some(ImportMode::parse("mode", &value).map_err(|m| ApiError::bad_request("mode", m))?);
    }
    Ok(mode.unwrap_or_default())
}

/// What an import writes: one kind of analytics event, of one campaign.
fn imported(campaign_id: Uuid, mode: ImportMode) -> [Appended<'static>; 1] {
    [Appended {
        stream_id: analytics::STREAM_PREFIX,
        event_type: match mode {
            ImportMode::Replace => "AnalyticsRestated",
            ImportMode::Add => "AnalyticsRecorded",
        },
        campaign_id: Some(campaign_id),
    }]
}

/// The pipeline: the upload forwarded in chunks to the parser thread, whose
/// batches one writer appends in file order.
async fn run(
    state: &CommandState,
    field: Field<'_>,
    parse_context: ParseContext,
    write_context: WriteContext,
    limits: ImportLimits,
) -> Result<(Option<UploadEnd>, ParseOutcome, Written), ApiError> {
    let (chunk_tx, chunk_rx) = mpsc::channel::<io::Result<Chunk>>(8);
    let (batch_tx, batch_rx) = mpsc::channel::<Vec<ImportRow>>(2);
    let parser = tokio::task::spawn_blocking(move || parse(chunk_rx, batch_tx, &parse_context));
    let writer = tokio::spawn(write_batches(state.clone(), batch_rx, write_context));
    let upload_end = forward(field, chunk_tx, limits.max_bytes).await;
    let parsed = match parser.await.map_err(ApiError::internal)? {
        // A file cut at the size limit before its header was read is too
        // large, not unreadable.
        Err(_) if matches!(upload_end, Some(UploadEnd::TooLarge)) => return Err(too_large_file(limits)),
        parsed => parsed?,
    };
    let written = writer.await.map_err(ApiError::internal)??;
    Ok((upload_end, parsed, written))
}

/// The header's columns, or why the file is not an analytics CSV (400).
fn columns(header: &csv::ByteRecord) -> Result<Vec<Column>, ApiError> {
    let not_csv =
        |why: &str| ApiError::bad_request("file", format!("the file is not an analytics CSV: {why}"));
    let names = header
        .iter()
        .map(std::str::from_utf8)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| not_csv("the header row is not UTF-8 text"))?;
    map_header(&names).map_err(|why| not_csv(&why))
}

/// The parser thread: header, then rows, in batches to the writer.
fn parse(
    chunks: mpsc::Receiver<io::Result<Chunk>>,
    batches: mpsc::Sender<Vec<ImportRow>>,
    context: &ParseContext,
) -> Result<ParseOutcome, ApiError> {
    let mut csv = CsvSource::new(chunks);
    let columns = columns(csv.header(
        "the file is not an analytics CSV: it is empty; expected a header row with `date` and `source` columns",
    )?)?;
    let mut outcome = ParseOutcome {
        report: AnalyticsImportReport::default(),
        row_limit_reached: false,
        stopped: None,
    };
    let mut batch = Vec::with_capacity(BATCH_ROWS);
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
        let cells: Result<Vec<&str>, _> = csv.record.iter().map(std::str::from_utf8).collect();
        let row = match cells {
            Err(_) => Err((None, "the row is not valid UTF-8 text".to_owned())),
            Ok(cells) => parse_row(&columns, &cells, context.currency).map_err(|p| (p.field, p.message)),
        };
        match row {
            Ok(row) => batch.push(row),
            Err((field, message)) => {
                let report = &mut outcome.report;
                report.failed += 1;
                push_bounded(
                    &mut report.errors,
                    &mut report.truncated,
                    RowError { line, field, message },
                );
            }
        }
        if batch.len() == BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            if batches.blocking_send(full).is_err() {
                // The writer stopped (it failed); its error is the answer.
                return Ok(outcome);
            }
        }
    }
    if !batch.is_empty() {
        let _ = batches.blocking_send(batch);
    }
    Ok(outcome)
}

/// The writer: one `append_many` (one statement) per batch, in file order,
/// each batch planned while the one before it is being appended (so the
/// append, the import's longest step, is the only one the batches wait on in
/// line). A plan made beside an append sees the day streams as that append
/// leaves them through the in-flight batch's [`Plan::after`], whether or not
/// the database already shows them: what the writer itself appends it knows
/// exactly. A stream that a concurrent `PUT` moved meanwhile fails the
/// append's version guard, and the batch is planned again from the database.
async fn write_batches(
    state: CommandState,
    mut batches: mpsc::Receiver<Vec<ImportRow>>,
    context: WriteContext,
) -> Result<Written, ApiError> {
    let context = Arc::new(context);
    let mut written = Written::default();
    let mut ahead: VecDeque<LogPosition> = VecDeque::with_capacity(BATCHES_AHEAD);
    let appended = imported(context.campaign.id, context.mode);
    // Off once a wait timed out: rollups that are down (or a projector
    // process that is not running) must not hold every batch for the wait.
    let mut paced = true;
    let mut in_flight: Option<InFlight> = None;
    while let Some(rows) = batches.recv().await {
        let seen = in_flight.as_ref().map(|f| &f.after);
        let plan = plan(&state, &context, rows, seen).await?;
        if let Some(previous) = in_flight.take() {
            let position = previous.finish(&mut written).await?;
            ahead.extend(position);
        }
        if ahead.len() == BATCHES_AHEAD {
            if let Some(oldest) = ahead.pop_front().filter(|_| paced) {
                // A rollup that cannot keep up slows the import down instead
                // of being outrun; the import answers at the rollups' pace
                // either way (read-after-write).
                paced = state
                    .progress
                    .wait_for_writes(oldest, Some(&appended), READ_MODEL_WAIT)
                    .await;
            }
        }
        in_flight = Some(InFlight::start(&state, &context, plan));
    }
    if let Some(last) = in_flight {
        last.finish(&mut written).await?;
    }
    Ok(written)
}

/// A batch whose append runs on a task of its own.
struct InFlight {
    /// The batch's day streams as its append leaves them.
    after: Heads,
    task: tokio::task::JoinHandle<Result<Written, ApiError>>,
}

impl InFlight {
    fn start(state: &CommandState, context: &Arc<WriteContext>, mut plan: Plan) -> Self {
        let after = std::mem::take(&mut plan.after);
        let (state, context) = (state.clone(), context.clone());
        let task = tokio::spawn(async move { append(&state, &context, plan).await });
        InFlight { after, task }
    }

    /// Waits for the append; counts it into `written`.
    async fn finish(self, written: &mut Written) -> Result<Option<LogPosition>, ApiError> {
        let batch = self.task.await.map_err(ApiError::internal)??;
        written.imported += batch.imported;
        written.unchanged += batch.unchanged;
        written.last_position = written.last_position.max(batch.last_position);
        Ok(batch.last_position)
    }
}

/// Appends a batch's plan; in `replace` mode, a plan whose day streams a
/// concurrent `PUT` moved is made again from the streams as they now are.
async fn append(state: &CommandState, context: &WriteContext, mut plan: Plan) -> Result<Written, ApiError> {
    for _ in 0..CONFLICT_ATTEMPTS {
        let (events, unchanged) = (plan.events, plan.unchanged);
        if plan.appends.is_empty() {
            return Ok(Written {
                unchanged,
                ..Written::default()
            });
        }
        match state.store.append_many(std::mem::take(&mut plan.appends)).await {
            Ok(outcomes) => {
                return Ok(Written {
                    imported: events,
                    unchanged,
                    last_position: outcomes.iter().map(|o| o.last_position).max(),
                })
            }
            Err(AppendError::Conflict { .. }) if context.mode == ImportMode::Replace => {
                let rows = std::mem::take(&mut plan.rows);
                plan = plan_restatements(state, context, rows, None).await?;
            }
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    Err(ApiError::Conflict(
        "the import's days kept being restated concurrently; the batches before this one were imported"
            .into(),
    ))
}

fn new_event(
    event: &AnalyticsEvent,
    metadata: &Value,
    recorded_at: chrono::DateTime<chrono::Utc>,
) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        data: event.to_data(),
        metadata: metadata.clone(),
        recorded_at,
    }
}

/// One batch's appends.
#[derive(Default)]
struct Plan {
    appends: Vec<StreamAppend>,
    events: u64,
    unchanged: u64,
    /// `replace`: each appended day stream's version and figures once the
    /// appends are in.
    after: Heads,
    /// `replace`: the batch's rows, to plan it again after a conflict.
    rows: Vec<ImportRow>,
}

async fn plan(
    state: &CommandState,
    context: &WriteContext,
    rows: Vec<ImportRow>,
    seen: Option<&Heads>,
) -> Result<Plan, ApiError> {
    match context.mode {
        ImportMode::Add => Ok(plan_records(context, rows)),
        ImportMode::Replace => plan_restatements(state, context, rows, seen).await,
    }
}

/// `add`: each row a record on a new stream (nothing to contend for).
fn plan_records(context: &WriteContext, rows: Vec<ImportRow>) -> Plan {
    let recorded_at = event_store::now();
    let appends: Vec<StreamAppend> = rows
        .into_iter()
        .map(|row| {
            let record_id = Uuid::now_v7();
            let event = AnalyticsEvent::Recorded(row.recorded(record_id, &context.campaign));
            StreamAppend {
                stream_id: analytics::stream_id(record_id),
                expected: ExpectedVersion::NoStream,
                events: vec![new_event(&event, &context.metadata, recorded_at)],
            }
        })
        .collect();
    Plan {
        events: appends.len() as u64,
        appends,
        ..Plan::default()
    }
}

/// `replace`: each row a restatement of its day's stream, appended at the
/// stream's version, unless the day already holds those figures (each row
/// compared with the day as it stands after the rows before it; a day that
/// appears more than once gets several events in one append). `seen`
/// overrides what the database shows for the streams it holds.
async fn plan_restatements(
    state: &CommandState,
    context: &WriteContext,
    rows: Vec<ImportRow>,
    seen: Option<&Heads>,
) -> Result<Plan, ApiError> {
    let campaign = &context.campaign;
    let stream_ids: Vec<String> = rows
        .iter()
        .map(|row| analytics::stream_id(row.key(campaign.id).id()))
        .collect();
    let mut heads = heads(state, &stream_ids).await?;
    for stream_id in &stream_ids {
        if let Some(head) = seen.and_then(|seen| seen.get(stream_id)) {
            heads.insert(stream_id.clone(), head.clone());
        }
    }
    let recorded_at = event_store::now();
    let mut plan = Plan::default();
    let mut slot: HashMap<&str, usize> = HashMap::new();
    for (row, stream_id) in rows.iter().zip(&stream_ids) {
        let head = heads.entry(stream_id.clone()).or_insert((None, None));
        let current = (row.metrics.clone(), campaign.details.currency);
        if head.1.as_ref() == Some(&current) {
            plan.unchanged += 1;
            continue;
        }
        head.1 = Some(current);
        let event = AnalyticsEvent::Restated(row.clone().restated(campaign));
        let event = new_event(&event, &context.metadata, recorded_at);
        let index = *slot.entry(stream_id).or_insert_with(|| {
            plan.appends.push(StreamAppend {
                stream_id: stream_id.clone(),
                expected: head.0.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
                events: Vec::new(),
            });
            plan.appends.len() - 1
        });
        plan.appends[index].events.push(event);
        head.0 = Some(head.0.map_or(0, |v| v + 1));
        plan.events += 1;
    }
    for append in &plan.appends {
        if let Some(head) = heads.remove(&append.stream_id) {
            plan.after.insert(append.stream_id.clone(), head);
        }
    }
    plan.rows = rows;
    Ok(plan)
}

/// Per day stream: its version and the figures it last restated.
type Heads = HashMap<String, (Option<i64>, Option<(Metrics, Currency)>)>;

/// Each existing day stream's version and last restated figures, one index
/// probe per stream (`LATERAL`: a `= ANY` plan may scan instead).
async fn heads(state: &CommandState, stream_ids: &[String]) -> Result<Heads, ApiError> {
    if !state.store.in_postgres() {
        return heads_through_store(state, stream_ids).await;
    }
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT s.stream_id, e.version, e.event_type, e.schema_version, e.data
             FROM unnest($1::text[]) AS s(stream_id)
             CROSS JOIN LATERAL (
                 SELECT version, event_type, schema_version, data FROM events
                 WHERE events.stream_id = s.stream_id ORDER BY version DESC LIMIT 1) e",
        )
        .await?;
    let rows = client.query(&statement, &[&stream_ids]).await?;
    let mut heads = HashMap::with_capacity(rows.len());
    for row in rows {
        let event_type: String = row.get(2);
        let (_, data) = event_store::upcast(domain::upcast::ALL, &event_type, row.get(3), row.get(4));
        heads.insert(row.get(0), (Some(row.get(1)), figures(&event_type, data)?));
    }
    Ok(heads)
}

/// [`heads`] for a log outside Postgres (KurrentDB): one stream read each,
/// through the store (already upcast).
async fn heads_through_store(state: &CommandState, stream_ids: &[String]) -> Result<Heads, ApiError> {
    let mut heads = HashMap::with_capacity(stream_ids.len());
    for stream_id in stream_ids {
        if let Some(last) = state.store.read_stream(stream_id).await?.pop() {
            let figures = figures(&last.event_type, std::sync::Arc::unwrap_or_clone(last.data))?;
            heads.insert(stream_id.clone(), (Some(last.version), figures));
        }
    }
    Ok(heads)
}

/// The figures a day stream's last event restated.
fn figures(event_type: &str, data: serde_json::Value) -> Result<Option<(Metrics, Currency)>, ApiError> {
    Ok(
        match AnalyticsEvent::from_data(event_type, data).map_err(ApiError::internal)? {
            AnalyticsEvent::Restated(day) => Some((day.metrics, day.currency)),
            // A day stream holds restatements only.
            AnalyticsEvent::Recorded(_) => None,
        },
    )
}
