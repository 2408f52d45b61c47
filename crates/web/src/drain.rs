//! Lingering close: a request body the handler stopped reading (an early
//! `413`, a `415`, an error before the body mattered) is read and discarded,
//! up to a bound, after the response is handed over.
//!
//! Why: many clients (Python's `urllib`, most that send a body from a file)
//! write the whole body before they read anything. Hyper, told that nobody
//! reads the rest, closes the connection after the response; closing a socket
//! with unread data makes the kernel send a reset, and the client gets a
//! broken pipe instead of the answer that is already in its receive buffer.
//! Draining keeps the connection open while the client finishes sending, so it
//! reads the answer. This is what nginx calls `lingering_close`.
//!
//! One place for every route: [`drain_unread_bodies`] wraps the request body
//! before anything reads it, so whichever layer or handler refuses the body
//! (the JSON extractor, the idempotency layers, the upload limit, the import),
//! the rest is drained the same way. The response is not held back: it is
//! written at once, while the drain runs beside it.
//!
//! Bounds ([`DRAIN_MAX_BYTES`], [`DRAIN_MAX_TIME`]), documented in
//! `docs/api-design.md`: beyond them the connection is closed as before, so an
//! endless or very slow body costs at most that much.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::EXPECT;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Most bytes of an unread request body read and discarded after the
/// response (64 MiB: more than a 60 MiB upload refused against the default
/// 25 MiB media limit).
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Longest a connection is kept open to drain an unread body (10 s).
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// Middleware: gives every request a body that drains itself when dropped
/// unread (see the module documentation).
pub async fn drain_unread_bodies(req: Request, next: Next) -> Response {
    let expects_continue = req
        .headers()
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let req = req.map(|body| {
        Body::new(DrainOnDrop {
            inner: Some(body),
            finished: false,
            polled: false,
            expects_continue,
        })
    });
    next.run(req).await
}

/// A request body that, dropped before its end, hands the rest to a drain task.
struct DrainOnDrop {
    inner: Option<Body>,
    /// The body ended (or failed): nothing is left to drain.
    finished: bool,
    /// Someone asked for data (which makes hyper send `100 Continue`).
    polled: bool,
    expects_continue: bool,
}

impl HttpBody for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.polled = true;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.finished || body.is_end_stream() {
            return;
        }
        // A client that sent `Expect: 100-continue` waits for the go-ahead
        // before sending the body; nobody asked for it, so hyper never gave
        // it, and the final answer tells the client not to send at all.
        // Draining would send `100 Continue` and invite the very upload the
        // server just refused.
        if self.expects_continue && !self.polled {
            return;
        }
        // Outside a runtime (never in the server) there is nothing to drain on.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body, DRAIN_MAX_BYTES, DRAIN_MAX_TIME));
        }
    }
}

/// Reads and discards `body` until it ends, fails, passes `max_bytes` or
/// `max_time` has gone by; returns how many bytes it read. Dropping the body
/// then lets the connection close (or, if the body ended, be reused).
pub async fn drain(body: Body, max_bytes: u64, max_time: Duration) -> u64 {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut read: u64 = 0;
    let discard = async {
        while read <= max_bytes {
            match body.frame().await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |data| data.len() as u64);
                }
                Some(Err(_)) | None => return,
            }
        }
    };
    let finished = tokio::time::timeout(max_time, discard).await.is_ok();
    tracing::debug!(bytes = read, finished, "drained an unread request body");
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    /// An endless body of 64 KiB chunks.
    fn endless() -> Body {
        Body::from_stream(stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 64 * 1024]))
        }))
    }

    #[tokio::test]
    async fn a_drain_stops_after_its_byte_bound() {
        let read = drain(endless(), 1024 * 1024, Duration::from_secs(60)).await;
        assert!((1024 * 1024..=1024 * 1024 + 64 * 1024).contains(&read), "{read}");
    }

    #[tokio::test]
    async fn a_drain_stops_after_its_time_bound() {
        // A body that never sends a byte.
        let silent = Body::from_stream(stream::pending::<Result<Bytes, std::io::Error>>());
        let started = std::time::Instant::now();
        assert_eq!(drain(silent, u64::MAX, Duration::from_millis(50)).await, 0);
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_drain_reads_a_finite_body_to_its_end() {
        assert_eq!(
            drain(Body::from(vec![1u8; 1000]), u64::MAX, Duration::from_secs(60)).await,
            1000
        );
    }
}
