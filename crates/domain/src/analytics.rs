//! Campaign analytics: one *record* is one day's metrics for one source of one
//! campaign, and records for the same day and source add up.
//!
//! Every record is its own tiny aggregate with its own stream
//! (`analytics-<record-uuid>`, one event). Why not one stream per campaign: a
//! campaign's sources report concurrently, and a single stream appended with
//! optimistic concurrency would turn every concurrent track into a conflict and
//! a retry. Records never change once written, so they need no shared version to
//! protect. The event carries its `campaign_id` (and project), which is what the
//! rollup projection groups by and what a publisher keys by.
//!
//! The derived metrics (CTR, CPC, ...) are computed here from exact sums, so the
//! query side and the tests share one definition.

use crate::aggregate::{PlainAggregate, Recorded, Root};
use crate::campaign::{Campaign, Goals, Kpi};
use crate::input::double_option;
use crate::{domain_events, Currency, Money, ProjectSlug, ValidationErrors};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::Number;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Every analytics record stream is named `analytics-<record uuid>`.
pub const STREAM_PREFIX: &str = "analytics-";

pub fn stream_id(record_id: Uuid) -> String {
    format!("{STREAM_PREFIX}{record_id}")
}

/// Largest impressions/clicks/conversions count in one record (10^12): far above
/// any real day of any ad platform, far below where sums could overflow.
pub const MAX_COUNT: u64 = 1_000_000_000_000;
/// Most decimal places of `cost` and `revenue` (micro-units, as ad platforms report).
pub const MAX_MONEY_DECIMAL_PLACES: u32 = 6;
/// Most decimal places of a custom metric value.
pub const MAX_CUSTOM_DECIMAL_PLACES: u32 = 10;
/// Largest custom metric value (10^15, like money).
pub const MAX_CUSTOM_VALUE: Decimal = crate::money::MAX_AMOUNT;
/// Most custom metrics in one record.
pub const MAX_CUSTOM_METRICS: usize = 50;
/// Longest source name and custom metric name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Derived metrics (ratios) are rounded to this many decimal places.
pub const RATIO_DECIMAL_PLACES: u32 = 6;

/// The earliest day a record may be for.
pub fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date")
}

/// The last day a record may be for.
pub fn last_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2099, 12, 31).expect("valid date")
}

/// Parses a `YYYY-MM-DD` calendar date, exactly that shape (chrono alone would
/// also take `2024-6-5`). The message names `field`.
pub fn parse_day(field: &str, raw: &str) -> Result<NaiveDate, String> {
    let shaped = raw.len() == 10
        && raw.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let invalid = || format!("{field} must be a calendar date formatted YYYY-MM-DD, not {raw:?}");
    if !shaped {
        return Err(invalid());
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| invalid())
}

/// Sources are case-insensitive labels (`Facebook` and `facebook` are one
/// source): trimmed and lower-cased, 1 to [`MAX_NAME_CHARS`] characters, no
/// control characters.
pub fn normalize_source(field: &str, raw: &str) -> Result<String, String> {
    let source = raw.trim().to_lowercase();
    if source.is_empty() {
        Err(format!("{field} must not be empty"))
    } else if source.chars().count() > MAX_NAME_CHARS {
        Err(format!("{field} must be at most {MAX_NAME_CHARS} characters"))
    } else if source.chars().any(char::is_control) {
        Err(format!("{field} must not contain control characters"))
    } else {
        Ok(source)
    }
}

