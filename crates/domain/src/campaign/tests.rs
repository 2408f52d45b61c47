//! Given events, when a command, then events (or an error). No I/O anywhere.

use super::*;
use crate::aggregate::testing::{at, invalid_field, parsed, record, replay_stored};
use crate::input::from_json_slice;
use crate::{DecodeError, DomainEvent};
use proptest::prelude::*;

const SEED_CREATE: &str = r#"{ "name": "Summer Sale Campaign", "description": "Promotional campaign for summer products", "type": "sales", "status": "draft", "start_date": "2024-06-01T00:00:00Z", "end_date": "2024-08-31T23:59:59Z", "total_budget": 10000.00, "target_audience": { "age_range": [25, 45], "gender": ["male", "female"], "locations": ["US", "CA"], "interests": ["technology", "shopping"] }, "goals": { "primary": "Increase sales by 30%", "secondary": ["Brand awareness", "Customer retention"], "kpis": [ { "metric": "conversions", "target": 1000, "current": 0 } ] }, "channels": [ { "name": "Facebook Ads", "type": "social_media", "platform": "facebook", "budget_allocation": 5000.00, "start_date": "2024-06-01T00:00:00Z", "end_date": "2024-08-31T23:59:59Z" } ], "kpis": [ { "name": "Conversions", "target": 1000, "current": 0, "unit": "count" } ] }"#;

fn id() -> Uuid {
    Uuid::from_u128(42)
}

fn project() -> ProjectSlug {
    ProjectSlug::parse("acme").unwrap()
}

fn given(events: &[CampaignEvent]) -> Campaign {
    crate::aggregate::testing::given(events, &())
}

fn create_input(json: &str) -> Box<CreateCampaign> {
    parsed(json)
}

fn created() -> CampaignEvent {
    let campaign = Campaign::default();
    let mut events = campaign
        .handle(CampaignCommand::Create {
            campaign_id: id(),
            project: project(),
            input: create_input(SEED_CREATE),
        })
        .unwrap();
    events.remove(0)
}

fn status_changed(from: CampaignStatus, to: CampaignStatus) -> CampaignEvent {
    CampaignEvent::StatusChanged(CampaignStatusChanged {
        campaign_id: id(),
        from,
        to,
    })
}

fn update(json: &str) -> CampaignCommand {
    CampaignCommand::Update(parsed(json))
}

