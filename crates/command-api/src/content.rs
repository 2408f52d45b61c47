//! Content-calendar writes: create, update, delete. Create and update take
//! `multipart/form-data` (text fields plus an optional file field `media`, exactly
//! as the seed's curl commands send them) or a JSON body.
//!
//! Order of work for a write with a file: the campaign is checked before the body
//! is read (no point storing 25 MiB for a 404); the file streams into a staging
//! object while it is hashed, size-checked and type-sniffed; the text fields are
//! validated by the domain; only then is the file moved into place and the event
//! appended. Any refusal on the way deletes the staged file.

use crate::kernel::{respond, Hooks, Resource, Write, Writer};
use crate::under_campaign::{delete_item, ItemChange, NewItem};
use crate::CommandState;
use async_trait::async_trait;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::Response;
use domain::content::{
    ContentCommand, ContentError, ContentInput, ContentState, ContentUpdateInput, CreateContent,
    UpdateContent,
};
use domain::ValidationErrors;
use media::{MediaError, MediaStore, StagedMedia};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::convert::Infallible;
use uuid::Uuid;
use web::extract::{is_json, JSON_BODY_LIMIT};
use web::{ApiError, BASE_PATH};

const NOT_FOUND: &str = "Content not found";

impl Resource for ContentState {
    const NOT_FOUND: &'static str = NOT_FOUND;

    fn to_api_error(error: ContentError) -> ApiError {
        match error {
            ContentError::Invalid(errors) => ApiError::Validation(errors),
            ContentError::NotFound => ApiError::NotFound(NOT_FOUND),
            ContentError::AlreadyExists => {
                ApiError::Conflict("A content item with this id already exists".into())
            }
        }
    }

    fn fold_error(never: Infallible) -> ApiError {
        match never {}
    }

    fn is_create(command: &ContentCommand) -> bool {
        matches!(command, ContentCommand::Create { .. })
    }

    fn campaign_id(&self) -> Uuid {
        self.campaign_id
    }

    fn location(&self) -> String {
        format!("{BASE_PATH}/campaigns/{}/content/{}", self.campaign_id, self.id)
    }
}

/// Moves an uploaded file into place once the command is accepted and just
/// before its events are appended, so a refused command leaves no file behind
/// and an appended event never names a missing one.
struct MediaHook<'a>(Option<&'a mut StagedMedia>);

#[async_trait]
impl Hooks<ContentState> for MediaHook<'_> {
    async fn context(&mut self, _: &CommandState, _: Uuid, _: bool) -> Result<Option<()>, ApiError> {
        Ok(Some(()))
    }

    async fn before_append(&mut self) -> Result<(), ApiError> {
        if let Some(media) = self.0.as_deref_mut() {
            media.commit().await.map_err(ApiError::internal)?;
        }
        Ok(())
    }
}

/// Runs a create or update that may carry a file; the staged file is removed
/// whatever the outcome (a no-op once committed).
async fn execute_with_media(
    writer: &Writer,
    write: Write<'_, ContentState>,
    media: Option<StagedMedia>,
) -> Result<domain::content::Content, ApiError> {
    let mut media = media;
    let result = writer.execute_with(write, &mut MediaHook(media.as_mut())).await;
    if let Some(media) = media {
        media.discard().await;
    }
    result
}

/// Room for the text fields and multipart framing on top of the media limit:
/// the whole request body may be at most `MEDIA_MAX_BYTES` plus this.
pub const FORM_OVERHEAD: u64 = 1024 * 1024;
/// Largest single text field, in bytes (the `content` text may be 100 000
/// characters of up to 4 bytes each).
const TEXT_FIELD_MAX: usize = 512 * 1024;
/// The text fields a form may carry; anything else is refused, as unknown JSON
/// fields are.
const TEXT_FIELDS: [&str; 7] = [
    "title",
    "content_type",
    "scheduled_date",
    "platform",
    "status",
    "content",
    "assigned_to",
];
/// Fields that must not be empty; in a form, an empty value for any other field
/// means "no value" (and clears it on update), since a form cannot send null.
const REQUIRED_FIELDS: [&str; 2] = ["title", "content_type"];
const FILE_FIELD: &str = "media";

