//! How a custom metric combines over records, days and sources: its *kind*.
//!
//! Core metrics are counts and money, which add up. A custom metric may be a
//! count too (`video_views`: `sum`, the default), a rate (`engagement_rate`:
//! an `average`, weighted by impressions so a day with ten times the
//! impressions counts ten times as much) or a level (`followers`: the `last`
//! value). A campaign declares the kind of each metric it needs to
//! (`custom_metric_kinds`); undeclared ones are summed, as before kinds
//! existed, and responses say so.
//!
//! The rollups keep, per day, source and metric, everything each kind needs
//! (the sum, the count of records, the value times each base and the bases'
//! sums, the last value), so declaring or changing a kind applies to all the
//! data at once, with no replay.

use super::Quantity;
use crate::ValidationErrors;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most custom metric kinds a campaign declares (one per custom metric).
pub const MAX_KINDS: usize = super::MAX_CUSTOM_METRICS;

/// An average is rounded to this many decimal places (those of a custom value).
pub const AVERAGE_DECIMAL_PLACES: u32 = super::MAX_CUSTOM_DECIMAL_PLACES;

/// What an `average` is weighted by: each record's count of it, or each
/// record once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WeightBase {
    /// Every record counts once: the plain mean.
    #[default]
    Records,
    Impressions,
    Clicks,
    Conversions,
}

impl WeightBase {
    /// Index into [`CustomAggregate::weighted`] and `bases` (`None`: records).
    fn index(self) -> Option<usize> {
        match self {
            Self::Records => None,
            Self::Impressions => Some(0),
            Self::Clicks => Some(1),
            Self::Conversions => Some(2),
        }
    }
}

/// The declared kind of one custom metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MetricKind {
    /// Added up (the default, and what undeclared metrics get). Variants
    /// are structs, even empty, so `deny_unknown_fields` holds for them too.
    Sum {},
    /// Σ(value × base) / Σ base over the records that carry the metric.
    Average {
        #[serde(default)]
        weighted_by: WeightBase,
    },
    /// The value of the latest record: per source the latest day's, and
    /// within a day the last one in the log; over several sources, the sum of
    /// each source's latest value (followers on each platform add up).
    Last {},
}

impl Default for MetricKind {
    fn default() -> Self {
        Self::Sum {}
    }
}

/// What the rollups hold for one metric over a group of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CustomAggregate {
    pub sum: Decimal,
    /// Records that carried the metric.
    pub records: Decimal,
    /// Σ value × impressions, clicks, conversions.
    pub weighted: [Decimal; 3],
    /// Σ impressions, clicks, conversions of those records.
    pub bases: [Decimal; 3],
    /// The latest value (see [`MetricKind::Last`]); `None` only for rows
    /// projected before kinds existed, until a replay fills them in.
    pub last: Option<Decimal>,
}

impl MetricKind {
    /// The metric's value over the group, `None` when an average has no base
    /// (no impressions at all, say) or a `last` is unknown.
    pub fn combine(self, a: &CustomAggregate) -> Option<Quantity> {
        match self {
            Self::Sum {} => Some(Quantity(a.sum)),
            Self::Average { weighted_by } => {
                let (numerator, divisor) = match weighted_by.index() {
                    None => (a.sum, a.records),
                    Some(i) => (a.weighted[i], a.bases[i]),
                };
                if divisor.is_zero() {
                    return None;
                }
                numerator.checked_div(divisor).map(|q| {
                    Quantity(
                        q.round_dp_with_strategy(
                            AVERAGE_DECIMAL_PLACES,
                            RoundingStrategy::MidpointAwayFromZero,
                        )
                        .normalize(),
                    )
                })
            }
            Self::Last {} => a.last.map(Quantity),
        }
    }
}

/// How a response reports the kind it applied to one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppliedKind {
    /// `sum`, `average` or `last`.
    pub kind: KindName,
    /// For an average, its weight; otherwise `null`.
    pub weighted_by: Option<WeightBase>,
    /// `false` for a metric the campaign does not declare: it was summed.
    pub declared: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KindName {
    Sum,
    Average,
    Last,
}

impl AppliedKind {
    pub fn of(declared: Option<MetricKind>) -> Self {
        let kind = declared.unwrap_or_default();
        let (kind_name, weighted_by) = match kind {
            MetricKind::Sum {} => (KindName::Sum, None),
            MetricKind::Average { weighted_by } => (KindName::Average, Some(weighted_by)),
            MetricKind::Last {} => (KindName::Last, None),
        };
        Self {
            kind: kind_name,
            weighted_by,
            declared: declared.is_some(),
        }
    }
}

/// A campaign's declarations: at most [`MAX_KINDS`], each name a valid
/// custom metric name.
pub fn check_kinds(errors: &mut ValidationErrors, kinds: &BTreeMap<String, MetricKind>) {
    let field = "custom_metric_kinds";
    if kinds.len() > MAX_KINDS {
        errors.add(field, format!("{field} must have at most {MAX_KINDS} entries"));
    }
    for name in kinds.keys() {
        if name.trim().is_empty()
            || name.chars().count() > super::MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            errors.add(
                format!("{field}.{name}"),
                format!(
                    "custom metric names must be 1 to {} characters, without control characters",
                    super::MAX_NAME_CHARS
                ),
            );
        }
    }
}
