//! The lead aggregate: one event stream per lead (`lead-<uuid>`), every event
//! carrying its `campaign_id`.
//!
//! A lead's personal data (name, email, phone, notes, custom fields) never enters
//! the log in clear: events carry it sealed with the lead's own key
//! ([`crypto`]), which lives outside the log and is destroyed when the lead is
//! deleted (crypto-shredding). What stays readable in the log forever is only the
//! fact of the lead: its id, campaign, project, status, source and timestamps.
//!
//! As for every aggregate, `decide` and `evolve` are pure. The key and the
//! nonce are passed in ([`LeadKeys`]), so the domain still does no I/O and tests are
//! deterministic. Email uniqueness per campaign is not decided here: it needs
//! every other lead of the campaign, so the write side guarantees it with a
//! unique index (see the `lead-vault` crate); the domain defines what "the same
//! email" means ([`normalized_email`]).

pub mod crypto;
mod publish;

pub use crypto::{CryptoError, LeadKey, Sealed};
pub use publish::{publishable_event, withheld_event, PublishError};

use crate::aggregate::{change, Aggregate, Placement, Recorded, Root, Stamped};
use crate::changes::not_null;
use crate::input::double_option;
use crate::{changes, choice_enum, domain_events, update_body, ProjectSlug, ValidationErrors};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Every lead event stream is named `lead-<uuid>`.
pub const STREAM_PREFIX: &str = "lead-";

pub fn stream_id(lead_id: Uuid) -> String {
    format!("{STREAM_PREFIX}{lead_id}")
}

pub const NAME_MAX: usize = 200;
/// RFC 5321: 254 characters for a whole address, 64 for the local part.
pub const EMAIL_MAX: usize = 254;
const EMAIL_LOCAL_MAX: usize = 64;
pub const PHONE_MAX: usize = 50;
pub const COMPANY_MAX: usize = 200;
pub const SOURCE_MAX: usize = 100;
pub const NOTES_MAX: usize = 10_000;
pub const CUSTOM_FIELDS_MAX: usize = 50;
pub const CUSTOM_KEY_MAX: usize = 100;
pub const CUSTOM_VALUE_MAX: usize = 2_000;

/// The columns of a lead, in CSV order: the resource's field names, so the
/// export reads them from the stored resource and the import sets them with
/// [`CreateLead::set_field`]. A custom field may not use one of these names
/// (case-insensitively), or a CSV export could not be imported back.
pub const STANDARD_FIELDS: [&str; 7] = ["name", "email", "phone", "company", "source", "status", "notes"];

/// Free-form extra attributes: text keys to text values, sorted by key so every
/// serialization of a lead is the same.
pub type CustomFields = BTreeMap<String, String>;

choice_enum! {
    pub enum LeadStatus {
        New,
        Contacted,
        Qualified,
        Converted,
        Lost,
    }
}

/// A lead's personal data: what is encrypted in events and erased on deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    pub name: Option<String>,
    pub email: String,
    pub phone: Option<String>,
    /// Absent from leads sealed before the field existed.
    #[serde(default)]
    pub company: Option<String>,
    pub notes: Option<String>,
    pub custom_fields: CustomFields,
}

changes! {
    /// The personal fields an update changed (absent = unchanged, `null` = cleared).
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(default)]
    pub struct PersonalChanges for LeadState {
        name: Option<String>,
        email: String,
        phone: Option<String>,
        company: Option<String>,
        notes: Option<String>,
        custom_fields: CustomFields,
    }
}

/// Body of `POST /campaigns/{id}/leads`, and what each CSV row is turned into.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateLead {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "John Doe"))]
    pub name: Option<String>,
    #[cfg_attr(feature = "openapi", schema(example = "john@example.com"))]
    pub email: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "+1234567890"))]
    pub phone: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "Acme Inc."))]
    pub company: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "facebook"))]
    pub source: Option<String>,
    /// Defaults to `new`.
    #[serde(default)]
    pub status: Option<LeadStatus>,
    #[serde(default)]
    pub notes: Option<String>,
    /// Text values only; an empty value is the same as an absent key.
    #[serde(default)]
    pub custom_fields: Option<CustomFields>,
}

