//! Graceful shutdown of the real binary under load: `SIGTERM` while 32
//! writers keep creating campaigns. What must hold (docs/operations.md):
//! - every write that was answered `201` is there after a restart;
//! - requests the server had accepted before the signal are answered, not cut
//!   (proven with requests that are provably in the handler at the signal);
//! - the process exits 0 within `SHUTDOWN_GRACE_MS` plus the background stop
//!   time, even when a request never finishes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_support::fresh_database;
use test_support::process::{Marketing, RoleProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_marketing");
const WRITERS: usize = 32;
/// Requests held inside the handler across the signal.
const HELD: usize = 32;
/// The grace period this test gives the server: long enough for the held
/// requests to finish on an overloaded machine (they take about a second on
/// an idle one), short enough to wait out (the stalled request holds it).
const GRACE: Duration = Duration::from_secs(20);
/// Room for the process to be scheduled and torn down on a loaded machine.
const EXIT_SLACK: Duration = Duration::from_secs(10);
const CAMPAIGNS: &str = "/v1/dev/marketing/campaigns";

/// `marketing serve` on a free port, once `/healthz` answers.
async fn serve(marketing: &Marketing) -> RoleProcess {
    marketing
        .spawn(
            "serve",
            &[
                ("SHUTDOWN_GRACE_MS", &GRACE.as_millis().to_string()),
                // Longer than the grace period: a write answered only because the
                // projectors were stopped before the requests would take this long.
                ("READ_AFTER_WRITE_TIMEOUT_MS", "60000"),
                // The held requests wait in their handlers while the load builds up.
                ("REQUEST_TIMEOUT_MS", "300000"),
                // Off: the writers create as fast as they can with one key; this
                // test is about shutdown, not limits.
                ("RATE_LIMIT_PER_SECOND", "0"),
            ],
        )
        .await
}

/// A create request whose head is sent with `Expect: 100-continue`. Hyper
/// sends `100 Continue` only when the handler asks for the body, so once it
/// arrives the request is in the handler: accepted, past authentication.
struct Held {
    stream: TcpStream,
    body: Vec<u8>,
}

impl Held {
    async fn open(address: &str, key: &str, name: &str) -> Self {
        let body = format!(r#"{{"name": "{name}"}}"#).into_bytes();
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let head = format!(
            "POST {CAMPAIGNS} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write head");
        let (status, _) = read_response(&mut stream, false).await;
        assert_eq!(status, 100, "the handler asks for the body");
        Self { stream, body }
    }

    async fn send_body(&mut self) {
        self.stream.write_all(&self.body).await.expect("write body");
    }

    /// Reads the answer: status and JSON body.
    async fn answer(mut self) -> (u16, serde_json::Value) {
        let (status, body) = read_response(&mut self.stream, true).await;
        (status, serde_json::from_slice(&body).expect("a JSON body"))
    }
}

/// Reads one response head and, if `with_body`, its `Content-Length` body.
async fn read_response(stream: &mut TcpStream, with_body: bool) -> (u16, Vec<u8>) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut buffer).await.expect("read (no reset)");
        assert!(n > 0, "connection closed before a response");
        received.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    if !with_body {
        return (status, Vec::new());
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        })
        .and_then(|(_, v)| v.trim().parse().ok())
        .expect("a Content-Length");
    let mut body = received[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buffer).await.expect("read body (no reset)");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&buffer[..n]);
    }
    body.truncate(length);
    (status, body)
}

/// What the looping writers saw.
#[derive(Default)]
struct Outcomes {
    acknowledged: Vec<String>,
    /// Failures before the signal: there must be none.
    early_failures: Vec<String>,
    /// Answers other than 201 at any time: there must be none.
    bad_answers: Vec<String>,
}

/// Creates campaigns in a loop until a request fails after the signal.
async fn writer(base: String, key: String, n: usize, signalled: Arc<AtomicBool>, out: Arc<Mutex<Outcomes>>) {
    let client = reqwest::Client::new();
    for i in 0.. {
        let sent = client
            .post(format!("{base}{CAMPAIGNS}"))
            .bearer_auth(&key)
            .json(&serde_json::json!({ "name": format!("writer {n} #{i}") }))
            .send()
            .await;
        let answer = match sent {
            Ok(response) => Ok((
                response.status().as_u16(),
                response.json::<serde_json::Value>().await,
            )),
            Err(error) => Err(error),
        };
        let mut out = out.lock().unwrap();
        match answer {
            Ok((201, Ok(body))) => out.acknowledged.push(body["id"].as_str().unwrap().to_owned()),
            Ok((status, body)) => out.bad_answers.push(format!("{status}: {body:?}")),
            // Not accepted before the listener closed (refused, or an idle
            // connection closed under the request): the client knows it
            // failed, and nothing was acknowledged.
            Err(_) if signalled.load(Ordering::SeqCst) => return,
            Err(error) => out.early_failures.push(error.to_string()),
        }
    }
}

