//! Which topic an event goes to, under which key, about which subject: decided
//! by the stream's prefix alone, so a new aggregate falls into place by adding
//! one line to [`AGGREGATES`].

use serde_json::Value;
use uuid::Uuid;

/// The two topic families (docs/kafka.md, "Routing and keys").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// Everything that happens to a campaign and what belongs to it: one key per
    /// campaign, so a consumer sees a campaign's events (its tasks', content's and
    /// analytics' included) in log order.
    Campaigns,
    /// Lead events: one key per lead.
    Leads,
}

/// One kind of aggregate the publisher knows.
#[derive(Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// Its streams are named `<prefix><id>`.
    pub prefix: &'static str,
    /// Lower-case name in `ce_type` (`com.marketing.<name>.<action>.v<n>`).
    pub name: &'static str,
    /// The event-type prefix stripped to get the action (`TaskCreated` → `created`).
    pub event_prefix: &'static str,
    /// Path segment in `ce_subject` (`campaigns/<campaign>/<collection>/<id>`).
    pub collection: &'static str,
    pub topic: TopicKind,
}

/// Every aggregate whose events leave the system. Streams with any other prefix
/// are internal and are not published.
pub const AGGREGATES: &[Aggregate] = &[
    Aggregate {
        prefix: domain::campaign::STREAM_PREFIX,
        name: "campaign",
        event_prefix: "Campaign",
        collection: "campaigns",
        topic: TopicKind::Campaigns,
    },
    Aggregate {
        prefix: "task-",
        name: "task",
        event_prefix: "Task",
        collection: "tasks",
        topic: TopicKind::Campaigns,
    },
    Aggregate {
        prefix: "content-",
        name: "content",
        event_prefix: "Content",
        collection: "content",
        topic: TopicKind::Campaigns,
    },
    Aggregate {
        prefix: "analytics-",
        name: "analytics",
        event_prefix: "Analytics",
        collection: "analytics",
        topic: TopicKind::Campaigns,
    },
    Aggregate {
        prefix: "lead-",
        name: "lead",
        event_prefix: "Lead",
        collection: "leads",
        topic: TopicKind::Leads,
    },
];

/// Where one event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub aggregate: &'static Aggregate,
    /// The stream id without its prefix.
    pub aggregate_id: String,
    /// The campaign the event belongs to, when known (always for the campaigns topic).
    pub campaign_id: Option<Uuid>,
    /// The Kafka record key: the campaign id on the campaigns topic, the lead id on
    /// the leads topic.
    pub key: String,
    /// `ce_subject`.
    pub subject: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A campaign-scoped event that does not say which campaign it belongs to
    /// cannot be keyed without breaking per-campaign order, so publishing stops
    /// at it (see docs/kafka.md, "Poison events").
    #[error("event {event_type} in stream {stream_id} has no valid campaign_id in its data")]
    MissingCampaignId { stream_id: String, event_type: String },
    #[error("stream {stream_id} has no aggregate id after its prefix")]
    EmptyAggregateId { stream_id: String },
}

/// The aggregate a stream belongs to, if its events are published.
pub fn aggregate_of(stream_id: &str) -> Option<&'static Aggregate> {
    AGGREGATES.iter().find(|a| stream_id.starts_with(a.prefix))
}

