//! Cursor pagination: `limit` (default 50, at most 500) and an opaque `cursor`.

use crate::ApiError;
use base64::Engine;
use serde::{Deserialize, Serialize};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// Parses `limit`: absent → 50; not an integer in 1..=500 → 400.
pub fn parse_limit(raw: Option<&str>) -> Result<i64, ApiError> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                "limit",
                format!("limit must be an integer from 1 to {MAX_LIMIT}"),
            )),
        },
    }
}

/// Encodes a keyset position as an opaque, URL-safe cursor.
pub fn encode_cursor<T: Serialize>(position: &T) -> String {
    let json = serde_json::to_vec(position).expect("cursor serializes");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor made by [`encode_cursor`]; anything else is a 400.
pub fn decode_cursor<T: for<'de> Deserialize<'de>>(raw: &str) -> Result<T, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "cursor",
            "cursor is invalid; pass next_cursor from a previous page",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

/// A list response, `{"data", "has_more", "next_cursor"}`, from items to
/// serialize: there is more exactly when there is a next cursor.
pub fn page<T: Serialize>(data: &[T], next_cursor: Option<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body =
        serde_json::json!({ "data": data, "has_more": next_cursor.is_some(), "next_cursor": next_cursor });
    axum::Json(body).into_response()
}

/// Writes a list response from resource JSON texts that are already serialized,
/// so rows go from the database to the client without being parsed.
pub fn list_body(items: &[String], next_cursor: Option<String>) -> String {
    let mut body = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 64);
    body.push_str("{\"data\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("],\"has_more\":");
    body.push_str(if next_cursor.is_some() { "true" } else { "false" });
    body.push_str(",\"next_cursor\":");
    body.push_str(&serde_json::to_string(&next_cursor).expect("cursor serializes"));
    body.push('}');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded() {
        assert_eq!(parse_limit(None).unwrap(), 50);
        assert_eq!(parse_limit(Some("500")).unwrap(), 500);
        for bad in ["0", "501", "-1", "ten", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let cursor = encode_cursor(&(12_i64, "x"));
        assert_eq!(decode_cursor::<(i64, String)>(&cursor).unwrap(), (12, "x".into()));
        assert!(decode_cursor::<(i64, String)>("not a cursor!").is_err());
    }

    #[test]
    fn list_body_is_valid_json() {
        let body = list_body(&[r#"{"a":1}"#.into(), r#"{"b":2}"#.into()], Some("c".into()));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["has_more"], true);
        assert_eq!(v["next_cursor"], "c");
        let empty: serde_json::Value = serde_json::from_str(&list_body(&[], None)).unwrap();
        assert_eq!(
            empty,
            serde_json::json!({"data": [], "has_more": false, "next_cursor": null})
        );
    }
}
