//! The span every request is served in, with its request id and its trace id
//! side by side, and the request's W3C trace context (`traceparent`):
//! continued from the caller's header when that is valid, a new trace
//! otherwise (a malformed header is ignored, never an error). Write handlers
//! store it in the metadata of every event they append (`RequestTrace`).
//!
//! While traces are exported the span is the exported server span and the
//! response carries `traceresponse` (the trace and the span that served the
//! request, W3C Trace Context Level 2); without export there is no trace to
//! look up, so nothing is added to the response and nothing is allocated
//! here but the span's fields.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use trace_context::{TraceParent, HEADER, RESPONSE_HEADER};
use tracing::Instrument;

/// The trace context of the request being served.
#[derive(Debug, Clone, Copy)]
pub struct RequestTrace(pub TraceParent);

impl<S: Send + Sync> FromRequestParts<S> for RequestTrace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Set by `trace_request` on every listener; a router served without
        // the middleware stack still gets a trace of its own.
        Ok(parts
            .extensions
            .get::<RequestTrace>()
            .copied()
            .unwrap_or_else(|| RequestTrace(TraceParent::root())))
    }
}

/// The caller's context: exactly one valid `traceparent` header (two are
/// ambiguous, so ignored as the specification asks).
fn incoming(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(HEADER).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    TraceParent::parse(first.as_bytes())
}

/// The request's span; the last argument is its `trace_id` field's value
/// (`Empty` to record it later).
macro_rules! http_span {
    ($req:expr, $($trace_id:tt)+) => {
        tracing::info_span!(
            "http",
            method = %$req.method(),
            path = %$req.uri().path(),
            request_id = %$req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
            trace_id = $($trace_id)+,
        )
    };
}

/// Serves the request inside its span (after the request id is set).
pub async fn trace_request(mut req: Request, next: Next) -> Response {
    let incoming = incoming(req.headers());
    let exporting = trace_context::exporting();
    let (span, trace) = if exporting {
        // The exported span draws its own ids: known once it exists.
        let span = http_span!(req, tracing::field::Empty);
        let trace = trace_context::start(&span, incoming);
        span.record("trace_id", tracing::field::display(trace.trace_id()));
        (span, trace)
    } else {
        // Known before the span, so it is written with the span's other
        // fields, not recorded into them afterwards.
        let trace = TraceParent::continue_or_start(incoming);
        (http_span!(req, %trace.trace_id()), trace)
    };
    req.extensions_mut().insert(RequestTrace(trace));
    let mut response = next.run(req).instrument(span).await;
    if exporting {
        if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
            response.headers_mut().insert(RESPONSE_HEADER, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn one_valid_header_is_the_callers_context() {
        let mut headers = HeaderMap::new();
        assert_eq!(incoming(&headers), None);
        headers.insert(HEADER, HeaderValue::from_static(VALID));
        assert_eq!(incoming(&headers).map(|t| t.to_string()).as_deref(), Some(VALID));
        headers.append(HEADER, HeaderValue::from_static(VALID));
        assert_eq!(incoming(&headers), None, "two headers are ignored");
        headers.insert(HEADER, HeaderValue::from_static("00-nonsense"));
        assert_eq!(incoming(&headers), None);
    }
}
