//! Bulk backfill: the rows of `POST .../analytics/import`, a CSV file whose
//! header names its columns: `date`, `source` (both required), `impressions`,
//! `clicks`, `conversions`, `cost`, `revenue`, an optional `currency`, and any
//! other column as a custom metric of that name.
//!
//! Each row is one day's metrics for one source, checked by the same rules as
//! a `POST` body (the messages name the column), and becomes one event: an
//! `AnalyticsRestated` of its day and source in `replace` mode (the default:
//! re-importing a file changes nothing), an `AnalyticsRecorded` in `add`
//! mode. The CSV reading and the writing are the command side's.

use super::{
    check_currency, check_date, normalize_source, AnalyticsRecorded, AnalyticsRestated, DayKey, Metric,
    Metrics, MetricsInput, MAX_CUSTOM_METRICS, MAX_NAME_CHARS,
};
use crate::campaign::CampaignState;
use crate::{Currency, ValidationErrors};
use chrono::NaiveDate;
use serde_json::Number;
use std::collections::BTreeMap;
use std::str::FromStr;
use uuid::Uuid;

/// How imported rows combine with what a day and source already have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    /// Each row restates its day and source (as a `PUT` does): importing the
    /// same file again changes nothing.
    #[default]
    Replace,
    /// Each row adds to its day and source (as a `POST` does).
    Add,
}

impl ImportMode {
    pub fn parse(field: &str, raw: &str) -> Result<Self, String> {
        match raw {
            "replace" => Ok(Self::Replace),
            "add" => Ok(Self::Add),
            other => Err(format!("{field} must be replace or add, not {other:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Add => "add",
        }
    }
}

/// What a column of the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Date,
    Source,
    Currency,
    Core(Metric),
    Custom(String),
}

/// Most columns of a file: date, source, currency, the five core metrics and
/// as many custom metrics as a record may carry.
pub const MAX_COLUMNS: usize = 3 + Metric::ALL.len() + MAX_CUSTOM_METRICS;

/// Maps the header: the standard columns by name, case-insensitively (a
/// leading byte-order mark is ignored); every other column is a custom
/// metric under its trimmed name, case-sensitive as custom metrics are.
pub fn map_header(names: &[&str]) -> Result<Vec<Column>, String> {
    if names.len() > MAX_COLUMNS {
        return Err(format!(
            "it has {} columns; at most {MAX_COLUMNS} (date, source, currency, the five metrics and {MAX_CUSTOM_METRICS} custom metrics)",
            names.len()
        ));
    }
    let mut columns = Vec::with_capacity(names.len());
    for (i, raw) in names.iter().enumerate() {
        let raw = if i == 0 {
            raw.trim_start_matches('\u{feff}')
        } else {
            raw
        };
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(format!(
                "header column {} is not a column name (empty, control characters, or longer than {MAX_NAME_CHARS} characters)",
                i + 1
            ));
        }
        let lower = name.to_lowercase();
        let column = match lower.as_str() {
            "date" => Column::Date,
            "source" => Column::Source,
            "currency" => Column::Currency,
            other => Metric::matching(other).map_or_else(|| Column::Custom(name.to_owned()), Column::Core),
        };
        if columns.contains(&column) {
            return Err(format!("column {name:?} appears twice"));
        }
        columns.push(column);
    }
    for (required, name) in [(Column::Date, "date"), (Column::Source, "source")] {
        if !columns.contains(&required) {
            return Err(format!("it has no `{name}` column"));
        }
    }
    Ok(columns)
}

/// One valid row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    pub date: NaiveDate,
    pub source: String,
    pub metrics: Metrics,
}

/// Why a row was refused: the first column at fault and every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub field: Option<String>,
    pub message: String,
}

/// A metric cell as the number it holds; an empty cell is an absent metric.
fn number(errors: &mut ValidationErrors, field: &str, cell: &str) -> Option<Option<Number>> {
    let cell = cell.trim();
    if cell.is_empty() {
        return None;
    }
    match Number::from_str(cell) {
        Ok(number) => Some(Some(number)),
        Err(_) => {
            errors.add(field, format!("{field} must be a number, not {cell:?}"));
            None
        }
    }
}