/// An exact decimal that travels as a JSON number: counts, sums, ratios and
/// custom metric values. (Money amounts use [`Money`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = f64))]
pub struct Quantity(#[serde(with = "rust_decimal::serde::arbitrary_precision")] pub Decimal);

// ---------------------------------------------------------------------------
// Input

/// Body of `POST /campaigns/{id}/analytics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrackAnalytics {
    /// The day the metrics are for, `YYYY-MM-DD` (2000-01-01 to 2099-12-31),
    /// a local day in the campaign's `time_zone`. Absent: today in that zone.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "2024-06-15"))]
    pub date: Option<String>,
    /// Where the metrics come from; case-insensitive, returned lower-cased.
    #[cfg_attr(feature = "openapi", schema(example = "facebook"))]
    pub source: String,
    /// The ISO 4217 code `cost` and `revenue` are in. Optional; when given it
    /// must be the campaign's currency (nothing is converted).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "USD"))]
    pub currency: Option<Currency>,
    pub metrics: MetricsInput,
}

/// The metrics of one record. An absent metric counts as 0; `null` is refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsInput {
    /// Non-negative integer, at most 10^12.
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, example = 10000))]
    pub impressions: Option<Option<Number>>,
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, example = 500))]
    pub clicks: Option<Option<Number>>,
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, example = 50))]
    pub conversions: Option<Option<Number>>,
    /// Non-negative exact decimal, at most 6 decimal places.
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 250.00))]
    pub cost: Option<Option<Number>>,
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 5000.00))]
    pub revenue: Option<Option<Number>>,
    /// Name → non-negative number (at most 10 decimal places). Summed like the
    /// metrics above.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<BTreeMap<String, f64>>))]
    pub custom_metrics: Option<BTreeMap<String, Number>>,
}

/// The validated metrics of one record, as stored in `AnalyticsRecorded`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Metrics {
    pub impressions: u64,
    pub clicks: u64,
    pub conversions: u64,
    pub cost: Money,
    pub revenue: Money,
    #[serde(default)]
    pub custom_metrics: BTreeMap<String, Quantity>,
}

impl Metrics {
    pub fn totals(&self) -> Totals {
        Totals {
            impressions: Decimal::from(self.impressions),
            clicks: Decimal::from(self.clicks),
            conversions: Decimal::from(self.conversions),
            cost: self.cost.amount(),
            revenue: self.revenue.amount(),
        }
    }
}

/// Reads a JSON number exactly, or `None` when it is not a finite decimal that
/// fits. `serde_json`'s `arbitrary_precision` keeps the literal's digits, so
/// `250.00` is 250.00 and never passes through a binary float.
fn exact(number: &Number) -> Option<Decimal> {
    let literal = number.to_string();
    let value = Decimal::from_str_exact(&literal)
        .or_else(|_| Decimal::from_scientific(&literal))
        .ok()?;
    // `-0` is zero; keep its sign out of sums and output.
    Some(if value.is_zero() { value.abs() } else { value })
}

/// The value with at most `places` decimal places, dropping only trailing zeros.
fn within_places(value: Decimal, places: u32) -> Option<Decimal> {
    if value.scale() <= places {
        Some(value)
    } else {
        let normalized = value.normalize();
        (normalized.scale() <= places).then_some(normalized)
    }
}

fn present<'a>(
    errors: &mut ValidationErrors,
    field: &str,
    value: &'a Option<Option<Number>>,
) -> Option<&'a Number> {
    match value {
        None => None,
        Some(None) => {
            errors.add(field, format!("{field} must be a number, not null"));
            None
        }
        Some(Some(number)) => Some(number),
    }
}

fn check_count(errors: &mut ValidationErrors, field: &str, value: &Option<Option<Number>>) -> u64 {
    let Some(number) = present(errors, field, value) else {
        return 0;
    };
    let count = exact(number)
        .filter(|v| v.fract().is_zero() && !v.is_sign_negative())
        .and_then(|v| u64::try_from(v).ok());
    match count {
        Some(count) if count <= MAX_COUNT => count,
        Some(_) => {
            errors.add(field, format!("{field} must be at most {MAX_COUNT}"));
            0
        }
        None => {
            errors.add(
                field,
                format!("{field} must be a non-negative integer, not {number}"),
            );
            0
        }
    }
}

