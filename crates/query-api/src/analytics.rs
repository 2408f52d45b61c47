//! Analytics reads, served from the `analytics_daily` rollups (one row per
//! campaign, day and source), never from the raw events.
//!
//! * `GET .../analytics`: rows per period (`granularity=day|week|month`) and
//!   source, in date then source order, keyset-paginated like every list.
//! * `GET .../analytics/summary`: totals over the range, per-source breakdown,
//!   budget use and KPI progress, in one response.
//!
//! Derived metrics are computed from exact sums by `domain::analytics`.

use crate::params::{choice, page};
use crate::QueryState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Days, Months, NaiveDate};
use deadpool_postgres::Transaction;
use domain::analytics::{
    kpi_progress, normalize_source, parse_day, AppliedKind, BudgetUsage, CustomAggregate, DerivedMetrics,
    KpiProgress, MetricKind, Quantity, Totals,
};
use domain::campaign::{Goals, Kpi};
use domain::{Currency, Money, TimeZone};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;
use web::extract::parse_id;
use web::pagination::encode_cursor;
use web::{ApiError, Caller};

const NOT_FOUND: &str = "Campaign not found";

/// How rows are bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Day,
    /// ISO weeks, Monday to Sunday.
    Week,
    /// Calendar months.
    Month,
}

impl Granularity {
    /// The Postgres `date_trunc` unit; `week` truncates to the ISO week's Monday.
    fn unit(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::Day, Self::Week, Self::Month]
            .into_iter()
            .find(|g| g.unit() == raw)
    }

    /// The last day of the period that starts on `start`.
    fn period_end(self, start: NaiveDate) -> NaiveDate {
        let next = match self {
            Self::Day => start.checked_add_days(Days::new(1)),
            Self::Week => start.checked_add_days(Days::new(7)),
            Self::Month => start.checked_add_months(Months::new(1)),
        };
        next.and_then(|n| n.pred_opt()).unwrap_or(start)
    }
}

/// What both reads take from the request besides the caller: the campaign (an
/// id that is not a UUID is a campaign not found) and the query string as
/// given, for [`parameters`] to check.
pub struct CampaignQuery {
    campaign_id: Uuid,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
}

impl<S: Send + Sync> FromRequestParts<S> for CampaignQuery {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(campaign_id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let campaign_id = parse_id(&campaign_id, NOT_FOUND).map_err(IntoResponse::into_response)?;
        let query = Query::from_request_parts(parts, state).await;
        Ok(Self { campaign_id, query })
    }
}

/// Query parameters as given, each at most once, unknown names refused: a typo
/// such as `start=` must not silently widen a report to the whole history.
fn parameters(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let Query(pairs) =
        query.map_err(|e| ApiError::bad_request("query", format!("invalid query string: {e}")))?;
    let mut params = HashMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::bad_request(
                name.clone(),
                format!(
                    "unknown query parameter {name:?}; expected one of {}",
                    allowed.join(", ")
                ),
            ));
        }
        if params.contains_key(&name) {
            return Err(ApiError::bad_request(
                name.clone(),
                format!("{name} is given more than once"),
            ));
        }
        params.insert(name, value);
    }
    Ok(params)
}

/// The inclusive range of local days (the campaign's time zone) and source filter shared by both reads. A
/// missing bound is open: no range at all is the campaign's whole history.
#[derive(Debug, Clone, Default)]
struct Filter {
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    source: Option<String>,
}

fn filter(params: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let day = |field: &str| {
        params
            .get(field)
            .map(|raw| parse_day(field, raw).map_err(|message| ApiError::bad_request(field, message)))
            .transpose()
    };
    let start = day("start_date")?;
    let end = day("end_date")?;
    if let (Some(start), Some(end)) = (start, end) {
        if end < start {
            return Err(ApiError::bad_request(
                "end_date",
                format!("end_date ({end}) must not be before start_date ({start})"),
            ));
        }
    }
    let source = params
        .get("source")
        .map(|raw| {
            normalize_source("source", raw).map_err(|message| ApiError::bad_request("source", message))
        })
        .transpose()?;
    Ok(Filter { start, end, source })
}

/// What the summary needs from the campaign; `None` when the caller's project
/// has no such live campaign (the tenancy check for both reads).
struct CampaignFacts {
    currency: Currency,
    time_zone: TimeZone,
    kinds: Kinds,
    total_budget: Option<Money>,
    kpis: Vec<Kpi>,
    goals: Option<Goals>,
}