impl CreateLead {
    /// Sets one of [`STANDARD_FIELDS`] from a text value (a CSV cell), or says
    /// why the value cannot be that field. Empty optional values stay empty
    /// and are cleaned by [`validate_create`].
    pub fn set_field(&mut self, field: &str, value: String) -> Result<(), String> {
        match field {
            "name" => self.name = Some(value),
            "email" => self.email = value,
            "phone" => self.phone = Some(value),
            "company" => self.company = Some(value),
            "source" => self.source = Some(value),
            "notes" => self.notes = Some(value),
            "status" => {
                let trimmed = value.trim();
                if !trimmed.is_empty() {
                    let status = LeadStatus::parse(&trimmed.to_lowercase())
                        .ok_or_else(|| format!("status must be one of {}", LeadStatus::CHOICES))?;
                    self.status = Some(status);
                }
            }
            other => return Err(format!("{other} is not a lead field")),
        }
        Ok(())
    }
}

update_body! {
    /// Body of `PUT /campaigns/{id}/leads/{lead_id}`: a partial update. Absent fields
    /// stay; `null` clears an optional field (`email` and `status` cannot be null);
    /// `custom_fields` replaces the whole map. Read-only fields echoed from a GET
    /// are ignored.
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(default)]
    #[serde(deny_unknown_fields)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub struct UpdateLead {
        name: String,
        email: String,
        phone: String,
        company: String,
        source: String,
        status: LeadStatus,
        notes: String,
        // The schema spells the map out: `CustomFields` is only an alias.
        #[serde(deserialize_with = "double_option")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<BTreeMap<String, String>>))]
        pub custom_fields: Option<Option<CustomFields>>,
    }
    ignores echoed read_only_id = "id", read_only_campaign_id = "campaign_id", read_only_created_at = "created_at", read_only_updated_at = "updated_at", read_only_version = "version"
}

/// An upsert keyed by email (`PUT .../leads/by-email/{email}`, or an item of
/// an upsert batch): the body is an [`UpdateLead`], applied to the lead that
/// has the address, or made into a [`CreateLead`] with it when none has.
impl UpdateLead {
    /// Checks the body against the address it is keyed by and takes its
    /// `email` out: an upsert never changes a lead's address (that is
    /// `PUT .../leads/{lead_id}`), so the body may only repeat it (in any case
    /// and spacing); the stored spelling stays. `status` cannot be `null`.
    pub fn for_upsert(mut self, email: &str) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        match self.email.take() {
            None => {}
            Some(Some(given)) if normalized_email(&given) == normalized_email(email) => {}
            Some(_) => errors.add(
                "email",
                "email must be the address the upsert is keyed by (change an address with PUT .../leads/{lead_id})",
            ),
        }
        if matches!(self.status, Some(None)) {
            errors.add("status", "status must not be null");
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }

    /// The lead an upsert creates when no lead has `email`: the fields the
    /// body gives (`null` and absent alike are empty).
    pub fn into_create(self, email: &str) -> CreateLead {
        CreateLead {
            name: self.name.flatten(),
            email: email.to_owned(),
            phone: self.phone.flatten(),
            company: self.company.flatten(),
            source: self.source.flatten(),
            status: self.status.flatten(),
            notes: self.notes.flatten(),
            custom_fields: self.custom_fields.flatten(),
        }
    }
}

/// A lead as the API returns it. The field order is the resource's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    // The document's description of the resource, as published.
    schema(as = Lead, description = "The resource's shape for the OpenAPI document only.")
)]
pub struct LeadState {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub name: Option<String>,
    pub email: String,
    pub phone: Option<String>,
    // Absent from read-model rows stored before the field existed.
    #[serde(default)]
    pub company: Option<String>,
    pub source: Option<String>,
    pub status: LeadStatus,
    pub notes: Option<String>,
    // The schema spells the map out: `CustomFields` is only an alias.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub custom_fields: CustomFields,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Stream version; also the `ETag`.
    pub version: i64,
}

impl LeadState {
    pub fn personal(&self) -> PersonalData {
        PersonalData {
            name: self.name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            company: self.company.clone(),
            notes: self.notes.clone(),
            custom_fields: self.custom_fields.clone(),
        }
    }

