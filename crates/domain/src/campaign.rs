//! The campaign aggregate: one event stream per campaign (`campaign-<uuid>`).
//!
//! `CampaignState`'s [`PlainAggregate`] impl decides which events a command produces
//! (or why it is refused) and folds events into state. Both are pure, so the
//! rules are tested without a database (given events, when command, then events).

use crate::aggregate::{change, PlainAggregate, Recorded, Root, Stamped};
use crate::analytics::kinds::{check_kinds, MetricKind};
use crate::changes::{changed, not_null};
use crate::input::{check_optional_text, check_text, double_option};
use crate::{
    changes, choice_enum, domain_events, update_body, Currency, Money, ProjectSlug, TimeZone,
    ValidationErrors,
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Every campaign event stream is named `campaign-<uuid>`.
pub const STREAM_PREFIX: &str = "campaign-";

pub fn stream_id(campaign_id: Uuid) -> String {
    format!("{STREAM_PREFIX}{campaign_id}")
}

const NAME_MAX: usize = 200;
const DESCRIPTION_MAX: usize = 10_000;
const LABEL_MAX: usize = 200;
const LIST_MAX: usize = 100;
const AGE_MAX: u32 = 150;

choice_enum! {
    /// Lifecycle status. The transition table is [`CampaignStatus::can_become`].
    pub enum CampaignStatus {
        Draft,
        Active,
        Paused,
        Completed,
        Cancelled,
    }
}

impl CampaignStatus {
    /// A new campaign starts as `draft` or `active`.
    pub fn is_initial(self) -> bool {
        matches!(self, Self::Draft | Self::Active)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }

    /// The transition table (docs/api-design.md, "Requests"). Staying in the same status is
    /// not a transition.
    pub fn can_become(self, next: Self) -> bool {
        use CampaignStatus::*;
        matches!(
            (self, next),
            (Draft, Active | Cancelled)
                | (Active, Paused | Completed | Cancelled)
                | (Paused, Active | Completed | Cancelled)
        )
    }
}

choice_enum! {
    /// What kind of campaign this is; used for filtering and reporting.
    pub enum CampaignType {
        Awareness,
        Consideration,
        Conversion,
        Sales,
        LeadGeneration,
        Engagement,
        Retention,
        ProductLaunch,
        Event,
        Email,
        SocialMedia,
        Content,
        Seo,
        Referral,
        Other,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetAudience {
    /// `[min, max]` age in years, inclusive.
    pub age_range: Option<[u32; 2]>,
    #[serde(default)]
    pub gender: Vec<String>,
    #[serde(default)]
    pub locations: Vec<String>,
    #[serde(default)]
    pub interests: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Goals {
    pub primary: Option<String>,
    #[serde(default)]
    pub secondary: Vec<String>,
    #[serde(default)]
    pub kpis: Vec<GoalKpi>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoalKpi {
    pub metric: String,
    pub target: Money,
    #[serde(default)]
    pub current: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Channel {
    pub name: String,
    #[serde(rename = "type")]
    pub channel_type: String,
    pub platform: Option<String>,
    pub budget_allocation: Option<Money>,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Kpi {
    pub name: String,
    pub target: Money,
    #[serde(default)]
    pub current: Money,
    pub unit: Option<String>,
}

/// The core attributes of a campaign: everything but identity, status and timestamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignDetails {
    pub name: String,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub campaign_type: CampaignType,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub total_budget: Option<Money>,
    /// What every money amount of the campaign (budget, KPI money targets,
    /// analytics cost and revenue) is in. Campaigns stored before currencies
    /// existed have none: USD.
    #[serde(default = "Currency::legacy")]
    pub currency: Currency,
    /// The IANA zone the campaign's analytics days are in. Campaigns stored
    /// before time zones existed have none: UTC.
    #[serde(default)]
    pub time_zone: TimeZone,
    pub target_audience: Option<TargetAudience>,
    pub goals: Option<Goals>,
    pub channels: Vec<Channel>,
    pub kpis: Vec<Kpi>,
    /// How each custom analytics metric combines (`sum` if undeclared).
    #[serde(default)]
    pub custom_metric_kinds: BTreeMap<String, MetricKind>,
}

/// Body of `POST /campaigns`. Unknown fields are refused so typos do not vanish.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateCampaign {
    #[cfg_attr(feature = "openapi", schema(example = "Summer Sale Campaign"))]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Defaults to `other`.
    #[serde(default, rename = "type")]
    pub campaign_type: Option<CampaignType>,
    /// `draft` (default) or `active`.
    #[serde(default)]
    pub status: Option<CampaignStatus>,
    #[serde(default)]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub total_budget: Option<Money>,
    /// ISO 4217 code (upper case); defaults to the service's configured
    /// default currency (`DEFAULT_CURRENCY`, USD if unset).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "EUR"))]
    pub currency: Option<Currency>,
    /// IANA time zone of the campaign's analytics days (`UTC` if absent):
    /// record dates and query ranges are local days in it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "America/Los_Angeles"))]
    pub time_zone: Option<TimeZone>,
    #[serde(default)]
    pub target_audience: Option<TargetAudience>,
    #[serde(default)]
    pub goals: Option<Goals>,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub kpis: Vec<Kpi>,
    /// Custom analytics metric name → how it combines over records, days and
    /// sources: `{"kind": "sum"}` (the default), `{"kind": "average",
    /// "weighted_by": "impressions"}` (or `clicks`, `conversions`, `records`)
    /// or `{"kind": "last"}`.
    #[serde(default)]
    pub custom_metric_kinds: BTreeMap<String, MetricKind>,
}

update_body! {
    /// Body of `PUT /campaigns/:id`: a partial update. An absent field is left as it
    /// is; `null` clears an optional field. Read-only fields a client may echo back from
    /// a GET (`id`, `project`, `created_at`, `updated_at`, `version`) are ignored;
    /// `status` may be echoed unchanged, but changing it goes through
    /// `PATCH /campaigns/:id/status` so the transition rules apply visibly.
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(default)]
    #[serde(deny_unknown_fields)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub struct UpdateCampaign {
        name: String,
        description: String,
        #[serde(deserialize_with = "double_option", rename = "type")]
        // Not required (absent: unchanged), not nullable (a campaign has a type).
        #[cfg_attr(feature = "openapi", schema(value_type = CampaignType, required = false))]
        pub campaign_type: Option<Option<CampaignType>>,
        start_date: DateTime<Utc>,
        end_date: DateTime<Utc>,
        total_budget: Money,
        /// Relabels the campaign's money: converts nothing (see docs/analytics.md).
        #[serde(deserialize_with = "double_option")]
        // Not required (absent: unchanged), not nullable (a campaign has a currency).
        #[cfg_attr(feature = "openapi", schema(value_type = String, required = false))]
        pub currency: Option<Option<Currency>>,
        /// Relabels the campaign's days: no recorded day moves (see docs/analytics.md).
        #[serde(deserialize_with = "double_option")]
        // Not required (absent: unchanged), not nullable (a campaign has a zone).
        #[cfg_attr(feature = "openapi", schema(value_type = String, required = false))]
        pub time_zone: Option<Option<TimeZone>>,
        target_audience: TargetAudience,
        goals: Goals,
        channels: Vec<Channel>,
        kpis: Vec<Kpi>,
        custom_metric_kinds: BTreeMap<String, MetricKind>,
        /// Accepted only when equal to the current status.
        pub status: Option<CampaignStatus>,
    }
    ignores echoed read_only_id = "id", read_only_project = "project", read_only_created_at = "created_at", read_only_updated_at = "updated_at", read_only_version = "version"
}

changes! {
    /// The fields an update actually changed, as stored in `CampaignUpdated`. The
    /// keys are the resource's keys, so a read model can merge them as they are.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(default)]
    pub struct CampaignChanges for CampaignDetails {
        name: String,
        description: Option<String>,
        #[serde(rename = "type")]
        campaign_type: CampaignType,
        start_date: Option<DateTime<Utc>>,
        end_date: Option<DateTime<Utc>>,
        total_budget: Option<Money>,
        currency: Currency,
        time_zone: TimeZone,
        target_audience: Option<TargetAudience>,
        goals: Option<Goals>,
        channels: Vec<Channel>,
        kpis: Vec<Kpi>,
        custom_metric_kinds: BTreeMap<String, MetricKind>,
    }
}

// ---------------------------------------------------------------------------
// Events

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignCreated {
    pub campaign_id: Uuid,
    pub project: ProjectSlug,
    pub status: CampaignStatus,
    pub details: CampaignDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignUpdated {
    pub campaign_id: Uuid,
    pub changes: CampaignChanges,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignStatusChanged {
    pub campaign_id: Uuid,
    pub from: CampaignStatus,
    pub to: CampaignStatus,
}

domain_events! {
    /// Everything that happens to a campaign.
    #[derive(Debug, Clone, PartialEq)]
    pub enum CampaignEvent: "campaign events" {
        Created(CampaignCreated) = "CampaignCreated",
        Updated(CampaignUpdated) = "CampaignUpdated",
        StatusChanged(CampaignStatusChanged) = "CampaignStatusChanged",
        Deleted(CampaignDeleted) = "CampaignDeleted",
    }
    every event has { campaign_id: Uuid }
    which is all CampaignDeleted carries
}

// ---------------------------------------------------------------------------
// State

/// A live campaign as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignState {
    pub id: Uuid,
    pub project: ProjectSlug,
    pub status: CampaignStatus,
    pub details: CampaignDetails,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Version (0-based) of the last event applied: the resource's ETag.
    pub version: i64,
}

/// The stored resource read back (a read model's row), so a projection can
/// fold further events onto it with the domain's own `evolve`.
impl<'de> Deserialize<'de> for CampaignState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The flat resource: the details are its other fields.
        #[derive(Deserialize)]
        struct Flat {
            id: Uuid,
            project: ProjectSlug,
            status: CampaignStatus,
            #[serde(flatten)]
            details: CampaignDetails,
            created_at: DateTime<Utc>,
            updated_at: DateTime<Utc>,
            version: i64,
        }
        let flat = Flat::deserialize(deserializer)?;
        Ok(CampaignState {
            id: flat.id,
            project: flat.project,
            status: flat.status,
            details: flat.details,
            created_at: flat.created_at,
            updated_at: flat.updated_at,
            version: flat.version,
        })
    }
}

/// The resource's JSON shape: flat, in a stable field order.
impl Serialize for CampaignState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let d = &self.details;
        let mut map = serializer.serialize_map(Some(19))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("project", &self.project)?;
        map.serialize_entry("name", &d.name)?;
        map.serialize_entry("description", &d.description)?;
        map.serialize_entry("type", &d.campaign_type)?;
        map.serialize_entry("status", &self.status)?;
        map.serialize_entry("start_date", &d.start_date)?;
        map.serialize_entry("end_date", &d.end_date)?;
        map.serialize_entry("total_budget", &d.total_budget)?;
        map.serialize_entry("currency", &d.currency)?;
        map.serialize_entry("time_zone", &d.time_zone)?;
        map.serialize_entry("target_audience", &d.target_audience)?;
        map.serialize_entry("goals", &d.goals)?;
        map.serialize_entry("channels", &d.channels)?;
        map.serialize_entry("kpis", &d.kpis)?;
        map.serialize_entry("custom_metric_kinds", &d.custom_metric_kinds)?;
        map.serialize_entry("created_at", &self.created_at)?;
        map.serialize_entry("updated_at", &self.updated_at)?;
        map.serialize_entry("version", &self.version)?;
        map.end()
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CampaignError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("Campaign not found")]
    NotFound,
    #[error("campaign already exists")]
    AlreadyExists,
    #[error("{}", illegal_transition_message(*.from, *.to))]
    IllegalTransition {
        from: Option<CampaignStatus>,
        to: CampaignStatus,
    },
}

