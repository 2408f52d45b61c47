//! The real `marketing` binary: CLI verbs, `serve` end to end, graceful SIGTERM.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use test_support::fresh_database;

const BIN: &str = env!("CARGO_BIN_EXE_marketing");

fn marketing(database_url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("EVENT_STORE_URL")
        .env_remove("KAFKA_BROKERS")
        .output()
        .expect("run marketing")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server did not become healthy");
}

#[tokio::test]
async fn api_keys_serve_and_graceful_shutdown() {
    let db = fresh_database().await;
    let migrate = marketing(&db.url, &["migrate"]);
    assert!(migrate.status.success(), "{migrate:?}");
    // Idempotent.
    assert!(marketing(&db.url, &["migrate"]).status.success());

    let created = marketing(
        &db.url,
        &["api-key", "create", "--project", "acme", "--name", "ci"],
    );
    assert!(created.status.success(), "{created:?}");
    let out = stdout(&created);
    let secret = out.lines().last().unwrap().to_owned();
    assert!(secret.starts_with("mk_"), "last line is the secret: {out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    let listed = stdout(&marketing(&db.url, &["api-key", "list"]));
    assert!(
        listed.contains(&id) && listed.contains("ci") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "list never shows secrets");

    let bad = marketing(&db.url, &["api-key", "create", "--project", "Not A Slug"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid project slug"));

    let port = free_port();
    let server = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("EVENT_STORE_URL")
        .env_remove("KAFKA_BROKERS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(server);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_healthy(&client, &base).await;
    let created = client
        .post(format!("{base}/v1/dev/marketing/campaigns"))
        .bearer_auth(&secret)
        .header("content-type", "application/json")
        .body(r#"{"name": "From the binary"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let revoked = marketing(&db.url, &["api-key", "revoke", &id]);
    assert!(revoked.status.success(), "{revoked:?}");
    let after = client
        .get(format!("{base}/v1/dev/marketing/campaigns"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    assert!(!marketing(&db.url, &["api-key", "revoke", &id]).status.success());

    // SIGTERM: stops accepting, finishes, exits 0.
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "graceful exit: {status:?}");
}

#[tokio::test]
async fn serve_creates_a_missing_database_and_refuses_unbuilt_backends() {
    let db = fresh_database().await;
    // A database that does not exist yet: `migrate` creates it.
    let url = format!("{}_new", db.url);
    let migrate = marketing(&url, &["migrate"]);
    assert!(migrate.status.success(), "{migrate:?}");
    let output = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("EVENT_STORE_URL", "esdb://127.0.0.1:2113")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("EVENT_STORE_URL"));
}