fn check_decimal(
    errors: &mut ValidationErrors,
    field: &str,
    number: &Number,
    places: u32,
    max: Decimal,
) -> Decimal {
    let Some(value) = exact(number) else {
        errors.add(field, format!("{field} must be a decimal number, not {number}"));
        return Decimal::ZERO;
    };
    if value.is_sign_negative() {
        errors.add(field, format!("{field} must not be negative"));
        return Decimal::ZERO;
    }
    if value > max {
        errors.add(field, format!("{field} must be at most {max}"));
        return Decimal::ZERO;
    }
    match within_places(value, places) {
        Some(value) => value,
        None => {
            errors.add(
                field,
                format!("{field} must have at most {places} decimal places"),
            );
            Decimal::ZERO
        }
    }
}

fn check_money(errors: &mut ValidationErrors, field: &str, value: &Option<Option<Number>>) -> Money {
    match present(errors, field, value) {
        None => Money::ZERO,
        Some(number) => Money(check_decimal(
            errors,
            field,
            number,
            MAX_MONEY_DECIMAL_PLACES,
            crate::money::MAX_AMOUNT,
        )),
    }
}

/// A request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidTrack {
    pub date: NaiveDate,
    pub source: String,
    pub metrics: Metrics,
}

/// The record's day: `YYYY-MM-DD`, 2000-01-01 to 2099-12-31. The message names `field`.
pub fn check_date(errors: &mut ValidationErrors, field: &str, raw: &str) -> Option<NaiveDate> {
    match parse_day(field, raw) {
        Ok(day) if day < first_day() || day > last_day() => {
            errors.add(
                field,
                format!("{field} must be between {} and {}", first_day(), last_day()),
            );
            None
        }
        Ok(day) => Some(day),
        Err(message) => {
            errors.add(field, message);
            None
        }
    }
}

impl MetricsInput {
    /// Checks every metric, adding each problem to `errors` under
    /// `metrics.<name>`; what is returned is meaningful only when none was added.
    pub fn check(&self, errors: &mut ValidationErrors) -> Metrics {
        let m = self;
        let impressions = check_count(errors, "metrics.impressions", &m.impressions);
        let clicks = check_count(errors, "metrics.clicks", &m.clicks);
        let conversions = check_count(errors, "metrics.conversions", &m.conversions);
        let cost = check_money(errors, "metrics.cost", &m.cost);
        let revenue = check_money(errors, "metrics.revenue", &m.revenue);
        let custom_metrics = check_custom(errors, m.custom_metrics.as_ref());
        Metrics {
            impressions,
            clicks,
            conversions,
            cost,
            revenue,
            custom_metrics,
        }
    }
}

fn check_custom(
    errors: &mut ValidationErrors,
    custom: Option<&BTreeMap<String, Number>>,
) -> BTreeMap<String, Quantity> {
    let mut custom_metrics = BTreeMap::new();
    if custom.is_some_and(|c| c.len() > MAX_CUSTOM_METRICS) {
        errors.add(
            "metrics.custom_metrics",
            format!("metrics.custom_metrics must have at most {MAX_CUSTOM_METRICS} entries"),
        );
        return custom_metrics;
    }
    for (name, number) in custom.into_iter().flatten() {
        let field = format!("metrics.custom_metrics.{name}");
        if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
            errors.add(
                field.clone(),
                format!("custom metric names must be 1 to {MAX_NAME_CHARS} characters"),
            );
            continue;
        }
        if name.chars().any(char::is_control) {
            errors.add(
                field.clone(),
                "custom metric names must not contain control characters",
            );
            continue;
        }
        let value = check_decimal(
            errors,
            &field,
            number,
            MAX_CUSTOM_DECIMAL_PLACES,
            MAX_CUSTOM_VALUE,
        );
        custom_metrics.insert(name.clone(), Quantity(value));
    }
    custom_metrics
}

