//! The content-calendar aggregate: one event stream per content item
//! (`content-<uuid>`), each belonging to one campaign.
//!
//! A content item may carry one media file. The file itself lives in object
//! storage, addressed by its sha256; events hold only its metadata
//! ([`MediaRef`]), so the log stays small and a file is stored once however
//! many items or versions use it.

use crate::aggregate::{change, Placement, PlainAggregate, Recorded, Root, Stamped};
use crate::changes::{changed, not_null};
use crate::input::{
    check_optional_text, check_text, double_option, double_option_datetime, double_option_uuid,
    optional_datetime, optional_uuid,
};
use crate::{changes, choice_enum, domain_events, update_body, ProjectSlug, ValidationErrors};
use chrono::{DateTime, Utc};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

/// Every content event stream is named `content-<uuid>`.
pub const STREAM_PREFIX: &str = "content-";

pub fn stream_id(content_id: Uuid) -> String {
    format!("{STREAM_PREFIX}{content_id}")
}

const TITLE_MAX: usize = 200;
const LABEL_MAX: usize = 50;
const BODY_MAX: usize = 100_000;
const FILE_NAME_MAX: usize = 255;

/// Where the media of a content item is downloaded, relative to the host. The
/// resource links to it, so it is part of the resource's shape.
pub fn media_path(campaign_id: Uuid, content_id: Uuid) -> String {
    format!("/v1/dev/marketing/campaigns/{campaign_id}/content/{content_id}/media")
}

choice_enum! {
    /// Publication status. Any status may follow any other (an archived post can be
    /// restored to draft); the one rule is that `scheduled` needs a `scheduled_date`.
    pub enum ContentStatus {
        Draft,
        Scheduled,
        Published,
        Archived,
    }
}

/// Metadata of a stored media file. The bytes are in object storage under the
/// sha256; `media_type` was sniffed from those bytes, never taken from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    /// Lowercase hex SHA-256 of the bytes: the storage key and a strong ETag.
    pub sha256: String,
    pub size: u64,
    pub media_type: String,
    /// The client's file name, reduced to a safe base name; `None` if none was sent.
    pub file_name: Option<String>,
}

/// Everything about a content item but identity, status, media and timestamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentDetails {
    pub title: String,
    pub content_type: String,
    pub scheduled_date: Option<DateTime<Utc>>,
    pub platform: Option<String>,
    /// The text of the post (the API's `content` field).
    pub content: Option<String>,
    pub assigned_to: Option<Uuid>,
}

/// Body of `POST /campaigns/{campaign_id}/content`, as JSON or as the text fields
/// of a `multipart/form-data` request (whose file field `media` is separate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateContent {
    #[cfg_attr(feature = "openapi", schema(example = "New Blog Post"))]
    pub title: String,
    /// A label such as `blog`, `social_post`, `email`, `video`.
    #[cfg_attr(feature = "openapi", schema(example = "blog"))]
    pub content_type: String,
    /// RFC 3339, e.g. `2024-06-15T10:00:00Z`.
    #[serde(default, deserialize_with = "optional_datetime")]
    pub scheduled_date: Option<DateTime<Utc>>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "wordpress"))]
    pub platform: Option<String>,
    /// Defaults to `draft`.
    #[serde(default)]
    pub status: Option<ContentStatus>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = "Content description"))]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "optional_uuid")]
    pub assigned_to: Option<Uuid>,
}

update_body! {
    /// Body of `PUT /campaigns/{campaign_id}/content/{content_id}`: a partial update
    /// (absent stays, `null` clears). A new media file comes as the multipart file
    /// field `media`; `"media": null` removes the media. A client may echo the whole
    /// resource back: read-only fields, and `media` naming the current file, are ignored.
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(default)]
    #[serde(deny_unknown_fields)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub struct UpdateContent {
        title: String,
        content_type: String,
        scheduled_date: DateTime<Utc> = "double_option_datetime",
        platform: String,
        status: ContentStatus,
        content: String,
        assigned_to: Uuid = "double_option_uuid",
        /// Only `null` (remove the media) or the current media object (no change).
        #[serde(deserialize_with = "double_option")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>, nullable))]
        pub media: Option<Option<Value>>,
    }
    ignores echoed read_only_id = "id", read_only_campaign_id = "campaign_id", read_only_created_at = "created_at", read_only_updated_at = "updated_at", read_only_version = "version"
}