async fn campaign_facts(
    client: &deadpool_postgres::Transaction<'_>,
    campaign_id: Uuid,
    caller: &Caller,
) -> Result<CampaignFacts, ApiError> {
    let statement = client
        .prepare_cached(
            "SELECT coalesce(body->'total_budget', 'null'), coalesce(body->'kpis', '[]'),
                    coalesce(body->'goals', 'null'), coalesce(body->'currency', '\"USD\"'),
                    coalesce(body->'custom_metric_kinds', '{}'),
                    coalesce(body->'time_zone', '\"UTC\"')
             FROM campaigns WHERE id = $1 AND project = $2",
        )
        .await?;
    let row = client
        .query_opt(&statement, &[&campaign_id, &caller.project.as_str()])
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    let field = |i: usize| row.get::<_, Value>(i);
    Ok(CampaignFacts {
        total_budget: serde_json::from_value(field(0)).map_err(ApiError::internal)?,
        kpis: serde_json::from_value(field(1)).map_err(ApiError::internal)?,
        goals: serde_json::from_value(field(2)).map_err(ApiError::internal)?,
        // Rows stored before currencies existed have none: USD.
        currency: serde_json::from_value(field(3)).map_err(ApiError::internal)?,
        kinds: serde_json::from_value(field(4)).map_err(ApiError::internal)?,
        // Rows stored before time zones existed have none: UTC.
        time_zone: serde_json::from_value(field(5)).map_err(ApiError::internal)?,
    })
}

/// A campaign's declared custom metric kinds.
type Kinds = BTreeMap<String, MetricKind>;

/// Exact sums of one row or group: the five core metrics as they were posted,
/// plus the custom metrics, each combined by its kind.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetricSums {
    pub impressions: Quantity,
    pub clicks: Quantity,
    pub conversions: Quantity,
    pub cost: Quantity,
    pub revenue: Quantity,
    /// Name → value over the records, combined by the metric's kind (see
    /// `custom_metric_kinds`): summed, averaged or the last value. An average
    /// without any base (no impressions, say) or an unknown `last` is left
    /// out here (its kind is still listed).
    pub custom_metrics: BTreeMap<String, Quantity>,
    /// Name → the kind applied to each metric of `custom_metrics`;
    /// `declared: false` marks a metric the campaign does not declare, which
    /// was summed.
    pub custom_metric_kinds: BTreeMap<String, AppliedKind>,
}

impl MetricSums {
    /// Reads the five core sums from columns `first..first + 5` (a sum over no
    /// rows is NULL: zero). Custom metrics are added by [`attach_custom`]. A sum
    /// beyond `Decimal`'s 28 digits (unreachable within the tracking limits) is
    /// an error, not a panic.
    fn from_row(row: &tokio_postgres::Row, first: usize) -> Result<Self, ApiError> {
        let sum = |i: usize| -> Result<Quantity, ApiError> {
            Ok(Quantity(
                row.try_get::<_, Option<Decimal>>(first + i)?.unwrap_or_default(),
            ))
        };
        Ok(Self {
            impressions: sum(0)?,
            clicks: sum(1)?,
            conversions: sum(2)?,
            cost: sum(3)?,
            revenue: sum(4)?,
            custom_metrics: BTreeMap::new(),
            custom_metric_kinds: BTreeMap::new(),
        })
    }

    fn totals(&self) -> Totals {
        Totals {
            impressions: self.impressions.0,
            clicks: self.clicks.0,
            conversions: self.conversions.0,
            cost: self.cost.0,
            revenue: self.revenue.0,
        }
    }
}

/// The core sums of a group, as the columns [`MetricSums::from_row`] reads, then
/// `records`.
const CORE_SUMS: &str = "sum(impressions), sum(clicks), sum(conversions), sum(cost), sum(revenue),
                         coalesce(sum(records), 0)::int8";

/// What a custom query reads per group and name after the name, in the
/// order [`aggregate`] takes them: the sum, the records carrying the metric,
/// value × each base, the bases, and the latest day's last value.
const CUSTOM_AGGREGATES: &str = "sum(value) AS value, sum(records) AS records,
    sum(w_impressions) AS w_impressions, sum(w_clicks) AS w_clicks,
    sum(w_conversions) AS w_conversions, sum(b_impressions) AS b_impressions,
    sum(b_clicks) AS b_clicks, sum(b_conversions) AS b_conversions,
    (array_agg(last ORDER BY day DESC))[1] AS last";