fn illegal_transition_message(from: Option<CampaignStatus>, to: CampaignStatus) -> String {
    match from {
        None => format!(
            "a new campaign must start as draft or active, not {}",
            to.as_str()
        ),
        Some(from) => format!(
            "cannot change campaign status from {} to {}",
            from.as_str(),
            to.as_str()
        ),
    }
}

#[derive(Debug, Clone)]
pub enum CampaignCommand {
    Create {
        campaign_id: Uuid,
        project: ProjectSlug,
        input: Box<CreateCampaign>,
    },
    Update(Box<UpdateCampaign>),
    ChangeStatus(CampaignStatus),
    Delete,
}

/// The aggregate: a campaign folded from its stream (see [`Root`]).
pub type Campaign = Root<CampaignState>;

impl PlainAggregate for CampaignState {
    const KIND: &'static str = "campaign";
    const STREAM_PREFIX: &'static str = STREAM_PREFIX;
    type Event = CampaignEvent;
    type Command = CampaignCommand;
    type Error = CampaignError;

    fn decide(root: &Campaign, command: CampaignCommand) -> Result<Vec<CampaignEvent>, CampaignError> {
        match command {
            CampaignCommand::Create {
                campaign_id,
                project,
                input,
            } => create(root, campaign_id, project, *input),
            CampaignCommand::Update(input) => update(root.live_or(CampaignError::NotFound)?, *input),
            CampaignCommand::ChangeStatus(to) => change_status(root.live_or(CampaignError::NotFound)?, to),
            CampaignCommand::Delete => {
                let state = root.live_or(CampaignError::NotFound)?;
                Ok(vec![CampaignEvent::Deleted(CampaignDeleted {
                    campaign_id: state.id,
                })])
            }
        }
    }