changes! {
    /// The fields an update changed, as stored in `ContentUpdated`. Status changes are
    /// their own event.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(default)]
    pub struct ContentChanges for ContentState {
        title: String,
        content_type: String,
        scheduled_date: Option<DateTime<Utc>>,
        platform: Option<String>,
        content: Option<String>,
        assigned_to: Option<Uuid>,
        /// `Some(Some(m))` attaches or replaces; `Some(None)` removes.
        media: Option<MediaRef>,
    }
}

// ---------------------------------------------------------------------------
// Events

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentCreated {
    pub content_id: Uuid,
    pub campaign_id: Uuid,
    pub project: ProjectSlug,
    pub status: ContentStatus,
    pub details: ContentDetails,
    pub media: Option<MediaRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentUpdated {
    pub content_id: Uuid,
    pub campaign_id: Uuid,
    pub changes: ContentChanges,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentStatusChanged {
    pub content_id: Uuid,
    pub campaign_id: Uuid,
    pub from: ContentStatus,
    pub to: ContentStatus,
}

domain_events! {
    /// Everything that happens to a content item.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ContentEvent: "content events" {
        Created(ContentCreated) = "ContentCreated",
        Updated(ContentUpdated) = "ContentUpdated",
        StatusChanged(ContentStatusChanged) = "ContentStatusChanged",
        Deleted(ContentDeleted) = "ContentDeleted",
    }
    every event has { content_id: Uuid, campaign_id: Uuid }
    which is all ContentDeleted carries
}

impl ContentEvent {
    /// The media file this event attaches, if any: what retention must keep.
    pub fn attached_media(&self) -> Option<&MediaRef> {
        match self {
            Self::Created(e) => e.media.as_ref(),
            Self::Updated(e) => e.changes.media.as_ref().and_then(Option::as_ref),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// State

/// A live content item. Deserializable so a projection can fold events into a
/// stored row with the domain's own `apply` (the resource's `media.url` is derived
/// and ignored when reading back).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    // The document's description of the resource, as published.
    schema(as = Content, description = "The resource's shape for the OpenAPI document.")
)]
pub struct ContentState {
    pub id: Uuid,
    pub campaign_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(example = "New Blog Post"))]
    pub title: String,
    #[cfg_attr(feature = "openapi", schema(example = "blog"))]
    pub content_type: String,
    pub scheduled_date: Option<DateTime<Utc>>,
    pub platform: Option<String>,
    pub status: ContentStatus,
    pub content: Option<String>,
    pub assigned_to: Option<Uuid>,
    // Serialized as a link (see the `Serialize` impl).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<ContentMediaResource>))]
    pub media: Option<MediaRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl Stamped for ContentState {
    fn stamp(&mut self, at: Recorded) {
        self.updated_at = at.at;
        self.version = at.version;
    }
}

impl ContentState {
    fn details(&self) -> ContentDetails {
        ContentDetails {
            title: self.title.clone(),
            content_type: self.content_type.clone(),
            scheduled_date: self.scheduled_date,
            platform: self.platform.clone(),
            content: self.content.clone(),
            assigned_to: self.assigned_to,
        }
    }
}

/// The resource's JSON: flat, stable field order, media with its download link.
impl Serialize for ContentState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct MediaLink<'a> {
            url: String,
            file_name: &'a Option<String>,
            media_type: &'a str,
            size: u64,
            sha256: &'a str,
        }
        let media = self.media.as_ref().map(|m| MediaLink {
            url: media_path(self.campaign_id, self.id),
            file_name: &m.file_name,
            media_type: &m.media_type,
            size: m.size,
            sha256: &m.sha256,
        });
        let mut map = serializer.serialize_map(Some(13))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("campaign_id", &self.campaign_id)?;
        map.serialize_entry("title", &self.title)?;
        map.serialize_entry("content_type", &self.content_type)?;
        map.serialize_entry("scheduled_date", &self.scheduled_date)?;
        map.serialize_entry("platform", &self.platform)?;
        map.serialize_entry("status", &self.status)?;
        map.serialize_entry("content", &self.content)?;
        map.serialize_entry("assigned_to", &self.assigned_to)?;
        map.serialize_entry("media", &media)?;
        map.serialize_entry("created_at", &self.created_at)?;
        map.serialize_entry("updated_at", &self.updated_at)?;
        map.serialize_entry("version", &self.version)?;
        map.end()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContentError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("Content not found")]
    NotFound,
    #[error("content already exists")]
    AlreadyExists,
}