/// Checks one row (its cells in column order) for a campaign in `currency`.
pub fn parse_row(columns: &[Column], cells: &[&str], currency: Currency) -> Result<ImportRow, RowProblem> {
    if cells.len() != columns.len() {
        return Err(RowProblem {
            field: None,
            message: format!("expected {} fields, found {}", columns.len(), cells.len()),
        });
    }
    let mut errors = ValidationErrors::new();
    let (mut date, mut source) = (None, None);
    let mut input = MetricsInput::default();
    let mut custom = BTreeMap::new();
    for (column, cell) in columns.iter().zip(cells) {
        match column {
            Column::Date if cell.trim().is_empty() => errors.add("date", "date is required"),
            Column::Date => date = check_date(&mut errors, "date", cell.trim()),
            Column::Source => {
                source = normalize_source("source", cell)
                    .map_err(|message| errors.add("source", message))
                    .ok();
            }
            Column::Currency if cell.trim().is_empty() => {}
            Column::Currency => match Currency::parse("currency", cell.trim()) {
                Ok(stated) => check_currency(&mut errors, Some(stated), currency),
                Err(message) => errors.add("currency", message),
            },
            Column::Core(metric) => {
                let value = number(&mut errors, metric.as_str(), cell);
                *match metric {
                    Metric::Impressions => &mut input.impressions,
                    Metric::Clicks => &mut input.clicks,
                    Metric::Conversions => &mut input.conversions,
                    Metric::Cost => &mut input.cost,
                    Metric::Revenue => &mut input.revenue,
                } = value;
            }
            Column::Custom(name) => {
                if let Some(Some(value)) = number(&mut errors, name, cell) {
                    custom.insert(name.clone(), value);
                }
            }
        }
    }
    input.custom_metrics = Some(custom);
    let metrics = input.check(&mut errors);
    match (date, source) {
        (Some(date), Some(source)) if errors.is_empty() => Ok(ImportRow {
            date,
            source,
            metrics,
        }),
        _ => Err(problem(errors)),
    }
}

/// Every problem of a row, fields named by their column (`cost`, not
/// `metrics.cost`).
fn problem(errors: ValidationErrors) -> RowProblem {
    let column = |field: &str| {
        field
            .strip_prefix("metrics.custom_metrics.")
            .or_else(|| field.strip_prefix("metrics."))
            .unwrap_or(field)
            .to_owned()
    };
    let message = errors
        .0
        .iter()
        .map(|e| {
            let named = column(&e.field);
            e.message
                .replace(&e.field, &named)
                .replace("custom metric names", "custom metric column names")
        })
        .collect::<Vec<_>>()
        .join("; ");
    RowProblem {
        field: errors.first().map(|e| column(&e.field)),
        message,
    }
}

impl ImportRow {
    /// The day and source the row is for.
    pub fn key(&self, campaign_id: Uuid) -> DayKey {
        DayKey {
            campaign_id,
            date: self.date,
            source: self.source.clone(),
        }
    }

    /// The row as a record of its own (`add` mode).
    pub fn recorded(self, record_id: Uuid, campaign: &CampaignState) -> AnalyticsRecorded {
        AnalyticsRecorded {
            record_id,
            campaign_id: campaign.id,
            project: campaign.project.clone(),
            date: self.date,
            source: self.source,
            currency: Some(campaign.details.currency),
            metrics: self.metrics,
        }
    }