    fn evolve(state: &mut Option<Self>, event: &CampaignEvent, at: Recorded) {
        match event {
            CampaignEvent::Created(e) => {
                *state = Some(CampaignState {
                    id: e.campaign_id,
                    project: e.project.clone(),
                    status: e.status,
                    details: e.details.clone(),
                    created_at: at.at,
                    updated_at: at.at,
                    version: at.version,
                });
            }
            CampaignEvent::Updated(e) => change(state, at, |state| e.changes.apply_to(&mut state.details)),
            CampaignEvent::StatusChanged(e) => change(state, at, |state| state.status = e.to),
            CampaignEvent::Deleted(_) => *state = None,
        }
    }

    fn version(&self) -> i64 {
        self.version
    }
}

impl Stamped for CampaignState {
    fn stamp(&mut self, at: Recorded) {
        self.updated_at = at.at;
        self.version = at.version;
    }
}

fn create(
    root: &Campaign,
    campaign_id: Uuid,
    project: ProjectSlug,
    input: CreateCampaign,
) -> Result<Vec<CampaignEvent>, CampaignError> {
    root.empty_or(CampaignError::AlreadyExists)?;
    let status = input.status.unwrap_or(CampaignStatus::Draft);
    let details = CampaignDetails {
        name: input.name,
        description: input.description,
        campaign_type: input.campaign_type.unwrap_or(CampaignType::Other),
        start_date: input.start_date,
        end_date: input.end_date,
        total_budget: input.total_budget,
        currency: input.currency.unwrap_or_default(),
        time_zone: input.time_zone.unwrap_or_default(),
        target_audience: input.target_audience,
        goals: input.goals,
        channels: input.channels,
        kpis: input.kpis,
        custom_metric_kinds: input.custom_metric_kinds,
    };
    validate_details(&details).map_err(CampaignError::Invalid)?;
    if !status.is_initial() {
        return Err(CampaignError::IllegalTransition {
            from: None,
            to: status,
        });
    }
    Ok(vec![CampaignEvent::Created(CampaignCreated {
        campaign_id,
        project,
        status,
        details,
    })])
}

