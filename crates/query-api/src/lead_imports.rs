//! Asynchronous lead imports (`POST .../leads/import` with `Prefer:
//! respond-async`): the job's state and counts, and every row it did not
//! import, as a page or as a CSV to fix and import again.
//!
//! The rows hold the uploaded file's fields (personal data), so they are
//! under the campaign's project like its leads, need the scope reads of leads
//! need (`leads:read`, which already shows leads' personal data), and go with
//! the job after its retention (docs/leads.md).

use crate::params::{choice, page};
use crate::under_campaign::{ensure_campaign, CAMPAIGN_NOT_FOUND};
use crate::QueryState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use lead_vault::imports::ImportJob;
use serde::Serialize;
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_postgres::Row;
use uuid::Uuid;
use web::extract::parse_id;
use web::{ApiError, Caller};

const NOT_FOUND: &str = "Import not found";
/// Error rows fetched per round trip while writing the CSV.
const CSV_FETCH_ROWS: i32 = 1_000;

/// Get an asynchronous lead import: its state, counts so far and timings.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}/leads/imports/{import_id}", tag = "leads",
    params(("campaign_id" = Uuid, Path), ("import_id" = Uuid, Path)),
    responses(
        (status = 200, description = "The import job", body = ImportJob),
        (status = 404, description = "Campaign not found / Import not found", body = web::error::ErrorBody),
    ),
    security(("bearer" = ["leads:read"]))
)]
pub async fn get_import(
    State(state): State<QueryState>,
    caller: Caller,
    Path((campaign_id, import_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (client, job) = job(&state, &caller, &campaign_id, &import_id).await?;
    drop(client);
    Ok(Json(job).into_response())
}

/// The campaign, then the job, both the caller's; their own 404s.
async fn job(
    state: &QueryState,
    caller: &Caller,
    campaign_id: &str,
    import_id: &str,
) -> Result<(deadpool_postgres::Client, ImportJob), ApiError> {
    let campaign_id = parse_id(campaign_id, CAMPAIGN_NOT_FOUND)?;
    let import_id = parse_id(import_id, NOT_FOUND)?;
    // The primary: a job is written there directly, not projected, so no
    // write waited for a replica to have it.
    let client = state.pool.get().await?;
    ensure_campaign(&client, campaign_id, caller).await?;
    let job = lead_vault::imports::load(&**client, caller.project.as_str(), campaign_id, import_id)
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    Ok((client, job))
}

/// One row the import did not import.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = LeadImportError)]
pub struct ImportError {
    /// Physical line where the row starts (the header is line 1).
    pub line: i64,
    /// `invalid` (refused, see `message`) or `duplicate` (its email was taken).
    #[schema(pattern = "^(invalid|duplicate)$")]
    pub kind: String,
    /// The field the message is about, if one.
    pub field: Option<String>,
    pub message: String,
    /// The row's fields as uploaded, in the file's column order.
    pub values: Vec<String>,
}

/// A page of import errors, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct ImportErrorPage {
    pub data: Vec<ImportError>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// The kinds of error rows, for the `kind` filter.
const KINDS: [&str; 2] = ["invalid", "duplicate"];

/// Every row an asynchronous lead import did not import, in line order.
///
/// A page (`limit`, `cursor`) by default, without a cap on how many pages;
/// `format=csv` is the whole list as a CSV file to fix and import again: the
/// file's own columns, then `line` and `error` (remove those two before
/// importing it back). Rows so far while the import runs.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}/leads/imports/{import_id}/errors", tag = "leads",
    params(
        ("campaign_id" = Uuid, Path), ("import_id" = Uuid, Path),
        ("kind" = Option<String>, Query, description = "Only `invalid` or only `duplicate` rows"),
        ("format" = Option<String>, Query, description = "`json` (a page, the default) or `csv` (every row)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (JSON only)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page (JSON only)"),
    ),
    responses(
        (status = 200, description = "`{data, has_more, next_cursor}`, or with `format=csv` a `text/csv` attachment `lead-import-errors.csv`",
            content(
                (ImportErrorPage = "application/json"),
                (String = "text/csv"),
            )),
        (status = 404, description = "Campaign not found / Import not found", body = web::error::ErrorBody),
    ),
    security(("bearer" = ["leads:read"]))
)]
pub async fn import_errors(
    State(state): State<QueryState>,
    caller: Caller,
    Path((campaign_id, import_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let kind = choice(
        &params,
        "kind",
        |raw| KINDS.into_iter().find(|k| *k == raw),
        "invalid, duplicate",
    )?;
    let csv = match params.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::bad_request("format", "format must be one of json, csv")),
    };
    let (limit, cursor) = page::<i64>(&params)?;
    let (client, job) = job(&state, &caller, &campaign_id, &import_id).await?;
    if csv {
        return Ok(csv_response(client, job.id, kind));
    }
    let rows = client
        .query(
            "SELECT line, kind, field, message, fields::text FROM lead_import_errors
             WHERE import_id = $1 AND ($2::text IS NULL OR kind = $2) AND line > $3
             ORDER BY line LIMIT $4",
            &[&job.id, &kind, &cursor.unwrap_or(0), &(limit + 1)],
        )
        .await?;
    let more = rows.len() as i64 > limit;
    let data: Vec<ImportError> = rows.iter().take(limit as usize).map(error_of).collect();
    let next = more
        .then(|| data.last().map(|e| web::pagination::encode_cursor(&e.line)))
        .flatten();
    Ok(web::pagination::page(&data, next))
}

