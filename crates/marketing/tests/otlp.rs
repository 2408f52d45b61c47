//! Trace export of the real binary: `marketing serve` with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a real OTLP/HTTP receiver on
//! loopback (an axum server recording each POST; the protobuf bodies are
//! decoded with `opentelemetry-proto`). One request with a known
//! `traceparent`: its server span arrives as the child of the caller's span,
//! the projector's and the publisher's batch spans continue the same trace,
//! the response names the server span (`traceresponse`), and the Kafka
//! record's `traceparent` names the publisher's span.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost_otlp::Message;
use std::time::{Duration, Instant};
use test_support::fresh_database;
use test_support::kafka::{shared_brokers, unique_topic, Reader};
use test_support::process::Marketing;
use test_support::receiver::{Received, Receiver};

const BIN: &str = env!("CARGO_BIN_EXE_marketing");
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as exported, with what the assertions look at.
#[derive(Debug)]
struct Exported {
    service: String,
    span: Span,
}

impl Exported {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn attribute(&self, key: &str) -> Option<String> {
        string_attribute(&self.span.attributes, key)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|value| match value {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

/// Every span in the OTLP requests received so far.
fn exported(received: &[Received]) -> Vec<Exported> {
    let mut spans = Vec::new();
    for request in received {
        assert_eq!(request.path, "/v1/traces");
        assert_eq!(request.header("content-type"), "application/x-protobuf");
        let export = ExportTraceServiceRequest::decode(request.body.clone()).expect("an OTLP trace export");
        for resource in export.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| Exported {
                    service: service.clone(),
                    span,
                }));
            }
        }
    }
    spans
}

fn is_publisher_batch(span: &Exported) -> bool {
    span.span.name == "batch" && span.attribute("reader").as_deref() == Some("publisher")
}

fn is_projector_batch(span: &Exported) -> bool {
    span.span.name == "batch"
        && span
            .attribute("reader")
            .is_some_and(|reader| reader.starts_with("campaigns"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_trace_is_exported_over_otlp_through_projector_and_publisher() {
    let db = fresh_database().await;
    let collector = Receiver::start().await;
    let brokers = shared_brokers();
    let topic = unique_topic("campaigns");
    let marketing = Marketing::new(BIN, &db.url);
    let key = marketing.api_key("acme", "otlp");
    let collector_url = format!("http://{}", collector.address);
    let kafka_leads = unique_topic("leads");
    let server = marketing
        .spawn(
            "serve",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector_url),
                // Sooner than the default 5 s: the test waits less, asserts no time.
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("KAFKA_BROKERS", &brokers),
                ("KAFKA_TOPIC_CAMPAIGNS", &topic),
                ("KAFKA_TOPIC_LEADS", &kafka_leads),
                ("KAFKA_PARTITIONS", "1"),
            ],
        )
        .await;
    let client = reqwest::Client::new();

    let response = client
        .post(format!("{}/v1/dev/marketing/campaigns", server.base_url()))
        .bearer_auth(&key)
        .header("traceparent", TRACEPARENT)
        .json(&serde_json::json!({ "name": "Traced" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let traceresponse = response.headers()["traceresponse"].to_str().unwrap().to_owned();
    let fields: Vec<&str> = traceresponse.split('-').collect();
    assert_eq!((fields[0], fields[1], fields[3]), ("00", TRACE_ID, "01"));
    let server_span = fields[2].to_owned();

    let deadline = Instant::now() + Duration::from_secs(90);
    let received = loop {
        let received = collector.received();
        let spans = exported(&received);
        let in_trace = |f: fn(&Exported) -> bool| spans.iter().any(|s| s.trace_id() == TRACE_ID && f(s));
        if in_trace(|s| s.span.name == "http") && in_trace(is_projector_batch) && in_trace(is_publisher_batch)
        {
            break received;
        }
        let seen: Vec<_> = spans
            .iter()
            .map(|s| (s.span.name.clone(), s.trace_id(), s.attribute("reader")))
            .collect();
        assert!(
            Instant::now() < deadline,
            "the request's spans did not all arrive; exported: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let spans = exported(&received);
    let http = spans
        .iter()
        .find(|s| s.trace_id() == TRACE_ID && s.span.name == "http")
        .unwrap();
    assert_eq!(http.service, "marketing-serve");
    assert_eq!(hex(&http.span.parent_span_id), CALLER_SPAN);
    assert_eq!(hex(&http.span.span_id), server_span);
    assert_eq!(http.attribute("trace_id").as_deref(), Some(TRACE_ID));
    assert!(http.attribute("request_id").is_some_and(|id| !id.is_empty()));
    let projector = spans
        .iter()
        .find(|s| s.trace_id() == TRACE_ID && is_projector_batch(s))
        .unwrap();
    assert_eq!(
        hex(&projector.span.parent_span_id),
        server_span,
        "continues the request's trace"
    );

    let publisher = spans
        .iter()
        .find(|s| s.trace_id() == TRACE_ID && is_publisher_batch(s))
        .unwrap();
    let records = tokio::task::spawn_blocking(move || {
        let mut reader = Reader::new(&brokers, &[&topic]);
        reader
            .read_until(Duration::from_secs(60), |r| !r.is_empty())
            .to_vec()
    })
    .await
    .unwrap();
    let header = records[0].header("traceparent").expect("a traceparent header");
    assert_eq!(
        header,
        format!("00-{TRACE_ID}-{}-01", hex(&publisher.span.span_id)),
        "the record's parent is the span that published it"
    );
}
