//! The publisher's personal-data gate for leads (see `publisher::gate` for the
//! rule): lead events go out with personal data decrypted while the lead's key
//! exists, and with it erased once the lead was deleted (its key destroyed).
//! Every other event goes out as stored.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use domain::lead::{publishable_event, STREAM_PREFIX};
use lead_vault::LeadVault;
use publisher::{DataGate, GateError, RoutedEvent};
use serde_json::Value;
use uuid::Uuid;

pub struct LeadDataGate {
    pool: Pool,
    vault: LeadVault,
}

impl LeadDataGate {
    pub fn new(pool: Pool, vault: LeadVault) -> Self {
        Self { pool, vault }
    }
}

fn lead_id(event: &RoutedEvent) -> Option<Uuid> {
    event
        .event
        .stream_id
        .strip_prefix(STREAM_PREFIX)
        .and_then(|id| Uuid::parse_str(id).ok())
}

#[async_trait]
impl DataGate for LeadDataGate {
    async fn disclose(&self, events: &[RoutedEvent]) -> Result<Vec<Value>, GateError> {
        let lead_ids: Vec<Uuid> = events.iter().filter_map(lead_id).collect();
        // Keys are read now, right before producing: a lead deleted a moment
        // ago has no key any more, so nothing of it is decrypted.
        let keys = if lead_ids.is_empty() {
            Default::default()
        } else {
            let client = self.pool.get().await.map_err(|e| GateError(e.to_string()))?;
            let client: &tokio_postgres::Client = &client;
            self.vault
                .keys(client, &lead_ids)
                .await
                .map_err(|e| GateError(e.to_string()))?
        };
        events
            .iter()
            .map(|routed| match lead_id(routed) {
                None => Ok((*routed.event.data).clone()),
                Some(id) => publishable_event(&routed.event.event_type, &routed.event.data, keys.get(&id))
                    .map_err(|e| GateError(e.to_string())),
            })
            .collect()
    }
}
