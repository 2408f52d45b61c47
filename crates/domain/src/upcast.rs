//! Upcasters turn an event stored under an older schema version into the current
//! one, so aggregates and projections only ever handle the newest shape.
//!
//! Each entry maps `(event_type, from_version)` to a pure function producing the
//! data of `from_version + 1`; readers apply entries until none matches. The event
//! store applies them on every read path (stream reads and the whole-log feed);
//! this module only holds the table, so the domain stays free of storage concerns.

use serde_json::Value;

/// One step: data of `(event_type, from_version)` → data of `from_version + 1`.
pub type UpcastFn = fn(Value) -> Value;

/// `(event_type, from_version, step)`.
pub type UpcastStep = (&'static str, i32, UpcastFn);

/// Every upcaster the domain knows. All events are still at schema version 1, so the
/// table is empty; the mechanism is exercised by the event store's tests. When an
/// event's shape changes: bump its `schema_version`, and add a step here.
pub const ALL: &[UpcastStep] = &[];