/// A record may state its currency; it must be the campaign's, since amounts
/// in two currencies cannot be added (and nothing is converted).
pub fn check_currency(errors: &mut ValidationErrors, stated: Option<Currency>, campaign: Currency) {
    if let Some(stated) = stated.filter(|c| *c != campaign) {
        errors.add(
            "currency",
            format!("currency {stated} does not match the campaign's currency {campaign}"),
        );
    }
}

impl TrackAnalytics {
    /// Checks every field and reports every problem, each naming its field.
    /// A record without a `date` is for `today` (the campaign's local day).
    pub fn validate(&self, today: NaiveDate) -> Result<ValidTrack, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let date = match &self.date {
            Some(raw) => check_date(&mut errors, "date", raw),
            None => Some(today),
        };
        let source = normalize_source("source", &self.source)
            .map_err(|message| errors.add("source", message))
            .ok();
        let metrics = self.metrics.check(&mut errors);
        let (Some(date), Some(source)) = (date, source) else {
            return Err(errors);
        };
        errors.into_result(ValidTrack {
            date,
            source,
            metrics,
        })
    }
}

// ---------------------------------------------------------------------------
// Events

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsRecorded {
    pub record_id: Uuid,
    pub campaign_id: Uuid,
    pub project: ProjectSlug,
    pub date: NaiveDate,
    pub source: String,
    /// The campaign's currency when the record was tracked; absent in events
    /// stored before currencies existed (their campaigns are USD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    pub metrics: Metrics,
}

domain_events! {
    /// What tracking records: one event per `POST`ed record, never changed
    /// (its stream has that one event), and one per restatement of a day and
    /// source (on that key's stream, see [`restate`]).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum AnalyticsEvent: "analytics events" {
        Recorded(AnalyticsRecorded) = "AnalyticsRecorded",
        Restated(AnalyticsRestated) = "AnalyticsRestated",
    }
}

// ---------------------------------------------------------------------------
// The record aggregate

/// What `POST .../analytics` returns: the record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AnalyticsRecord))]
pub struct AnalyticsRecordState {
    pub id: Uuid,
    pub campaign_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "2024-06-15"))]
    pub date: NaiveDate,
    #[cfg_attr(feature = "openapi", schema(example = "facebook"))]
    pub source: String,
    /// What `metrics.cost` and `metrics.revenue` are in: the campaign's currency.
    pub currency: Currency,
    pub metrics: Metrics,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalyticsError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("Campaign not found")]
    CampaignNotFound,
    #[error("an analytics record with this id already exists")]
    AlreadyRecorded,
}

/// Record one day's metrics for one source of `campaign`, on behalf of `project`.
#[derive(Debug, Clone)]
pub struct Track {
    pub record_id: Uuid,
    pub project: ProjectSlug,
    /// The campaign as folded from its stream just before.
    pub campaign: Campaign,
    pub input: TrackAnalytics,
    /// When the request arrived: a record without a `date` is for this
    /// instant's day in the campaign's time zone.
    pub at: DateTime<Utc>,
}

/// One analytics record: written once, never changed (see [`Root`]).
pub type AnalyticsRecord = Root<AnalyticsRecordState>;

impl PlainAggregate for AnalyticsRecordState {
    const KIND: &'static str = "analytics";
    const STREAM_PREFIX: &'static str = STREAM_PREFIX;
    type Event = AnalyticsEvent;
    type Command = Track;
    type Error = AnalyticsError;

    /// Decides what tracking produces. A campaign that does not exist, was
    /// deleted, or belongs to another project is "not found" (checked before the
    /// body, so nothing about another project's campaign leaks through 400s).
    fn decide(root: &AnalyticsRecord, command: Track) -> Result<Vec<AnalyticsEvent>, AnalyticsError> {
        root.empty_or(AnalyticsError::AlreadyRecorded)?;
        let campaign = command
            .campaign
            .state()
            .filter(|c| c.project == command.project)
            .ok_or(AnalyticsError::CampaignNotFound)?;
        let currency = campaign.details.currency;
        let today = campaign.details.time_zone.today(command.at);
        let valid = match (command.input.validate(today), command.input.currency) {
            (Ok(valid), stated) if stated.is_none_or(|c| c == currency) => valid,
            (result, stated) => {
                let mut errors = result.err().unwrap_or_default();
                check_currency(&mut errors, stated, currency);
                return Err(AnalyticsError::Invalid(errors));
            }
        };
        Ok(vec![AnalyticsEvent::Recorded(AnalyticsRecorded {
            record_id: command.record_id,
            campaign_id: campaign.id,
            project: campaign.project.clone(),
            date: valid.date,
            source: valid.source,
            currency: Some(currency),
            metrics: valid.metrics,
        })])
    }

