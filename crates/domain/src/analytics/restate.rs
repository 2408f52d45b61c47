//! Restating a day: `PUT .../analytics/{date}/{source}` *replaces* what a
//! campaign has for that day and source, where `POST` adds to it.
//!
//! Ad platforms restate recent days as late conversions arrive, so sync jobs
//! re-send the last N days; by `POST` each re-send would count again. A
//! restatement is an event that supersedes everything before it in the log for
//! its key (earlier `POST`s and `PUT`s alike); `POST`s after it add on top.
//!
//! Each key `(campaign, date, source)` is an aggregate of its own, on the
//! stream `analytics-<key uuid>` (a UUID v5 of the key, so every writer finds
//! the same stream without a lookup). Its state is the last restatement, which
//! is what makes a repeated `PUT` a no-op: the same metrics again decide no
//! event. Concurrent `PUT`s of one key are ordered by the stream's version
//! (the kernel retries the loser against the winner); different keys never
//! contend.

use super::{
    check_currency, check_date, normalize_source, AnalyticsError, AnalyticsEvent, Metrics, MetricsInput,
    STREAM_PREFIX,
};
use crate::aggregate::{PlainAggregate, Recorded, Root};
use crate::campaign::Campaign;
use crate::{Currency, ProjectSlug, ValidationErrors};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace of the day keys' UUIDs (v5). Never change it: it names every
/// restatement stream already written.
const DAY_KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6d61_726b_6574_696e_6700_616e_616c_7974);

/// A day and source of a campaign: what a restatement replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayKey {
    pub campaign_id: Uuid,
    pub date: NaiveDate,
    /// Normalized as every source is (trimmed, lower-cased).
    pub source: String,
}

impl DayKey {
    /// The key named by a URL's `{date}` and `{source}`, checked like a
    /// record's (errors name `date` and `source`).
    pub fn parse(campaign_id: Uuid, date: &str, source: &str) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let date = check_date(&mut errors, "date", date);
        let source = normalize_source("source", source)
            .map_err(|message| errors.add("source", message))
            .ok();
        match (date, source) {
            (Some(date), Some(source)) => errors.into_result(Self {
                campaign_id,
                date,
                source,
            }),
            _ => Err(errors),
        }
    }

    /// The id of the key's stream: the same for every writer. The campaign id
    /// and the date have fixed lengths, so the text cannot be ambiguous
    /// whatever the source contains.
    pub fn id(&self) -> Uuid {
        let name = format!("{}/{}/{}", self.campaign_id, self.date, self.source);
        Uuid::new_v5(&DAY_KEY_NAMESPACE, name.as_bytes())
    }
}

/// Body of `PUT /campaigns/{id}/analytics/{date}/{source}`: the day's metrics
/// in full (the date and source are in the path).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestateAnalytics {
    /// As in a `POST`: optional, and when given the campaign's currency.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "USD"))]
    pub currency: Option<Currency>,
    pub metrics: MetricsInput,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsRestated {
    pub campaign_id: Uuid,
    pub project: ProjectSlug,
    pub date: NaiveDate,
    pub source: String,
    /// The campaign's currency at the time.
    pub currency: Currency,
    pub metrics: Metrics,
}

/// Restate one day and source of `campaign`, on behalf of `project`.
#[derive(Debug, Clone)]
pub struct Restate {
    pub key: DayKey,
    pub project: ProjectSlug,
    /// The campaign as folded from its stream just before.
    pub campaign: Campaign,
    pub input: RestateAnalytics,
}

/// What `PUT .../analytics/{date}/{source}` returns: the day and source as
/// last restated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RestatedDay))]
pub struct RestatedDayState {
    pub campaign_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "2024-06-15"))]
    pub date: NaiveDate,
    #[cfg_attr(feature = "openapi", schema(example = "google"))]
    pub source: String,
    /// What `metrics.cost` and `metrics.revenue` are in: the campaign's currency.
    pub currency: Currency,
    /// The metrics the day and source were restated to.
    pub metrics: Metrics,
    /// When the last restatement that changed something was recorded.
    pub restated_at: DateTime<Utc>,
    /// How many restatements changed this key, minus one (the stream
    /// version); also the `ETag`.
    pub version: i64,
}

/// One key's restatements (see [`Root`]).
pub type RestatedDay = Root<RestatedDayState>;

impl PlainAggregate for RestatedDayState {
    const KIND: &'static str = "analytics day";
    const STREAM_PREFIX: &'static str = STREAM_PREFIX;
    type Event = AnalyticsEvent;
    type Command = Restate;
    type Error = AnalyticsError;

    /// The campaign is checked first (not found, deleted, another project's:
    /// "not found", whatever the body), then the metrics. The same metrics as
    /// the last restatement decide nothing.
    fn decide(root: &RestatedDay, command: Restate) -> Result<Vec<AnalyticsEvent>, AnalyticsError> {
        let campaign = command
            .campaign
            .state()
            .filter(|c| c.project == command.project && c.id == command.key.campaign_id)
            .ok_or(AnalyticsError::CampaignNotFound)?;
        let currency = campaign.details.currency;
        let mut errors = ValidationErrors::new();
        check_currency(&mut errors, command.input.currency, currency);
        let metrics = command.input.metrics.check(&mut errors);
        errors.into_result(()).map_err(AnalyticsError::Invalid)?;
        if root
            .state()
            .is_some_and(|day| day.metrics == metrics && day.currency == currency)
        {
            return Ok(vec![]);
        }
        Ok(vec![AnalyticsEvent::Restated(AnalyticsRestated {
            campaign_id: campaign.id,
            project: campaign.project.clone(),
            date: command.key.date,
            source: command.key.source,
            currency,
            metrics,
        })])
    }

    fn evolve(state: &mut Option<Self>, event: &AnalyticsEvent, at: Recorded) {
        let AnalyticsEvent::Restated(e) = event else {
            return;
        };
        *state = Some(RestatedDayState {
            campaign_id: e.campaign_id,
            date: e.date,
            source: e.source.clone(),
            currency: e.currency,
            metrics: e.metrics.clone(),
            restated_at: at.at,
            version: at.version,
        });
    }

    fn version(&self) -> i64 {
        self.version
    }
}