async fn wait_for(what: &str, limit: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every campaign id the service lists, following the cursor.
async fn listed_ids(base: &str, key: &str) -> std::collections::HashSet<String> {
    let client = reqwest::Client::new();
    let mut ids = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = client
            .get(format!("{base}{CAMPAIGNS}"))
            .bearer_auth(key)
            .query(&[("limit", "500")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
        for item in page["data"].as_array().unwrap() {
            ids.insert(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_keeps_every_acknowledged_write_and_finishes_accepted_requests() {
    let db = fresh_database().await;
    let marketing = Marketing::new(BIN, &db.url);
    let key = marketing.api_key("acme", "shutdown");
    let mut server = serve(&marketing).await;
    let base = server.base_url();

    let mut held = Vec::new();
    for i in 0..HELD {
        held.push(Held::open(&server.address, &key, &format!("held {i}")).await);
    }
    // Never sends its body: the grace period, not the request, ends it.
    let stalled = Held::open(&server.address, &key, "stalled").await;

    let signalled = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| {
            tokio::spawn(writer(
                base.clone(),
                key.clone(),
                n,
                signalled.clone(),
                outcomes.clone(),
            ))
        })
        .collect();
    let enough = WRITERS * 10;
    wait_for(
        "the writers are under way",
        Duration::from_secs(120),
        async || outcomes.lock().unwrap().acknowledged.len() >= enough,
    )
    .await;

    signalled.store(true, Ordering::SeqCst);
    server.terminate();
    let signal_sent = Instant::now();
    // The listener closes: the shutdown has begun while the held requests
    // were still waiting in their handlers for their bodies.
    wait_for("the listener closes", GRACE, async || {
        TcpStream::connect(&server.address).await.is_err()
    })
    .await;

    // All bodies first, so the requests finish together, not one after the
    // other within the grace period.
    for request in &mut held {
        request.send_body().await;
    }
    let mut held_ids = Vec::new();
    for request in held {
        let (status, body) = request.answer().await;
        assert_eq!(status, 201, "an accepted request is answered: {body}");
        held_ids.push(body["id"].as_str().unwrap().to_owned());
    }

    let exited_after = wait_for_graceful_exit(&mut server, signal_sent).await;
    drop(stalled);

    for writer in writers {
        writer.await.unwrap();
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(
        outcomes.early_failures.is_empty(),
        "{:?}",
        outcomes.early_failures
    );
    assert!(outcomes.bad_answers.is_empty(), "{:?}", outcomes.bad_answers);

    eprintln!(
        "{} writes acknowledged by the writers, {} held across the signal; exit after {exited_after:?}",
        outcomes.acknowledged.len(),
        held_ids.len()
    );
    let acknowledged: Vec<String> = outcomes.acknowledged.into_iter().chain(held_ids).collect();
    assert_kept(&db, &marketing, &key, &acknowledged).await;
}

/// Every acknowledged write is in the read model now, and listed by a
/// restarted service.
async fn assert_kept(
    db: &test_support::TestDatabase,
    marketing: &Marketing,
    key: &str,
    acknowledged: &[String],
) {
    // Read-after-write held through the shutdown: every answered write was in
    // the read model before its answer, so before the process exited (the
    // projectors stop only after the last request).
    let projected: std::collections::HashSet<String> = db
        .connect()
        .await
        .query("SELECT id::text FROM campaigns", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let unprojected = acknowledged.iter().filter(|id| !projected.contains(*id)).count();
    assert_eq!(unprojected, 0, "answered before their read model had them");

    // Restarted, the service lists every acknowledged write.
    let restarted = serve(marketing).await;
    let listed = listed_ids(&restarted.base_url(), key).await;
    let lost = acknowledged.iter().filter(|id| !listed.contains(*id)).count();
    assert_eq!(lost, 0, "of {} acknowledged writes", acknowledged.len());
}

/// Waits for the process to exit 0, and checks when: not before the grace
/// period (a stalled request holds it), not long after.
async fn wait_for_graceful_exit(server: &mut RoleProcess, signal_sent: Instant) -> Duration {
    wait_for(
        "the process exits",
        GRACE + marketing::startup::BACKGROUND_STOP_TIMEOUT + EXIT_SLACK,
        async || server.child.try_wait().unwrap().is_some(),
    )
    .await;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
    let exited_after = signal_sent.elapsed();
    // The stalled request was waited for, up to the grace period and no longer.
    assert!(
        exited_after >= GRACE,
        "exited after {exited_after:?}, before the grace period"
    );
    let bound = GRACE + marketing::startup::BACKGROUND_STOP_TIMEOUT + EXIT_SLACK;
    assert!(exited_after <= bound, "exited after {exited_after:?}");
    exited_after
}