fn update(state: &CampaignState, input: UpdateCampaign) -> Result<Vec<CampaignEvent>, CampaignError> {
    if let Some(status) = input.status {
        if status != state.status {
            return Err(CampaignError::Invalid(ValidationErrors::single(
                "status",
                "status cannot be changed with PUT; use PATCH /campaigns/{id}/status",
            )));
        }
    }
    let mut invalid = ValidationErrors::new();
    let current = &state.details;
    let name = changed(not_null(&mut invalid, "name", input.name), &current.name);
    let campaign_type = changed(
        not_null(&mut invalid, "type", input.campaign_type),
        &current.campaign_type,
    );
    let currency = changed(
        not_null(&mut invalid, "currency", input.currency),
        &current.currency,
    );
    let time_zone = changed(
        not_null(&mut invalid, "time_zone", input.time_zone),
        &current.time_zone,
    );
    if !invalid.is_empty() {
        return Err(CampaignError::Invalid(invalid));
    }
    let changes = CampaignChanges {
        name,
        description: changed(input.description, &current.description),
        campaign_type,
        start_date: changed(input.start_date, &current.start_date),
        end_date: changed(input.end_date, &current.end_date),
        total_budget: changed(input.total_budget, &current.total_budget),
        currency,
        time_zone,
        target_audience: changed(input.target_audience, &current.target_audience),
        goals: changed(input.goals, &current.goals),
        channels: changed(input.channels.map(Option::unwrap_or_default), &current.channels),
        kpis: changed(input.kpis.map(Option::unwrap_or_default), &current.kpis),
        custom_metric_kinds: changed(
            input.custom_metric_kinds.map(Option::unwrap_or_default),
            &current.custom_metric_kinds,
        ),
    };
    let mut merged = current.clone();
    changes.apply_to(&mut merged);
    validate_details(&merged).map_err(CampaignError::Invalid)?;
    if changes.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![CampaignEvent::Updated(CampaignUpdated {
        campaign_id: state.id,
        changes,
    })])
}

