//! Logs (`tracing`, text or JSON), trace export (OpenTelemetry over
//! OTLP/HTTP, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set) and metrics
//! (Prometheus). Every command sets up the first two through [`init`].

use crate::cli::Command;
use crate::config::{Config, LogFormat};
use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::sync::OnceLock;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What [`init`] set up; [`Telemetry::shutdown`] sends the spans still
/// buffered before the process exits.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered (bounded by the exporter's timeout) and
    /// stops the exporter's thread.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("warning: cannot export the last spans: {error}");
            }
        }
    }
}

/// Logs to stderr at the command's default level unless `RUST_LOG` says
/// otherwise (`info` for the long-running roles, `warn` for the one-shot
/// commands, whose output is for a person at a shell); and, for the roles,
/// spans exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Without
/// it no OpenTelemetry layer is installed at all: the only tracing cost is
/// the request's `traceparent` (`web::request_trace`).
pub fn init(config: &Config, command: &Command) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(command.default_log_level()));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match config.log_format {
        LogFormat::Json => logs.json().boxed(),
        LogFormat::Text => logs.boxed(),
    };
    let endpoint = config
        .otel_exporter_otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|url| !url.is_empty());
    let provider = match (endpoint, command.role_name()) {
        (Some(endpoint), Some(role)) => Some(tracer_provider(config, endpoint, role)?),
        _ => None,
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("marketing"))
            .with_filter(exported())
    });
    // A second init (tests) is harmless: keep the first subscriber.
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        trace_context::set_exporting(true);
    }
    Ok(Telemetry { provider })
}

/// What is exported: spans and events at `info` and above, whatever
/// `RUST_LOG` says for the logs, except the exporter's own HTTP stack (its
/// spans would be exported by the exporter, forever).
fn exported() -> Targets {
    ["opentelemetry", "hyper", "reqwest", "h2", "tower", "tonic"]
        .into_iter()
        .fold(
            Targets::new().with_default(LevelFilter::INFO),
            |targets, target| targets.with_target(target, LevelFilter::OFF),
        )
}

/// Spans batched on the SDK's own thread (never on the async workers) and
/// posted as protobuf to `<endpoint>/v1/traces` by a blocking client that
/// lives on that thread.
fn tracer_provider(config: &Config, endpoint: &str, role: &str) -> anyhow::Result<SdkTracerProvider> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&url)
        .build()
        .with_context(|| format!("invalid OTEL_EXPORTER_OTLP_ENDPOINT {endpoint:?}"))?;
    let service = config
        .otel_service_name
        .clone()
        .unwrap_or_else(|| format!("marketing-{role}"));
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new("marketing.role", role.to_owned()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The process-wide Prometheus recorder, installed on first use. The recorder
/// is global, so every application built in one process (tests) shares it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}