    fn set_personal(&mut self, personal: PersonalData) {
        self.name = personal.name;
        self.email = personal.email;
        self.phone = personal.phone;
        self.company = personal.company;
        self.notes = personal.notes;
        self.custom_fields = personal.custom_fields;
    }

    /// The text that `search` matches: name, email and phone, lowercased, one
    /// per line (so a query never matches across two fields).
    pub fn search_text(&self) -> String {
        let mut text = String::new();
        text.push_str(&self.name.as_deref().unwrap_or_default().to_lowercase());
        text.push('\n');
        text.push_str(&self.email.to_lowercase());
        text.push('\n');
        text.push_str(&self.phone.as_deref().unwrap_or_default().to_lowercase());
        text
    }
}

// ---------------------------------------------------------------------------
// Events

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadCreated {
    pub lead_id: Uuid,
    pub campaign_id: Uuid,
    pub project: ProjectSlug,
    pub status: LeadStatus,
    pub source: Option<String>,
    /// [`PersonalData`], sealed with the lead's key.
    pub personal: Sealed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadUpdated {
    pub lead_id: Uuid,
    pub campaign_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<LeadStatus>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option"
    )]
    pub source: Option<Option<String>>,
    /// [`PersonalChanges`], sealed with the lead's key; absent when no personal
    /// field changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<Sealed>,
}

domain_events! {
    /// Everything that happens to a lead.
    #[derive(Debug, Clone, PartialEq)]
    pub enum LeadEvent: "lead events" {
        Created(LeadCreated) = "LeadCreated",
        Updated(LeadUpdated) = "LeadUpdated",
        Deleted(LeadDeleted) = "LeadDeleted",
    }
    every event has { lead_id: Uuid, campaign_id: Uuid }
    which is all LeadDeleted carries
}

/// Associated data of a sealed value: the lead and what the value is, so a
/// ciphertext cannot be replayed into another lead or another kind of event.
fn aad(lead_id: Uuid, purpose: &str) -> Vec<u8> {
    let mut aad = b"marketing/lead/v1/".to_vec();
    aad.extend_from_slice(lead_id.as_bytes());
    aad.push(b'/');
    aad.extend_from_slice(purpose.as_bytes());
    aad
}

const CREATED_PURPOSE: &str = "created";
const UPDATED_PURPOSE: &str = "updated";

/// Decrypts the personal data of a `LeadCreated`.
pub fn open_created(event: &LeadCreated, key: &LeadKey) -> Result<PersonalData, LeadError> {
    let plain = crypto::open(key, &event.personal, &aad(event.lead_id, CREATED_PURPOSE))?;
    serde_json::from_slice(&plain).map_err(|_| LeadError::Crypto(CryptoError::Authentication))
}

/// Decrypts the personal changes of a `LeadUpdated` (`None` if it has none).
pub fn open_updated(event: &LeadUpdated, key: &LeadKey) -> Result<Option<PersonalChanges>, LeadError> {
    let Some(sealed) = &event.personal else {
        return Ok(None);
    };
    let plain = crypto::open(key, sealed, &aad(event.lead_id, UPDATED_PURPOSE))?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|_| LeadError::Crypto(CryptoError::Authentication))
}

/// Why a command was refused, or an event could not be folded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LeadError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("Lead not found")]
    NotFound,
    #[error("lead already exists")]
    AlreadyExists,
    /// The lead's key does not open its events: a wrong key-encryption key or
    /// corrupted data. Never a client's fault.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

#[derive(Debug, Clone)]
pub enum LeadCommand {
    Create(Placement, Box<CreateLead>),
    Update(Box<UpdateLead>),
    Delete,
}

/// What deciding and folding a lead need: its key, which seals and opens the
/// personal data, and for a decision a nonce, fresh and random for every command
/// (each command seals at most one value). Passed in, so the domain does no I/O
/// and tests are deterministic.
#[derive(Clone)]
pub struct LeadKeys {
    pub key: LeadKey,
    pub nonce: [u8; crypto::NONCE_LEN],
}

