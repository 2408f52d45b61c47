//! Campaign reads.

use crate::json_response;
use crate::params::{choice, page};
use crate::QueryState;
use axum::extract::{Path, Query, State};
use axum::http::header::ETAG;
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::campaign::{CampaignStatus, CampaignType};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use uuid::Uuid;
use web::extract::{etag, parse_id};
use web::{ApiError, Caller};

const NOT_FOUND: &str = "Campaign not found";

/// Longest `search` term, in characters.
pub const SEARCH_MAX: usize = 200;

/// What a campaign list can be ordered by (`sort`), each ascending or, with a
/// `-` prefix, descending. Ties are broken by id, in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    CreatedAt,
    Name,
    StartDate,
    EndDate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sort {
    key: SortKey,
    descending: bool,
}

/// The `sort` values, for the OpenAPI document.
#[allow(dead_code)]
#[derive(Serialize, utoipa::ToSchema)]
pub enum CampaignSort {
    #[serde(rename = "created_at")]
    CreatedAt,
    #[serde(rename = "-created_at")]
    CreatedAtDescending,
    #[serde(rename = "name")]
    Name,
    #[serde(rename = "-name")]
    NameDescending,
    #[serde(rename = "start_date")]
    StartDate,
    #[serde(rename = "-start_date")]
    StartDateDescending,
    #[serde(rename = "end_date")]
    EndDate,
    #[serde(rename = "-end_date")]
    EndDateDescending,
}

impl Sort {
    /// Newest first, as lists were before `sort` existed.
    const DEFAULT: Sort = Sort {
        key: SortKey::CreatedAt,
        descending: true,
    };

    fn parse(raw: Option<&String>) -> Result<Sort, ApiError> {
        let Some(raw) = raw else { return Ok(Self::DEFAULT) };
        let (descending, name) = match raw.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, raw.as_str()),
        };
        let key = match name {
            "created_at" => SortKey::CreatedAt,
            "name" => SortKey::Name,
            "start_date" => SortKey::StartDate,
            "end_date" => SortKey::EndDate,
            _ => {
                return Err(ApiError::bad_request(
                    "sort",
                    "sort must be one of created_at, name, start_date, end_date, \
                     optionally prefixed with - for descending",
                ))
            }
        };
        Ok(Sort { key, descending })
    }

    fn name(&self) -> String {
        let key = match self.key {
            SortKey::CreatedAt => "created_at",
            SortKey::Name => "name",
            SortKey::StartDate => "start_date",
            SortKey::EndDate => "end_date",
        };
        format!("{}{key}", if self.descending { "-" } else { "" })
    }

    /// The read-model column, and whether it may be NULL (a campaign without
    /// the date: those come after the others, in either direction).
    fn column(&self) -> (&'static str, bool) {
        match self.key {
            SortKey::CreatedAt => ("created_at", false),
            SortKey::Name => ("name_key", false),
            SortKey::StartDate => ("start_date", true),
            SortKey::EndDate => ("end_date", true),
        }
    }
}

/// Keyset position of the last item on a page: its sort value and id, and
/// the sort they are positions in (a cursor of one sort means nothing in
/// another). Cursors made before `sort` existed (`{created_at, id}`) still
/// read, as positions in the default sort.
#[derive(Serialize, Deserialize)]
struct Cursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sort: Option<String>,
    /// The name key, or an RFC 3339 time; `null` for a campaign without the
    /// date sorted on.
    #[serde(alias = "created_at")]
    key: Option<String>,
    id: Uuid,
}

/// A query text and its parameters, built together so each `$n` is right.
struct Sql {
    text: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }
}

/// An optional RFC 3339 query parameter, within the years a campaign date
/// may have.
fn instant(params: &HashMap<String, String>, name: &'static str) -> Result<Option<DateTime<Utc>>, ApiError> {
    use chrono::Datelike;
    let Some(raw) = params.get(name) else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|at| at.with_timezone(&Utc))
        .filter(|at| domain::input::TIMESTAMP_YEARS.contains(&at.year()))
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                name,
                format!("{name} must be an RFC 3339 date-time such as 2024-06-01T00:00:00Z, in the years 0001 to 9999"),
            )
        })
}

