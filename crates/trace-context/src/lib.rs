//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the
//! `traceparent` a request arrives with, the one stored in the metadata of
//! every event it appends, and the one sent on the Kafka record of each
//! event; and, when the process exports traces (OpenTelemetry, set up by
//! `marketing::telemetry`), the bridge from those to the `tracing` spans that
//! serve the request and handle the events.
//!
//! Off the export path this is a parser and a formatter over a `Copy` value:
//! no allocation, no OpenTelemetry context, so a process that exports nothing
//! pays for reading the header and writing the metadata, and nothing else.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The request header (and the Kafka record header) that carries the context.
pub const HEADER: &str = "traceparent";
/// The response header that tells the caller the trace and span that served
/// it (W3C Trace Context Level 2), sent only while traces are exported.
pub const RESPONSE_HEADER: &str = "traceresponse";
/// The key of the context in an event's metadata.
pub const METADATA_KEY: &str = "traceparent";
/// Most links a span that handles a batch of events gets (OpenTelemetry's
/// default span limit); the traces beyond it are counted, not linked.
pub const MAX_LINKS: usize = 128;

/// A version-00 `traceparent`: the trace, the caller's span in it, and
/// whether the caller recorded it (the `sampled` flag; other flags are
/// dropped, as the specification asks of a participant that does not know
/// them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    sampled: bool,
}

/// A trace id, shown as its 32 lower-case hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceHex(pub u128);

impl fmt::Display for TraceHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Lower-case hex only: the specification forbids upper case, and
/// `from_str_radix` would also take a sign.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some((value << 4) | u128::from(nibble))
    })
}

fn nonzero<T: PartialEq + Default>(mut next: impl FnMut() -> T) -> T {
    loop {
        let value = next();
        if value != T::default() {
            return value;
        }
    }
}

impl TraceParent {
    /// Parses a header value. `None` for anything the specification says to
    /// ignore: a wrong length or separator, upper-case or non-hex digits,
    /// version `ff`, an all-zero trace or parent id. A later version is read
    /// by its first four fields, as the specification asks.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        if value.len() < 55 || [value[2], value[35], value[52]] != [b'-'; 3] {
            return None;
        }
        let version = hex(&value[..2])?;
        let extra_ok = match version {
            0xff => false,
            0 => value.len() == 55,
            _ => value.len() == 55 || value[55] == b'-',
        };
        let trace_id = hex(&value[3..35])?;
        let parent_id = hex(&value[36..52])? as u64;
        let flags = hex(&value[53..55])?;
        (extra_ok && trace_id != 0 && parent_id != 0).then_some(Self {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    /// A new trace, for a request that came without a (valid) context. It is
    /// marked sampled: this service keeps every trace it starts (in its logs
    /// and the event metadata), so consumers that follow the caller's
    /// decision keep theirs.
    pub fn root() -> Self {
        Self {
            trace_id: nonzero(rand::random::<u128>),
            parent_id: nonzero(rand::random::<u64>),
            sampled: true,
        }
    }

    /// The context of a span of this process: a child of `incoming` (the
    /// caller's), or the root of a new trace.
    pub fn continue_or_start(incoming: Option<Self>) -> Self {
        incoming.map_or_else(Self::root, Self::child)
    }

    /// A span of this process in the caller's trace: same trace and flags, a
    /// new span id.
    pub fn child(self) -> Self {
        Self {
            parent_id: nonzero(rand::random::<u64>),
            ..self
        }
    }

    pub fn trace_id(&self) -> TraceHex {
        TraceHex(self.trace_id)
    }

    pub fn parent_id(&self) -> u64 {
        self.parent_id
    }

    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The context stored in an event's metadata, if it has one.
    pub fn of_metadata(metadata: &Value) -> Option<Self> {
        Self::parse(metadata.get(METADATA_KEY)?.as_str()?.as_bytes())
    }

    /// As OpenTelemetry's remote parent.
    pub fn span_context(self) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        };
        SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.parent_id.to_be_bytes()),
            flags,
            true,
            TraceState::NONE,
        )
    }

    fn of_span_context(context: &SpanContext) -> Option<Self> {
        context.is_valid().then(|| Self {
            trace_id: u128::from_be_bytes(context.trace_id().to_bytes()),
            parent_id: u64::from_be_bytes(context.span_id().to_bytes()),
            sampled: context.is_sampled(),
        })
    }
}

/// `00-<trace id>-<parent id>-<flags>`, the header's and the metadata's form.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.parent_id,
            u8::from(self.sampled)
        )
    }
}

/// Set once the process has installed its OpenTelemetry layer.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Says that this process exports its spans (`marketing::telemetry`, after
/// installing the OpenTelemetry layer). Until then every function below
/// leaves OpenTelemetry alone, so a process that exports nothing builds no
/// OpenTelemetry context for any request or event.
pub fn set_exporting(exporting: bool) {
    EXPORTING.store(exporting, Ordering::Release);
}

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// The context of the span that serves a request: a child of `incoming` (the
/// caller's `traceparent`) or the root of a new trace. While exporting it is
/// the exported span's own (continuing `incoming`); otherwise ids are drawn
/// here, so the events' metadata and the logs name the same trace either way.
/// Call before `span` is first entered: its parent cannot change after.
pub fn start(span: &Span, incoming: Option<TraceParent>) -> TraceParent {
    if exporting() {
        if let Some(parent) = incoming {
            continue_trace(span, parent);
        }
        if let Some(own) = of_span(span) {
            return own;
        }
    }
    TraceParent::continue_or_start(incoming)
}

/// The exported context of `span`; `None` unless exporting (or if the span is
/// disabled).
pub fn of_span(span: &Span) -> Option<TraceParent> {
    if !exporting() {
        return None;
    }
    TraceParent::of_span_context(span.context().span().span_context())
}

fn continue_trace(span: &Span, parent: TraceParent) {
    // Fails only if the span was already entered or is disabled; either way
    // it is then simply not in that trace.
    let _ = span.set_parent(Context::new().with_remote_span_context(parent.span_context()));
}

/// Ties the span that handles a batch of events to the traces the events were
/// written in: it continues the trace when they all share one (one request's
/// writes, the usual case), and links each distinct trace otherwise (at most
/// [`MAX_LINKS`]; returns how many were left out). Does nothing unless
/// exporting. Call before `span` is first entered.
pub fn follow_events<'a>(span: &Span, metadata: impl IntoIterator<Item = &'a Value>) -> usize {
    if !exporting() {
        return 0;
    }
    let mut traces: Vec<TraceParent> = Vec::new();
    let mut left_out = 0;
    for parent in metadata.into_iter().filter_map(TraceParent::of_metadata) {
        if traces.iter().any(|t| t.trace_id == parent.trace_id) {
            continue;
        }
        if traces.len() == MAX_LINKS {
            left_out += 1;
        } else {
            traces.push(parent);
        }
    }
    match traces.as_slice() {
        [] => {}
        [one] => continue_trace(span, *one),
        many => {
            for parent in many {
                span.add_link(parent.span_context());
            }
        }
    }
    left_out
}

/// What goes on the outgoing record of an event stored with `stored`: the
/// handling span's own context when that span continues the event's trace
/// (a consumer is then the child of the span that published it), else the
/// stored context as it is (a consumer is then a child of the request).
pub fn carried(stored: Option<TraceParent>, handling: Option<TraceParent>) -> Option<TraceParent> {
    match (stored, handling) {
        (Some(stored), Some(handling)) if handling.trace_id == stored.trace_id => Some(handling),
        (stored, _) => stored,
    }
}

#[cfg(test)]
mod tests;