/// The aggregate: a lead folded from its stream (see [`Root`]).
pub type Lead = Root<LeadState>;

impl Aggregate for LeadState {
    const KIND: &'static str = "lead";
    const STREAM_PREFIX: &'static str = STREAM_PREFIX;
    type Event = LeadEvent;
    type Command = LeadCommand;
    type Error = LeadError;
    type Context = LeadKeys;
    type FoldError = LeadError;

    fn decide(root: &Lead, command: LeadCommand, keys: &LeadKeys) -> Result<Vec<LeadEvent>, LeadError> {
        let (key, nonce) = (&keys.key, keys.nonce);
        match command {
            LeadCommand::Create(place, input) => {
                root.empty_or(LeadError::AlreadyExists)?;
                let valid = validate_create(*input).map_err(LeadError::Invalid)?;
                Ok(vec![created_event(
                    place.id,
                    place.campaign_id,
                    place.project,
                    valid,
                    key,
                    nonce,
                )])
            }
            LeadCommand::Update(input) => update(root.live_or(LeadError::NotFound)?, *input, key, nonce),
            LeadCommand::Delete => {
                let state = root.live_or(LeadError::NotFound)?;
                Ok(vec![LeadEvent::Deleted(LeadDeleted {
                    lead_id: state.id,
                    campaign_id: state.campaign_id,
                })])
            }
        }
    }

    fn evolve(
        state: &mut Option<Self>,
        event: &LeadEvent,
        at: Recorded,
        keys: &LeadKeys,
    ) -> Result<(), LeadError> {
        match event {
            LeadEvent::Created(e) => {
                let personal = open_created(e, &keys.key)?;
                let mut created = LeadState {
                    id: e.lead_id,
                    campaign_id: e.campaign_id,
                    name: None,
                    email: String::new(),
                    phone: None,
                    company: None,
                    source: e.source.clone(),
                    status: e.status,
                    notes: None,
                    custom_fields: CustomFields::new(),
                    created_at: at.at,
                    updated_at: at.at,
                    version: at.version,
                };
                created.set_personal(personal);
                *state = Some(created);
            }
            LeadEvent::Updated(e) => {
                let changes = open_updated(e, &keys.key)?;
                change(state, at, |state| {
                    if let Some(status) = e.status {
                        state.status = status;
                    }
                    if let Some(source) = &e.source {
                        state.source = source.clone();
                    }
                    if let Some(changes) = changes {
                        changes.apply_to(state);
                    }
                });
            }
            LeadEvent::Deleted(_) => *state = None,
        }
        Ok(())
    }

    fn version(&self) -> i64 {
        self.version
    }
}

impl Stamped for LeadState {
    fn stamp(&mut self, at: Recorded) {
        self.updated_at = at.at;
        self.version = at.version;
    }
}

/// The lead's own calling convention: the key and nonce as separate arguments.
impl Lead {
    /// Decides what a command does. `key` seals the personal data of the events
    /// it returns, with `nonce`.
    pub fn handle(
        &self,
        command: LeadCommand,
        key: &LeadKey,
        nonce: [u8; crypto::NONCE_LEN],
    ) -> Result<Vec<LeadEvent>, LeadError> {
        self.decide(
            command,
            &LeadKeys {
                key: key.clone(),
                nonce,
            },
        )
    }

    /// Folds one event recorded at `recorded_at` as stream version `version`,
    /// opening its personal data with `key`.
    pub fn apply(
        &mut self,
        event: &LeadEvent,
        key: &LeadKey,
        recorded_at: DateTime<Utc>,
        version: i64,
    ) -> Result<(), LeadError> {
        let keys = LeadKeys {
            key: key.clone(),
            nonce: [0; crypto::NONCE_LEN],
        };
        self.fold(event, recorded_at, version, &keys)
    }
}