    /// The row as a restatement of its day and source (`replace` mode).
    pub fn restated(self, campaign: &CampaignState) -> AnalyticsRestated {
        AnalyticsRestated {
            campaign_id: campaign.id,
            project: campaign.project.clone(),
            date: self.date,
            source: self.source,
            currency: campaign.details.currency,
            metrics: self.metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::Quantity;
    use rust_decimal::Decimal;

    fn header(names: &str) -> Vec<Column> {
        map_header(&names.split(',').collect::<Vec<_>>()).unwrap()
    }

    fn row(columns: &[Column], cells: &str) -> Result<ImportRow, RowProblem> {
        parse_row(columns, &cells.split(',').collect::<Vec<_>>(), Currency::USD)
    }

    #[test]
    fn headers_map_standard_columns_by_name_and_the_rest_to_custom_metrics() {
        let columns = header("\u{feff}Date,SOURCE,impressions,cost,engagement_rate, Video Views ");
        assert_eq!(
            columns,
            vec![
                Column::Date,
                Column::Source,
                Column::Core(Metric::Impressions),
                Column::Core(Metric::Cost),
                Column::Custom("engagement_rate".into()),
                Column::Custom("Video Views".into()),
            ]
        );
        for (bad, why) in [
            ("source,cost", "no `date`"),
            ("date,cost", "no `source`"),
            ("date,source,Date", "twice"),
            ("date,source,,cost", "not a column name"),
        ] {
            let message = map_header(&bad.split(',').collect::<Vec<_>>()).unwrap_err();
            assert!(message.contains(why), "{bad}: {message}");
        }
        let wide: Vec<String> = ["date", "source"]
            .into_iter()
            .map(String::from)
            .chain((0..MAX_COLUMNS).map(|i| format!("m{i}")))
            .collect();
        let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
        assert!(map_header(&wide).unwrap_err().contains("columns"));
    }

    #[test]
    fn rows_are_checked_like_post_bodies_with_columns_named() {
        let columns = header("date,source,impressions,clicks,cost,currency,engagement_rate,views");
        let ok = row(&columns, "2024-03-10, Google ,1000,,12.345678,USD,0.05,").unwrap();
        assert_eq!(
            (ok.date.to_string(), ok.source.as_str()),
            ("2024-03-10".into(), "google")
        );
        assert_eq!((ok.metrics.impressions, ok.metrics.clicks), (1000, 0));
        assert_eq!(ok.metrics.cost.amount(), Decimal::new(12_345_678, 6));
        // An empty custom cell is an absent metric, not a zero.
        assert_eq!(
            ok.metrics.custom_metrics.into_iter().collect::<Vec<_>>(),
            vec![("engagement_rate".to_owned(), Quantity(Decimal::new(5, 2)))]
        );
        for (cells, field, words) in [
            (",google,1,1,1,,,", "date", "date is required"),
            ("2024-02-30,google,1,1,1,,,", "date", "calendar date"),
            ("2024-03-10,,1,1,1,,,", "source", "must not be empty"),
            (
                "2024-03-10,google,ten,1,1,,,",
                "impressions",
                "impressions must be a number",
            ),
            (
                "2024-03-10,google,1.5,1,1,,,",
                "impressions",
                "impressions must be a non-negative integer",
            ),
            ("2024-03-10,google,1,1,-2,,,", "cost", "cost must not be negative"),
            (
                "2024-03-10,google,1,1,1.1234567,,,",
                "cost",
                "cost must have at most 6 decimal places",
            ),
            (
                "2024-03-10,google,1,1,1,EUR,,",
                "currency",
                "does not match the campaign's currency USD",
            ),
            (
                "2024-03-10,google,1,1,1,,x,",
                "engagement_rate",
                "engagement_rate must be a number",
            ),
        ] {
            let problem = row(&columns, cells).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{cells}: {problem:?}");
            assert!(problem.message.contains(words), "{cells}: {problem:?}");
        }
        let short = row(&columns, "2024-03-10,google").unwrap_err();
        assert_eq!(
            (short.field, short.message),
            (None, "expected 8 fields, found 2".into())
        );
        // Every problem of a row is listed, the first column at fault named.
        let both = row(&columns, "2024-13-01,google,x,1,1,,,").unwrap_err();
        assert_eq!(both.field.as_deref(), Some("date"));
        assert!(both.message.contains("impressions"), "{both:?}");
    }

    #[test]
    fn modes_parse_and_replace_is_the_default() {
        assert_eq!(ImportMode::default(), ImportMode::Replace);
        assert_eq!(ImportMode::parse("mode", "add"), Ok(ImportMode::Add));
        assert_eq!(ImportMode::parse("mode", "replace"), Ok(ImportMode::Replace));
        assert!(ImportMode::parse("mode", "Replace").is_err());
    }
}