#[test]
fn seed_create_body_produces_campaign_created_with_exact_money() {
    let CampaignEvent::Created(event) = created() else {
        panic!("expected CampaignCreated")
    };
    assert_eq!(event.status, CampaignStatus::Draft);
    assert_eq!(event.details.campaign_type, CampaignType::Sales);
    assert_eq!(event.details.total_budget.unwrap().to_string(), "10000.00");
    assert_eq!(
        event.details.channels[0].budget_allocation.unwrap().to_string(),
        "5000.00"
    );
    let state = given(&[CampaignEvent::Created(event)]);
    let json = serde_json::to_string(state.state().unwrap()).unwrap();
    assert!(json.contains(r#""total_budget":10000.00"#), "{json}");
}

#[test]
fn create_on_existing_stream_is_refused() {
    let campaign = given(&[created()]);
    let result = campaign.handle(CampaignCommand::Create {
        campaign_id: id(),
        project: project(),
        input: create_input(SEED_CREATE),
    });
    assert_eq!(result, Err(CampaignError::AlreadyExists));
}

#[test]
fn create_validation_names_each_field() {
    let cases = [
        (r#"{"name": "  "}"#, "name"),
        (r#"{"description": "x"}"#, "name"),
        (r#"{"name": "x", "type": "nonsense"}"#, "type"),
        (r#"{"name": "x", "status": "bogus"}"#, "status"),
        (r#"{"name": "x", "total_budget": -1}"#, "total_budget"),
        (r#"{"name": "x", "total_budget": "lots"}"#, "total_budget"),
        (
            r#"{"name": "x", "start_date": "2024-06-02T00:00:00Z", "end_date": "2024-06-01T00:00:00Z"}"#,
            "end_date",
        ),
        (r#"{"name": "x", "start_date": "yesterday"}"#, "start_date"),
        (
            r#"{"name": "x", "total_budget": 100, "channels": [{"name": "a", "type": "social", "budget_allocation": 60}, {"name": "b", "type": "social", "budget_allocation": 50}]}"#,
            "channels",
        ),
        (
            r#"{"name": "x", "channels": [{"name": "a", "type": "social", "budget_allocation": -5}]}"#,
            "channels[0].budget_allocation",
        ),
        (
            r#"{"name": "x", "channels": [{"type": "social"}]}"#,
            "channels[0].name",
        ),
        (
            r#"{"name": "x", "target_audience": {"age_range": [45, 25]}}"#,
            "target_audience.age_range",
        ),
        (
            r#"{"name": "x", "target_audience": {"age_range": [1, 2, 3]}}"#,
            "target_audience.age_range",
        ),
        (
            r#"{"name": "x", "kpis": [{"name": "", "target": 1}]}"#,
            "kpis[0].name",
        ),
        (r#"{"name": "x", "colour": "red"}"#, "colour"),
    ];
    for (body, field) in cases {
        let result = from_json_slice::<CreateCampaign>(body.as_bytes())
            .map_err(CampaignError::Invalid)
            .and_then(|input| {
                Campaign::default().handle(CampaignCommand::Create {
                    campaign_id: id(),
                    project: project(),
                    input: Box::new(input),
                })
            });
        assert_eq!(invalid_field(result), field, "body: {body}");
    }
}

#[test]
fn new_campaign_must_start_as_draft_or_active() {
    for status in CampaignStatus::ALL {
        let body = format!(r#"{{"name": "x", "status": "{}"}}"#, status.as_str());
        let result = Campaign::default().handle(CampaignCommand::Create {
            campaign_id: id(),
            project: project(),
            input: create_input(&body),
        });
        if status.is_initial() {
            assert!(result.is_ok(), "{status:?}");
        } else {
            assert_eq!(
                result,
                Err(CampaignError::IllegalTransition {
                    from: None,
                    to: status
                })
            );
        }
    }
}

#[test]
fn seed_update_body_changes_only_what_differs() {
    let campaign = given(&[created()]);
    let events = campaign
        .handle(update(
            r#"{ "name": "Updated Campaign Name", "total_budget": 15000.00, "description": "Promotional campaign for summer products" }"#,
        ))
        .unwrap();
    let [CampaignEvent::Updated(updated)] = events.as_slice() else {
        panic!("expected one CampaignUpdated, got {events:?}")
    };
    assert_eq!(updated.changes.name.as_deref(), Some("Updated Campaign Name"));
    assert_eq!(
        updated.changes.total_budget.unwrap().unwrap().to_string(),
        "15000.00"
    );
    assert_eq!(
        updated.changes.description, None,
        "unchanged description is not recorded"
    );
    let data = CampaignEvent::Updated(updated.clone()).to_data();
    assert_eq!(
        data["changes"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["name", "total_budget"]
    );
}

#[test]
fn update_with_nothing_new_emits_nothing_and_null_clears() {
    let campaign = given(&[created()]);
    assert_eq!(
        campaign.handle(update(r#"{"name": "Summer Sale Campaign"}"#)),
        Ok(vec![])
    );
    let events = campaign.handle(update(r#"{"description": null}"#)).unwrap();
    let mut after = campaign.clone();
    after.apply(&events[0], at(5), 1);
    assert_eq!(after.state().unwrap().details.description, None);
    assert_eq!(after.state().unwrap().version, 1);
    assert_eq!(after.state().unwrap().updated_at, at(5));
}

#[test]
fn update_revalidates_the_merged_campaign() {
    let campaign = given(&[created()]);
    // Lowering the budget below the channel allocation (5000) must fail.
    assert_eq!(
        invalid_field(campaign.handle(update(r#"{"total_budget": 100}"#))),
        "channels"
    );
    assert_eq!(
        invalid_field(campaign.handle(update(r#"{"end_date": "2024-01-01T00:00:00Z"}"#))),
        "end_date"
    );
    assert_eq!(
        invalid_field(campaign.handle(update(r#"{"name": null}"#))),
        "name"
    );
    assert_eq!(
        invalid_field(campaign.handle(update(r#"{"status": "active"}"#))),
        "status"
    );
    // Echoing the current status and read-only fields is fine.
    assert!(campaign
        .handle(update(
            r#"{"status": "draft", "id": "x", "version": 3, "name": "New"}"#
        ))
        .is_ok());
}

#[test]
fn status_transitions_follow_the_table() {
    use CampaignStatus::*;
    let allowed = [
        (Draft, Active),
        (Draft, Cancelled),
        (Active, Paused),
        (Active, Completed),
        (Active, Cancelled),
        (Paused, Active),
        (Paused, Completed),
        (Paused, Cancelled),
    ];
    for from in CampaignStatus::ALL {
        for to in CampaignStatus::ALL {
            assert_eq!(
                from.can_become(to),
                allowed.contains(&(from, to)),
                "{from:?} -> {to:?}"
            );
        }
    }
    let campaign = given(&[created(), status_changed(Draft, Active)]);
    assert_eq!(
        campaign.handle(CampaignCommand::ChangeStatus(Paused)),
        Ok(vec![status_changed(Active, Paused)])
    );
    let done = given(&[
        created(),
        status_changed(Draft, Active),
        status_changed(Active, Completed),
    ]);
    assert_eq!(
        done.handle(CampaignCommand::ChangeStatus(Active)),
        Err(CampaignError::IllegalTransition {
            from: Some(Completed),
            to: Active
        })
    );
}

#[test]
fn deleted_campaign_is_gone_for_every_command() {
    let campaign = given(&[
        created(),
        CampaignEvent::Deleted(CampaignDeleted { campaign_id: id() }),
    ]);
    assert!(campaign.state().is_none());
    assert!(campaign.is_deleted());
    assert_eq!(campaign.version(), Some(1));
    assert_eq!(
        campaign.handle(CampaignCommand::Delete),
        Err(CampaignError::NotFound)
    );
    assert_eq!(
        campaign.handle(CampaignCommand::ChangeStatus(CampaignStatus::Active)),
        Err(CampaignError::NotFound)
    );
    assert_eq!(
        campaign.handle(update(r#"{"name": "x"}"#)),
        Err(CampaignError::NotFound)
    );
    assert_eq!(
        campaign.handle(CampaignCommand::Create {
            campaign_id: id(),
            project: project(),
            input: create_input(SEED_CREATE),
        }),
        Err(CampaignError::AlreadyExists)
    );
}

#[test]
fn events_round_trip_through_their_stored_form() {
    let campaign = given(&[created()]);
    let events = [
        created(),
        campaign
            .handle(update(r#"{"description": null, "total_budget": 12345.67}"#))
            .unwrap()
            .remove(0),
        status_changed(CampaignStatus::Draft, CampaignStatus::Active),
        CampaignEvent::Deleted(CampaignDeleted { campaign_id: id() }),
    ];
    for event in events {
        let stored = serde_json::to_string(&event.to_data()).unwrap();
        let decoded =
            CampaignEvent::from_data(event.event_type(), serde_json::from_str(&stored).unwrap()).unwrap();
        assert_eq!(decoded, event);
    }
    assert!(matches!(
        CampaignEvent::from_data("CampaignExploded", serde_json::json!({})),
        Err(DecodeError::UnknownType(_))
    ));
}

// ---------------------------------------------------------------------------
// Property: whatever commands arrive, the status only moves along the table, and
// replaying the recorded events rebuilds exactly the same state.

fn command() -> impl Strategy<Value = CampaignCommand> {
    prop_oneof![
        4 => proptest::sample::select(CampaignStatus::ALL.to_vec()).prop_map(CampaignCommand::ChangeStatus),
        2 => any::<u8>().prop_map(|n| update(&format!(r#"{{"name": "name {n}"}}"#))),
        2 => (-100i64..20_000).prop_map(|b| update(&format!(r#"{{"total_budget": {b}}}"#))),
        1 => Just(CampaignCommand::Delete),
    ]
}

proptest! {
    #[test]
    fn status_stays_in_table_and_replay_rebuilds_state(commands in proptest::collection::vec(command(), 0..40)) {
        let mut live = given(&[created()]);
        let mut log = vec![created()];
        for command in commands {
            let before = live.state().map(|s| s.status);
            // A refused command leaves the campaign as it was.
            let _ = record(&mut live, &mut log, command, &());
            match (before, live.state().map(|s| s.status)) {
                (Some(from), Some(to)) if from != to => prop_assert!(from.can_become(to), "{:?} -> {:?}", from, to),
                (None, Some(_)) => prop_assert!(false, "a deleted campaign came back"),
                _ => {}
            }
            if let Some(state) = live.state() {
                prop_assert!(validate_details(&state.details).is_ok());
            }
        }
        let replayed = replay_stored::<CampaignState>(&log, &());
        prop_assert_eq!(replayed.state(), live.state());
        prop_assert_eq!(replayed.version(), live.version());
    }
}

#[test]
fn folding_from_a_stored_resource_equals_folding_from_history() {
    let campaign = given(&[created()]);
    let events = campaign
        .handle(update(
            r#"{"name": "Renamed", "total_budget": 15000.00, "description": null}"#,
        ))
        .unwrap();
    let stored: CampaignState =
        serde_json::from_value(serde_json::to_value(campaign.state().unwrap()).unwrap()).unwrap();
    assert_eq!(
        Some(&stored),
        campaign.state(),
        "the resource reads back as it was"
    );
    let mut from_row = Campaign::from_state(stored);
    let mut from_log = campaign.clone();
    for (n, event) in events.iter().enumerate() {
        from_row.apply(event, at(5), 1 + n as i64);
        from_log.apply(event, at(5), 1 + n as i64);
    }
    assert_eq!(from_row.state(), from_log.state());
}
