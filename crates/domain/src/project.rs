//! The tenant boundary: every API key belongs to one project, and so does every
//! campaign created with it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A project's slug: 1–64 characters of lowercase ASCII letters, digits, `-` and `_`,
/// starting with a letter or digit. Parsed once, trusted afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectSlug(String);

impl ProjectSlug {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid_chars = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        let valid_start = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if raw.is_empty() || raw.len() > 64 || !valid_chars || !valid_start {
            return Err(format!(
                "invalid project slug {raw:?}: use 1-64 characters a-z, 0-9, '-' or '_', starting with a letter or digit"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProjectSlug {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProjectSlug> for String {
    fn from(value: ProjectSlug) -> Self {
        value.0
    }
}

impl fmt::Display for ProjectSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_reasonable_slugs_and_rejects_the_rest() {
        assert!(ProjectSlug::parse("acme").is_ok());
        assert!(ProjectSlug::parse("acme-2_eu").is_ok());
        for bad in ["", "-acme", "Acme", "acme corp", &"a".repeat(65)] {
            assert!(ProjectSlug::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
