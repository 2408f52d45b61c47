//! Closed sets of names (statuses, types): the enum declared once, and its
//! wire names derived from the variants exactly as serde's
//! `rename_all = "snake_case"` derives them, so serde, the OpenAPI document,
//! query filters and messages cannot disagree.

/// Declares an enum whose values travel as snake_case names (`InProgress` is
/// `in_progress`), and writes `ALL`, `as_str`, `parse` and `CHOICES` (the
/// names for messages, `"a, b, c"`):
///
/// ```text
/// choice_enum! {
///     /// Where a task stands.
///     pub enum TaskStatus {
///         Pending,
///         InProgress,
///     }
/// }
/// ```
#[macro_export]
macro_rules! choice_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($variant:ident),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$(Self::$variant),+];
            /// Every name, as a message lists them.
            pub const CHOICES: &'static str = {
                const VARIANTS: &[&str] = &[$(stringify!($variant)),+];
                const BYTES: [u8; $crate::choice::choices_len(VARIANTS)] = $crate::choice::choices(VARIANTS);
                $crate::choice::text(&BYTES)
            };

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => {
                        const BYTES: [u8; $crate::choice::snake_case_len(stringify!($variant))] =
                            $crate::choice::snake_case(stringify!($variant));
                        $crate::choice::text(&BYTES)
                    })+
                }
            }

            pub fn parse(raw: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|value| value.as_str() == raw)
            }
        }
    };
}

/// The length of `name` in snake_case: an underscore before every capital
/// but the first.
pub const fn snake_case_len(name: &str) -> usize {
    let bytes = name.as_bytes();
    let mut len = bytes.len();
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i].is_ascii_uppercase() {
            len += 1;
        }
        i += 1;
    }
    len
}

/// `name` (an ASCII CamelCase identifier) in snake_case, written into `out`
/// from `at`; the position after it.
const fn write_snake_case(name: &str, out: &mut [u8], at: usize) -> usize {
    let bytes = name.as_bytes();
    let mut at = at;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_uppercase() && i > 0 {
            out[at] = b'_';
            at += 1;
        }
        out[at] = bytes[i].to_ascii_lowercase();
        at += 1;
        i += 1;
    }
    at
}

/// `name` in snake_case, as serde's `rename_all = "snake_case"` spells it.
pub const fn snake_case<const N: usize>(name: &str) -> [u8; N] {
    let mut out = [0; N];
    write_snake_case(name, &mut out, 0);
    out
}

/// The length of the names of `variants`, joined by `", "`.
pub const fn choices_len(variants: &[&str]) -> usize {
    let mut len = 2 * (variants.len() - 1);
    let mut i = 0;
    while i < variants.len() {
        len += snake_case_len(variants[i]);
        i += 1;
    }
    len
}

/// The names of `variants`, joined by `", "`.
pub const fn choices<const N: usize>(variants: &[&str]) -> [u8; N] {
    let mut out = [0; N];
    let mut at = 0;
    let mut i = 0;
    while i < variants.len() {
        if i > 0 {
            out[at] = b',';
            out[at + 1] = b' ';
            at += 2;
        }
        at = write_snake_case(variants[i], &mut out, at);
        i += 1;
    }
    out
}

/// Bytes made from ASCII identifiers, as text.
pub const fn text(bytes: &'static [u8]) -> &'static str {
    match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) => panic!("names are ASCII"),
    }
}

#[cfg(test)]
mod tests {
    crate::choice_enum! {
        pub enum Sample {
            Draft,
            InProgress,
            LeadGeneration,
        }
    }

    #[test]
    fn names_are_serdes_snake_case() {
        for value in Sample::ALL {
            assert_eq!(serde_json::to_value(value).unwrap(), value.as_str());
            assert_eq!(Sample::parse(value.as_str()), Some(value));
        }
        assert_eq!(Sample::InProgress.as_str(), "in_progress");
        assert_eq!(Sample::CHOICES, "draft, in_progress, lead_generation");
        assert_eq!(Sample::parse("InProgress"), None);
    }
}
