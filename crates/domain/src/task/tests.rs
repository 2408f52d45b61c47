//! Given events, when a command, then events (or an error). No I/O anywhere.

use super::*;
use crate::aggregate::testing::{at, campaign_id, invalid_field, parsed, placed, record, replay_stored};
use crate::input::from_json_slice;
use crate::{DecodeError, DomainEvent};
use proptest::prelude::*;

/// The seed's create body, with a real UUID where the seed says "uuid-here".
const SEED_CREATE: &str = r#"{ "title": "Create ad copy", "description": "Write compelling ad copy for Facebook", "assigned_to": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "due_date": "2024-06-15T00:00:00Z", "status": "pending" }"#;
const SEED_UPDATE: &str = r#"{ "status": "completed", "description": "Updated description" }"#;

fn task_id() -> Uuid {
    Uuid::from_u128(7)
}

fn given(events: &[TaskEvent]) -> Task {
    crate::aggregate::testing::given(events, &())
}

fn create(json: &str) -> Result<Vec<TaskEvent>, TaskError> {
    let input: CreateTask = from_json_slice(json.as_bytes()).map_err(TaskError::Invalid)?;
    Task::default().handle(TaskCommand::Create(placed(task_id()), Box::new(input)))
}

fn created() -> TaskEvent {
    create(SEED_CREATE).unwrap().remove(0)
}

fn update(json: &str) -> TaskCommand {
    TaskCommand::Update(parsed(json))
}

