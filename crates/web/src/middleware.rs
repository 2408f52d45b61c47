//! The middleware stack every listener gets, outermost first:
//! request id → propagate it to the response → the request's span, carrying
//! the request id and the trace id (`request_trace`) → request/response logs
//! in that span → catch panics (JSON 500) → JSON bodies for any bare error → drain request
//! bodies left unread (`drain`: a client still sending reads an early 413) →
//! timeout → query parameters checked for control characters (`text_guard`).
//! Route-level metrics sit inside routing, where the matched path is known.
//!
//! The timeout is one for every route except those given a longer one in
//! [`RequestTimeouts`] (CSV imports read a whole upload before answering).
//! It sits outside routing, so it chooses by path suffix.

use axum::extract::{MatchedPath, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use std::any::Any;
use std::time::{Duration, Instant};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// How long a request may take before it is answered `503`.
#[derive(Debug, Clone)]
pub struct RequestTimeouts {
    pub default: Duration,
    /// `(path suffix, timeout)`: requests whose path ends with the suffix get
    /// this timeout instead of the default.
    pub overrides: Vec<(&'static str, Duration)>,
}

impl RequestTimeouts {
    pub fn uniform(timeout: Duration) -> Self {
        Self {
            default: timeout,
            overrides: Vec::new(),
        }
    }

    pub fn for_path(&self, path: &str) -> Duration {
        self.overrides
            .iter()
            .find(|(suffix, _)| path.ends_with(suffix))
            .map_or(self.default, |(_, timeout)| *timeout)
    }
}

pub fn apply(router: Router, request_timeout: Duration) -> Router {
    apply_with_timeouts(router, RequestTimeouts::uniform(request_timeout))
}

pub fn apply_with_timeouts(router: Router, timeouts: RequestTimeouts) -> Router {
    // The span is `request_trace`'s; this layer only logs in it.
    let trace = TraceLayer::new_for_http().make_span_with(|_: &Request| tracing::Span::current());
    router.route_layer(middleware::from_fn(record_metrics)).layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(middleware::from_fn(crate::request_trace::trace_request))
            .layer(trace)
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(middleware::map_response(json_error_bodies))
            .layer(middleware::from_fn(crate::drain::drain_unread_bodies))
            .layer(middleware::from_fn_with_state(timeouts, timeout))
            .layer(middleware::from_fn(crate::text_guard::query_guard)),
    )
}

/// Answers `503` when the handler has not produced a response in time. A
/// streamed response body (CSV export) is not cut: only its start is timed.
async fn timeout(
    axum::extract::State(timeouts): axum::extract::State<RequestTimeouts>,
    req: Request,
    next: Next,
) -> Response {
    let limit = timeouts.for_path(req.uri().path());
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "message": "Something went wrong", "code": "internal_error" })),
    )
        .into_response()
}

/// Errors produced outside our handlers (no route, wrong method, timeout, a
/// body limit) come with plain or empty bodies; give them the JSON envelope.
async fn json_error_bodies(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::extract::is_json);
    if is_json {
        return response;
    }
    let (message, code) = match status {
        StatusCode::NOT_FOUND => ("Not found", "not_found"),
        StatusCode::METHOD_NOT_ALLOWED => ("Method not allowed", "method_not_allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("Request body is too large", "payload_too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("Unsupported media type", "unsupported_media_type"),
        StatusCode::SERVICE_UNAVAILABLE => ("The request took too long; try again", "timeout"),
        StatusCode::TOO_MANY_REQUESTS => ("Too many requests", "rate_limited"),
        s if s.is_server_error() => ("Something went wrong", "internal_error"),
        _ => ("Invalid request parameters", "bad_request"),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = json!({ "message": message, "code": code }).to_string();
    Response::from_parts(parts, body.into())
}

/// `http_requests_total` and `http_request_duration_seconds` by method, route
/// template (never the raw path: ids would explode the label set) and status.
async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_chosen_by_path_suffix() {
        let timeouts = RequestTimeouts {
            default: Duration::from_secs(30),
            overrides: vec![("/leads/import", Duration::from_secs(600))],
        };
        assert_eq!(
            timeouts.for_path("/v1/dev/marketing/campaigns/x/leads/import"),
            Duration::from_secs(600)
        );
        assert_eq!(
            timeouts.for_path("/v1/dev/marketing/campaigns/x/leads"),
            Duration::from_secs(30)
        );
        assert_eq!(
            timeouts.for_path("/v1/dev/marketing/campaigns/x/leads/import/extra"),
            Duration::from_secs(30)
        );
    }
}
