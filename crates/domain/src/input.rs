//! Turning request bodies into typed input, with errors that name the field.

use crate::ValidationErrors;
use serde::de::{Deserialize, DeserializeOwned, Deserializer};

/// Deserializes a JSON body, reporting the JSON path of the first offending field
/// (`channels[0].budget_allocation`) instead of a line and column.
pub fn from_json_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, ValidationErrors> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let inner = err.inner();
        let located = !matches!(err.path().to_string().as_str(), "?" | "." | "");
        if inner.is_eof() || (inner.is_syntax() && !located) {
            ValidationErrors::single("body", format!("invalid JSON: {inner}"))
        } else {
            path_error(err)
        }
    })?;
    de.end()
        .map_err(|e| ValidationErrors::single("body", format!("invalid JSON: {e}")))?;
    Ok(parsed)
}

/// Same as [`from_json_slice`] for an already parsed value (used for multipart forms
/// whose fields were collected into JSON first).
pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ValidationErrors> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

fn path_error<E: std::fmt::Display>(err: serde_path_to_error::Error<E>) -> ValidationErrors {
    let path = err.path().to_string();
    let inner = err.inner().to_string();
    // serde_json appends " at line X column Y"; the path already says where.
    let message = match inner.find(" at line ") {
        Some(idx) => inner[..idx].to_owned(),
        None => inner,
    };
    if path == "." || path == "?" || path.is_empty() {
        if message.starts_with("missing field") {
            let field = message.split('`').nth(1).unwrap_or("body").to_owned();
            return ValidationErrors::single(field.clone(), format!("{field} is required"));
        }
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            return ValidationErrors::single(field.to_owned(), format!("unknown field `{field}`"));
        }
        return ValidationErrors::single("body", message);
    }
    if message.starts_with("must ") {
        // From the field deserializers below, which cannot know the field's name.
        return ValidationErrors::single(path.clone(), format!("{path} {message}"));
    }
    if message.starts_with("missing field") {
        let field = message.split('`').nth(1).unwrap_or_default();
        let full = format!("{path}.{field}");
        return ValidationErrors::single(full.clone(), format!("{full} is required"));
    }
    ValidationErrors::single(path, message)
}

/// For optional fields of a partial update: absent → `None` (leave unchanged),
/// `null` → `Some(None)` (clear), a value → `Some(Some(v))`.
/// Use with `#[serde(default, deserialize_with = "crate::input::double_option")]`.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An optional UUID with a message a client can act on (serde's own names
/// `urn:uuid:` prefixes). Use with `#[serde(default, deserialize_with = ...)]`.
pub fn optional_uuid<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<uuid::Uuid>, D::Error> {
    let raw: Option<String> = Option::deserialize(deserializer)?;
    raw.map(|raw| {
        uuid::Uuid::parse_str(&raw).map_err(|_| {
            serde::de::Error::custom(format!(
                "must be a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6, not {raw:?}"
            ))
        })
    })
    .transpose()
}

/// [`optional_uuid`] for partial updates (see [`double_option`]).
pub fn double_option_uuid<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<uuid::Uuid>>, D::Error> {
    optional_uuid(deserializer).map(Some)
}

/// Years a timestamp may fall in, in UTC. RFC 3339 allows 0000–9999 in the
/// local time, but Postgres has no year 0 (`'0000-01-01'::timestamptz` is an
/// error) and a time in 9999 with a negative offset is in 10000 in UTC, which
/// its text form cannot read either: such a date, once accepted, was an event
/// no read model could store, and stopped its projection.
pub const TIMESTAMP_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// An optional RFC 3339 timestamp with a message a client can act on.
pub fn optional_datetime<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
    use chrono::Datelike;
    let raw: Option<String> = Option::deserialize(deserializer)?;
    raw.map(|raw| {
        let at = chrono::DateTime::parse_from_rfc3339(&raw)
            .map(|at| at.with_timezone(&chrono::Utc))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "must be an RFC 3339 date-time such as 2024-06-15T10:00:00Z, not {raw:?} ({e})"
                ))
            })?;
        if !TIMESTAMP_YEARS.contains(&at.year()) {
            return Err(serde::de::Error::custom(format!(
                "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, not {raw:?}"
            )));
        }
        Ok(at)
    })
    .transpose()
}

/// [`optional_datetime`] for partial updates (see [`double_option`]).
pub fn double_option_datetime<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<chrono::DateTime<chrono::Utc>>>, D::Error> {
    optional_datetime(deserializer).map(Some)
}

/// Checks a required text field: trimmed, non-empty, at most `max` characters.
pub fn check_text(errors: &mut ValidationErrors, field: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        errors.add(field, format!("{field} must not be empty"));
    } else if value.chars().count() > max {
        errors.add(field, format!("{field} must be at most {max} characters"));
    }
}

