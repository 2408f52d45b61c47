//! Lead reads: list (filters `status`, `search`), one lead, CSV export.

use crate::params::choice;
use crate::under_campaign::{ensure_campaign, get_one, list, ItemList, CAMPAIGN_NOT_FOUND};
use crate::QueryState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use domain::lead::{CustomFields, LeadStatus, STANDARD_FIELDS};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;
use web::extract::parse_id;
use web::{ApiError, Caller};

const NOT_FOUND: &str = "Lead not found";
/// Longest `search` text, in characters.
pub const SEARCH_MAX: usize = 200;
/// Rows fetched per round trip while exporting (a server-side cursor).
pub const EXPORT_FETCH_ROWS: i32 = 1_000;

/// Keyset position of the last item on a page: newest first by (created_at, id).
#[derive(Serialize, Deserialize)]
struct Cursor {
    created_at: DateTime<Utc>,
    id: Uuid,
}

impl From<&Row> for Cursor {
    fn from(row: &Row) -> Self {
        Self {
            created_at: row.get(1),
            id: row.get(2),
        }
    }
}

/// `search` as a `LIKE` pattern over the lowercased search text: the query
/// lowercased, `%`, `_` and `\` escaped, wrapped in `%`.
fn search_pattern(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

list! {
    /// List a campaign's leads, newest first.
    path = "/v1/dev/marketing/campaigns/{campaign_id}/leads", tag = "leads", scope = "leads:read",
    filters(
        ("status" = Option<LeadStatus>, Query, description = "Only leads in this status"),
        ("search" = Option<String>, Query, description = "Case-insensitive substring of name, email or phone (at most 200 characters)"),
    ),
    ok = "`{data, has_more, next_cursor}`",
    /// A page of leads, for the OpenAPI document.
    page = LeadPage of domain::lead::LeadResource,
    items = Leads
}

/// The leads list's filters; `search` as its `LIKE` pattern.
struct Leads {
    status: Option<LeadStatus>,
    search: Option<String>,
}

impl ItemList for Leads {
    type Cursor = Cursor;

    fn filters(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let status = choice(params, "status", LeadStatus::parse, LeadStatus::CHOICES)?;
        let search = match params.get("search").map(|s| s.trim()) {
            None | Some("") => None,
            Some(s) if s.chars().count() > SEARCH_MAX => {
                return Err(ApiError::bad_request(
                    "search",
                    format!("search must be at most {SEARCH_MAX} characters"),
                ))
            }
            Some(s) => Some(search_pattern(s)),
        };
        Ok(Self { status, search })
    }

    /// Only the conditions in use, so the planner sees each query's real shape
    /// (a generic `$2 IS NULL OR ...` would hide the search from the trigram
    /// index). Planned with the actual values: an unnamed statement.
    async fn rows(
        &self,
        client: &deadpool_postgres::Client,
        campaign_id: Uuid,
        _: &Caller,
        cursor: Option<&Cursor>,
        fetch: i64,
    ) -> Result<Vec<Row>, ApiError> {
        let status = self.status.map(LeadStatus::as_str);
        let mut sql = String::from("SELECT body::text, created_at, id FROM leads WHERE campaign_id = $1");
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&campaign_id];
        if let Some(status) = &status {
            args.push(status);
            sql.push_str(&format!(" AND status = ${}", args.len()));
        }
        if let Some(pattern) = &self.search {
            args.push(pattern);
            sql.push_str(&format!(" AND search_text LIKE ${}", args.len()));
        }
        if let Some(cursor) = cursor {
            args.push(&cursor.created_at);
            args.push(&cursor.id);
            sql.push_str(&format!(
                " AND (created_at, id) < (${}, ${})",
                args.len() - 1,
                args.len()
            ));
        }
        args.push(&fetch);
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${}",
            args.len()
        ));
        Ok(client.query(sql.as_str(), &args).await?)
    }
}

get_one! {
    /// Get one lead (where a create's `Location` points).
    path = "/v1/dev/marketing/campaigns/{campaign_id}/leads/{lead_id}", tag = "leads", scope = "leads:read", id = "lead_id",
    body = domain::lead::LeadResource,
    not_found = "Campaign not found / Lead not found",
    table = "leads", NOT_FOUND
}

