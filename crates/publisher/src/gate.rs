//! The personal-data gate: the one place that decides what of an event's data
//! leaves the system.
//!
//! Lead events hold personal data (name, email, phone, notes, custom fields)
//! encrypted with a per-lead key; deleting a lead destroys its key
//! (crypto-shredding, docs/leads.md). The rule for the publisher:
//!
//! > Personal data is published decrypted only if the lead's key still exists at
//! > the moment the record is handed to the producer. Once the key is gone, every
//! > (re-)publication of that lead's events carries the personal fields erased.
//!
//! The gate runs for every batch right before it is produced, so a re-send after
//! a crash or a deliberate re-publication from position zero applies the rule
//! again with the keys as they are then. Records that left before the deletion
//! cannot be recalled; the lead's deletion event follows them on the same key
//! (records are keyed by lead id), so every consumer learns of it after the
//! personal data and in the same partition, and must erase what it kept.
//!
//! The binary supplies the gate that decrypts (`marketing::lead_gate`, see
//! docs/kafka.md, "Personal data"). [`AsStored`] publishes the data exactly as
//! the log holds it (lead personal data still sealed, never decrypted): for
//! tests and for publishers that carry no lead events.

use crate::route::Route;
use async_trait::async_trait;
use event_store::RecordedEvent;
use serde_json::Value;

/// One event about to be published, with where it goes.
#[derive(Debug, Clone)]
pub struct RoutedEvent {
    pub event: RecordedEvent,
    pub route: Route,
}

#[derive(Debug, thiserror::Error)]
#[error("personal-data gate failed: {0}")]
pub struct GateError(pub String);

/// Decides the published data of each event of a batch.
#[async_trait]
pub trait DataGate: Send + Sync + 'static {
    /// Returns the data to publish for each event, in the same order. An error
    /// stops publishing before this batch (nothing of it is produced); the batch
    /// is retried after a pause, so a gate never lets an event through by
    /// failing and never skips one.
    async fn disclose(&self, events: &[RoutedEvent]) -> Result<Vec<Value>, GateError>;
}

/// Publishes the data as stored in the log (upcast to its current schema).
#[derive(Debug, Clone, Copy, Default)]
pub struct AsStored;

#[async_trait]
impl DataGate for AsStored {
    async fn disclose(&self, events: &[RoutedEvent]) -> Result<Vec<Value>, GateError> {
        Ok(events.iter().map(|e| (*e.event.data).clone()).collect())
    }
}