/// Checks an optional text field's length.
pub fn check_optional_text(errors: &mut ValidationErrors, field: &str, value: Option<&str>, max: usize) {
    if let Some(value) = value {
        if value.chars().count() > max {
            errors.add(field, format!("{field} must be at most {max} characters"));
        }
    }
}

/// Declares the body of a partial update (`PUT`) that also accepts, and
/// ignores, the read-only fields a client echoes back from the GET it edited
/// (`id`, `created_at`, `version`, ...): unknown fields are still refused, so
/// a typo does not vanish, but a resource sent back as it was read is fine.
///
/// A field written `name: T` is the usual partial-update field: absent, `null`
/// or a value (`Option<Option<T>>`, read with [`double_option`], documented as
/// an optional `T`); `name: T = "reader"` reads it with another deserializer of
/// that shape. A field written out in full (`#[...] pub name: Type`) is taken
/// as it is.
///
/// ```text
/// update_body! {
///     #[derive(Debug, Clone, Default, Deserialize)]
///     #[serde(default, deny_unknown_fields)]
///     pub struct UpdateThing {
///         name: String,
///         owner: Uuid = "double_option_uuid",
///     }
///     ignores echoed read_only_id = "id", read_only_version = "version"
/// }
/// ```
#[macro_export]
macro_rules! update_body {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($fields:tt)* }
        ignores echoed $($echo:ident = $key:literal),+ $(,)?
    ) => {
        $crate::update_body!(@fields [$(#[$meta])* pub struct $name] [$($echo = $key),+] [] $($fields)*);
    };
    (@fields $head:tt $echoes:tt [$($done:tt)*] $(#[$field_meta:meta])+ pub $field:ident: $ty:ty, $($rest:tt)*) => {
        $crate::update_body!(@fields $head $echoes [$($done)* $(#[$field_meta])+ pub $field: $ty,] $($rest)*);
    };
    (@fields $head:tt $echoes:tt [$($done:tt)*] $field:ident: $ty:ty = $reader:literal, $($rest:tt)*) => {
        $crate::update_body!(@fields $head $echoes [$($done)*
            #[serde(deserialize_with = $reader)]
            #[cfg_attr(feature = "openapi", schema(value_type = Option<$ty>))]
            pub $field: Option<Option<$ty>>,
        ] $($rest)*);
    };
    (@fields $head:tt $echoes:tt [$($done:tt)*] $field:ident: $ty:ty, $($rest:tt)*) => {
        $crate::update_body!(@fields $head $echoes [$($done)*] $field: $ty = "crate::input::double_option", $($rest)*);
    };
    (@fields [$($head:tt)*] [$($echo:ident = $key:literal),+] [$($done:tt)*]) => {
        $($head)* {
            $($done)*
            $(
                #[serde(rename = $key)]
                #[cfg_attr(feature = "openapi", schema(ignore))]
                pub $echo: Option<serde_json::Value>,
            )+
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        amount: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let err = from_json_slice::<Outer>(br#"{"items":[]}"#).unwrap_err();
        assert_eq!(err.first().unwrap().field, "name");
        let err = from_json_slice::<Outer>(br#"{"name":"x","items":[{"amount":"a"}]}"#).unwrap_err();
        assert_eq!(err.first().unwrap().field, "items[0].amount");
        let err = from_json_slice::<Outer>(br#"{"name":"x","color":1}"#).unwrap_err();
        assert_eq!(err.first().unwrap().field, "color");
        let err = from_json_slice::<Outer>(br#"{"name":"x"} trailing"#).unwrap_err();
        assert_eq!(err.first().unwrap().field, "body");
        let err = from_json_slice::<Outer>(br#"{"name":"x","items":[{}]}"#).unwrap_err();
        assert_eq!(err.first().unwrap().field, "items[0].amount");
    }

    #[derive(Debug, Deserialize)]
    struct Dated {
        #[serde(default, deserialize_with = "optional_datetime")]
        at: Option<chrono::DateTime<chrono::Utc>>,
    }

    #[test]
    fn timestamps_stay_within_the_years_postgres_can_read() {
        let parse = |at: &str| from_json_slice::<Dated>(format!(r#"{{"at":"{at}"}}"#).as_bytes());
        for refused in [
            "0000-01-01T00:00:00Z",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
        ] {
            let err = parse(refused).unwrap_err();
            assert_eq!(err.first().unwrap().field, "at", "{refused}");
        }
        for accepted in [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "0001-01-01T01:00:00+01:00",
        ] {
            assert!(parse(accepted).unwrap().at.is_some(), "{accepted}");
        }
    }
}