#[test]
fn seed_create_body_produces_task_created_naming_its_campaign() {
    let TaskEvent::Created(event) = created() else {
        panic!("expected TaskCreated")
    };
    assert_eq!(event.campaign_id, campaign_id());
    assert_eq!(event.status, TaskStatus::Pending);
    assert_eq!(event.details.title, "Create ad copy");
    assert_eq!(
        event.details.assigned_to,
        Some(Uuid::parse_str("3fa85f64-5717-4562-b3fc-2c963f66afa6").unwrap())
    );
    let task = given(&[TaskEvent::Created(event)]);
    let json = serde_json::to_value(task.state().unwrap()).unwrap();
    assert_eq!(
        json.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![
            "id",
            "campaign_id",
            "title",
            "description",
            "assigned_to",
            "due_date",
            "status",
            "created_at",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(json["due_date"], "2024-06-15T00:00:00Z");
}

#[test]
fn status_defaults_to_pending() {
    let events = create(r#"{"title": "Plain"}"#).unwrap();
    let TaskEvent::Created(event) = &events[0] else {
        panic!()
    };
    assert_eq!(event.status, TaskStatus::Pending);
}

#[test]
fn create_validation_names_each_field() {
    let cases = [
        // The seed's literal placeholder is not a UUID.
        (
            r#"{ "title": "Create ad copy", "assigned_to": "uuid-here" }"#,
            "assigned_to",
        ),
        (r#"{ "description": "no title" }"#, "title"),
        (r#"{ "title": "   " }"#, "title"),
        (r#"{ "title": 5 }"#, "title"),
        (r#"{ "title": "x", "status": "done" }"#, "status"),
        (r#"{ "title": "x", "due_date": "next friday" }"#, "due_date"),
        (
            r#"{ "title": "x", "due_date": "2024-13-01T00:00:00Z" }"#,
            "due_date",
        ),
        (r#"{ "title": "x", "priority": "high" }"#, "priority"),
    ];
    for (body, field) in cases {
        assert_eq!(invalid_field(create(body)), field, "body: {body}");
    }
    let long = format!(r#"{{ "title": "{}" }}"#, "x".repeat(201));
    assert_eq!(invalid_field(create(&long)), "title");
}

#[test]
fn create_on_existing_stream_is_refused() {
    let task = given(&[created()]);
    let input: CreateTask = from_json_slice(SEED_CREATE.as_bytes()).unwrap();
    let result = task.handle(TaskCommand::Create(placed(task_id()), Box::new(input)));
    assert_eq!(result, Err(TaskError::AlreadyExists));
}

#[test]
fn seed_update_records_the_change_and_the_status_move_separately() {
    let task = given(&[created()]);
    let events = task.handle(update(SEED_UPDATE)).unwrap();
    assert_eq!(
        events,
        vec![
            TaskEvent::Updated(TaskUpdated {
                task_id: task_id(),
                campaign_id: campaign_id(),
                changes: TaskChanges {
                    description: Some(Some("Updated description".into())),
                    ..TaskChanges::default()
                },
            }),
            TaskEvent::StatusChanged(TaskStatusChanged {
                task_id: task_id(),
                campaign_id: campaign_id(),
                from: TaskStatus::Pending,
                to: TaskStatus::Completed,
            }),
        ]
    );
    let mut after = task.clone();
    after.apply(&events[0], at(10), 1);
    after.apply(&events[1], at(10), 2);
    let state = after.state().unwrap();
    assert_eq!(state.status, TaskStatus::Completed);
    assert_eq!(state.description.as_deref(), Some("Updated description"));
    assert_eq!(state.title, "Create ad copy");
    assert_eq!(
        (state.version, state.updated_at, state.created_at),
        (2, at(10), at(0))
    );
}

#[test]
fn update_with_nothing_new_emits_nothing_and_null_clears() {
    let task = given(&[created()]);
    assert_eq!(
        task.handle(update(r#"{"title": "Create ad copy", "status": "pending"}"#)),
        Ok(vec![])
    );
    let events = task
        .handle(update(r#"{"assigned_to": null, "due_date": null}"#))
        .unwrap();
    let mut after = task.clone();
    after.apply(&events[0], at(3), 1);
    assert_eq!(after.state().unwrap().assigned_to, None);
    assert_eq!(after.state().unwrap().due_date, None);
}

#[test]
fn update_validation_names_each_field() {
    let task = given(&[created()]);
    let cases = [
        (r#"{"title": null}"#, "title"),
        (r#"{"title": ""}"#, "title"),
        (r#"{"status": null}"#, "status"),
        (r#"{"status": "finished"}"#, "status"),
        (r#"{"assigned_to": "bob"}"#, "assigned_to"),
        (r#"{"due_date": "soon"}"#, "due_date"),
        (r#"{"owner": "bob"}"#, "owner"),
    ];
    for (body, field) in cases {
        let result = from_json_slice::<UpdateTask>(body.as_bytes())
            .map_err(TaskError::Invalid)
            .and_then(|input| task.handle(TaskCommand::Update(Box::new(input))));
        assert_eq!(invalid_field(result), field, "body: {body}");
    }
    // The whole resource echoed back is accepted and changes nothing.
    let echo = serde_json::to_string(task.state().unwrap()).unwrap();
    assert_eq!(task.handle(update(&echo)), Ok(vec![]));
}

#[test]
fn every_status_can_follow_every_other() {
    for from in TaskStatus::ALL {
        for to in TaskStatus::ALL {
            let mut events = vec![created()];
            if from != TaskStatus::Pending {
                events.push(TaskEvent::StatusChanged(TaskStatusChanged {
                    task_id: task_id(),
                    campaign_id: campaign_id(),
                    from: TaskStatus::Pending,
                    to: from,
                }));
            }
            let task = given(&events);
            let result = task.handle(update(&format!(r#"{{"status": "{}"}}"#, to.as_str())));
            let expected = usize::from(from != to);
            assert_eq!(result.unwrap().len(), expected, "{from:?} -> {to:?}");
        }
    }
}

#[test]
fn deleted_task_is_gone_for_every_command() {
    let task = given(&[
        created(),
        TaskEvent::Deleted(TaskDeleted {
            task_id: task_id(),
            campaign_id: campaign_id(),
        }),
    ]);
    assert!(task.state().is_none() && task.is_deleted());
    assert_eq!(task.version(), Some(1));
    assert_eq!(task.handle(TaskCommand::Delete), Err(TaskError::NotFound));
    assert_eq!(task.handle(update(r#"{"title": "x"}"#)), Err(TaskError::NotFound));
}

#[test]
fn events_round_trip_through_their_stored_form() {
    let task = given(&[created()]);
    let mut events = vec![created()];
    events.extend(task.handle(update(SEED_UPDATE)).unwrap());
    events.push(TaskEvent::Deleted(TaskDeleted {
        task_id: task_id(),
        campaign_id: campaign_id(),
    }));
    for event in events {
        let data = event.to_data();
        assert_eq!(
            data["campaign_id"],
            campaign_id().to_string(),
            "every event names its campaign"
        );
        let stored = serde_json::to_string(&data).unwrap();
        let decoded =
            TaskEvent::from_data(event.event_type(), serde_json::from_str(&stored).unwrap()).unwrap();
        assert_eq!(decoded, event);
    }
    assert!(matches!(
        TaskEvent::from_data("TaskExploded", serde_json::json!({})),
        Err(DecodeError::UnknownType(_))
    ));
}

#[test]
fn folding_from_a_stored_resource_equals_folding_from_history() {
    let task = given(&[created()]);
    let events = task.handle(update(SEED_UPDATE)).unwrap();
    let stored: TaskState =
        serde_json::from_value(serde_json::to_value(task.state().unwrap()).unwrap()).unwrap();
    let mut from_row = Task::from_state(stored);
    let mut from_log = task.clone();
    for (n, event) in events.iter().enumerate() {
        from_row.apply(event, at(5), 1 + n as i64);
        from_log.apply(event, at(5), 1 + n as i64);
    }
    assert_eq!(from_row.state(), from_log.state());
}

fn command() -> impl Strategy<Value = TaskCommand> {
    prop_oneof![
        3 => proptest::sample::select(TaskStatus::ALL.to_vec())
            .prop_map(|s| update(&format!(r#"{{"status": "{}"}}"#, s.as_str()))),
        2 => any::<u8>().prop_map(|n| update(&format!(r#"{{"title": "title {n}"}}"#))),
        2 => proptest::option::of(any::<u8>()).prop_map(|n| match n {
            None => update(r#"{"description": null}"#),
            Some(n) => update(&format!(r#"{{"description": "d{n}"}}"#)),
        }),
        1 => Just(TaskCommand::Delete),
    ]
}

proptest! {
    /// Whatever commands arrive, the recorded events replay (through their stored
    /// JSON) into exactly the live state, and a deleted task never comes back.
    #[test]
    fn replay_rebuilds_state(commands in proptest::collection::vec(command(), 0..40)) {
        let mut live = given(&[created()]);
        let mut log = vec![created()];
        for command in commands {
            let was_deleted = live.is_deleted();
            // A refused command leaves the task as it was.
            let _ = record(&mut live, &mut log, command, &());
            prop_assert!(!(was_deleted && live.state().is_some()), "a deleted task came back");
            if let Some(state) = live.state() {
                prop_assert_eq!(state.version, log.len() as i64 - 1);
            }
        }
        let replayed = replay_stored::<TaskState>(&log, &());
        prop_assert_eq!(replayed.state(), live.state());
        prop_assert_eq!(replayed.version(), live.version());
    }
}

#[test]
fn bad_uuids_and_dates_get_messages_that_name_the_field() {
    let Err(TaskError::Invalid(errors)) = create(r#"{ "title": "x", "assigned_to": "uuid-here" }"#) else {
        panic!()
    };
    assert_eq!(
        errors.first().unwrap().message,
        "assigned_to must be a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6, not \"uuid-here\""
    );
    let Err(TaskError::Invalid(errors)) = create(r#"{ "title": "x", "due_date": "2024-06-15" }"#) else {
        panic!()
    };
    let message = &errors.first().unwrap().message;
    assert!(
        message.starts_with(
            "due_date must be an RFC 3339 date-time such as 2024-06-15T10:00:00Z, not \"2024-06-15\""
        ),
        "{message}"
    );
}