/// `search`: lowercased, with `%`, `_` and `\` taken literally, as a LIKE
/// pattern; an empty term is no filter.
fn search_pattern(params: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    let Some(term) = params.get("search").map(|t| t.trim().to_lowercase()) else {
        return Ok(None);
    };
    if term.chars().count() > SEARCH_MAX {
        return Err(ApiError::bad_request(
            "search",
            format!("search must be at most {SEARCH_MAX} characters"),
        ));
    }
    if term.is_empty() {
        return Ok(None);
    }
    let escaped: String = term
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    Ok(Some(format!("%{escaped}%")))
}

/// The page after `cursor` in `sort`: its condition, appended to `sql`.
fn after_cursor(sql: &mut Sql, sort: Sort, cursor: &Cursor) -> Result<(), ApiError> {
    let invalid = |message: &str| ApiError::bad_request("cursor", message.to_owned());
    if cursor.sort.as_deref().unwrap_or("-created_at") != sort.name() {
        return Err(invalid(
            "cursor belongs to another sort; pass next_cursor from a page of the same sort",
        ));
    }
    let (column, nullable) = sort.column();
    let op = if sort.descending { "<" } else { ">" };
    let id = sql.bind(cursor.id);
    let key = match (&cursor.key, sort.key) {
        (None, _) if nullable => None,
        (None, _) => {
            return Err(invalid(
                "cursor is invalid; pass next_cursor from a previous page",
            ))
        }
        (Some(name), SortKey::Name) => Some(sql.bind(name.clone())),
        (Some(time), _) => {
            let at = DateTime::parse_from_rfc3339(time)
                .map_err(|_| invalid("cursor is invalid; pass next_cursor from a previous page"))?;
            Some(sql.bind(at.with_timezone(&Utc)))
        }
    };
    sql.text.push_str(&match (key, nullable) {
        (Some(key), false) => format!(" AND ({column}, id) {op} ({key}, {id})"),
        (Some(key), true) => format!(" AND ({column} IS NULL OR ({column}, id) {op} ({key}, {id}))"),
        (None, _) => format!(" AND {column} IS NULL AND id {op} {id}"),
    });
    Ok(())
}

/// The cursor of a page's last row (`row` holds body, id, sort value).
fn cursor_of(sort: Sort, row: &tokio_postgres::Row) -> Cursor {
    let key = match sort.key {
        SortKey::Name => Some(row.get::<_, String>(2)),
        _ => row
            .get::<_, Option<DateTime<Utc>>>(2)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
    };
    Cursor {
        sort: Some(sort.name()),
        key,
        id: row.get(1),
    }
}

/// List the project's campaigns: newest first unless `sort` says otherwise,
/// filtered by status, type, a name substring and dates.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns", tag = "campaigns",
    params(
        ("status" = Option<CampaignStatus>, Query, description = "Only campaigns in this status"),
        ("type" = Option<CampaignType>, Query, description = "Only campaigns of this type"),
        ("search" = Option<String>, Query, max_length = 200, description = "Only campaigns whose name contains this text (case-insensitive)"),
        ("sort" = inline(Option<CampaignSort>), Query, description = "Order: created_at, name, start_date or end_date; `-` first for descending (default -created_at). Campaigns without the date come last"),
        ("start_after" = Option<DateTime<Utc>>, Query, description = "Only campaigns starting at or after this time (RFC 3339)"),
        ("end_before" = Option<DateTime<Utc>>, Query, description = "Only campaigns ending at or before this time (RFC 3339)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page (of the same sort)"),
    ),
    responses(
        (status = 200, description = "`{data, has_more, next_cursor}`", body = CampaignPage),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["campaigns:read"]))
)]
pub async fn list(
    State(state): State<QueryState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (limit, sort, mut sql) = list_query(&caller, &params)?;
    let client = state.reads.get().await?;
    let limit_param = sql.bind(limit + 1);
    sql.text.push_str(&format!(" LIMIT {limit_param}"));
    let params: Vec<&(dyn ToSql + Sync)> = sql.params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
    // Unprepared: planned with the actual values (a selective search uses
    // the trigram index, an unselective one walks the sort's index).
    let rows = client.query(&sql.text, &params).await?;
    Ok(crate::page_response(&rows, limit, |row| cursor_of(sort, row)))
}

