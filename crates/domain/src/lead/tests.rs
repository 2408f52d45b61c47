//! Given events, when a command, then events (or an error). No I/O anywhere.

use super::*;
use crate::aggregate::testing::{at, campaign_id, invalid_fields, parsed, placed, record};
use crate::input::from_json_slice;
use crate::{DecodeError, DomainEvent};
use proptest::prelude::*;

const SEED_CREATE: &str = r#"{ "name": "John Doe", "email": "john@example.com", "phone": "+1234567890", "source": "facebook", "status": "new", "notes": "Interested in product", "custom_fields": { "referral_code": "SUMMER2024" } }"#;
const SEED_UPDATE: &str = r#"{ "status": "contacted", "notes": "Follow up scheduled" }"#;

fn lead_id() -> Uuid {
    Uuid::from_u128(7)
}

fn key() -> LeadKey {
    LeadKey::from_bytes([3; crypto::KEY_LEN])
}

fn create(json: &str) -> LeadCommand {
    LeadCommand::Create(
        placed(lead_id()),
        Box::new(from_json_slice(json.as_bytes()).expect("valid create body")),
    )
}

fn update(json: &str) -> LeadCommand {
    LeadCommand::Update(parsed(json))
}

fn given(events: &[LeadEvent]) -> Lead {
    let keys = LeadKeys {
        key: key(),
        nonce: [0; 24],
    };
    crate::aggregate::testing::given(events, &keys)
}

fn created() -> LeadEvent {
    Lead::default()
        .handle(create(SEED_CREATE), &key(), [1; 24])
        .unwrap()
        .remove(0)
}

#[test]
fn seed_create_records_one_event_with_the_personal_data_sealed() {
    let event = created();
    let LeadEvent::Created(e) = &event else {
        panic!("expected LeadCreated")
    };
    assert_eq!((e.lead_id, e.campaign_id), (lead_id(), campaign_id()));
    assert_eq!(e.status, LeadStatus::New);
    assert_eq!(e.source.as_deref(), Some("facebook"));
    // Nothing personal is readable in what goes to the log.
    let data = event.to_data().to_string();
    for secret in [
        "John",
        "john@example.com",
        "1234567890",
        "Interested",
        "SUMMER2024",
        "referral_code",
    ] {
        assert!(!data.contains(secret), "{secret} leaked into {data}");
    }
    let lead = given(&[event]);
    let state = lead.state().unwrap();
    assert_eq!(state.name.as_deref(), Some("John Doe"));
    assert_eq!(state.email, "john@example.com");
    assert_eq!(state.phone.as_deref(), Some("+1234567890"));
    assert_eq!(state.notes.as_deref(), Some("Interested in product"));
    assert_eq!(state.custom_fields["referral_code"], "SUMMER2024");
    assert_eq!(state.version, 0);
}

#[test]
fn events_round_trip_through_the_log_format() {
    let event = created();
    let back = LeadEvent::from_data(event.event_type(), event.to_data()).unwrap();
    assert_eq!(back, event);
    assert!(matches!(
        LeadEvent::from_data("LeadExploded", serde_json::json!({})),
        Err(DecodeError::UnknownType(_))
    ));
}

#[test]
fn folding_needs_the_right_key() {
    let mut lead = Lead::default();
    let wrong = LeadKey::from_bytes([4; crypto::KEY_LEN]);
    assert_eq!(
        lead.apply(&created(), &wrong, at(0), 0),
        Err(LeadError::Crypto(CryptoError::Authentication))
    );
    // A ciphertext moved to another lead does not open either.
    let LeadEvent::Created(mut moved) = created() else {
        unreachable!()
    };
    moved.lead_id = Uuid::from_u128(8);
    assert!(open_created(&moved, &key()).is_err());
}

#[test]
fn seed_update_changes_status_and_notes_only() {
    let lead = given(&[created()]);
    let events = lead.handle(update(SEED_UPDATE), &key(), [2; 24]).unwrap();
    let [LeadEvent::Updated(e)] = events.as_slice() else {
        panic!("expected one LeadUpdated, got {events:?}")
    };
    assert_eq!(e.status, Some(LeadStatus::Contacted));
    assert_eq!(e.source, None);
    let changes = open_updated(e, &key()).unwrap().unwrap();
    assert_eq!(
        changes,
        PersonalChanges {
            notes: Some(Some("Follow up scheduled".into())),
            ..PersonalChanges::default()
        }
    );
    let after = given(&[created(), events[0].clone()]);
    let state = after.state().unwrap();
    assert_eq!(state.status, LeadStatus::Contacted);
    assert_eq!(state.notes.as_deref(), Some("Follow up scheduled"));
    assert_eq!(state.email, "john@example.com");
    assert_eq!(state.version, 1);
    assert_eq!(state.created_at, at(0));
    assert_eq!(state.updated_at, at(1));
}

