//! A webhook (or OTLP) receiver: a real HTTP server (axum) on a loopback port that
//! records every request (headers and raw body bytes) and answers as the
//! test scripts it: a queue of replies, then 200. It can be stopped (the
//! port then refuses connections) and started again on the same port, and
//! it can hold requests unanswered until released.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request's path.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// `307` to this URL.
    Redirect(String),
    /// No answer until [`Receiver::release`].
    Hold,
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    count: Mutex<Option<watch::Sender<usize>>>,
    release: Notify,
}

pub struct Receiver {
    pub address: SocketAddr,
    state: Arc<State>,
    count: watch::Receiver<usize>,
    server: Option<(CancellationToken, JoinHandle<()>)>,
}

async fn handle(state: Arc<State>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let reply = state.script.lock().unwrap().pop_front();
    {
        let mut received = state.received.lock().unwrap();
        received.push(Received {
            path: uri.path().to_owned(),
            headers,
            body,
        });
        if let Some(count) = &*state.count.lock().unwrap() {
            count.send_replace(received.len());
        }
    }
    match reply.unwrap_or(Reply::Status(200)) {
        Reply::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Reply::Redirect(to) => (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response(),
        Reply::Hold => {
            state.release.notified().await;
            StatusCode::OK.into_response()
        }
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let (sender, count) = watch::channel(0);
        let state = Arc::new(State::default());
        *state.count.lock().unwrap() = Some(sender);
        let mut receiver = Self {
            address: "127.0.0.1:0".parse().unwrap(),
            state,
            count,
            server: None,
        };
        receiver.up().await;
        receiver
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Listens (again, on the same port once it had one).
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.address)
            .await
            .expect("bind the receiver");
        self.address = listener.local_addr().unwrap();
        let state = self.state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            handle(state.clone(), uri, headers, body)
        });
        let stop = CancellationToken::new();
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
        let task = tokio::spawn(async move {
            let _ = serve.await;
        });
        self.server = Some((stop, task));
    }

    /// Stops listening and closes every connection: the port refuses
    /// connections until [`Receiver::up`].
    pub async fn down(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            stop.cancel();
            self.state.release.notify_waiters();
            let _ = task.await;
        }
    }

    /// The next requests get these replies, in order; then 200 again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Drops the replies still scripted: every next request gets 200.
    pub fn clear_script(&self) {
        self.state.script.lock().unwrap().clear();
    }

    /// Answers every held request.
    pub fn release(&self) {
        self.state.release.notify_waiters();
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived (failing after `timeout`).
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut changes = self.count.clone();
        while *changes.borrow_and_update() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, changes.changed()).await.is_err() {
                panic!(
                    "{count} requests expected, {} arrived in {timeout:?}",
                    self.received().len()
                );
            }
        }
        self.received()
    }

    /// Waits until requests with `count` distinct `webhook-id`s have arrived.
    pub async fn wait_for_distinct(&self, count: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, &format!("{count} distinct deliveries"), |received| {
            let mut ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len() >= count
        })
        .await
    }

    /// Waits until what arrived satisfies `done` (`what` names it if it never does).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut changes = self.count.clone();
        loop {
            changes.borrow_and_update();
            let received = self.received();
            if done(&received) {
                return received;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, changes.changed()).await.is_err() {
                panic!(
                    "{what} expected in {timeout:?}; {} requests arrived",
                    received.len()
                );
            }
        }
    }
}

/// The stream versions of each aggregate's events, in the order their first
/// deliveries arrived (retries and duplicates left out): per-aggregate order
/// holds when each list is ascending.
pub fn first_arrivals_by_stream(received: &[Received]) -> std::collections::HashMap<String, Vec<i64>> {
    let mut seen = std::collections::HashSet::new();
    let mut order: std::collections::HashMap<String, Vec<i64>> = std::collections::HashMap::new();
    for request in received {
        let body = request.json();
        if seen.insert(body["id"].as_str().unwrap().to_owned()) {
            order
                .entry(body["streamid"].as_str().unwrap().to_owned())
                .or_default()
                .push(body["streamversion"].as_i64().unwrap());
        }
    }
    order
}