fn change_status(state: &CampaignState, to: CampaignStatus) -> Result<Vec<CampaignEvent>, CampaignError> {
    if !state.status.can_become(to) {
        return Err(CampaignError::IllegalTransition {
            from: Some(state.status),
            to,
        });
    }
    Ok(vec![CampaignEvent::StatusChanged(CampaignStatusChanged {
        campaign_id: state.id,
        from: state.status,
        to,
    })])
}

/// Every rule on a campaign's core attributes, checked after create and after
/// merging an update, so no sequence of partial updates can reach an invalid state.
pub fn validate_details(d: &CampaignDetails) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_text(&mut errors, "name", &d.name, NAME_MAX);
    check_optional_text(
        &mut errors,
        "description",
        d.description.as_deref(),
        DESCRIPTION_MAX,
    );
    if let (Some(start), Some(end)) = (d.start_date, d.end_date) {
        if end <= start {
            errors.add("end_date", "end_date must be after start_date");
        }
    }
    if let Some(budget) = d.total_budget {
        if let Err(msg) = budget.check() {
            errors.add("total_budget", format!("total_budget {msg}"));
        }
    }
    if let Some(audience) = &d.target_audience {
        check_audience(&mut errors, audience);
    }
    if let Some(goals) = &d.goals {
        check_goals(&mut errors, goals);
    }
    check_channels(&mut errors, &d.channels, d.total_budget);
    check_kpis(&mut errors, &d.kpis);
    check_kinds(&mut errors, &d.custom_metric_kinds);
    errors.into_result(())
}

fn check_audience(errors: &mut ValidationErrors, audience: &TargetAudience) {
    if let Some([min, max]) = audience.age_range {
        if min > max || max > AGE_MAX {
            errors.add(
                "target_audience.age_range",
                format!("target_audience.age_range must be [min, max] with min <= max <= {AGE_MAX}"),
            );
        }
    }
    check_labels(errors, "target_audience.gender", &audience.gender);
    check_labels(errors, "target_audience.locations", &audience.locations);
    check_labels(errors, "target_audience.interests", &audience.interests);
}

fn check_goals(errors: &mut ValidationErrors, goals: &Goals) {
    check_optional_text(errors, "goals.primary", goals.primary.as_deref(), DESCRIPTION_MAX);
    check_labels(errors, "goals.secondary", &goals.secondary);
    check_len(errors, "goals.kpis", goals.kpis.len());
    for (i, kpi) in goals.kpis.iter().enumerate() {
        check_text(errors, &format!("goals.kpis[{i}].metric"), &kpi.metric, LABEL_MAX);
        check_amount(errors, &format!("goals.kpis[{i}].target"), kpi.target);
        check_amount(errors, &format!("goals.kpis[{i}].current"), kpi.current);
    }
}