/// The columns of [`CUSTOM_AGGREGATES`] from `first` on.
fn aggregate(row: &tokio_postgres::Row, first: usize) -> Result<CustomAggregate, ApiError> {
    let get = |i: usize| -> Result<Decimal, ApiError> {
        Ok(row.try_get::<_, Option<Decimal>>(first + i)?.unwrap_or_default())
    };
    Ok(CustomAggregate {
        sum: get(0)?,
        records: get(1)?,
        weighted: [get(2)?, get(3)?, get(4)?],
        bases: [get(5)?, get(6)?, get(7)?],
        last: row.try_get(first + 8)?,
    })
}

/// Custom metrics come from a second query over `analytics_daily_custom`, whose
/// rows `(group..., name, aggregates...)` are combined by each metric's kind and
/// merged here. Both queries run in one read-only snapshot.
fn attach_custom<K: Ord>(
    groups: &mut BTreeMap<K, &mut MetricSums>,
    custom_rows: &[tokio_postgres::Row],
    kinds: &Kinds,
    key: impl Fn(&tokio_postgres::Row) -> K,
    name_column: usize,
) -> Result<(), ApiError> {
    for row in custom_rows {
        if let Some(sums) = groups.get_mut(&key(row)) {
            let name: String = row.try_get(name_column)?;
            let declared = kinds.get(&name).copied();
            let value = declared
                .unwrap_or_default()
                .combine(&aggregate(row, name_column + 1)?);
            sums.custom_metric_kinds
                .insert(name.clone(), AppliedKind::of(declared));
            if let Some(value) = value {
                sums.custom_metrics.insert(name, value);
            }
        }
    }
    Ok(())
}

/// Opens the read-only snapshot both queries of a read share.
async fn snapshot(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, ApiError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// One period of one source.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnalyticsRow {
    /// First day of the period: the day, the ISO week's Monday, or the month's 1st.
    #[schema(value_type = String, example = "2024-06-15")]
    pub date: NaiveDate,
    /// Last day of the period (equal to `date` for daily rows). Only days inside
    /// the requested range are counted, so edge periods may be partial.
    #[schema(value_type = String, example = "2024-06-15")]
    pub period_end: NaiveDate,
    #[schema(example = "facebook")]
    pub source: String,
    /// The campaign's currency: what `metrics.cost`, `metrics.revenue` and
    /// `derived.cpc`, `cpm` and `cpa` are in.
    pub currency: Currency,
    pub metrics: MetricSums,
    pub derived: DerivedMetrics,
    /// How many tracked records were summed into this row.
    pub records: i64,
}

/// A page of analytics rows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnalyticsPage {
    pub data: Vec<AnalyticsRow>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// The days and source both reads are limited to, for their OpenAPI entries
/// (read by [`filter`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct Range {
    /// First day, inclusive, YYYY-MM-DD, a local day in the campaign's time zone; absent = from the first record
    start_date: Option<String>,
    /// Last day, inclusive, YYYY-MM-DD, a local day in the campaign's time zone; absent = to the last record
    end_date: Option<String>,
    /// Only this source (case-insensitive)
    source: Option<String>,
}

/// Keyset position of the last row on a page.
#[derive(Serialize, Deserialize)]
struct Cursor {
    date: NaiveDate,
    source: String,
}

/// Analytics rows for a campaign: one per period and source, oldest first.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}/analytics", tag = "analytics",
    params(
        ("campaign_id" = Uuid, Path),
        Range,
        ("granularity" = inline(Option<Granularity>), Query, description = "day (default), week (ISO, from Monday) or month"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Rows per page, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "`{data, has_more, next_cursor}`", body = AnalyticsPage),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["analytics:read"]))
)]
pub async fn rows(
    State(state): State<QueryState>,
    caller: Caller,
    CampaignQuery { campaign_id, query }: CampaignQuery,
) -> Result<Json<AnalyticsPage>, ApiError> {
    let params = parameters(
        query,
        &[
            "start_date",
            "end_date",
            "source",
            "granularity",
            "limit",
            "cursor",
        ],
    )?;
    let filter = filter(&params)?;
    let granularity =
        choice(&params, "granularity", Granularity::parse, "day, week, month")?.unwrap_or(Granularity::Day);
    let (limit, cursor) = page::<Cursor>(&params)?;

    let page = Page {
        campaign_id,
        granularity,
        filter,
        cursor,
        limit,
    };
    let mut client = state.reads.get().await?;
    let tx = snapshot(&mut client).await?;
    let campaign = campaign_facts(&tx, campaign_id, &caller).await?;
    let (mut data, has_more) = core_rows(&tx, &page, campaign.currency).await?;
    if let (Some(first), Some(last)) = (data.first(), data.last()) {
        let custom_rows = custom_rows(&tx, &page, (first.date, &first.source), (last, &last.source)).await?;
        let mut groups: BTreeMap<(NaiveDate, String), &mut MetricSums> = data
            .iter_mut()
            .map(|row| ((row.date, row.source.clone()), &mut row.metrics))
            .collect();
        attach_custom(
            &mut groups,
            &custom_rows,
            &campaign.kinds,
            |r| (r.get(0), r.get(1)),
            2,
        )?;
    }
    tx.commit().await?;
    for row in &mut data {
        row.derived = DerivedMetrics::from_totals(&row.metrics.totals());
    }
    let next_cursor = has_more.then(|| {
        let last = data.last().expect("a page with more has a last row");
        encode_cursor(&Cursor {
            date: last.date,
            source: last.source.clone(),
        })
    });
    Ok(Json(AnalyticsPage {
        data,
        has_more,
        next_cursor,
    }))
}

