use super::*;
use serde_json::json;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn parse(value: &str) -> Option<TraceParent> {
    TraceParent::parse(value.as_bytes())
}

#[test]
fn a_valid_traceparent_round_trips() {
    let parent = parse(VALID).unwrap();
    assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(parent.parent_id(), 0x00f0_67aa_0ba9_02b7);
    assert!(parent.is_sampled());
    assert_eq!(parent.to_string(), VALID);
    let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    assert!(!unsampled.is_sampled());
    assert_eq!(parse(&format!("  {VALID} ")), Some(parent));
}

#[test]
fn flags_other_than_sampled_are_dropped() {
    let parent = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap();
    assert_eq!(parent.to_string(), VALID);
}

#[test]
fn a_later_version_is_read_by_its_first_fields() {
    let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
    assert_eq!(parse(later).unwrap().to_string(), VALID);
    assert_eq!(
        parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap()
            .to_string(),
        VALID
    );
}

#[test]
fn malformed_values_are_ignored() {
    for bad in [
        "",
        "garbage",
        // version 00 has exactly four fields
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        // a later version's extra part must follow a dash
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
    ] {
        assert_eq!(parse(bad), None, "{bad:?}");
    }
    assert_eq!(TraceParent::parse(b"00-\xff\xfe"), None);
}

#[test]
fn a_child_keeps_the_trace_and_a_root_is_new() {
    let parent = parse(VALID).unwrap();
    let child = parent.child();
    assert_eq!(child.trace_id(), parent.trace_id());
    assert_ne!(child.parent_id(), parent.parent_id());
    assert_eq!(child.is_sampled(), parent.is_sampled());
    let (a, b) = (TraceParent::root(), TraceParent::root());
    assert_ne!(a.trace_id(), b.trace_id());
    assert!(a.is_sampled());
    // What is written, reads back.
    assert_eq!(parse(&a.to_string()), Some(a));
}

#[test]
fn metadata_carries_it_under_its_key() {
    let stored = json!({ "request_id": "r", METADATA_KEY: VALID });
    assert_eq!(TraceParent::of_metadata(&stored), parse(VALID));
    assert_eq!(TraceParent::of_metadata(&json!({ "request_id": "r" })), None);
    assert_eq!(TraceParent::of_metadata(&json!({ METADATA_KEY: 7 })), None);
}

#[test]
fn the_record_carries_the_handling_span_only_within_the_events_trace() {
    let stored = parse(VALID).unwrap();
    let handling = stored.child();
    assert_eq!(carried(Some(stored), Some(handling)), Some(handling));
    let elsewhere = TraceParent::root();
    assert_eq!(carried(Some(stored), Some(elsewhere)), Some(stored));
    assert_eq!(carried(Some(stored), None), Some(stored));
    assert_eq!(carried(None, Some(handling)), None);
}

#[test]
fn without_export_no_span_context_is_read_and_ids_are_drawn_here() {
    // Nothing installed the OpenTelemetry layer in this process.
    assert!(!exporting());
    let span = tracing::info_span!("http");
    assert_eq!(of_span(&span), None);
    let incoming = parse(VALID).unwrap();
    let started = start(&span, Some(incoming));
    assert_eq!(started.trace_id(), incoming.trace_id());
    assert_ne!(started.parent_id(), incoming.parent_id());
    assert_eq!(follow_events(&span, [&json!({ METADATA_KEY: VALID })]), 0);
}