/// Export every lead of a campaign as CSV, oldest first.
///
/// Columns: `name,email,phone,source,status,notes`, then one column per custom
/// field name used by any lead of the campaign, sorted. RFC 4180 quoting and
/// CRLF line ends. Streamed from a server-side cursor: memory stays flat. The
/// file imports back unchanged.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}/leads/export", tag = "leads",
    params(("campaign_id" = Uuid, Path)),
    responses(
        (status = 200, description = "`text/csv` attachment `leads.csv`", content_type = "text/csv", body = String),
        (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
    ),
    security(("bearer" = ["leads:export"]))
)]
pub async fn export(
    State(state): State<QueryState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let client = state.reads.get().await?;
    ensure_campaign(&client, campaign_id, &caller).await?;
    let (sender, mut receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        if let Err(error) = stream_csv(client, campaign_id, &sender).await {
            if !sender.is_closed() {
                tracing::error!(error = format!("{error:#}"), %campaign_id, "lead export failed midway");
                // Ends the response body with an error, so the client sees a
                // broken download rather than a silently short file.
                let _ = sender.send(Err(std::io::Error::other("export failed"))).await;
            }
        }
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)));
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8"),
            (CONTENT_DISPOSITION, "attachment; filename=leads.csv"),
        ],
        body,
    )
        .into_response())
}

/// Writes the CSV into `out` in chunks of about [`EXPORT_FETCH_ROWS`] rows, from
/// one repeatable-read snapshot (the header's custom columns and the rows agree).
async fn stream_csv(
    mut client: deadpool_postgres::Object,
    campaign_id: Uuid,
    out: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> anyhow::Result<()> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut custom: Vec<String> = tx
        .query(
            "SELECT DISTINCT k FROM leads, json_object_keys(body->'custom_fields') AS k
             WHERE campaign_id = $1",
            &[&campaign_id],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Byte order, whatever the database's collation: the same file every time.
    custom.sort_unstable();
    // A writer per chunk: `into_inner` hands over its buffer.
    let chunk_writer = || {
        csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::with_capacity(128 * 1024))
    };
    let mut writer = chunk_writer();
    writer.write_record(
        STANDARD_FIELDS
            .iter()
            .copied()
            .chain(custom.iter().map(String::as_str)),
    )?;

    // The standard columns straight from the stored resource, by name.
    let standard: Vec<String> = STANDARD_FIELDS.iter().map(|f| format!("body->>'{f}'")).collect();
    let statement = tx
        .prepare(&format!(
            "SELECT {}, (body->'custom_fields')::text
             FROM leads WHERE campaign_id = $1 ORDER BY created_at, id",
            standard.join(", ")
        ))
        .await?;
    let portal = tx.bind(&statement, &[&campaign_id]).await?;
    let mut fields: Vec<String> = Vec::with_capacity(STANDARD_FIELDS.len() + custom.len());
    loop {
        let rows = tx.query_portal(&portal, EXPORT_FETCH_ROWS).await?;
        for row in &rows {
            fields.clear();
            for i in 0..STANDARD_FIELDS.len() {
                fields.push(row.get::<_, Option<String>>(i).unwrap_or_default());
            }
            let values: CustomFields = match row.get::<_, Option<String>>(STANDARD_FIELDS.len()) {
                Some(text) => serde_json::from_str(&text)?,
                None => CustomFields::new(),
            };
            for name in &custom {
                fields.push(values.get(name).cloned().unwrap_or_default());
            }
            writer.write_record(&fields)?;
        }
        let chunk = std::mem::replace(&mut writer, chunk_writer())
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write CSV: {}", e.error()))?;
        if !chunk.is_empty() && out.send(Ok(Bytes::from(chunk))).await.is_err() {
            // The client went away: stop reading.
            return Ok(());
        }
        if rows.len() < EXPORT_FETCH_ROWS as usize {
            break;
        }
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_are_lowercase_and_escape_wildcards() {
        assert_eq!(search_pattern("John"), "%john%");
        assert_eq!(search_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