/// A create or update request, parsed: the fields as JSON and the staged file.
struct Parsed<T> {
    fields: T,
    media: Option<StagedMedia>,
}

fn media_error(error: MediaError) -> ApiError {
    match error {
        MediaError::TooLarge { limit } => {
            ApiError::PayloadTooLarge(format!("media is larger than the limit of {limit} bytes"))
        }
        MediaError::UnsupportedType => ApiError::UnsupportedMediaType(error.to_string()),
        MediaError::Empty => ApiError::bad_request(FILE_FIELD, "media file is empty"),
        MediaError::NotFound => ApiError::NotFound("Media not found"),
        other => ApiError::internal(other),
    }
}

/// Keeps the last path segment of a client's file name, without control
/// characters, at most 255 characters; `None` if nothing is left.
fn safe_file_name(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim();
    (!cleaned.is_empty() && cleaned != "." && cleaned != "..").then(|| cleaned.to_owned())
}

/// Parses the body as multipart or JSON into `T`, staging the media file.
async fn parse_body<T: DeserializeOwned>(req: Request, store: &MediaStore) -> Result<Parsed<T>, ApiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if is_json(&content_type) {
        return Ok(Parsed {
            fields: json_body(req).await?,
            media: None,
        });
    }
    let is_multipart = content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"));
    if !is_multipart {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be multipart/form-data or application/json".into(),
        ));
    }
    let limit = store.max_bytes() + FORM_OVERHEAD;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge(format!(
            "Request body is too large (limit {limit} bytes: media up to {} bytes plus form fields)",
            store.max_bytes()
        )));
    }
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad_request("body", format!("invalid multipart body: {}", e.body_text())))?;
    let mut fields = Map::new();
    let mut staged = None;
    if let Err(error) = read_form(&mut multipart, store, &mut fields, &mut staged).await {
        if let Some(media) = staged.take() {
            media.discard().await;
        }
        return Err(error);
    }
    match domain::input::from_json_value::<T>(Value::Object(fields)) {
        Ok(fields) => Ok(Parsed {
            fields,
            media: staged,
        }),
        Err(errors) => {
            if let Some(media) = staged.take() {
                media.discard().await;
            }
            Err(ApiError::Validation(errors))
        }
    }
}

/// A JSON body within the JSON limit, as `T` (whatever the route's body limit).
async fn json_body<T: DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), JSON_BODY_LIMIT)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "Request body is too large (limit {JSON_BODY_LIMIT} bytes)"
            ))
        })?;
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::Validation(ValidationErrors::single(
            "body",
            "request body must be a JSON object",
        )));
    }
    web::text_guard::check_json_bytes(&bytes)?;
    domain::input::from_json_slice(&bytes).map_err(ApiError::Validation)
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("Request body is too large".into())
    } else {
        ApiError::bad_request("body", format!("invalid multipart body: {}", error.body_text()))
    }
}

