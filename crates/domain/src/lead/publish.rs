//! What a lead event looks like outside the system (the `marketing.leads` Kafka
//! topic): the stored event with its personal data decrypted when the lead's key
//! still exists, and without any personal data once the key was destroyed.
//!
//! The rule, for the publisher (and any other relay):
//!
//! * look up the lead's key by `lead_id` (`lead_vault::LeadVault::keys`) at
//!   publish time, and pass it here; `None` when it no longer exists;
//! * with a key, the value carries the personal fields in clear, under the same
//!   names as the REST resource (every field of [`super::PersonalData`]:
//!   `name`, `email`, `phone`, `notes`, `custom_fields`, ...) plus
//!   `"personal_data": "present"`;
//! * without a key (the lead was deleted, so its data was crypto-shredded), the
//!   value carries only the non-personal facts and `"personal_data": "erased"`.
//!   Consumers treat `LeadDeleted` as "erase this lead" for what they kept.
//!
//! Never publish the stored event data as it is: it is useless ciphertext to a
//! consumer, and sending it out would copy the ciphertext to places a key
//! destruction cannot follow if the key ever leaked.

use super::{open_created, open_updated, LeadError, LeadEvent, LeadKey};
use crate::{DecodeError, DomainEvent};
use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The key does not open the event: a misconfigured key-encryption key or
    /// corrupted data. Stop and alert; never publish in that state.
    #[error("cannot decrypt lead event: {0}")]
    Decrypt(LeadError),
}

/// The JSON value to publish for a stored lead event (`event_type` and `data` as
/// read from the log, already upcast). Pure: no I/O.
pub fn publishable_event(
    event_type: &str,
    data: &Value,
    key: Option<&LeadKey>,
) -> Result<Value, PublishError> {
    render(event_type, data, key.ok_or("erased"))
}

/// The same value without the personal data and `"personal_data": "withheld"`:
/// for a reader that may see the facts but not the person (an API key without
/// the `leads:export` scope). Pure: no I/O.
pub fn withheld_event(event_type: &str, data: &Value) -> Result<Value, PublishError> {
    render(event_type, data, Err("withheld"))
}

/// With the key, the personal data opened; else the marker saying why not.
fn render(
    event_type: &str,
    data: &Value,
    key: Result<&LeadKey, &'static str>,
) -> Result<Value, PublishError> {
    let event = LeadEvent::from_data(event_type, data.clone())?;
    let mut out = Map::new();
    out.insert("lead_id".into(), json!(event.lead_id()));
    out.insert("campaign_id".into(), json!(event.campaign_id()));
    match &event {
        LeadEvent::Created(e) => {
            out.insert("project".into(), json!(e.project));
            out.insert("status".into(), json!(e.status));
            out.insert("source".into(), json!(e.source));
            match key {
                Ok(key) => {
                    // Every personal field, under its resource name: a field
                    // added to `PersonalData` goes out with no change here.
                    let personal = open_created(e, key).map_err(PublishError::Decrypt)?;
                    if let Value::Object(fields) = json!(personal) {
                        out.extend(fields);
                    }
                    out.insert("personal_data".into(), json!("present"));
                }
                Err(marker) => {
                    out.insert("personal_data".into(), json!(marker));
                }
            }
        }
        LeadEvent::Updated(e) => {
            if let Some(status) = e.status {
                out.insert("status".into(), json!(status));
            }
            if let Some(source) = &e.source {
                out.insert("source".into(), json!(source));
            }
            if e.personal.is_some() {
                match key {
                    Ok(key) => {
                        let changes = open_updated(e, key)
                            .map_err(PublishError::Decrypt)?
                            .unwrap_or_default();
                        if let Value::Object(fields) = json!(changes) {
                            out.extend(fields);
                        }
                        out.insert("personal_data".into(), json!("present"));
                    }
                    Err(marker) => {
                        out.insert("personal_data".into(), json!(marker));
                    }
                }
            }
        }
        LeadEvent::Deleted(_) => {}
    }
    Ok(Value::Object(out))
}