    fn evolve(state: &mut Option<Self>, event: &AnalyticsEvent, at: Recorded) {
        // A record's stream holds its one `AnalyticsRecorded`; restatements
        // live on streams of their own.
        let AnalyticsEvent::Recorded(e) = event else {
            return;
        };
        *state = Some(AnalyticsRecordState {
            id: e.record_id,
            campaign_id: e.campaign_id,
            date: e.date,
            source: e.source.clone(),
            currency: e.currency.unwrap_or_default(),
            metrics: e.metrics.clone(),
            recorded_at: at.at,
        });
    }

    /// A record is one event: always version 0.
    fn version(&self) -> i64 {
        0
    }
}

// ---------------------------------------------------------------------------
// Totals and derived metrics

/// Exact sums of the five core metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub impressions: Decimal,
    pub clicks: Decimal,
    pub conversions: Decimal,
    pub cost: Decimal,
    pub revenue: Decimal,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.impressions += other.impressions;
        self.clicks += other.clicks;
        self.conversions += other.conversions;
        self.cost += other.cost;
        self.revenue += other.revenue;
    }

    pub fn get(&self, metric: Metric) -> Decimal {
        match metric {
            Metric::Impressions => self.impressions,
            Metric::Clicks => self.clicks,
            Metric::Conversions => self.conversions,
            Metric::Cost => self.cost,
            Metric::Revenue => self.revenue,
        }
    }
}

/// A core metric a KPI can track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Metric {
    Impressions,
    Clicks,
    Conversions,
    Cost,
    Revenue,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Self::Impressions,
        Self::Clicks,
        Self::Conversions,
        Self::Cost,
        Self::Revenue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Impressions => "impressions",
            Self::Clicks => "clicks",
            Self::Conversions => "conversions",
            Self::Cost => "cost",
            Self::Revenue => "revenue",
        }
    }

    /// Matches a KPI's name or metric: trimmed, case-insensitive.
    pub fn matching(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }
}

/// `numerator / divisor` rounded to [`RATIO_DECIMAL_PLACES`] places (half away
/// from zero, trailing zeros dropped); `None` when the divisor is zero (or, beyond
/// any real data, when the quotient does not fit 28 significant digits).
pub fn ratio(numerator: Decimal, divisor: Decimal) -> Option<Quantity> {
    if divisor.is_zero() {
        return None;
    }
    numerator.checked_div(divisor).map(|q| {
        Quantity(
            q.round_dp_with_strategy(RATIO_DECIMAL_PLACES, RoundingStrategy::MidpointAwayFromZero)
                .normalize(),
        )
    })
}

/// Metrics derived from sums, never averaged from per-row ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DerivedMetrics {
    /// clicks / impressions
    pub ctr: Option<Quantity>,
    /// cost / clicks
    pub cpc: Option<Quantity>,
    /// 1000 · cost / impressions
    pub cpm: Option<Quantity>,
    /// cost / conversions
    pub cpa: Option<Quantity>,
    /// conversions / clicks
    pub conversion_rate: Option<Quantity>,
    /// revenue / cost
    pub roas: Option<Quantity>,
    /// (revenue − cost) / cost
    pub roi: Option<Quantity>,
}

