//! The bridge while exporting: a real OpenTelemetry SDK pipeline behind the
//! `tracing` layer, its finished spans collected in memory (the sink is the
//! exporter's place; the OTLP one is tested end to end in
//! crates/marketing/tests/otlp.rs). Its own test binary: it switches the
//! process-wide export flag on.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::json;
use std::sync::{Arc, Mutex};
use trace_context::{follow_events, of_span, start, TraceParent, METADATA_KEY};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn with_export(body: impl FnOnce()) -> Vec<SpanData> {
    let collected = Collected::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collected.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    trace_context::set_exporting(true);
    tracing::subscriber::with_default(subscriber, body);
    provider.force_flush().unwrap();
    let spans = collected.0.lock().unwrap().clone();
    spans
}

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

#[test]
fn a_request_span_continues_the_callers_trace_and_names_its_own_span() {
    let incoming = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let mut started = None;
    let spans = with_export(|| {
        let span = tracing::info_span!("http");
        started = Some(start(&span, Some(incoming)));
        assert_eq!(of_span(&span), started);
    });
    let started = started.unwrap();
    assert_eq!(started.trace_id(), incoming.trace_id());
    let span = spans
        .iter()
        .find(|s| s.name == "http")
        .expect("the http span is exported");
    assert_eq!(
        span.span_context.trace_id().to_string(),
        incoming.trace_id().to_string()
    );
    assert_eq!(span.span_context.span_id().to_string(), hex(started.parent_id()));
    assert_eq!(span.parent_span_id.to_string(), hex(incoming.parent_id()));
    assert!(span.parent_span_is_remote);
}

#[test]
fn a_request_without_context_starts_a_trace() {
    let mut started = None;
    let spans = with_export(|| {
        let span = tracing::info_span!("http");
        started = Some(start(&span, None));
    });
    let span = spans.iter().find(|s| s.name == "http").unwrap();
    assert_eq!(
        span.span_context.trace_id().to_string(),
        started.unwrap().trace_id().to_string()
    );
}

#[test]
fn a_batch_of_one_trace_continues_it_and_one_of_many_links_them() {
    let one = TraceParent::root();
    let (a, b) = (TraceParent::root(), TraceParent::root());
    let spans = with_export(|| {
        let same = [
            json!({ METADATA_KEY: one.to_string() }),
            json!({ METADATA_KEY: one.child().to_string() }),
            json!({}),
        ];
        let span = tracing::info_span!("single");
        assert_eq!(follow_events(&span, &same), 0);
        drop(span);
        let mixed = [
            json!({ METADATA_KEY: a.to_string() }),
            json!({ METADATA_KEY: b.to_string() }),
        ];
        let span = tracing::info_span!("mixed");
        assert_eq!(follow_events(&span, &mixed), 0);
    });
    let single = spans.iter().find(|s| s.name == "single").unwrap();
    assert_eq!(
        single.span_context.trace_id().to_string(),
        one.trace_id().to_string()
    );
    assert_eq!(single.parent_span_id.to_string(), hex(one.parent_id()));
    let mixed = spans.iter().find(|s| s.name == "mixed").unwrap();
    let linked: Vec<String> = mixed
        .links
        .iter()
        .map(|l| l.span_context.trace_id().to_string())
        .collect();
    assert_eq!(linked, [a.trace_id().to_string(), b.trace_id().to_string()]);
    assert_ne!(
        mixed.span_context.trace_id().to_string(),
        a.trace_id().to_string()
    );
}

#[test]
fn links_beyond_the_limit_are_counted() {
    let metadata: Vec<_> = (0..trace_context::MAX_LINKS + 3)
        .map(|_| json!({ METADATA_KEY: TraceParent::root().to_string() }))
        .collect();
    let spans = with_export(|| {
        let span = tracing::info_span!("big");
        assert_eq!(follow_events(&span, &metadata), 3);
    });
    let big = spans.iter().find(|s| s.name == "big").unwrap();
    assert_eq!(big.links.len(), trace_context::MAX_LINKS);
}