/// Reads every part: text fields into `fields`, the file into `staged`.
async fn read_form(
    multipart: &mut Multipart,
    store: &MediaStore,
    fields: &mut Map<String, Value>,
    staged: &mut Option<StagedMedia>,
) -> Result<(), ApiError> {
    let mut removal_requested = false;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field
            .name()
            .ok_or_else(|| ApiError::bad_request("body", "every multipart part needs a name"))?
            .to_owned();
        if name == FILE_FIELD {
            if staged.is_some() || removal_requested {
                return Err(ApiError::bad_request(FILE_FIELD, "media may be sent only once"));
            }
            let Some(file_name) = field.file_name().map(str::to_owned) else {
                // A plain `media=` field (no file) asks to remove the media.
                let text = read_text(&mut field, &name).await?;
                if !text.is_empty() {
                    return Err(ApiError::bad_request(
                        FILE_FIELD,
                        "media must be a file (curl: -F \"media=@file.png\"); an empty media field removes it",
                    ));
                }
                fields.insert(FILE_FIELD.into(), Value::Null);
                removal_requested = true;
                continue;
            };
            *staged = Some(stage_file(&mut field, store, safe_file_name(&file_name)).await?);
            continue;
        }
        if !TEXT_FIELDS.contains(&name.as_str()) {
            return Err(ApiError::Validation(ValidationErrors::single(
                name.clone(),
                format!("unknown field `{name}`"),
            )));
        }
        if fields.contains_key(&name) {
            return Err(ApiError::bad_request(
                name.clone(),
                format!("{name} may be sent only once"),
            ));
        }
        let text = read_text(&mut field, &name).await?;
        let value = if text.is_empty() && !REQUIRED_FIELDS.contains(&name.as_str()) {
            Value::Null
        } else {
            Value::String(text)
        };
        fields.insert(name, value);
    }
    Ok(())
}

async fn read_text(field: &mut axum::extract::multipart::Field<'_>, name: &str) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > TEXT_FIELD_MAX {
            return Err(ApiError::bad_request(
                name,
                format!("{name} must be at most {TEXT_FIELD_MAX} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request(name, format!("{name} must be UTF-8 text")))?;
    web::text_guard::check_text(name, &text)?;
    Ok(text)
}

/// Streams the file part into a staging object. On refusal the rest of the
/// body is left unread: `web::drain` reads and drops it after the response, so
/// a client still sending gets the JSON error instead of a reset connection.
async fn stage_file(
    field: &mut axum::extract::multipart::Field<'_>,
    store: &MediaStore,
    file_name: Option<String>,
) -> Result<StagedMedia, ApiError> {
    let mut upload = store.begin(file_name).await.map_err(media_error)?;
    loop {
        let chunk = match field.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => {
                upload.abort().await;
                // Over the whole-body limit: the file is what made it so.
                if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    return Err(media_error(MediaError::TooLarge {
                        limit: store.max_bytes(),
                    }));
                }
                return Err(multipart_error(error));
            }
        };
        if let Err(error) = upload.write(chunk).await {
            upload.abort().await;
            return Err(media_error(error));
        }
    }
    upload.finish().await.map_err(media_error)
}

/// Create a content calendar entry, optionally with a media file.
#[utoipa::path(
    post, path = "/v1/dev/marketing/campaigns/{campaign_id}/content", tag = "content",
    request_body(
        description = "`multipart/form-data` text fields plus an optional file field `media` \
                       (png, jpeg, gif, webp, pdf or mp4, decided from the bytes; at most MEDIA_MAX_BYTES), \
                       or the same fields as JSON (without a file).",
        content(
            (ContentForm = "multipart/form-data"),
            (CreateContent = "application/json"),
        )
    ),
    params(
        ("campaign_id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Retries with the same key and body replay the first response; the body is spooled to disk while it is hashed"),
    ),
    responses(
        (status = 201, description = "Created", body = domain::content::ContentResource,
         headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Invalid field (bad date, unknown status, missing title, empty file, ...)", body = web::error::ErrorBody),
        (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
        (status = 409, description = "Idempotency-Key reuse", body = web::error::ErrorBody),
        (status = 413, description = "Media larger than MEDIA_MAX_BYTES", body = web::error::ErrorBody),
        (status = 415, description = "Media bytes are not an allowed type, or an unsupported Content-Type", body = web::error::ErrorBody),
    ),
    security(("bearer" = ["campaigns:write"]))
)]
pub async fn create(writer: Writer, request: NewItem<Request>) -> Result<Response, ApiError> {
    // Checked before the body is read: no point storing 25 MiB for a 404.
    let (campaign, place) = request.place(&writer, "content").await?;
    let Parsed { fields, media } = parse_body::<CreateContent>(request.body, &writer.state().media).await?;
    let input = ContentInput {
        fields,
        media: media.as_ref().map(|m| m.media().clone()),
    };
    let write = Write::new(place.id, ContentCommand::Create(place, Box::new(input))).under(&campaign);
    let content = execute_with_media(&writer, write, media).await?;
    respond(StatusCode::CREATED, &content)
}

/// Update a content item (partial); a `media` file replaces the current one.
#[utoipa::path(
    put, path = "/v1/dev/marketing/campaigns/{campaign_id}/content/{content_id}", tag = "content",
    request_body(
        description = "Partial update as `multipart/form-data` (an empty optional field clears it; \
                       a `media` file replaces the media; an empty `media` text field removes it) or JSON \
                       (`null` clears; `\"media\": null` removes the media).",
        content(
            (ContentForm = "multipart/form-data"),
            (UpdateContent = "application/json"),
        )
    ),
    params(
        ("campaign_id" = Uuid, Path), ("content_id" = Uuid, Path),
        ("If-Match" = Option<String>, Header, description = "ETag from a GET; a stale one is 412"),
    ),
    responses(
        (status = 200, body = domain::content::ContentResource, headers(("ETag" = String))),
        (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
        (status = 404, description = "Campaign not found, or Content not found", body = web::error::ErrorBody),
        (status = 412, body = web::error::ErrorBody), (status = 413, body = web::error::ErrorBody),
        (status = 415, body = web::error::ErrorBody),
    ),
    security(("bearer" = ["campaigns:write"]))
)]
pub async fn update(writer: Writer, request: ItemChange<Request>) -> Result<Response, ApiError> {
    let (campaign, content_id) = request.target::<ContentState>(&writer).await?;
    let Parsed { fields, media } = parse_body::<UpdateContent>(request.body, &writer.state().media).await?;
    let command = ContentCommand::Update(Box::new(ContentUpdateInput {
        fields,
        new_media: media.as_ref().map(|m| m.media().clone()),
    }));
    let write = Write::new(content_id, command)
        .under(&campaign)
        .if_match(request.if_match);
    let content = execute_with_media(&writer, write, media).await?;
    respond(StatusCode::OK, &content)
}

