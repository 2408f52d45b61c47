//! CloudEvents 1.0, Kafka protocol binding, binary content mode: the record value
//! is the event data as JSON, every other attribute is a `ce_`-prefixed header
//! (`content-type` carries `datacontenttype`). Header values are UTF-8 strings.
//!
//! The attribute values are part of the public contract (docs/events.md); the
//! tests below pin them.

use crate::route::Route;
use chrono::SecondsFormat;
use event_store::RecordedEvent;
use serde_json::Value;
use trace_context::TraceParent;

pub const SPEC_VERSION: &str = "1.0";
pub const CONTENT_TYPE: &str = "application/json";
/// Reverse-DNS prefix of every `ce_type`.
pub const TYPE_PREFIX: &str = "com.marketing";
/// `ce_source` is `urn:marketing:project:<project slug>`; events without a
/// project in their metadata get the bare prefix.
pub const SOURCE_PREFIX: &str = "urn:marketing";

/// Header names. Extension attributes must be lower-case letters and digits only
/// (CloudEvents 1.0, "Attribute Naming Convention"), hence no inner underscores.
pub mod header {
    pub const SPEC_VERSION: &str = "ce_specversion";
    pub const ID: &str = "ce_id";
    pub const SOURCE: &str = "ce_source";
    pub const TYPE: &str = "ce_type";
    pub const SUBJECT: &str = "ce_subject";
    pub const TIME: &str = "ce_time";
    pub const CONTENT_TYPE: &str = "content-type";
    /// Extension: the stream (`campaign-<uuid>`, `lead-<uuid>`, ...).
    pub const STREAM_ID: &str = "ce_streamid";
    /// Extension: the event's 0-based version within its stream.
    pub const STREAM_VERSION: &str = "ce_streamversion";
    /// Extension: the event's global position in the log.
    pub const POSITION: &str = "ce_position";
    /// Extension: the project (tenant) the event belongs to.
    pub const PROJECT: &str = "ce_project";
    /// Extension: the campaign the event belongs to, when known.
    pub const CAMPAIGN_ID: &str = "ce_campaignid";
    /// Extension: the id correlating the event with the request that caused it.
    pub const CORRELATION_ID: &str = "ce_correlationid";
    /// The W3C trace context (not a `ce_` attribute: the header tracing
    /// instrumentation of Kafka clients reads), see [`super::encode`].
    pub const TRACEPARENT: &str = trace_context::HEADER;
}

/// `com.marketing.<aggregate>.<action>.v<schema version>`, e.g.
/// `com.marketing.campaign.status_changed.v1`. The action is the event type
/// without the aggregate's name, in snake case; an event type that does not start
/// with the aggregate's name keeps all of it (a type `MetricsRecorded` on an analytics
/// stream would be `com.marketing.analytics.metrics_recorded.v1`). Event types are never renamed (see `domain::DomainEvent`),
/// so these names are stable; a new data shape gets a new `.v<n>`.
pub fn event_type(route: &Route, event_type: &str, schema_version: i32) -> String {
    let action = event_type
        .strip_prefix(route.aggregate.event_prefix)
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
        .unwrap_or(event_type);
    format!(
        "{TYPE_PREFIX}.{}.{}.v{schema_version}",
        route.aggregate.name,
        snake_case(action)
    )
}