#[derive(Debug, Clone)]
pub enum ContentCommand {
    Create(Placement, Box<ContentInput>),
    Update(Box<ContentUpdateInput>),
    Delete,
}

/// A create request: the fields plus the already stored media file, if one was sent.
#[derive(Debug, Clone)]
pub struct ContentInput {
    pub fields: CreateContent,
    pub media: Option<MediaRef>,
}

/// An update request: the fields plus a newly uploaded media file, if one was sent.
#[derive(Debug, Clone)]
pub struct ContentUpdateInput {
    pub fields: UpdateContent,
    pub new_media: Option<MediaRef>,
}

/// The aggregate: a content item folded from its stream (see [`Root`]).
pub type Content = Root<ContentState>;

impl PlainAggregate for ContentState {
    const KIND: &'static str = "content";
    const STREAM_PREFIX: &'static str = STREAM_PREFIX;
    type Event = ContentEvent;
    type Command = ContentCommand;
    type Error = ContentError;

    fn decide(root: &Content, command: ContentCommand) -> Result<Vec<ContentEvent>, ContentError> {
        match command {
            ContentCommand::Create(place, input) => {
                root.empty_or(ContentError::AlreadyExists)?;
                let ContentInput { fields, media } = *input;
                let status = fields.status.unwrap_or(ContentStatus::Draft);
                let details = ContentDetails {
                    title: fields.title,
                    content_type: fields.content_type,
                    scheduled_date: fields.scheduled_date,
                    platform: fields.platform,
                    content: fields.content,
                    assigned_to: fields.assigned_to,
                };
                validate(&details, status, media.as_ref()).map_err(ContentError::Invalid)?;
                Ok(vec![ContentEvent::Created(ContentCreated {
                    content_id: place.id,
                    campaign_id: place.campaign_id,
                    project: place.project,
                    status,
                    details,
                    media,
                })])
            }
            ContentCommand::Update(input) => update(root.live_or(ContentError::NotFound)?, *input),
            ContentCommand::Delete => {
                let state = root.live_or(ContentError::NotFound)?;
                Ok(vec![ContentEvent::Deleted(ContentDeleted {
                    content_id: state.id,
                    campaign_id: state.campaign_id,
                })])
            }
        }
    }

    fn evolve(state: &mut Option<Self>, event: &ContentEvent, at: Recorded) {
        match event {
            ContentEvent::Created(e) => {
                *state = Some(ContentState {
                    id: e.content_id,
                    campaign_id: e.campaign_id,
                    title: e.details.title.clone(),
                    content_type: e.details.content_type.clone(),
                    scheduled_date: e.details.scheduled_date,
                    platform: e.details.platform.clone(),
                    status: e.status,
                    content: e.details.content.clone(),
                    assigned_to: e.details.assigned_to,
                    media: e.media.clone(),
                    created_at: at.at,
                    updated_at: at.at,
                    version: at.version,
                });
            }
            ContentEvent::Updated(e) => change(state, at, |state| e.changes.apply_to(state)),
            ContentEvent::StatusChanged(e) => change(state, at, |state| state.status = e.to),
            ContentEvent::Deleted(_) => *state = None,
        }
    }

    fn version(&self) -> i64 {
        self.version
    }
}