impl DerivedMetrics {
    pub fn from_totals(t: &Totals) -> Self {
        // impressions / 1000 is exact in decimal, so CPM needs no multiplication
        // that could overflow and no second rounding.
        let thousands = t.impressions / Decimal::ONE_THOUSAND;
        Self {
            ctr: ratio(t.clicks, t.impressions),
            cpc: ratio(t.cost, t.clicks),
            cpm: ratio(t.cost, thousands),
            cpa: ratio(t.cost, t.conversions),
            conversion_rate: ratio(t.conversions, t.clicks),
            roas: ratio(t.revenue, t.cost),
            roi: t.revenue.checked_sub(t.cost).and_then(|net| ratio(net, t.cost)),
        }
    }
}

/// Spend in the summarized range against the campaign's `total_budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetUsage {
    /// What every amount here is in: the campaign's currency.
    pub currency: Currency,
    /// The campaign's `total_budget`; `null` when it has none.
    pub total_budget: Option<Money>,
    /// Sum of `cost` over the range.
    pub spent: Quantity,
    /// total_budget − spent; negative when overspent; `null` without a budget.
    pub remaining: Option<Quantity>,
    /// spent / total_budget (6 places); `null` without a budget or with a budget of 0.
    pub spent_ratio: Option<Quantity>,
}

impl BudgetUsage {
    pub fn new(currency: Currency, total_budget: Option<Money>, spent: Decimal) -> Self {
        Self {
            currency,
            total_budget,
            spent: Quantity(spent),
            remaining: total_budget.and_then(|b| b.amount().checked_sub(spent).map(Quantity)),
            spent_ratio: total_budget.and_then(|b| ratio(spent, b.amount())),
        }
    }
}

/// Where a KPI is defined on the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KpiOrigin {
    /// `kpis[]`, matched by `name`.
    #[serde(rename = "kpis")]
    Kpis,
    /// `goals.kpis[]`, matched by `metric`.
    #[serde(rename = "goals.kpis")]
    GoalKpis,
}

/// One campaign KPI measured against the tracked totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KpiProgress {
    /// The KPI's `name` (for `kpis[]`) or `metric` (for `goals.kpis[]`), as defined.
    pub name: String,
    pub defined_in: KpiOrigin,
    /// The core metric it matched; `null` when it matches none (then `actual`
    /// and `progress` are `null` too).
    pub metric: Option<Metric>,
    pub target: Money,
    /// The `current` value stored on the campaign, as the client set it.
    pub current: Money,
    /// The metric's total over the range.
    pub actual: Option<Quantity>,
    /// actual / target (6 places); `null` when unmatched or the target is 0.
    pub progress: Option<Quantity>,
}

/// Progress of every KPI of a campaign, `kpis[]` first, then `goals.kpis[]`.
pub fn kpi_progress(kpis: &[Kpi], goals: Option<&Goals>, totals: &Totals) -> Vec<KpiProgress> {
    let measure = |name: &str, defined_in, target: Money, current: Money| {
        let metric = Metric::matching(name);
        let actual = metric.map(|m| totals.get(m));
        KpiProgress {
            name: name.to_owned(),
            defined_in,
            metric,
            target,
            current,
            actual: actual.map(Quantity),
            progress: actual.and_then(|a| ratio(a, target.amount())),
        }
    };
    let defined = kpis
        .iter()
        .map(|k| measure(&k.name, KpiOrigin::Kpis, k.target, k.current));
    let goal_kpis = goals
        .into_iter()
        .flat_map(|g| g.kpis.iter())
        .map(|k| measure(&k.metric, KpiOrigin::GoalKpis, k.target, k.current));
    defined.chain(goal_kpis).collect()
}

pub mod kinds;
pub use kinds::{AppliedKind, CustomAggregate, KindName, MetricKind, WeightBase};
pub mod import;
pub mod restate;
pub use restate::{AnalyticsRestated, DayKey, Restate, RestateAnalytics, RestatedDay, RestatedDayState};

#[cfg(test)]
mod tests;