#[test]
fn an_update_that_changes_nothing_records_nothing() {
    let lead = given(&[created()]);
    assert_eq!(lead.handle(update(SEED_CREATE), &key(), [2; 24]).unwrap(), vec![]);
    // Whitespace around values is not a change: values are stored trimmed.
    assert_eq!(
        lead.handle(update(r#"{"name": "  John Doe "}"#), &key(), [2; 24])
            .unwrap(),
        vec![]
    );
}

#[test]
fn update_can_clear_optional_fields_but_not_email_or_status() {
    let lead = given(&[created()]);
    let events = lead
        .handle(
            update(r#"{"phone": null, "custom_fields": null, "name": ""}"#),
            &key(),
            [2; 24],
        )
        .unwrap();
    let after = given(&[created(), events[0].clone()]);
    let state = after.state().unwrap();
    assert_eq!(state.phone, None);
    assert_eq!(state.name, None);
    assert!(state.custom_fields.is_empty());
    assert_eq!(
        invalid_fields(lead.handle(update(r#"{"email": null, "status": null}"#), &key(), [2; 24])),
        vec!["email", "status"]
    );
    assert_eq!(
        invalid_fields(lead.handle(update(r#"{"email": "nope"}"#), &key(), [2; 24])),
        vec!["email"]
    );
}

#[test]
fn create_validates_every_field_and_names_it() {
    let too_long = "x".repeat(NAME_MAX + 1);
    let body = format!(
        r#"{{"name": "{too_long}", "email": "john@", "phone": "call me", "notes": "a\u0000b",
            "custom_fields": {{"Email": "x", "ok": "fine"}}}}"#
    );
    assert_eq!(
        invalid_fields(Lead::default().handle(create(&body), &key(), [1; 24])),
        vec!["name", "email", "phone", "notes", "custom_fields.Email"]
    );
    assert_eq!(
        invalid_fields(Lead::default().handle(create(r#"{"email": "  "}"#), &key(), [1; 24])),
        vec!["email"]
    );
}

#[test]
fn email_check_accepts_real_addresses_and_rejects_the_rest() {
    for good in [
        "john@example.com",
        "John.Doe+tag@mail.example.co.uk",
        "o'brien@example.ie",
        "josé@exämple.de",
        "x@a-b.io",
    ] {
        assert!(is_valid_email(good), "{good} should be valid");
    }
    for bad in [
        "",
        "john",
        "john@",
        "@example.com",
        "john@example",
        "john@@example.com",
        "jo hn@example.com",
        ".john@example.com",
        "jo..hn@example.com",
        "john@-example.com",
        "john@example..com",
        "john@127.0.0.1",
        "john@exa mple.com",
        "\"john\"@example.com",
    ] {
        assert!(!is_valid_email(bad), "{bad} should be invalid");
    }
    assert_eq!(normalized_email("  John@Example.COM "), "john@example.com");
}

#[test]
fn inputs_are_normalized_the_same_way_on_every_path() {
    let valid = validate_create(CreateLead {
        name: Some("  Ann  ".into()),
        email: " ann@example.com ".into(),
        phone: Some("   ".into()),
        company: Some("  Acme Inc.  ".into()),
        source: Some("".into()),
        notes: Some(" line 1\nline 2 ".into()),
        custom_fields: Some(
            [
                (" tier ".to_owned(), " gold ".to_owned()),
                ("empty".to_owned(), "  ".to_owned()),
            ]
            .into(),
        ),
        ..CreateLead::default()
    })
    .unwrap();
    assert_eq!(valid.status, LeadStatus::New);
    assert_eq!(valid.source, None);
    assert_eq!(valid.personal.name.as_deref(), Some("Ann"));
    assert_eq!(valid.personal.email, "ann@example.com");
    assert_eq!(valid.personal.phone, None);
    assert_eq!(valid.personal.company.as_deref(), Some("Acme Inc."));
    assert_eq!(valid.personal.notes.as_deref(), Some("line 1\nline 2"));
    assert_eq!(
        valid.personal.custom_fields,
        CustomFields::from([("tier".into(), "gold".into())])
    );
    // Normalizing again changes nothing: that is what makes CSV round trips exact.
    // (Built from the personal data's JSON, so every personal field, present
    // or future, is in the round trip.)
    let mut body = serde_json::to_value(&valid.personal).unwrap();
    body["source"] = serde_json::json!(valid.source);
    body["status"] = serde_json::json!(valid.status);
    let again = validate_create(serde_json::from_value(body).unwrap()).unwrap();
    assert_eq!(again, valid);
}

#[test]
fn custom_fields_are_limited() {
    let many: CustomFields = (0..=CUSTOM_FIELDS_MAX)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let result = validate_create(CreateLead {
        email: "a@example.com".into(),
        custom_fields: Some(many),
        ..CreateLead::default()
    });
    assert_eq!(result.unwrap_err().first().unwrap().field, "custom_fields");
    let result = validate_create(CreateLead {
        email: "a@example.com".into(),
        custom_fields: Some(
            [
                ("a".to_owned(), "1".to_owned()),
                (" a".to_owned(), "2".to_owned()),
            ]
            .into(),
        ),
        ..CreateLead::default()
    });
    assert_eq!(result.unwrap_err().first().unwrap().field, "custom_fields.a");
}

#[test]
fn custom_field_values_must_be_text() {
    let err = from_json_slice::<CreateLead>(br#"{"email": "a@example.com", "custom_fields": {"score": 5}}"#)
        .unwrap_err();
    assert_eq!(err.first().unwrap().field, "custom_fields.score");
}

#[test]
fn deleted_leads_refuse_every_command() {
    let lead = given(&[created()]);
    let events = lead.handle(LeadCommand::Delete, &key(), [0; 24]).unwrap();
    assert_eq!(
        events,
        vec![LeadEvent::Deleted(LeadDeleted {
            lead_id: lead_id(),
            campaign_id: campaign_id(),
        })]
    );
    let gone = given(&[created(), events[0].clone()]);
    assert!(gone.is_deleted() && gone.state().is_none());
    assert_eq!(
        gone.handle(LeadCommand::Delete, &key(), [0; 24]),
        Err(LeadError::NotFound)
    );
    assert_eq!(
        gone.handle(update(SEED_UPDATE), &key(), [0; 24]),
        Err(LeadError::NotFound)
    );
    assert_eq!(
        gone.handle(create(SEED_CREATE), &key(), [0; 24]),
        Err(LeadError::AlreadyExists)
    );
    assert_eq!(
        Lead::default().handle(LeadCommand::Delete, &key(), [0; 24]),
        Err(LeadError::NotFound)
    );
}

#[test]
fn published_events_carry_personal_data_only_while_the_key_exists() {
    let event = created();
    let with_key = publishable_event(event.event_type(), &event.to_data(), Some(&key())).unwrap();
    assert_eq!(with_key["email"], "john@example.com");
    assert_eq!(with_key["custom_fields"]["referral_code"], "SUMMER2024");
    assert_eq!(with_key["status"], "new");
    assert_eq!(with_key["personal_data"], "present");
    let shredded = publishable_event(event.event_type(), &event.to_data(), None).unwrap();
    assert_eq!(shredded["personal_data"], "erased");
    assert_eq!(shredded["lead_id"], lead_id().to_string());
    assert_eq!(shredded["campaign_id"], campaign_id().to_string());
    let text = shredded.to_string();
    assert!(!text.contains("john") && !text.contains("ciphertext"), "{text}");

    let lead = given(&[created()]);
    let updated = lead
        .handle(update(SEED_UPDATE), &key(), [2; 24])
        .unwrap()
        .remove(0);
    let with_key = publishable_event(updated.event_type(), &updated.to_data(), Some(&key())).unwrap();
    assert_eq!(with_key["status"], "contacted");
    assert_eq!(with_key["notes"], "Follow up scheduled");
    let shredded = publishable_event(updated.event_type(), &updated.to_data(), None).unwrap();
    assert_eq!(shredded["status"], "contacted");
    assert_eq!(shredded["personal_data"], "erased");
    assert!(shredded.get("notes").is_none());

    let wrong = LeadKey::from_bytes([9; crypto::KEY_LEN]);
    assert!(matches!(
        publishable_event(event.event_type(), &event.to_data(), Some(&wrong)),
        Err(PublishError::Decrypt(_))
    ));
}

#[test]
fn withheld_events_carry_the_facts_and_no_personal_data() {
    let event = created();
    let withheld = super::withheld_event(event.event_type(), &event.to_data()).unwrap();
    assert_eq!(withheld["personal_data"], "withheld");
    assert_eq!(withheld["status"], "new");
    assert_eq!(withheld["lead_id"], lead_id().to_string());
    let text = withheld.to_string();
    assert!(!text.contains("john") && !text.contains("ciphertext"), "{text}");

    let updated = given(&[created()])
        .handle(update(SEED_UPDATE), &key(), [2; 24])
        .unwrap()
        .remove(0);
    let withheld = super::withheld_event(updated.event_type(), &updated.to_data()).unwrap();
    assert_eq!(withheld["personal_data"], "withheld");
    assert_eq!(withheld["status"], "contacted");
    assert!(withheld.get("notes").is_none());
}

fn command() -> impl Strategy<Value = LeadCommand> {
    prop_oneof![
        3 => proptest::sample::select(LeadStatus::ALL.to_vec())
            .prop_map(|s| update(&format!(r#"{{"status": "{}"}}"#, s.as_str()))),
        3 => any::<u8>().prop_map(|e| update(&format!(r#"{{"email": "person{e}@example.com"}}"#))),
        2 => proptest::option::of(any::<u8>()).prop_map(|x| match x {
            Some(x) => update(&format!(r#"{{"notes": "note {x}"}}"#)),
            None => update(r#"{"notes": null}"#),
        }),
        1 => Just(LeadCommand::Delete),
    ]
}

proptest! {
    /// Whatever the commands, replaying the log (with the key) rebuilds exactly
    /// the state the writer had, and the log never holds an address in clear.
    #[test]
    fn replay_rebuilds_state_and_the_log_stays_sealed(commands in proptest::collection::vec(command(), 0..30)) {
        let mut live = given(&[created()]);
        let mut log = vec![created()];
        for (n, command) in commands.into_iter().enumerate() {
            let keys = LeadKeys { key: key(), nonce: [n as u8; 24] };
            if let Ok(events) = record(&mut live, &mut log, command, &keys) {
                for event in events {
                    prop_assert!(!event.to_data().to_string().contains("example.com"));
                }
            }
        }
        let replayed = given(&log);
        prop_assert_eq!(replayed.state(), live.state());
        prop_assert_eq!(replayed.version(), live.version());
    }
}

#[test]
fn an_upsert_body_may_repeat_its_address_but_not_change_it() {
    let body = |json: &str| -> UpdateLead { from_json_slice(json.as_bytes()).unwrap() };
    // Absent, or the same address in another case: accepted, and taken out so
    // the stored spelling stays.
    let ok = body(r#"{"email": " John@Example.com", "name": "John"}"#)
        .for_upsert("john@example.com")
        .unwrap();
    assert_eq!(ok.email, None);
    assert_eq!(ok.name, Some(Some("John".to_owned())));
    assert!(body(r#"{"status": "contacted"}"#)
        .for_upsert("a@example.com")
        .is_ok());
    // Another address, a null email or a null status: 400 naming the field.
    let errors = body(r#"{"email": "jon@example.com"}"#)
        .for_upsert("john@example.com")
        .unwrap_err();
    assert_eq!(errors.first().unwrap().field, "email");
    let errors = body(r#"{"email": null}"#)
        .for_upsert("john@example.com")
        .unwrap_err();
    assert_eq!(errors.first().unwrap().field, "email");
    let errors = body(r#"{"status": null}"#)
        .for_upsert("john@example.com")
        .unwrap_err();
    assert_eq!(errors.first().unwrap().field, "status");
}

#[test]
fn an_upsert_creates_with_the_fields_given_and_the_keyed_address() {
    let body: UpdateLead = from_json_slice(
        br#"{"name": "John", "phone": null, "status": "qualified", "custom_fields": {"a": "1"}}"#,
    )
    .unwrap();
    let create = body
        .for_upsert("john@example.com")
        .unwrap()
        .into_create("john@example.com");
    assert_eq!(create.email, "john@example.com");
    assert_eq!(create.name.as_deref(), Some("John"));
    assert_eq!(create.phone, None);
    assert_eq!(create.status, Some(LeadStatus::Qualified));
    assert_eq!(create.custom_fields.as_ref().unwrap()["a"], "1");
    let events = Lead::default()
        .handle(
            LeadCommand::Create(placed(lead_id()), Box::new(create)),
            &key(),
            [1; 24],
        )
        .unwrap();
    assert!(matches!(&events[..], [LeadEvent::Created(_)]));
}