/// The list's query, all but its LIMIT, from the query parameters.
fn list_query(caller: &Caller, params: &HashMap<String, String>) -> Result<(i64, Sort, Sql), ApiError> {
    let status = choice(params, "status", CampaignStatus::parse, CampaignStatus::CHOICES)?;
    let campaign_type = match params.get("type") {
        None => None,
        Some(raw) => Some(
            CampaignType::parse(raw)
                .ok_or_else(|| ApiError::bad_request("type", format!("unknown campaign type {raw:?}")))?,
        ),
    };
    let search = search_pattern(params)?;
    let sort = Sort::parse(params.get("sort"))?;
    let start_after = instant(params, "start_after")?;
    let end_before = instant(params, "end_before")?;
    let (limit, cursor) = page::<Cursor>(params)?;
    let (column, nullable) = sort.column();
    let mut sql = Sql {
        text: String::new(),
        params: Vec::new(),
    };
    let project = sql.bind(caller.project.as_str().to_owned());
    sql.text = format!("SELECT body::text, id, {column} FROM campaigns WHERE project = {project}");
    if let Some(status) = status {
        let p = sql.bind(status.as_str().to_owned());
        sql.text.push_str(&format!(" AND status = {p}"));
    }
    if let Some(campaign_type) = campaign_type {
        let p = sql.bind(campaign_type.as_str().to_owned());
        sql.text.push_str(&format!(" AND campaign_type = {p}"));
    }
    if let Some(pattern) = search {
        let p = sql.bind(pattern);
        sql.text.push_str(&format!(" AND name_key LIKE {p}"));
    }
    if let Some(at) = start_after {
        let p = sql.bind(at);
        sql.text.push_str(&format!(" AND start_date >= {p}"));
    }
    if let Some(at) = end_before {
        let p = sql.bind(at);
        sql.text.push_str(&format!(" AND end_date <= {p}"));
    }
    if let Some(cursor) = &cursor {
        after_cursor(&mut sql, sort, cursor)?;
    }
    let direction = if sort.descending { "DESC" } else { "ASC" };
    let nulls_last = if nullable {
        format!("({column} IS NULL), ")
    } else {
        String::new()
    };
    sql.text.push_str(&format!(
        " ORDER BY {nulls_last}{column} {direction}, id {direction}"
    ));
    Ok((limit, sort, sql))
}

/// Get one campaign.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}", tag = "campaigns",
    params(("campaign_id" = Uuid, Path)),
    responses(
        (status = 200, body = domain::campaign::CampaignResource, headers(("ETag" = String))),
        (status = 401, body = web::error::ErrorBody), (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["campaigns:read"]))
)]
pub async fn get_one(
    State(state): State<QueryState>,
    caller: Caller,
    Path(campaign_id): Path<String>,
) -> Result<Response, ApiError> {
    // The caller is authenticated first (from the key cache on the hot path),
    // so a malformed id tells an unauthenticated caller nothing; then one
    // primary-key read.
    let campaign_id = parse_id(&campaign_id, NOT_FOUND)?;
    let client = state.reads.get().await?;
    let statement = client
        .prepare_cached("SELECT body::text, version FROM campaigns WHERE id = $1 AND project = $2")
        .await?;
    let row = client
        .query_opt(&statement, &[&campaign_id, &caller.project.as_str()])
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    let mut response = json_response(row.get::<_, String>(0));
    response
        .headers_mut()
        .insert(ETAG, etag(row.get(1)).parse().expect("valid etag"));
    Ok(response)
}

/// A page of campaigns, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct CampaignPage {
    pub data: Vec<domain::campaign::CampaignResource>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}