fn update(state: &ContentState, input: ContentUpdateInput) -> Result<Vec<ContentEvent>, ContentError> {
    let ContentUpdateInput { fields, new_media } = input;
    let current = state.details();
    let mut invalid = ValidationErrors::new();
    let title = changed(not_null(&mut invalid, "title", fields.title), &current.title);
    let content_type = changed(
        not_null(&mut invalid, "content_type", fields.content_type),
        &current.content_type,
    );
    let status = changed(not_null(&mut invalid, "status", fields.status), &state.status);
    let media = media_change(&mut invalid, state, new_media, fields.media);
    if !invalid.is_empty() {
        return Err(ContentError::Invalid(invalid));
    }
    let changes = ContentChanges {
        title,
        content_type,
        scheduled_date: changed(fields.scheduled_date, &current.scheduled_date),
        platform: changed(fields.platform, &current.platform),
        content: changed(fields.content, &current.content),
        assigned_to: changed(fields.assigned_to, &current.assigned_to),
        media,
    };
    let mut merged = state.clone();
    changes.apply_to(&mut merged);
    validate(
        &merged.details(),
        status.unwrap_or(state.status),
        merged.media.as_ref(),
    )
    .map_err(ContentError::Invalid)?;
    let mut events = Vec::new();
    if !changes.is_empty() {
        events.push(ContentEvent::Updated(ContentUpdated {
            content_id: state.id,
            campaign_id: state.campaign_id,
            changes,
        }));
    }
    if let Some(to) = status {
        events.push(ContentEvent::StatusChanged(ContentStatusChanged {
            content_id: state.id,
            campaign_id: state.campaign_id,
            from: state.status,
            to,
        }));
    }
    Ok(events)
}

/// What an update does to the media: a new upload, a removal (`null`), or
/// nothing (absent, or the current file echoed back).
fn media_change(
    invalid: &mut ValidationErrors,
    state: &ContentState,
    uploaded: Option<MediaRef>,
    field: Option<Option<Value>>,
) -> Option<Option<MediaRef>> {
    let changed = |new: Option<MediaRef>| (new != state.media).then_some(new);
    match (uploaded, field) {
        (Some(_), Some(_)) => {
            invalid.add("media", "send either a media file or \"media\": null, not both");
            None
        }
        (Some(uploaded), None) => changed(Some(uploaded)),
        (None, Some(None)) => changed(None),
        (None, Some(Some(echo))) => {
            // An echoed resource names the current file: no change. Anything
            // else would be a file reference we never checked.
            let current_sha = state.media.as_ref().map(|m| m.sha256.as_str());
            if echo.get("sha256").and_then(Value::as_str) != current_sha || current_sha.is_none() {
                invalid.add(
                    "media",
                    "media can only be uploaded as the multipart file field `media`, or removed with null",
                );
            }
            None
        }
        (None, None) => None,
    }
}

/// Every rule on a content item, checked on create and after merging an update.
pub fn validate(
    d: &ContentDetails,
    status: ContentStatus,
    media: Option<&MediaRef>,
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_text(&mut errors, "title", &d.title, TITLE_MAX);
    check_text(&mut errors, "content_type", &d.content_type, LABEL_MAX);
    if let Some(platform) = &d.platform {
        check_text(&mut errors, "platform", platform, LABEL_MAX);
    }
    check_optional_text(&mut errors, "content", d.content.as_deref(), BODY_MAX);
    if status == ContentStatus::Scheduled && d.scheduled_date.is_none() {
        errors.add(
            "scheduled_date",
            "scheduled_date is required when status is scheduled",
        );
    }
    if let Some(name) = media.and_then(|m| m.file_name.as_deref()) {
        check_optional_text(&mut errors, "media", Some(name), FILE_NAME_MAX);
    }
    errors.into_result(())
}

#[cfg(test)]
mod tests;

/// The media object inside the content resource, for the OpenAPI document.
#[cfg(feature = "openapi")]
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(as = ContentMedia)]
pub struct ContentMediaResource {
    /// Download link (same project's API key required).
    #[schema(example = "/v1/dev/marketing/campaigns/{campaign_id}/content/{content_id}/media")]
    pub url: String,
    #[schema(example = "file.png")]
    pub file_name: Option<String>,
    /// Sniffed from the bytes: image/png, image/jpeg, image/gif, image/webp,
    /// application/pdf or video/mp4.
    #[schema(example = "image/png")]
    pub media_type: String,
    pub size: u64,
    pub sha256: String,
}

/// The resource's schema, by the name the handlers' OpenAPI entries use.
#[cfg(feature = "openapi")]
pub type ContentResource = ContentState;
