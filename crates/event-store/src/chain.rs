//! The hash chain's canonical bytes, computed in Rust for backends whose store
//! cannot compute them itself (KurrentDB). They are byte for byte those of the
//! Postgres function `event_hash` (migrations V2 and V5), which includes each
//! JSON document as jsonb's canonical text: so a chain written through either
//! backend verifies with the same rule, and
//! `tests/chain.rs` checks the two agree on awkward documents.

use crate::NewEvent;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write;
use uuid::Uuid;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// What a stream's first event chains to (`event_hash_genesis()`).
pub const GENESIS: Hash = [0; 32];

/// The stored fields the hash covers, as `event_hash` takes them.
pub struct ChainedFields<'a> {
    pub event_id: Uuid,
    pub stream_id: &'a str,
    pub version: i64,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub data: &'a Value,
    pub metadata: &'a Value,
    pub recorded_at_micros: i64,
}

impl<'a> ChainedFields<'a> {
    pub fn of(event: &'a NewEvent, stream_id: &'a str, version: i64) -> Self {
        ChainedFields {
            event_id: event.event_id,
            stream_id,
            version,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            data: &event.data,
            metadata: &event.metadata,
            recorded_at_micros: event.recorded_at.timestamp_micros(),
        }
    }
}

/// `event_hash(prev, ...)`: SHA-256 over the previous hash and the event's
/// canonical bytes (text fields end with a NUL, numbers are big-endian and
/// fixed-width, JSON as jsonb prints it).
pub fn event_hash(prev: &Hash, fields: &ChainedFields<'_>) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(fields.event_id.as_bytes());
    hasher.update(fields.stream_id.as_bytes());
    hasher.update([0]);
    hasher.update(fields.version.to_be_bytes());
    hasher.update(fields.event_type.as_bytes());
    hasher.update([0]);
    hasher.update(fields.schema_version.to_be_bytes());
    hasher.update(jsonb_text(fields.data).as_bytes());
    hasher.update([0]);
    hasher.update(jsonb_text(fields.metadata).as_bytes());
    hasher.update([0]);
    hasher.update(fields.recorded_at_micros.to_be_bytes());
    hasher.finalize().into()
}

/// The text Postgres prints for `value::jsonb`: object keys ordered by length,
/// then bytewise (jsonb's storage order); `", "` and `": "` as separators;
/// strings escaped as `escape_json` does; numbers as `numeric` prints them.
pub fn jsonb_text(value: &Value) -> String {
    let mut out = String::new();
    write_jsonb(value, &mut out);
    out
}

fn write_jsonb(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&numeric_text(&n.to_string())),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| {
                a.0.len()
                    .cmp(&b.0.len())
                    .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
            });
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(key, out);
                out.push_str(": ");
                write_jsonb(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON number as Postgres `numeric` prints it after parsing it: exponent
/// applied, the scale the literal implies (`1.50` keeps two decimals,
/// `1.5e1` has none, `1e-2` has two), no sign on zero.
fn numeric_text(literal: &str) -> String {
    let (negative, unsigned) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i64>().unwrap_or(0)),
        None => (unsigned, 0),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: Vec<u8> = integer.bytes().chain(fraction.bytes()).collect();
    // Where the decimal point falls in `digits` once the exponent is applied.
    let point = integer.len() as i64 + exponent;
    let scale = (digits.len() as i64 - point).max(0) as usize;
    let mut whole = String::new();
    let mut decimals = String::new();
    for (i, d) in digits.iter().enumerate() {
        if (i as i64) < point {
            whole.push(*d as char);
        } else {
            decimals.push(*d as char);
        }
    }
    for _ in 0..(point - digits.len() as i64).max(0) {
        whole.push('0');
    }
    let leading_zeros = (-point).max(0) as usize;
    let decimals = format!("{}{}", "0".repeat(leading_zeros), decimals);
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let zero = whole == "0" && decimals.bytes().all(|d| d == b'0');
    let mut text = String::new();
    if negative && !zero {
        text.push('-');
    }
    text.push_str(whole);
    if scale > 0 {
        text.push('.');
        text.push_str(&decimals[..scale.min(decimals.len())]);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_print_as_numeric_does() {
        for (literal, printed) in [
            ("0", "0"),
            ("-0", "0"),
            ("-0.00", "0.00"),
            ("10.50", "10.50"),
            ("1e2", "100"),
            ("1E+2", "100"),
            ("1.5e1", "15"),
            ("1.50e1", "15.0"),
            ("1e-2", "0.01"),
            ("-12.345e-1", "-1.2345"),
            ("123456789012345678901234567890", "123456789012345678901234567890"),
        ] {
            assert_eq!(numeric_text(literal), printed, "{literal}");
        }
    }

    #[test]
    fn objects_sort_keys_by_length_then_bytes() {
        let value = json!({"bb": 1, "a": [true, null, "x\"\n\u{1}"], "ab": {}});
        assert_eq!(
            jsonb_text(&value),
            r#"{"a": [true, null, "x\"\n\u0001"], "ab": {}, "bb": 1}"#
        );
    }
}
