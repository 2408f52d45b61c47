//! Given events, when a command, then events (or an error). No I/O anywhere.

use super::*;
use crate::aggregate::testing::{at, campaign_id, invalid_field, placed, record, replay_stored};
use crate::input::{from_json_slice, from_json_value};
use crate::DomainEvent;
use proptest::prelude::*;
use serde_json::json;

fn content_id() -> Uuid {
    Uuid::from_u128(9)
}

fn png(n: u8) -> MediaRef {
    MediaRef {
        sha256: format!("{n:02x}").repeat(32),
        size: 68,
        media_type: "image/png".into(),
        file_name: Some("file.png".into()),
    }
}

/// The seed's multipart text fields, as the command side collects them, with a
/// real UUID where the seed says "uuid-here".
fn seed_fields() -> Value {
    json!({
        "title": "New Blog Post",
        "content_type": "blog",
        "scheduled_date": "2024-06-15T10:00:00Z",
        "platform": "wordpress",
        "status": "draft",
        "content": "Content description",
        "assigned_to": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    })
}

fn given(events: &[ContentEvent]) -> Content {
    crate::aggregate::testing::given(events, &())
}

fn create_with(fields: Value, media: Option<MediaRef>) -> Result<Vec<ContentEvent>, ContentError> {
    let fields: CreateContent = from_json_value(fields).map_err(ContentError::Invalid)?;
    Content::default().handle(ContentCommand::Create(
        placed(content_id()),
        Box::new(ContentInput { fields, media }),
    ))
}

fn created() -> ContentEvent {
    create_with(seed_fields(), Some(png(1))).unwrap().remove(0)
}

fn update(fields: Value, new_media: Option<MediaRef>) -> ContentCommand {
    ContentCommand::Update(Box::new(ContentUpdateInput {
        fields: from_json_value(fields).expect("valid update fields"),
        new_media,
    }))
}