/// Routes one event; `Ok(None)` for streams that are not published.
pub fn route(stream_id: &str, event_type: &str, data: &Value) -> Result<Option<Route>, RouteError> {
    let Some(aggregate) = aggregate_of(stream_id) else {
        return Ok(None);
    };
    let aggregate_id = &stream_id[aggregate.prefix.len()..];
    if aggregate_id.is_empty() {
        return Err(RouteError::EmptyAggregateId {
            stream_id: stream_id.to_owned(),
        });
    }
    let data_campaign_id = data
        .get("campaign_id")
        .and_then(Value::as_str)
        .and_then(|raw| Uuid::parse_str(raw).ok());
    let route = match aggregate.topic {
        TopicKind::Campaigns => {
            // A campaign's own stream names the campaign; everything else must say
            // which campaign it belongs to.
            let campaign_id = if aggregate.prefix == domain::campaign::STREAM_PREFIX {
                Uuid::parse_str(aggregate_id).ok().or(data_campaign_id)
            } else {
                data_campaign_id
            };
            let Some(campaign_id) = campaign_id else {
                return Err(RouteError::MissingCampaignId {
                    stream_id: stream_id.to_owned(),
                    event_type: event_type.to_owned(),
                });
            };
            let subject = if aggregate.prefix == domain::campaign::STREAM_PREFIX {
                format!("campaigns/{campaign_id}")
            } else {
                format!("campaigns/{campaign_id}/{}/{aggregate_id}", aggregate.collection)
            };
            Route {
                aggregate,
                aggregate_id: aggregate_id.to_owned(),
                campaign_id: Some(campaign_id),
                key: campaign_id.to_string(),
                subject,
            }
        }
        TopicKind::Leads => Route {
            aggregate,
            aggregate_id: aggregate_id.to_owned(),
            campaign_id: data_campaign_id,
            key: aggregate_id.to_owned(),
            subject: format!("{}/{aggregate_id}", aggregate.collection),
        },
    };
    Ok(Some(route))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CAMPAIGN: &str = "0b0c0a3e-7a51-4d2b-9a57-1f2f7d3c0a01";
    const TASK: &str = "5f0e8f1a-1111-4c3b-8f55-0d9f2a6b7c02";
    const LEAD: &str = "9a8b7c6d-2222-4e5f-9a0b-1c2d3e4f5a03";

    #[test]
    fn campaign_events_are_keyed_by_their_campaign() {
        let route = route(
            &format!("campaign-{CAMPAIGN}"),
            "CampaignUpdated",
            &json!({ "campaign_id": CAMPAIGN, "changes": {} }),
        )
        .unwrap()
        .unwrap();
        assert_eq!(route.aggregate.topic, TopicKind::Campaigns);
        assert_eq!(route.key, CAMPAIGN);
        assert_eq!(route.subject, format!("campaigns/{CAMPAIGN}"));
        assert_eq!(route.campaign_id, Some(CAMPAIGN.parse().unwrap()));
    }

    #[test]
    fn campaign_scoped_aggregates_share_their_campaigns_key() {
        for (prefix, collection) in [
            ("task-", "tasks"),
            ("content-", "content"),
            ("analytics-", "analytics"),
        ] {
            let route = route(
                &format!("{prefix}{TASK}"),
                "Whatever",
                &json!({ "campaign_id": CAMPAIGN }),
            )
            .unwrap()
            .unwrap();
            assert_eq!(route.aggregate.topic, TopicKind::Campaigns);
            assert_eq!(route.key, CAMPAIGN, "{prefix}");
            assert_eq!(route.subject, format!("campaigns/{CAMPAIGN}/{collection}/{TASK}"));
        }
    }

    #[test]
    fn a_campaign_scoped_event_without_its_campaign_is_refused() {
        for data in [
            json!({}),
            json!({ "campaign_id": 42 }),
            json!({ "campaign_id": "not-a-uuid" }),
        ] {
            assert_eq!(
                route(&format!("task-{TASK}"), "TaskCreated", &data),
                Err(RouteError::MissingCampaignId {
                    stream_id: format!("task-{TASK}"),
                    event_type: "TaskCreated".into()
                })
            );
        }
    }

    #[test]
    fn lead_events_are_keyed_by_the_lead() {
        let route = route(
            &format!("lead-{LEAD}"),
            "LeadCreated",
            &json!({ "campaign_id": CAMPAIGN, "lead_id": LEAD }),
        )
        .unwrap()
        .unwrap();
        assert_eq!(route.aggregate.topic, TopicKind::Leads);
        assert_eq!(route.key, LEAD);
        assert_eq!(route.subject, format!("leads/{LEAD}"));
        assert_eq!(route.campaign_id, Some(CAMPAIGN.parse().unwrap()));
        // A later lead event need not repeat the campaign: same key, same subject.
        let later = super::route(&format!("lead-{LEAD}"), "LeadDeleted", &json!({}))
            .unwrap()
            .unwrap();
        assert_eq!((later.key, later.subject), (route.key, route.subject));
    }

    #[test]
    fn other_streams_are_not_published() {
        assert_eq!(route("api_key-1", "ApiKeyCreated", &json!({})), Ok(None));
        assert_eq!(route("campaigns-x", "X", &json!({})), Ok(None));
        assert_eq!(
            route("lead-", "LeadCreated", &json!({})),
            Err(RouteError::EmptyAggregateId {
                stream_id: "lead-".into()
            })
        );
    }
}
