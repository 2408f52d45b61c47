//! Extractors whose rejections use our error envelope, never axum's plain text.

use crate::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, IF_MATCH};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Largest JSON body accepted, in bytes (1 MiB). Larger bodies get 413.
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body parsed into `T`, with errors that name the offending field.
pub struct JsonBody<T>(pub T);

/// True for `application/json` and `application/*+json`, with any parameters.
pub fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::UnsupportedMediaType(
                "Content-Type must be application/json".into(),
            ));
        }
        let bytes = read_body(req, state).await?;
        // Every body of this API is an object; serde would also accept an array
        // for a struct, positionally, which no client means.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::Validation(domain::ValidationErrors::single(
                "body",
                "request body must be a JSON object",
            )));
        }
        // Control characters are refused at any depth before the typed parse,
        // so the error names the path whatever type the handler wants. (Bodies
        // that are no valid JSON fall through to the typed parse, whose error
        // says where.)
        crate::text_guard::check_json_bytes(&bytes)?;
        domain::input::from_json_slice(&bytes)
            .map(JsonBody)
            .map_err(ApiError::Validation)
    }
}

/// Reads the whole body, at most [`JSON_BODY_LIMIT`] bytes: 413 beyond it
/// (checked while reading, so an oversized body is never buffered whole).
pub async fn read_body<S: Send + Sync>(req: Request, _state: &S) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), JSON_BODY_LIMIT)
        .await
        .map_err(|error| {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge(format!(
                    "Request body is too large (limit {JSON_BODY_LIMIT} bytes)"
                ))
            } else {
                ApiError::bad_request("body", format!("cannot read request body: {error}"))
            }
        })
}

/// `If-Match: "<version>"`. Absent: `None`. A value that names no version of
/// ours can never match, so it fails the precondition rather than the parse.
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<IfMatchVersion>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatchVersion {
    /// `*`: the resource must exist, at any version.
    Any,
    Exact(i64),
    /// A tag we never issued.
    Never,
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let raw = value.to_str().unwrap_or("").trim();
        if raw == "*" {
            return Ok(IfMatch(Some(IfMatchVersion::Any)));
        }
        let version = raw
            .strip_prefix("W/")
            .unwrap_or(raw)
            .trim_matches('"')
            .parse::<i64>()
            .map_or(IfMatchVersion::Never, IfMatchVersion::Exact);
        Ok(IfMatch(Some(version)))
    }
}

/// The strong ETag of a resource at `version`.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The request id set by the request-id middleware (or sent by the client).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        ))
    }
}

/// Parses a resource id from the path. Anything that is not a UUID cannot name
/// a resource, so it is the resource's 404, not a 400.
pub fn parse_id(raw: &str, not_found: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(not_found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