#[test]
fn seed_create_records_fields_and_only_media_metadata() {
    let ContentEvent::Created(event) = created() else {
        panic!("expected ContentCreated")
    };
    assert_eq!(event.status, ContentStatus::Draft);
    assert_eq!(event.details.platform.as_deref(), Some("wordpress"));
    assert_eq!(event.media, Some(png(1)));
    let data = ContentEvent::Created(event.clone()).to_data();
    assert_eq!(
        data["media"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["sha256", "size", "media_type", "file_name"],
        "the event carries metadata, never bytes"
    );
    let content = given(&[ContentEvent::Created(event)]);
    let resource = serde_json::to_value(content.state().unwrap()).unwrap();
    assert_eq!(
        resource["media"]["url"],
        format!(
            "/v1/dev/marketing/campaigns/{}/content/{}/media",
            campaign_id(),
            content_id()
        )
    );
    assert_eq!(resource["content"], "Content description");
    assert_eq!(resource["scheduled_date"], "2024-06-15T10:00:00Z");
}

#[test]
fn create_validation_names_each_field() {
    let cases = [
        (json!({"content_type": "blog"}), "title"),
        (json!({"title": " ", "content_type": "blog"}), "title"),
        (json!({"title": "x"}), "content_type"),
        (json!({"title": "x", "content_type": ""}), "content_type"),
        (
            json!({"title": "x", "content_type": "blog", "status": "live"}),
            "status",
        ),
        (
            json!({"title": "x", "content_type": "blog", "scheduled_date": "2024-06-31T10:00:00Z"}),
            "scheduled_date",
        ),
        (
            json!({"title": "x", "content_type": "blog", "assigned_to": "uuid-here"}),
            "assigned_to",
        ),
        (
            json!({"title": "x", "content_type": "blog", "platform": ""}),
            "platform",
        ),
        (
            json!({"title": "x", "content_type": "blog", "status": "scheduled"}),
            "scheduled_date",
        ),
        (json!({"title": "x", "content_type": "blog", "tags": "a"}), "tags"),
        (
            json!({"title": "x", "content_type": "blog", "content": "y".repeat(100_001)}),
            "content",
        ),
    ];
    for (fields, field) in cases {
        assert_eq!(
            invalid_field(create_with(fields.clone(), None)),
            field,
            "fields: {fields}"
        );
    }
}

#[test]
fn seed_update_replaces_media_and_records_the_status_move() {
    let content = given(&[created()]);
    let events = content
        .handle(update(
            json!({"title": "Updated Title", "status": "published", "content": "Updated content"}),
            Some(png(2)),
        ))
        .unwrap();
    let [ContentEvent::Updated(updated), ContentEvent::StatusChanged(moved)] = events.as_slice() else {
        panic!("expected ContentUpdated then ContentStatusChanged, got {events:?}")
    };
    assert_eq!(updated.changes.title.as_deref(), Some("Updated Title"));
    assert_eq!(updated.changes.media, Some(Some(png(2))));
    assert_eq!(
        (moved.from, moved.to),
        (ContentStatus::Draft, ContentStatus::Published)
    );
    assert_eq!(events[0].attached_media(), Some(&png(2)));
    let mut after = content.clone();
    after.apply(&events[0], at(4), 1);
    after.apply(&events[1], at(4), 2);
    let state = after.state().unwrap();
    assert_eq!(state.media, Some(png(2)));
    assert_eq!(
        state.platform.as_deref(),
        Some("wordpress"),
        "untouched fields stay"
    );
}

#[test]
fn same_media_again_is_no_change_and_null_removes_it() {
    let content = given(&[created()]);
    assert_eq!(content.handle(update(json!({}), Some(png(1)))), Ok(vec![]));
    let events = content.handle(update(json!({"media": null}), None)).unwrap();
    let ContentEvent::Updated(updated) = &events[0] else {
        panic!()
    };
    assert_eq!(updated.changes.media, Some(None));
    assert_eq!(events[0].attached_media(), None);
    // Echoing the resource (with its current media object) changes nothing.
    let echo = serde_json::to_value(content.state().unwrap()).unwrap();
    assert_eq!(content.handle(update(echo, None)), Ok(vec![]));
    // A media object naming another file is refused: files arrive only as uploads.
    let forged = json!({"media": {"sha256": "ab".repeat(32)}});
    assert_eq!(invalid_field(content.handle(update(forged, None))), "media");
    assert_eq!(
        invalid_field(content.handle(update(json!({"media": null}), Some(png(3))))),
        "media"
    );
}

#[test]
fn update_validation_revalidates_the_merged_item() {
    let content = given(&[created()]);
    assert_eq!(
        invalid_field(content.handle(update(json!({"title": null}), None))),
        "title"
    );
    assert_eq!(
        invalid_field(content.handle(update(json!({"content_type": null}), None))),
        "content_type"
    );
    // Clearing the date of a scheduled item is refused; of a draft it is fine.
    let scheduled = given(&[
        created(),
        ContentEvent::StatusChanged(ContentStatusChanged {
            content_id: content_id(),
            campaign_id: campaign_id(),
            from: ContentStatus::Draft,
            to: ContentStatus::Scheduled,
        }),
    ]);
    assert_eq!(
        invalid_field(scheduled.handle(update(json!({"scheduled_date": null}), None))),
        "scheduled_date"
    );
    assert!(content
        .handle(update(json!({"scheduled_date": null}), None))
        .is_ok());
    assert_eq!(
        invalid_field(content.handle(update(
            json!({"scheduled_date": null, "status": "scheduled"}),
            None
        ))),
        "scheduled_date"
    );
}

#[test]
fn deleted_content_is_gone_for_every_command() {
    let content = given(&[
        created(),
        ContentEvent::Deleted(ContentDeleted {
            content_id: content_id(),
            campaign_id: campaign_id(),
        }),
    ]);
    assert!(content.state().is_none() && content.is_deleted());
    assert_eq!(
        content.handle(ContentCommand::Delete),
        Err(ContentError::NotFound)
    );
    assert_eq!(
        content.handle(update(json!({"title": "x"}), None)),
        Err(ContentError::NotFound)
    );
}

#[test]
fn events_round_trip_and_stored_rows_fold_like_history() {
    let content = given(&[created()]);
    let mut events = vec![created()];
    events.extend(
        content
            .handle(update(
                json!({"status": "archived", "platform": null}),
                Some(png(5)),
            ))
            .unwrap(),
    );
    events.push(ContentEvent::Deleted(ContentDeleted {
        content_id: content_id(),
        campaign_id: campaign_id(),
    }));
    for event in &events {
        let data = event.to_data();
        assert_eq!(data["campaign_id"], campaign_id().to_string());
        let decoded = ContentEvent::from_data(event.event_type(), data).unwrap();
        assert_eq!(&decoded, event);
    }
    // A projection stores the resource JSON and folds onto it later.
    let stored: ContentState =
        serde_json::from_value(serde_json::to_value(content.state().unwrap()).unwrap()).unwrap();
    let mut from_row = Content::from_state(stored);
    let mut from_log = content.clone();
    for (n, event) in events[1..3].iter().enumerate() {
        from_row.apply(event, at(9), 1 + n as i64);
        from_log.apply(event, at(9), 1 + n as i64);
    }
    assert_eq!(from_row.state(), from_log.state());
    assert!(from_json_slice::<UpdateContent>(br#"{"media": 5}"#).is_ok());
}

fn command() -> impl Strategy<Value = ContentCommand> {
    prop_oneof![
        3 => proptest::sample::select(ContentStatus::ALL.to_vec())
            .prop_map(|s| update(json!({"status": s.as_str()}), None)),
        2 => proptest::option::of(0u8..4).prop_map(|n| match n {
            Some(n) => update(json!({}), Some(png(n))),
            None => update(json!({"media": null}), None),
        }),
        2 => proptest::option::of(0i64..1000).prop_map(|s| match s {
            Some(s) => update(json!({"scheduled_date": at(s)}), None),
            None => update(json!({"scheduled_date": null}), None),
        }),
        1 => Just(ContentCommand::Delete),
    ]
}

proptest! {
    /// Whatever arrives: a scheduled item always has a date, replay through the
    /// stored JSON rebuilds the live state, and every media file the live item
    /// shows was attached by some event in its history (so retention that keeps
    /// every file named by any event never loses a live one).
    #[test]
    fn invariants_hold_under_any_command_sequence(commands in proptest::collection::vec(command(), 0..40)) {
        let mut live = given(&[created()]);
        let mut log = vec![created()];
        for command in commands {
            // A refused command leaves the item as it was.
            let _ = record(&mut live, &mut log, command, &());
            if let Some(state) = live.state() {
                prop_assert!(state.status != ContentStatus::Scheduled || state.scheduled_date.is_some());
                if let Some(media) = &state.media {
                    prop_assert!(log.iter().any(|e| e.attached_media() == Some(media)));
                }
            }
        }
        let replayed = replay_stored::<ContentState>(&log, &());
        prop_assert_eq!(replayed.state(), live.state());
    }
}