fn error_of(row: &Row) -> ImportError {
    ImportError {
        line: row.get(0),
        kind: row.get(1),
        field: row.get(2),
        message: row.get(3),
        values: serde_json::from_str(row.get(4)).unwrap_or_default(),
    }
}

/// The CSV, streamed from a server-side cursor: memory stays flat.
fn csv_response(client: deadpool_postgres::Client, import_id: Uuid, kind: Option<&'static str>) -> Response {
    let (sender, mut receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        if let Err(error) = stream_csv(client, import_id, kind, &sender).await {
            if !sender.is_closed() {
                tracing::error!(error = format!("{error:#}"), %import_id, "import errors CSV failed midway");
                // A broken download, not a silently short file.
                let _ = sender.send(Err(std::io::Error::other("export failed"))).await;
            }
        }
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)));
    (
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8"),
            (CONTENT_DISPOSITION, "attachment; filename=lead-import-errors.csv"),
        ],
        body,
    )
        .into_response()
}

/// The file's header and `line,error`, then each error row: its fields as
/// uploaded (a short row padded, so `line` and `error` stay in their
/// columns; a long row's extra fields after them), its line and message.
async fn stream_csv(
    mut client: deadpool_postgres::Client,
    import_id: Uuid,
    kind: Option<&'static str>,
    out: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> anyhow::Result<()> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let columns = lead_vault::imports::columns(&*tx, import_id)
        .await?
        .unwrap_or_default();
    let chunk_writer = || {
        csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .flexible(true)
            .from_writer(Vec::with_capacity(128 * 1024))
    };
    let mut writer = chunk_writer();
    writer.write_record(columns.iter().map(String::as_str).chain(["line", "error"]))?;
    let statement = tx
        .prepare(
            "SELECT line, kind, field, message, fields::text FROM lead_import_errors
             WHERE import_id = $1 AND ($2::text IS NULL OR kind = $2) ORDER BY line",
        )
        .await?;
    let portal = tx.bind(&statement, &[&import_id, &kind]).await?;
    loop {
        let rows = tx.query_portal(&portal, CSV_FETCH_ROWS).await?;
        for row in &rows {
            let error = error_of(row);
            let mut values = error.values;
            let extra = values.split_off(values.len().min(columns.len()));
            values.resize(columns.len(), String::new());
            values.push(error.line.to_string());
            values.push(error.message);
            values.extend(extra);
            writer.write_record(&values)?;
        }
        let chunk = std::mem::replace(&mut writer, chunk_writer())
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write CSV: {}", e.error()))?;
        if !chunk.is_empty() && out.send(Ok(Bytes::from(chunk))).await.is_err() {
            return Ok(());
        }
        if rows.len() < CSV_FETCH_ROWS as usize {
            break;
        }
    }
    tx.commit().await?;
    Ok(())
}