fn update(
    state: &LeadState,
    input: UpdateLead,
    key: &LeadKey,
    nonce: [u8; crypto::NONCE_LEN],
) -> Result<Vec<LeadEvent>, LeadError> {
    let mut errors = ValidationErrors::new();
    let email = not_null(&mut errors, "email", input.email);
    let status = not_null(&mut errors, "status", input.status);
    if !errors.is_empty() {
        return Err(LeadError::Invalid(errors));
    }
    // Merge, then validate the whole: every lead that exists is valid.
    let current = state.personal();
    let merged_input = CreateLead {
        name: input.name.unwrap_or_else(|| current.name.clone()),
        email: email.unwrap_or_else(|| current.email.clone()),
        phone: input.phone.unwrap_or_else(|| current.phone.clone()),
        company: input.company.unwrap_or_else(|| current.company.clone()),
        source: input.source.unwrap_or_else(|| state.source.clone()),
        status: Some(status.unwrap_or(state.status)),
        notes: input.notes.unwrap_or_else(|| current.notes.clone()),
        custom_fields: Some(
            input
                .custom_fields
                .unwrap_or_else(|| Some(current.custom_fields.clone()))
                .unwrap_or_default(),
        ),
    };
    let merged = validate_create(merged_input).map_err(LeadError::Invalid)?;
    fn changed<T: PartialEq + Clone>(new: &T, current: &T) -> Option<T> {
        (new != current).then(|| new.clone())
    }
    let personal = PersonalChanges {
        name: changed(&merged.personal.name, &current.name),
        email: changed(&merged.personal.email, &current.email),
        phone: changed(&merged.personal.phone, &current.phone),
        company: changed(&merged.personal.company, &current.company),
        notes: changed(&merged.personal.notes, &current.notes),
        custom_fields: changed(&merged.personal.custom_fields, &current.custom_fields),
    };
    let event = LeadUpdated {
        lead_id: state.id,
        campaign_id: state.campaign_id,
        status: changed(&merged.status, &state.status),
        source: changed(&merged.source, &state.source),
        personal: (!personal.is_empty()).then(|| {
            let plain = serde_json::to_vec(&personal).expect("changes serialize");
            crypto::seal(key, nonce, &aad(state.id, UPDATED_PURPOSE), &plain)
        }),
    };
    if event.status.is_none() && event.source.is_none() && event.personal.is_none() {
        return Ok(vec![]);
    }
    Ok(vec![LeadEvent::Updated(event)])
}

/// The `LeadCreated` of a new lead that passed [`validate_create`]. Bulk imports
/// validate each row first (to report errors by line) and then call this.
pub fn created_event(
    lead_id: Uuid,
    campaign_id: Uuid,
    project: ProjectSlug,
    valid: ValidLead,
    key: &LeadKey,
    nonce: [u8; crypto::NONCE_LEN],
) -> LeadEvent {
    let plain = serde_json::to_vec(&valid.personal).expect("personal data serializes");
    LeadEvent::Created(LeadCreated {
        lead_id,
        campaign_id,
        project,
        status: valid.status,
        source: valid.source,
        personal: crypto::seal(key, nonce, &aad(lead_id, CREATED_PURPOSE), &plain),
    })
}

/// A create (or a merged update) that passed validation, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidLead {
    pub status: LeadStatus,
    pub source: Option<String>,
    pub personal: PersonalData,
}

/// Trims every text, turns empty ones into "absent", and checks every rule.
/// Normalizing the same way on every path (JSON, CSV) is what makes an export
/// import back unchanged.
pub fn validate_create(input: CreateLead) -> Result<ValidLead, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let name = clean(input.name);
    let email = input.email.trim().to_owned();
    let phone = clean(input.phone);
    let company = clean(input.company);
    let source = clean(input.source);
    let notes = clean(input.notes);
    check_line(&mut errors, "name", name.as_deref(), NAME_MAX);
    check_email(&mut errors, &email);
    check_line(&mut errors, "phone", phone.as_deref(), PHONE_MAX);
    check_line(&mut errors, "company", company.as_deref(), COMPANY_MAX);
    if let Some(phone) = &phone {
        check_phone(&mut errors, phone);
    }
    check_line(&mut errors, "source", source.as_deref(), SOURCE_MAX);
    check_multiline(&mut errors, "notes", notes.as_deref(), NOTES_MAX);
    let custom_fields = clean_custom_fields(&mut errors, input.custom_fields.unwrap_or_default());
    errors.into_result(ValidLead {
        status: input.status.unwrap_or(LeadStatus::New),
        source,
        personal: PersonalData {
            name,
            email,
            phone,
            company,
            notes,
            custom_fields,
        },
    })
}

