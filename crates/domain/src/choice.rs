//! Closed sets of names (statuses, types): the enum and its wire names
//! declared once, so serde, the OpenAPI document, query filters and messages
//! all read the same list.

/// Declares an enum whose values travel as fixed names, and writes `ALL`,
/// `as_str`, `parse` and `CHOICES` (the names for messages, `"a, b, c"`):
///
/// ```text
/// choice_enum! {
///     /// Where a task stands.
///     pub enum TaskStatus {
///         Pending = "pending",
///         InProgress = "in_progress",
///     }
/// }
/// ```
#[macro_export]
macro_rules! choice_enum {
    // The names are `tt`, not `literal`: utoipa reads a `serde(rename)` only
    // from a plain literal token, and a `literal` fragment arrives wrapped.
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $first:ident = $first_name:tt
            $(, $variant:ident = $variant_name:tt)* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            #[serde(rename = $first_name)]
            $first,
            $(#[serde(rename = $variant_name)] $variant,)*
        }

        impl $name {
            pub const ALL: [$name; [$first_name $(, $variant_name)*].len()] =
                [Self::$first $(, Self::$variant)*];
            /// Every name, as a message lists them.
            pub const CHOICES: &'static str = concat!($first_name $(, ", ", $variant_name)*);

            pub fn as_str(self) -> &'static str {
                match self {
                    Self::$first => $first_name,
                    $(Self::$variant => $variant_name,)*
                }
            }

            pub fn parse(raw: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|value| value.as_str() == raw)
            }
        }
    };
}