fn snake_case(pascal: &str) -> String {
    let mut out = String::with_capacity(pascal.len() + 4);
    for (i, c) in pascal.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A record ready for the producer.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingRecord {
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// The attributes of one event, as every outbound channel names them (Kafka
/// headers, the event feed and webhooks): computed here once, so an event has
/// the same id, type, source and subject wherever it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributes {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub subject: String,
    pub time: String,
    pub stream_id: String,
    pub stream_version: i64,
    pub position: i64,
    pub project: Option<String>,
    pub campaign_id: Option<String>,
    pub correlation_id: Option<String>,
}

impl Attributes {
    pub fn of(event: &RecordedEvent, route: &Route) -> Self {
        let project = event.metadata.get("project").and_then(Value::as_str);
        let source = match project {
            Some(project) => format!("{SOURCE_PREFIX}:project:{project}"),
            None => SOURCE_PREFIX.to_owned(),
        };
        Self {
            id: event.event_id.to_string(),
            source,
            event_type: event_type(route, &event.event_type, event.schema_version),
            subject: route.subject.clone(),
            time: event.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            stream_id: event.stream_id.clone(),
            stream_version: event.version,
            position: event.position.position,
            project: project.map(str::to_owned),
            campaign_id: route.campaign_id.map(|id| id.to_string()),
            correlation_id: event
                .metadata
                .get("correlation_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

/// Encodes `event` as routed by `route`, with `data` as the value (the data as
/// the personal-data gate let it out, see [`crate::DataGate`]). The
/// `traceparent` header is the trace the event was written in: `handling`,
/// the context of the span publishing it, when that span continues the
/// event's trace, else the context stored with the event
/// ([`trace_context::carried`]); none for an event stored without one.
pub fn encode(
    event: &RecordedEvent,
    route: &Route,
    data: &Value,
    handling: Option<TraceParent>,
) -> OutgoingRecord {
    let a = Attributes::of(event, route);
    let trace = trace_context::carried(TraceParent::of_metadata(&event.metadata), handling);
    let mut headers = vec![
        (header::SPEC_VERSION, SPEC_VERSION.to_owned()),
        (header::ID, a.id),
        (header::SOURCE, a.source),
        (header::TYPE, a.event_type),
        (header::SUBJECT, a.subject),
        (header::TIME, a.time),
        (header::CONTENT_TYPE, CONTENT_TYPE.to_owned()),
        (header::STREAM_ID, a.stream_id),
        (header::STREAM_VERSION, a.stream_version.to_string()),
        (header::POSITION, a.position.to_string()),
    ];
    let optional = [
        (header::PROJECT, a.project),
        (header::CAMPAIGN_ID, a.campaign_id),
        (header::CORRELATION_ID, a.correlation_id),
        (header::TRACEPARENT, trace.map(|t| t.to_string())),
    ];
    headers.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v))),
    );
    OutgoingRecord {
        key: route.key.clone(),
        // Serializing a `Value` cannot fail: its keys are strings.
        payload: serde_json::to_vec(data).expect("JSON values serialize"),
        headers,
    }
}

/// The same event in JSON structured mode (CloudEvents' JSON format), for
/// channels without headers: the event feed and webhook bodies. Attribute
/// names are the Kafka headers' without their `ce_` prefix; the global
/// position is left to the caller, which names it as its own cursor.
pub fn structured(event: &RecordedEvent, route: &Route, data: Value) -> serde_json::Map<String, Value> {
    let a = Attributes::of(event, route);
    let attribute = |header: &str| header.strip_prefix("ce_").unwrap_or(header).to_owned();
    let mut object = serde_json::Map::new();
    object.insert(attribute(header::SPEC_VERSION), SPEC_VERSION.into());
    object.insert(attribute(header::ID), a.id.into());
    object.insert(attribute(header::SOURCE), a.source.into());
    object.insert(attribute(header::TYPE), a.event_type.into());
    object.insert(attribute(header::SUBJECT), a.subject.into());
    object.insert(attribute(header::TIME), a.time.into());
    object.insert("datacontenttype".into(), CONTENT_TYPE.into());
    object.insert(attribute(header::STREAM_ID), a.stream_id.into());
    object.insert(attribute(header::STREAM_VERSION), a.stream_version.into());
    let optional = [
        (header::PROJECT, a.project),
        (header::CAMPAIGN_ID, a.campaign_id),
        (header::CORRELATION_ID, a.correlation_id),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            object.insert(attribute(name), value.into());
        }
    }
    object.insert("data".into(), data);
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::route;
    use chrono::{TimeZone, Utc};
    use event_store::LogPosition;
    use serde_json::json;
    use uuid::Uuid;

    fn campaign_route(event_type: &str) -> Route {
        let id = "0b0c0a3e-7a51-4d2b-9a57-1f2f7d3c0a01";
        route(
            &format!("campaign-{id}"),
            event_type,
            &json!({ "campaign_id": id }),
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn campaign_event_types_have_their_documented_names() {
        for (event_type, expected) in [
            ("CampaignCreated", "com.marketing.campaign.created.v1"),
            ("CampaignUpdated", "com.marketing.campaign.updated.v1"),
            (
                "CampaignStatusChanged",
                "com.marketing.campaign.status_changed.v1",
            ),
            ("CampaignDeleted", "com.marketing.campaign.deleted.v1"),
        ] {
            assert_eq!(
                super::event_type(&campaign_route(event_type), event_type, 1),
                expected
            );
        }
    }

    #[test]
    fn other_aggregates_and_versions_follow_the_same_rule() {
        let task = route(
            "task-1",
            "TaskCreated",
            &json!({ "campaign_id": "0b0c0a3e-7a51-4d2b-9a57-1f2f7d3c0a01" }),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            event_type(&task, "TaskCreated", 2),
            "com.marketing.task.created.v2"
        );
        let analytics = route(
            "analytics-1",
            "MetricsRecorded",
            &json!({ "campaign_id": "0b0c0a3e-7a51-4d2b-9a57-1f2f7d3c0a01" }),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            event_type(&analytics, "MetricsRecorded", 1),
            "com.marketing.analytics.metrics_recorded.v1"
        );
        let lead = route("lead-1", "LeadStatusChanged", &json!({})).unwrap().unwrap();
        assert_eq!(
            event_type(&lead, "LeadStatusChanged", 1),
            "com.marketing.lead.status_changed.v1"
        );
        // "Leads" is not "Lead" + an action.
        assert_eq!(
            event_type(&lead, "LeadsImported", 1),
            "com.marketing.lead.leads_imported.v1"
        );
    }

    #[test]
    fn headers_carry_every_attribute_in_binary_mode() {
        let event_id = Uuid::parse_str("11111111-2222-4333-8444-555555555555").unwrap();
        let campaign = "0b0c0a3e-7a51-4d2b-9a57-1f2f7d3c0a01";
        let event = RecordedEvent {
            position: LogPosition {
                tx_id: 900,
                position: 42,
            },
            event_id,
            stream_id: format!("campaign-{campaign}"),
            version: 3,
            event_type: "CampaignStatusChanged".into(),
            schema_version: 1,
            data: json!({ "campaign_id": campaign, "from": "draft", "to": "active" }).into(),
            metadata: json!({ "project": "acme", "correlation_id": "req-7", "api_key_id": "k" }).into(),
            recorded_at: Utc.with_ymd_and_hms(2024, 6, 1, 12, 30, 0).unwrap()
                + chrono::TimeDelta::microseconds(250),
        };
        let route = campaign_route("CampaignStatusChanged");
        let record = encode(&event, &route, &event.data, None);
        assert_eq!(record.key, campaign);
        assert_eq!(
            serde_json::from_slice::<Value>(&record.payload).unwrap(),
            *event.data
        );
        let headers: Vec<(&str, &str)> = record.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            headers,
            vec![
                ("ce_specversion", "1.0"),
                ("ce_id", "11111111-2222-4333-8444-555555555555"),
                ("ce_source", "urn:marketing:project:acme"),
                ("ce_type", "com.marketing.campaign.status_changed.v1"),
                ("ce_subject", &*format!("campaigns/{campaign}")),
                ("ce_time", "2024-06-01T12:30:00.000250Z"),
                ("content-type", "application/json"),
                ("ce_streamid", &*format!("campaign-{campaign}")),
                ("ce_streamversion", "3"),
                ("ce_position", "42"),
                ("ce_project", "acme"),
                ("ce_campaignid", campaign),
                ("ce_correlationid", "req-7"),
            ]
        );
    }

    #[test]
    fn the_traceparent_header_carries_the_events_trace() {
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let campaign = "0b0c0a3e-7a51-4d2b-9a57-1f2f7d3c0a01";
        let mut event = RecordedEvent {
            position: LogPosition {
                tx_id: 1,
                position: 1,
            },
            event_id: Uuid::new_v4(),
            stream_id: format!("campaign-{campaign}"),
            version: 0,
            event_type: "CampaignCreated".into(),
            schema_version: 1,
            data: json!({ "campaign_id": campaign }).into(),
            metadata: json!({ "project": "acme", trace_context::METADATA_KEY: stored }).into(),
            recorded_at: Utc::now(),
        };
        let route = campaign_route("CampaignCreated");
        let traceparent = |record: &OutgoingRecord| {
            record
                .headers
                .iter()
                .find(|(k, _)| *k == "traceparent")
                .map(|(_, v)| v.clone())
        };
        let record = encode(&event, &route, &event.data, None);
        assert_eq!(traceparent(&record).as_deref(), Some(stored));
        // Published in a span of the same trace: that span is the parent.
        let publishing = TraceParent::parse(stored.as_bytes()).unwrap().child();
        let record = encode(&event, &route, &event.data, Some(publishing));
        assert_eq!(traceparent(&record), Some(publishing.to_string()));
        // In a span of another trace (a batch of many): the stored one.
        let record = encode(&event, &route, &event.data, Some(TraceParent::root()));
        assert_eq!(traceparent(&record).as_deref(), Some(stored));
        event.metadata = json!({ "project": "acme" }).into();
        assert_eq!(traceparent(&encode(&event, &route, &event.data, None)), None);
    }

    #[test]
    fn extension_names_follow_the_cloudevents_naming_rule() {
        for name in [
            header::STREAM_ID,
            header::STREAM_VERSION,
            header::POSITION,
            header::PROJECT,
            header::CAMPAIGN_ID,
            header::CORRELATION_ID,
        ] {
            let attribute = name.strip_prefix("ce_").unwrap();
            assert!(
                !attribute.is_empty()
                    && attribute.len() <= 20
                    && attribute
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{name}"
            );
        }
    }
}
