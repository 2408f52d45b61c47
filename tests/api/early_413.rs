//! An early `413` that a client which writes the whole body before reading
//! (Python's `urllib`, many others) still reads. The server answers as soon as
//! it knows the body is too large; without draining, it would then close a
//! socket with unread data, the kernel would reset the connection, and such a
//! client would see a broken pipe instead of the answer.
//!
//! The client here is a raw TCP socket, so nothing in an HTTP library can read
//! early or retry: it writes the request line, the headers (with
//! `Content-Length`) and every byte of the body, and only then reads.

use marketing_e2e::{spawn_app_with, TestApp};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Larger than the loopback socket buffers of both ends together (a few MiB
/// each), so without the drain the write would meet a reset, and below the
/// server's drain bound (`web::drain::DRAIN_MAX_BYTES`).
const OVERSIZED: usize = 24 * 1024 * 1024;

/// Upper bound on one exchange, so a regression fails instead of hanging;
/// not a synchronisation point (the exchange ends when the answer is read).
const EXCHANGE_LIMIT: Duration = Duration::from_secs(120);

/// A parsed HTTP/1.1 response.
struct RawResponse {
    status: u16,
    content_type: String,
    body: Value,
}

/// Writes `head` and `body` completely, then reads one response.
async fn write_all_then_read(app: &TestApp, head: String, body: &[u8]) -> RawResponse {
    let address = app.app.address.trim_start_matches("http://").to_owned();
    let exchange = async {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream
            .write_all(body)
            .await
            .expect("the server reads the whole body instead of resetting the connection");
        stream.flush().await.expect("flush");
        read_response(&mut stream).await
    };
    tokio::time::timeout(EXCHANGE_LIMIT, exchange)
        .await
        .expect("the exchange finishes")
}

/// Reads the status line and headers, then exactly `Content-Length` bytes.
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut buffer).await.expect("read the response");
        assert!(n > 0, "connection closed before the response head");
        received.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8(received[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().expect("a Content-Length");
    let mut body = received[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buffer).await.expect("read the response body");
        assert!(n > 0, "connection closed inside the response body");
        body.extend_from_slice(&buffer[..n]);
    }
    RawResponse {
        status,
        content_type: header("content-type"),
        body: serde_json::from_slice(&body[..length]).expect("a JSON body"),
    }
}

fn head(app: &TestApp, path: &str, content_type: &str, length: usize, extra: &str) -> String {
    format!(
        "POST /v1/dev/marketing{path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}\r\n",
        app.key
    )
}

fn assert_too_large(response: &RawResponse) {
    assert_eq!(response.status, 413, "{}", response.body);
    assert!(
        response.content_type.starts_with("application/json"),
        "{}",
        response.content_type
    );
    assert!(response.body["message"].is_string(), "{}", response.body);
    assert_eq!(response.body["code"], "payload_too_large", "{}", response.body);
}

/// A multipart upload whose file part is `OVERSIZED` bytes.
fn oversized_upload() -> (String, Vec<u8>) {
    let boundary = "early413boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nToo big\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"content_type\"\r\n\r\nvideo\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"big.mp4\"\r\n\
         Content-Type: video/mp4\r\n\r\n"
    )
    .into_bytes();
    body.resize(body.len() + OVERSIZED, b'x');
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn an_oversized_upload_written_whole_before_reading_gets_the_json_413() {
    // 1 MiB of media (plus the form allowance): the body is far beyond it.
    let app = spawn_app_with(|config| config.media_max_bytes = 1024 * 1024).await;
    let campaign = app.create_campaign(&app.key, r#"{"name": "Uploads"}"#).await;
    let path = format!("/campaigns/{}/content", campaign["id"].as_str().unwrap());
    let (content_type, body) = oversized_upload();
    // Refused by its declared length before a byte is read, and (with an
    // Idempotency-Key) while the body is spooled for hashing.
    for extra in ["", "Idempotency-Key: early-413\r\n"] {
        let head = head(&app, &path, &content_type, body.len(), extra);
        let response = write_all_then_read(&app, head, &body).await;
        assert_too_large(&response);
    }
    // The connection's end did not disturb the service.
    let listed = app.get(&format!("{path}?limit=1"), &app.key).await;
    assert_eq!(listed.status(), 200);
}

#[tokio::test]
async fn an_oversized_json_body_written_whole_before_reading_gets_the_json_413() {
    let app = spawn_app_with(|_| {}).await;
    let mut body = br#"{"name": ""#.to_vec();
    body.resize(body.len() + OVERSIZED, b'a');
    body.extend_from_slice(br#""}"#);
    // Refused while the JSON extractor reads (over 1 MiB), and (with an
    // Idempotency-Key) while the idempotency layer buffers the body.
    for extra in ["", "Idempotency-Key: early-413\r\n"] {
        let head = head(&app, "/campaigns", "application/json", body.len(), extra);
        let response = write_all_then_read(&app, head, &body).await;
        assert_too_large(&response);
    }
    assert_eq!(app.event_count("campaign-").await, 0, "nothing was recorded");
}