delete_item! {
    /// Delete a content item. Its history (and the media files it names) stay.
    path = "/v1/dev/marketing/campaigns/{campaign_id}/content/{content_id}", tag = "content", scope = "campaigns:write", id = "content_id",
    not_found = "",
    ContentState, ContentCommand::Delete,
    run = |writer, write| execute_with_media(writer, write, None)
}

/// The multipart form of a content create or update, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct ContentForm {
    #[schema(example = "New Blog Post")]
    pub title: Option<String>,
    #[schema(example = "blog")]
    pub content_type: Option<String>,
    /// RFC 3339.
    #[schema(example = "2024-06-15T10:00:00Z")]
    pub scheduled_date: Option<String>,
    #[schema(example = "wordpress")]
    pub platform: Option<String>,
    /// draft, scheduled, published or archived.
    #[schema(example = "draft")]
    pub status: Option<String>,
    #[schema(example = "Content description")]
    pub content: Option<String>,
    /// A UUID.
    pub assigned_to: Option<String>,
    /// The file. Its type is decided from its bytes.
    #[schema(value_type = Option<String>, format = Binary)]
    pub media: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::safe_file_name;

    #[test]
    fn file_names_are_reduced_to_a_safe_base_name() {
        assert_eq!(safe_file_name("file.png").as_deref(), Some("file.png"));
        assert_eq!(safe_file_name("/path/to/file.png").as_deref(), Some("file.png"));
        assert_eq!(
            safe_file_name("C:\\Users\\me\\pic.jpg").as_deref(),
            Some("pic.jpg")
        );
        assert_eq!(safe_file_name("a\u{0}b\r\n.png").as_deref(), Some("ab.png"));
        assert_eq!(safe_file_name("../.."), None);
        assert_eq!(safe_file_name("  "), None);
        assert_eq!(safe_file_name(&"x".repeat(300)).map(|n| n.len()), Some(255));
    }
}
