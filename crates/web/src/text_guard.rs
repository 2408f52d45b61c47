//! One rule for every text the API accepts: no control characters except tab,
//! line feed and carriage return.
//!
//! Why one guard and not a rule per field: Postgres refuses U+0000 in `text`
//! and `jsonb`, so a NUL anywhere in a body turned into a 500 at the database,
//! after the work was done. Other control characters are stored fine but are
//! never meant (they corrupt terminals, logs and CSV exports). So every input
//! path runs through here before any work: JSON bodies at any depth, keys
//! included ([`check_json`], from `JsonBody`), query parameters
//! ([`query_guard`], a middleware), multipart text fields and CSV cells
//! ([`check_text`], from their parsers). Headers need no check: the HTTP parser
//! already refuses control characters other than tab in header values.
//!
//! Refused: every character of Unicode category Cc except U+0009 (tab), U+000A
//! (line feed) and U+000D (carriage return), that is U+0000–U+0008,
//! U+000B–U+000C, U+000E–U+001F, U+007F (DEL) and U+0080–U+009F (C1).
//! Lone surrogates cannot reach here: JSON `"\ud800"` is not valid text and the
//! parser refuses it.

use crate::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::ValidationErrors;
use serde_json::Value;

/// True if `c` may appear in text the API accepts.
pub fn is_allowed(c: char) -> bool {
    !c.is_control() || matches!(c, '\t' | '\n' | '\r')
}

/// The first refused character of `text`, if any.
pub fn first_refused(text: &str) -> Option<char> {
    text.chars().find(|c| !is_allowed(*c))
}

/// Why `c` is refused, for an error message after the field's name.
pub fn refusal_message(c: char) -> String {
    format!(
        "must not contain the control character U+{:04X} (only tab, line feed and carriage return are allowed)",
        u32::from(c)
    )
}

/// A 400 naming `field` if `text` contains a refused character.
pub fn check_text(field: &str, text: &str) -> Result<(), ApiError> {
    match first_refused(text) {
        Some(c) => Err(refused(field, c)),
        None => Ok(()),
    }
}

/// The 400 for a refused character `c` in `field`, in the validation envelope.
pub fn refused(field: &str, c: char) -> ApiError {
    ApiError::Validation(ValidationErrors::single(field, refusal_message(c)))
}

/// [`check_json`] for a raw body. A body that is not valid JSON passes: the
/// caller's typed parse refuses it with an error that says where.
pub fn check_json_bytes(bytes: &[u8]) -> Result<(), ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => check_json(&value),
        Err(_) => Ok(()),
    }
}

/// Checks every string and every object key of `value`, depth first; the error
/// names the JSON path of the first offending value (`target_audience.interests[0]`)
/// or, for a key, the path of the object holding it.
pub fn check_json(value: &Value) -> Result<(), ApiError> {
    let mut path = String::new();
    walk(value, &mut path)
}

fn walk(value: &Value, path: &mut String) -> Result<(), ApiError> {
    match value {
        Value::String(text) => check_text(field_name(path), text),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                walk(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                if let Some(c) = first_refused(key) {
                    return Err(ApiError::Validation(ValidationErrors::single(
                        field_name(path),
                        format!("has a key that {}", refusal_message(c)),
                    )));
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// The top level is the body itself.
fn field_name(path: &str) -> &str {
    if path.is_empty() {
        "body"
    } else {
        path
    }
}

/// Middleware: refuses a request whose query string has a parameter name or
/// value (percent-decoded) with a refused character, naming the parameter.
pub async fn query_guard(req: Request, next: Next) -> Response {
    if let Some(query) = req.uri().query() {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let refused_char = first_refused(&name).or_else(|| first_refused(&value));
            if let Some(c) = refused_char {
                let field = if first_refused(&name).is_some() {
                    "query".to_owned()
                } else {
                    name.into_owned()
                };
                return refused(&field, c).into_response();
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::Validation(errors) => errors.first().unwrap().field.clone(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn tab_newline_and_carriage_return_are_kept_other_controls_are_not() {
        assert!(check_text("notes", "line one\r\nline two\tindented").is_ok());
        assert!(check_text("notes", "emoji 🎉, accents é, CJK 漢字, U+2028 \u{2028}").is_ok());
        for c in [
            '\0', '\u{1}', '\u{8}', '\u{b}', '\u{c}', '\u{1b}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}',
        ] {
            assert!(
                check_text("notes", &format!("a{c}b")).is_err(),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn the_error_names_the_json_path_at_any_depth() {
        let body = json!({
            "name": "ok",
            "target_audience": { "interests": ["a\u{0}b"] },
        });
        assert_eq!(
            field_of(check_json(&body).unwrap_err()),
            "target_audience.interests[0]"
        );
        let body = json!({ "channels": [{ "name": "ok" }, { "name": "x\u{7f}" }] });
        assert_eq!(field_of(check_json(&body).unwrap_err()), "channels[1].name");
        let body = json!({ "custom_fields": { "bad\u{0}key": "v" } });
        assert_eq!(field_of(check_json(&body).unwrap_err()), "custom_fields");
        assert_eq!(field_of(check_json(&json!({ "\u{0}": 1 })).unwrap_err()), "body");
        assert!(check_json(&json!({ "description": "tab\tand\nnewline", "n": 1, "b": null })).is_ok());
    }

    #[test]
    fn the_message_names_the_character() {
        match check_text("title", "a\u{0}") {
            Err(ApiError::Validation(errors)) => {
                assert!(errors.first().unwrap().message.contains("U+0000"));
            }
            other => panic!("{other:?}"),
        }
    }
}
