//! Events in the form they leave the system by HTTP: the publisher's routing
//! (which events are public, their subject), its personal-data gate (lead data
//! only while the lead's key exists, applied at every read and every attempt)
//! and its CloudEvent attributes, in JSON structured mode, plus `position`: the
//! feed cursor just after the event. A webhook body and a feed item are the
//! same JSON, and carry the Kafka record's `ce_id` as `id`.

use event_store::{LogPosition, RecordedEvent};
use publisher::{cloudevents, route, DataGate, GateError, Route, RoutedEvent};
use serde_json::{Map, Value};
use uuid::Uuid;

/// One event, ready to send.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub position: LogPosition,
    pub event_id: Uuid,
    /// The CloudEvent `type`.
    pub event_type: String,
    pub body: Map<String, Value>,
}

/// The cursor that resumes a feed right after `position`.
pub fn cursor(position: LogPosition) -> String {
    web::pagination::encode_cursor(&position)
}

/// The route of a public event; `None` for internal streams and for events
/// the publisher cannot route either (it halts at those and logs them; the
/// feed and webhooks pass over them so one bad event cannot stop a tenant's
/// feed).
pub fn public_route(event: &RecordedEvent) -> Option<Route> {
    match route::route(&event.stream_id, &event.event_type, &event.data) {
        Ok(route) => route,
        Err(error) => {
            tracing::warn!(%error, event_id = %event.event_id, "event cannot be routed; not sent by HTTP");
            None
        }
    }
}

/// The CloudEvent `type` of an event on `route`.
pub fn event_type(event: &RecordedEvent, route: &Route) -> String {
    cloudevents::event_type(route, &event.event_type, event.schema_version)
}

/// The public events among `events`, in order, with their data as the gate
/// discloses it now.
pub async fn render(gate: &dyn DataGate, events: Vec<RecordedEvent>) -> Result<Vec<Outbound>, GateError> {
    let routed: Vec<RoutedEvent> = events
        .into_iter()
        .filter_map(|event| public_route(&event).map(|route| RoutedEvent { event, route }))
        .collect();
    let disclosed = gate.disclose(&routed).await?;
    if disclosed.len() != routed.len() {
        return Err(GateError(format!(
            "returned {} values for {} events",
            disclosed.len(),
            routed.len()
        )));
    }
    Ok(routed
        .into_iter()
        .zip(disclosed)
        .map(|(RoutedEvent { event, route }, data)| {
            let mut body = cloudevents::structured(&event, &route, data);
            body.insert("position".into(), cursor(event.position).into());
            Outbound {
                position: event.position,
                event_id: event.event_id,
                event_type: event_type(&event, &route),
                body,
            }
        })
        .collect())
}
