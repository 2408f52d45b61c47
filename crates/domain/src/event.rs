//! How domain events cross the boundary to the event log: a stable type name, a
//! schema version, and JSON data. The log never sees Rust types.

use serde_json::Value;

/// Implemented by each aggregate's event enum.
pub trait DomainEvent: Sized {
    /// Stable name stored in the log (`CampaignCreated`, ...). Never rename one:
    /// add a new type or a new schema version instead.
    fn event_type(&self) -> &'static str;

    /// The version of this event's data shape that `to_data` writes. Older
    /// versions are upcast (see [`crate::upcast`]) before `from_data` sees them.
    fn schema_version(&self) -> i32;

    fn to_data(&self) -> Value;

    /// Decodes an event already upcast to the current schema version.
    fn from_data(event_type: &str, data: Value) -> Result<Self, DecodeError>;

    /// [`DomainEvent::from_data`] from borrowed data: for readers that keep
    /// the event (projections), so its data need not be copied first.
    fn from_data_ref(event_type: &str, data: &Value) -> Result<Self, DecodeError>;
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("event {event_type} has malformed data: {source}")]
    Malformed {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

impl DecodeError {
    pub fn malformed(event_type: &str, source: serde_json::Error) -> Self {
        Self::Malformed {
            event_type: event_type.to_owned(),
            source,
        }
    }
}
