//! What an update changed: only the fields whose value differs, so an event
//! records real changes and folds onto the state it was decided against.

use crate::ValidationErrors;

/// Declares the changes of an update as stored in its event (every field
/// optional: absent = unchanged) with `is_empty` and `apply_to`, which sets
/// each changed field of the target (a state, or the part of one the fields
/// name). A field declared `Option<T>` can be cleared: its change is an
/// `Option<Option<T>>`, `null` in the event meaning "cleared".
///
/// ```text
/// changes! {
///     #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
///     #[serde(default)]
///     pub struct ThingChanges for ThingState {
///         title: String,
///         note: Option<String>,
///     }
/// }
/// ```
#[macro_export]
macro_rules! changes {
    (
        $(#[$meta:meta])*
        pub struct $name:ident for $target:ty { $($fields:tt)* }
    ) => {
        $crate::changes!(@fields [$(#[$meta])*] $name $target [] [] $($fields)*);
    };
    (@fields $meta:tt $name:ident $target:ty [$($done:tt)*] [$($set:ident)*]
        $(#[$field_meta:meta])* $field:ident: Option<$inner:ty>, $($rest:tt)*) => {
        $crate::changes!(@fields $meta $name $target [$($done)*
            #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "crate::input::double_option")]
            $(#[$field_meta])*
            pub $field: Option<Option<$inner>>,
        ] [$($set)* $field] $($rest)*);
    };
    (@fields $meta:tt $name:ident $target:ty [$($done:tt)*] [$($set:ident)*]
        $(#[$field_meta:meta])* $field:ident: $ty:ty, $($rest:tt)*) => {
        $crate::changes!(@fields $meta $name $target [$($done)*
            #[serde(skip_serializing_if = "Option::is_none")]
            $(#[$field_meta])*
            pub $field: Option<$ty>,
        ] [$($set)* $field] $($rest)*);
    };
    (@fields [$($meta:tt)*] $name:ident $target:ty [$($done:tt)*] [$($set:ident)*]) => {
        $($meta)*
        pub struct $name {
            $($done)*
        }

        impl $name {
            pub fn is_empty(&self) -> bool {
                *self == Self::default()
            }

            pub fn apply_to(&self, target: &mut $target) {
                $(
                    if let Some(value) = &self.$set {
                        target.$set = value.clone();
                    }
                )*
            }
        }
    };
}

/// The new value if it differs from the current one: what goes into the changes.
pub(crate) fn changed<T: PartialEq>(new: Option<T>, current: &T) -> Option<T> {
    new.filter(|value| value != current)
}

/// A field of a partial update that may be left out but not cleared: `null`
/// is refused (recorded in `invalid`), a value or its absence passes through.
pub(crate) fn not_null<T>(
    invalid: &mut ValidationErrors,
    field: &str,
    value: Option<Option<T>>,
) -> Option<T> {
    if matches!(value, Some(None)) {
        invalid.add(field, format!("{field} must not be null"));
    }
    value.flatten()
}