/// Each channel, and that their budget allocations fit in the total budget.
fn check_channels(errors: &mut ValidationErrors, channels: &[Channel], total: Option<Money>) {
    check_len(errors, "channels", channels.len());
    let mut allocated = Decimal::ZERO;
    for (i, channel) in channels.iter().enumerate() {
        check_text(errors, &format!("channels[{i}].name"), &channel.name, LABEL_MAX);
        check_text(
            errors,
            &format!("channels[{i}].type"),
            &channel.channel_type,
            LABEL_MAX,
        );
        check_optional_text(
            errors,
            &format!("channels[{i}].platform"),
            channel.platform.as_deref(),
            LABEL_MAX,
        );
        if let Some(allocation) = channel.budget_allocation {
            check_amount(errors, &format!("channels[{i}].budget_allocation"), allocation);
            allocated += allocation.amount().min(crate::money::MAX_AMOUNT);
        }
        if let (Some(start), Some(end)) = (channel.start_date, channel.end_date) {
            if end <= start {
                errors.add(
                    format!("channels[{i}].end_date"),
                    format!("channels[{i}].end_date must be after channels[{i}].start_date"),
                );
            }
        }
    }
    if let Some(total) = total {
        if allocated > total.amount() {
            errors.add(
                "channels",
                format!("channel budget allocations ({allocated}) exceed total_budget ({total})"),
            );
        }
    }
}

fn check_kpis(errors: &mut ValidationErrors, kpis: &[Kpi]) {
    check_len(errors, "kpis", kpis.len());
    for (i, kpi) in kpis.iter().enumerate() {
        check_text(errors, &format!("kpis[{i}].name"), &kpi.name, LABEL_MAX);
        check_amount(errors, &format!("kpis[{i}].target"), kpi.target);
        check_amount(errors, &format!("kpis[{i}].current"), kpi.current);
        check_optional_text(errors, &format!("kpis[{i}].unit"), kpi.unit.as_deref(), LABEL_MAX);
    }
}

fn check_amount(errors: &mut ValidationErrors, field: &str, amount: Money) {
    if let Err(msg) = amount.check() {
        errors.add(field, format!("{field} {msg}"));
    }
}

fn check_len(errors: &mut ValidationErrors, field: &str, len: usize) {
    if len > LIST_MAX {
        errors.add(field, format!("{field} must have at most {LIST_MAX} entries"));
    }
}

fn check_labels(errors: &mut ValidationErrors, field: &str, labels: &[String]) {
    check_len(errors, field, labels.len());
    for (i, label) in labels.iter().enumerate() {
        check_text(errors, &format!("{field}[{i}]"), label, LABEL_MAX);
    }
}

#[cfg(test)]
mod tests;

/// The resource's shape for the OpenAPI document only; a test in the binary
/// checks it lists exactly the keys [`CampaignState`] serializes.
#[cfg(feature = "openapi")]
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(as = Campaign)]
pub struct CampaignResource {
    pub id: Uuid,
    #[schema(example = "acme")]
    pub project: String,
    pub name: String,
    pub description: Option<String>,
    #[schema(rename = "type")]
    pub campaign_type: CampaignType,
    pub status: CampaignStatus,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub total_budget: Option<Money>,
    /// ISO 4217 code of every money amount of the campaign.
    pub currency: Currency,
    /// IANA time zone of the campaign's analytics days.
    #[schema(value_type = String, example = "America/Los_Angeles")]
    pub time_zone: String,
    pub target_audience: Option<TargetAudience>,
    pub goals: Option<Goals>,
    pub channels: Vec<Channel>,
    pub kpis: Vec<Kpi>,
    /// How each custom analytics metric combines; undeclared ones are summed.
    pub custom_metric_kinds: BTreeMap<String, MetricKind>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Stream version; also the `ETag`.
    pub version: i64,
}