/// What "the same email" means for uniqueness: trimmed and lowercased.
pub fn normalized_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn clean(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn check_line(errors: &mut ValidationErrors, field: &str, value: Option<&str>, max: usize) {
    let Some(value) = value else { return };
    if value.chars().count() > max {
        errors.add(field, format!("{field} must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        errors.add(field, format!("{field} must not contain control characters"));
    }
}

fn check_multiline(errors: &mut ValidationErrors, field: &str, value: Option<&str>, max: usize) {
    let Some(value) = value else { return };
    if value.chars().count() > max {
        errors.add(field, format!("{field} must be at most {max} characters"));
    } else if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        errors.add(
            field,
            format!("{field} must not contain control characters other than line breaks and tabs"),
        );
    }
}

fn check_phone(errors: &mut ValidationErrors, phone: &str) {
    let allowed = |c: char| c.is_ascii_digit() || " +-().#/xXeEtT".contains(c);
    if !phone.chars().all(allowed) || !phone.chars().any(|c| c.is_ascii_digit()) {
        errors.add(
            "phone",
            "phone must contain digits and only the characters + - ( ) . / # space, and x or ext for an extension",
        );
    }
}

/// A deliberately practical check (not the full RFC 5322 grammar, whose quoted
/// local parts and comments real mail systems reject anyway): one `@`, a local
/// part of 1–64 visible characters without dots at its ends or in a row, and a
/// domain of at least two dot-separated labels of letters, digits and hyphens.
/// Messages never repeat the address: responses may be stored (idempotency) and
/// must not hold personal data of anything but the lead itself.
fn check_email(errors: &mut ValidationErrors, email: &str) {
    if email.is_empty() {
        errors.add("email", "email is required");
        return;
    }
    if email.chars().count() > EMAIL_MAX {
        errors.add("email", format!("email must be at most {EMAIL_MAX} characters"));
        return;
    }
    if !is_valid_email(email) {
        errors.add(
            "email",
            "email must be a valid email address, like name@example.com",
        );
    }
}

pub fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.chars().count() <= EMAIL_LOCAL_MAX
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"\"(),:;<>@[\\]".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.chars().count() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && !labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()));
    local_ok && domain_ok
}

fn clean_custom_fields(errors: &mut ValidationErrors, fields: CustomFields) -> CustomFields {
    let mut cleaned = CustomFields::new();
    for (key, value) in fields {
        let trimmed_key = key.trim();
        let path = format!("custom_fields.{trimmed_key}");
        if trimmed_key.is_empty() {
            errors.add("custom_fields", "custom field names must not be empty");
            continue;
        }
        if trimmed_key.chars().count() > CUSTOM_KEY_MAX {
            errors.add(
                "custom_fields",
                format!("custom field names must be at most {CUSTOM_KEY_MAX} characters"),
            );
            continue;
        }
        if trimmed_key.chars().any(char::is_control) {
            errors.add(
                "custom_fields",
                "custom field names must not contain control characters",
            );
            continue;
        }
        if STANDARD_FIELDS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(trimmed_key))
        {
            errors.add(
                path,
                format!("custom field {trimmed_key:?} has the name of a standard lead field; use the field itself"),
            );
            continue;
        }
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        check_multiline(errors, &path, Some(value), CUSTOM_VALUE_MAX);
        if cleaned.insert(trimmed_key.to_owned(), value.to_owned()).is_some() {
            errors.add(path, format!("custom field {trimmed_key:?} is given twice"));
        }
    }
    if cleaned.len() > CUSTOM_FIELDS_MAX {
        errors.add(
            "custom_fields",
            format!("custom_fields must have at most {CUSTOM_FIELDS_MAX} entries"),
        );
    }
    cleaned
}

#[cfg(test)]
mod tests;

/// The resource's schema, by the name the handlers' OpenAPI entries use.
#[cfg(feature = "openapi")]
pub type LeadResource = LeadState;