/// One page of `rows`, as asked for.
struct Page {
    campaign_id: Uuid,
    granularity: Granularity,
    filter: Filter,
    cursor: Option<Cursor>,
    limit: i64,
}

/// The page's (period, source) groups with their core sums, and whether more follow.
async fn core_rows(
    tx: &Transaction<'_>,
    page: &Page,
    currency: Currency,
) -> Result<(Vec<AnalyticsRow>, bool), ApiError> {
    // `day::timestamp`: date_trunc on a bare date would pick the timestamptz
    // variant and depend on the session's time zone.
    let statement = tx
        .prepare_cached(&format!(
            "SELECT date_trunc($2, day::timestamp)::date AS period, source, {CORE_SUMS}
             FROM analytics_daily
             WHERE campaign_id = $1
               AND ($3::date IS NULL OR day >= $3)
               AND ($4::date IS NULL OR day <= $4)
               AND ($5::text IS NULL OR source = $5)
               AND ($6::date IS NULL OR day >= $6)
               AND ($6::date IS NULL OR (date_trunc($2, day::timestamp)::date, source) > ($6, $7))
             GROUP BY period, source
             ORDER BY period, source
             LIMIT $8"
        ))
        .await?;
    let rows = tx
        .query(
            &statement,
            &[
                &page.campaign_id,
                &page.granularity.unit(),
                &page.filter.start,
                &page.filter.end,
                &page.filter.source,
                &page.cursor.as_ref().map(|c| c.date),
                &page.cursor.as_ref().map_or("", |c| c.source.as_str()),
                &(page.limit + 1),
            ],
        )
        .await?;
    let has_more = rows.len() as i64 > page.limit;
    let data = rows
        .iter()
        .take(page.limit as usize)
        .map(|row| {
            let date: NaiveDate = row.try_get(0)?;
            Ok(AnalyticsRow {
                date,
                period_end: page.granularity.period_end(date),
                source: row.try_get(1)?,
                currency,
                metrics: MetricSums::from_row(row, 2)?,
                derived: DerivedMetrics::default(),
                records: row.try_get(7)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok((data, has_more))
}

/// Custom sums of exactly the page's groups: those between its first and last
/// (period, source), within the same filters.
async fn custom_rows(
    tx: &Transaction<'_>,
    page: &Page,
    (first_date, first_source): (NaiveDate, &String),
    (last, last_source): (&AnalyticsRow, &String),
) -> Result<Vec<tokio_postgres::Row>, ApiError> {
    let statement = tx
        .prepare_cached(&format!(
            "SELECT date_trunc($2, day::timestamp)::date AS period, source, name, {CUSTOM_AGGREGATES}
             FROM analytics_daily_custom
             WHERE campaign_id = $1
               AND ($3::date IS NULL OR day >= $3)
               AND ($4::date IS NULL OR day <= $4)
               AND ($5::text IS NULL OR source = $5)
               AND day BETWEEN $6 AND $8
               AND (date_trunc($2, day::timestamp)::date, source) BETWEEN ($6, $7) AND ($9, $10)
             GROUP BY period, source, name"
        ))
        .await?;
    Ok(tx
        .query(
            &statement,
            &[
                &page.campaign_id,
                &page.granularity.unit(),
                &page.filter.start,
                &page.filter.end,
                &page.filter.source,
                &first_date,
                first_source,
                &last.period_end,
                &last.date,
                last_source,
            ],
        )
        .await?)
}

/// Totals of one source over the range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceSummary {
    #[schema(example = "facebook")]
    pub source: String,
    /// The campaign's currency, as in [`AnalyticsRow`].
    pub currency: Currency,
    pub metrics: MetricSums,
    pub derived: DerivedMetrics,
    pub records: i64,
}

/// Everything about a campaign's performance over a range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnalyticsSummary {
    pub campaign_id: Uuid,
    /// The requested range and source, as applied (`null` = open).
    #[schema(value_type = Option<String>, example = "2024-06-01")]
    pub start_date: Option<NaiveDate>,
    #[schema(value_type = Option<String>, example = "2024-06-30")]
    pub end_date: Option<NaiveDate>,
    pub source: Option<String>,
    /// The first and last day with data inside the range (`null` without data).
    #[schema(value_type = Option<String>)]
    pub first_date: Option<NaiveDate>,
    #[schema(value_type = Option<String>)]
    pub last_date: Option<NaiveDate>,
    /// The campaign's currency: what every money figure of the summary is in
    /// (`metrics.cost`, `metrics.revenue`, `derived.cpc`, `cpm`, `cpa`, the
    /// budget, and KPIs on `cost` or `revenue`).
    pub currency: Currency,
    /// The campaign's IANA time zone: `start_date`, `end_date`, `first_date`
    /// and `last_date` are local days in it.
    #[schema(value_type = String, example = "America/Los_Angeles")]
    pub time_zone: TimeZone,
    /// Sums over the range.
    pub metrics: MetricSums,
    /// Computed from `metrics` (the sums), never averaged from per-row ratios;
    /// `null` where the divisor is 0.
    pub derived: DerivedMetrics,
    pub records: i64,
    /// One entry per source with data, by source name.
    pub by_source: Vec<SourceSummary>,
    /// `cost` over the range against the campaign's `total_budget`.
    pub budget: BudgetUsage,
    /// Every KPI of the campaign; those named like a core metric get progress.
    pub kpis: Vec<KpiProgress>,
}

/// Totals, derived metrics, per-source breakdown, budget and KPI progress.
#[utoipa::path(
    get, path = "/v1/dev/marketing/campaigns/{campaign_id}/analytics/summary", tag = "analytics",
    params(
        ("campaign_id" = Uuid, Path),
        Range,
    ),
    responses(
        (status = 200, body = AnalyticsSummary),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["analytics:read"]))
)]
pub async fn summary(
    State(state): State<QueryState>,
    caller: Caller,
    CampaignQuery { campaign_id, query }: CampaignQuery,
) -> Result<Json<AnalyticsSummary>, ApiError> {
    let params = parameters(query, &["start_date", "end_date", "source"])?;
    let filter = filter(&params)?;
    let mut client = state.reads.get().await?;
    let tx = snapshot(&mut client).await?;
    let campaign = campaign_facts(&tx, campaign_id, &caller).await?;
    let (rows, custom_rows) = summary_rows(&tx, campaign_id, &filter).await?;
    tx.commit().await?;

    let (total_rows, source_rows): (Vec<_>, Vec<_>) = rows.iter().partition(|row| row.get::<_, bool>(0));
    let total = total_rows
        .first()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the summary query returned no total row")))?;
    let mut metrics = MetricSums::from_row(total, 2)?;
    let mut by_source = source_rows
        .iter()
        .map(|row| {
            Ok(SourceSummary {
                source: row.try_get(1)?,
                currency: campaign.currency,
                metrics: MetricSums::from_row(row, 2)?,
                derived: DerivedMetrics::default(),
                records: row.try_get(7)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    {
        // `None` is the grand total.
        let mut groups: BTreeMap<Option<String>, &mut MetricSums> = by_source
            .iter_mut()
            .map(|s| (Some(s.source.clone()), &mut s.metrics))
            .collect();
        groups.insert(None, &mut metrics);
        attach_custom(
            &mut groups,
            &custom_rows,
            &campaign.kinds,
            |r| (!r.get::<_, bool>(0)).then(|| r.get(1)),
            2,
        )?;
    }
    for source in &mut by_source {
        source.derived = DerivedMetrics::from_totals(&source.metrics.totals());
    }
    let totals = metrics.totals();
    Ok(Json(AnalyticsSummary {
        campaign_id,
        start_date: filter.start,
        end_date: filter.end,
        source: filter.source,
        first_date: total.get(8),
        last_date: total.get(9),
        currency: campaign.currency,
        time_zone: campaign.time_zone,
        derived: DerivedMetrics::from_totals(&totals),
        records: total.get(7),
        by_source,
        budget: BudgetUsage::new(campaign.currency, campaign.total_budget, totals.cost),
        kpis: kpi_progress(&campaign.kpis, campaign.goals.as_ref(), &totals),
        metrics,
    }))
}

/// The summary's core rows (one per source, plus the grand total first) and
/// its custom sums (per source and name, and per name over all sources).
async fn summary_rows(
    tx: &Transaction<'_>,
    campaign_id: Uuid,
    filter: &Filter,
) -> Result<(Vec<tokio_postgres::Row>, Vec<tokio_postgres::Row>), ApiError> {
    // A row per source plus the grand total: the empty grouping set, which also
    // yields a row (of NULL sums) when there is no data.
    let statement = tx
        .prepare_cached(&format!(
            "SELECT GROUPING(source) = 1 AS is_total, source, {CORE_SUMS}, min(day), max(day)
             FROM analytics_daily
             WHERE campaign_id = $1
               AND ($2::date IS NULL OR day >= $2)
               AND ($3::date IS NULL OR day <= $3)
               AND ($4::text IS NULL OR source = $4)
             GROUP BY GROUPING SETS ((source), ())
             ORDER BY is_total DESC, source"
        ))
        .await?;
    // Per source and name, then per name over the sources: there a `last`
    // is the sum of each source's latest value (unknown if any is).
    let custom_statement = tx
        .prepare_cached(&format!(
            "WITH per_source AS (
                 SELECT source, name, {CUSTOM_AGGREGATES}
                 FROM analytics_daily_custom
                 WHERE campaign_id = $1
                   AND ($2::date IS NULL OR day >= $2)
                   AND ($3::date IS NULL OR day <= $3)
                   AND ($4::text IS NULL OR source = $4)
                 GROUP BY source, name
             )
             SELECT false AS is_total, source, name, value, records, w_impressions, w_clicks,
                    w_conversions, b_impressions, b_clicks, b_conversions, last
             FROM per_source
             UNION ALL
             SELECT true, NULL, name, sum(value), sum(records), sum(w_impressions), sum(w_clicks),
                    sum(w_conversions), sum(b_impressions), sum(b_clicks), sum(b_conversions),
                    CASE WHEN bool_and(last IS NOT NULL) THEN sum(last) END
             FROM per_source GROUP BY name"
        ))
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&campaign_id, &filter.start, &filter.end, &filter.source];
    let rows = tx.query(&statement, &params).await?;
    let custom_rows = tx.query(&custom_statement, &params).await?;
    Ok((rows, custom_rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn periods_end_on_their_last_day() {
        assert_eq!(Granularity::Day.period_end(d("2024-06-15")), d("2024-06-15"));
        assert_eq!(Granularity::Week.period_end(d("2024-06-10")), d("2024-06-16"));
        assert_eq!(Granularity::Month.period_end(d("2024-02-01")), d("2024-02-29"));
        assert_eq!(Granularity::Month.period_end(d("2024-12-01")), d("2024-12-31"));
    }

    #[test]
    fn parameters_are_known_and_single() {
        let ok = parameters(
            Ok(Query(vec![("start_date".into(), "2024-06-01".into())])),
            &["start_date"],
        )
        .unwrap();
        assert_eq!(ok["start_date"], "2024-06-01");
        assert!(parameters(Ok(Query(vec![("start".into(), "x".into())])), &["start_date"]).is_err());
        let twice = vec![("source".into(), "a".into()), ("source".into(), "b".into())];
        assert!(parameters(Ok(Query(twice)), &["source"]).is_err());
    }

    #[test]
    fn ranges_are_checked() {
        let params = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let f = filter(&params(&[
            ("start_date", "2024-06-01"),
            ("end_date", "2024-06-01"),
        ]))
        .unwrap();
        assert_eq!((f.start, f.end), (Some(d("2024-06-01")), Some(d("2024-06-01"))));
        let f = filter(&params(&[("source", " FaceBook ")])).unwrap();
        assert_eq!(f.source.as_deref(), Some("facebook"));
        for bad in [
            params(&[("start_date", "2024-06-02"), ("end_date", "2024-06-01")]),
            params(&[("start_date", "June")]),
            params(&[("end_date", "2024-06-31")]),
            params(&[("source", "")]),
        ] {
            assert!(filter(&bad).is_err(), "{bad:?}");
        }
    }
}
