//! The real `marketing` binary: CLI verbs, `serve` end to end, graceful SIGTERM.

use std::process::Output;
use std::time::{Duration, Instant};
use test_support::fresh_database;
use test_support::process::Marketing;

const BIN: &str = env!("CARGO_BIN_EXE_marketing");

/// Runs a verb to its end, whatever its outcome.
fn marketing(database_url: &str, args: &[&str]) -> Output {
    Marketing::new(BIN, database_url)
        .command()
        .args(args)
        .output()
        .expect("run marketing")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn api_keys_with_scopes_expiry_and_rotation() {
    let db = fresh_database().await;
    let created = marketing(
        &db.url,
        &[
            "api-key",
            "create",
            "--project",
            "acme",
            "--name",
            "bi",
            "--scope",
            "campaigns:read",
            "--scope",
            "leads:write",
            "--expires-in",
            "90d",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let out = stdout(&created);
    assert!(out.contains("scopes campaigns:read,leads:write,"), "{out}");
    let expires = between(&out, "expires ", ")");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).expect("a time");
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((89..=90).contains(&days), "{out}");
    let first = out.lines().last().unwrap().to_owned();
    let id = between(&out, "key ", " (").to_owned();

    let all = stdout(&marketing(&db.url, &["api-key", "create", "--project", "acme"]));
    assert!(
        all.contains("scopes all,") && all.contains("expires never)"),
        "{all}"
    );

    let listed = stdout(&marketing(&db.url, &["api-key", "list"]));
    let line = listed.lines().find(|l| l.contains(&id)).unwrap();
    assert!(
        line.contains("campaigns:read,leads:write") && line.contains(&expires.format("%Y-%m-%d").to_string()),
        "{listed}"
    );
    assert!(
        line.contains("never") && line.contains("active"),
        "not used yet: {line}"
    );
    assert!(
        listed.contains("last used") && listed.contains("scopes"),
        "{listed}"
    );

    let rotated = marketing(&db.url, &["api-key", "rotate", &id, "--grace", "24h"]);
    assert!(rotated.status.success(), "{rotated:?}");
    let out = stdout(&rotated);
    let second = out.lines().last().unwrap();
    assert!(second.starts_with("mk_") && second != first, "{out}");
    assert!(out.contains("previous secret works until: 20"), "{out}");
    let listed = stdout(&marketing(&db.url, &["api-key", "list"]));
    assert!(listed.contains("previous secret until"), "{listed}");

    for (args, says) in [
        (vec!["--scope", "leads:delete"], "leads:export"),
        (vec!["--expires-in", "90x"], "e.g. 90d"),
        (vec!["--expires-in", "0"], "more than 0"),
        (vec!["--expires-in", "3651d"], "at most 3650d"),
    ] {
        let mut all = vec!["api-key", "create", "--project", "acme"];
        all.extend(args);
        let refused = marketing(&db.url, &all);
        assert!(!refused.status.success(), "{all:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(says), "{all:?}: {stderr}");
    }
    let refused = marketing(&db.url, &["api-key", "rotate", &id, "--grace", "31d"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("at most 30d"));
    let unknown = uuid::Uuid::nil().to_string();
    let refused = marketing(&db.url, &["api-key", "rotate", &unknown]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no active key"));
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
        .find_map(|l| l.strip_prefix("key ")?.split_whitespace().next())
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

    let mut server = Marketing::new(BIN, &db.url)
        .spawn(
            "serve",
            &[
                ("READ_AFTER_WRITE_TIMEOUT_MS", "30000"),
                // High (the loop below sends requests as fast as it can), and
                // read from the environment: the header shows it.
                ("RATE_LIMIT_PER_SECOND", "100000"),
                ("RATE_LIMIT_BURST", "100000"),
            ],
        )
        .await;
    let base = server.base_url();
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/v1/dev/marketing/campaigns"))
        .bearer_auth(&secret)
        .header("content-type", "application/json")
        .body(r#"{"name": "From the binary"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["ratelimit-limit"], "100000");

    // Served from the server's key cache before the revocation, so what
    // follows shows that another process's revocation reaches the cache.
    let list = format!("{base}/v1/dev/marketing/campaigns");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .metric(&client, "marketing_api_key_cache_lookups_total{result=\"hit\"}")
        .await
        == 0.0
    {
        let response = client.get(&list).bearer_auth(&secret).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            Instant::now() < deadline,
            "the key was never served from the cache"
        );
    }

    let revoked = marketing(&db.url, &["api-key", "revoke", &id]);
    assert!(revoked.status.success(), "{revoked:?}");
    // The revocation is committed: refused within a second from here on.
    let committed = Instant::now();
    loop {
        let sent = Instant::now();
        let status = client
            .get(&list)
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            eprintln!("refused {:?} after the CLI's revocation", sent - committed);
            break;
        }
        assert_eq!(status, 200);
        assert!(
            sent < committed + Duration::from_secs(1),
            "still served {:?} after the revocation",
            sent - committed
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!marketing(&db.url, &["api-key", "revoke", &id]).status.success());

    // SIGTERM: stops accepting, finishes, exits 0.
    server.terminate();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "graceful exit: {status:?}");
}

#[tokio::test]
async fn serve_creates_a_missing_database_and_refuses_an_invalid_event_store_url() {
    let db = fresh_database().await;
    // A database that does not exist yet: `migrate` creates it.
    let url = format!("{}_new", db.url);
    let migrate = marketing(&url, &["migrate"]);
    assert!(migrate.status.success(), "{migrate:?}");
    let output = Marketing::new(BIN, &url)
        .command()
        .arg("serve")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("EVENT_STORE_URL", "http://127.0.0.1:2113")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid EVENT_STORE_URL"), "{stderr}");
}

#[tokio::test]
async fn history_verify_and_replay_commands() {
    let db = fresh_database().await;
    assert!(marketing(&db.url, &["migrate"]).status.success());
    // Write through the library (same code as the server) to have a history.
    let pool = event_store::connect_pool(&db.url, 4).unwrap();
    let key = web::ApiKeys::new(pool.clone())
        .create(&domain::ProjectSlug::parse("acme").unwrap(), "auditor")
        .await
        .unwrap()
        .1;
    let app = marketing::startup::Application::build(
        marketing::config::Config::for_database(&db.url),
        marketing::startup::Role::Serve,
    )
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}/v1/dev/marketing/campaigns", app.port());
    let stop = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(&base)
        .bearer_auth(&key)
        .json(&serde_json::json!({ "name": "Audited" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let patched = client
        .patch(format!("{base}/{id}/status"))
        .bearer_auth(&key)
        .json(&serde_json::json!({ "status": "active" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    let table = stdout(&marketing(&db.url, &["history", &id]));
    assert!(
        table.contains("CampaignCreated") && table.contains("CampaignStatusChanged"),
        "{table}"
    );
    assert!(table.contains("auditor"), "the key's name is shown: {table}");
    let json = stdout(&marketing(&db.url, &["history", &id, "--json"]));
    let lines: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["data"]["to"], "active");
    let missing = marketing(&db.url, &["history", &uuid::Uuid::new_v4().to_string()]);
    assert!(!missing.status.success());

    let verified = marketing(&db.url, &["verify"]);
    assert!(verified.status.success(), "{verified:?}");
    assert!(stdout(&verified).contains("every hash chain is intact"));

    let replayed = marketing(&db.url, &["replay"]);
    assert!(replayed.status.success(), "{replayed:?}");
    assert!(
        stdout(&replayed).contains("campaigns: rebuilt from 2 events"),
        "{}",
        stdout(&replayed)
    );
    let unknown = marketing(&db.url, &["replay", "--projection", "nope"]);
    assert!(!unknown.status.success());
    // The API still serves the campaign from the rebuilt table.
    let fetched = client
        .get(format!("{base}/{id}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);

    // Tamper with the log behind the service's back: verify names the spot.
    let db_client = db.connect().await;
    db_client
        .batch_execute(&format!(
            "ALTER TABLE events DISABLE TRIGGER events_immutable;
             UPDATE events SET data = jsonb_set(data, '{{to}}', '\"completed\"') WHERE stream_id = 'campaign-{id}' AND version = 1;
             ALTER TABLE events ENABLE TRIGGER events_immutable;"
        ))
        .await
        .unwrap();
    let broken = marketing(&db.url, &["verify"]);
    assert!(!broken.status.success());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains(&format!("campaign-{id}")) && stderr.contains("version 1"),
        "{stderr}"
    );
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// A one-shot command run as a person would (no `RUST_LOG`, stderr a pipe so
/// progress comes as plain lines, one line per update).
fn one_shot(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Marketing::new(BIN, database_url).command();
    command
        .args(args)
        .env("PROGRESS_INTERVAL_MS", "0")
        .env_remove("RUST_LOG")
        .env_remove("LOG_FORMAT");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run marketing");
    assert!(output.status.success(), "{args:?}: {output:?}");
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// No Postgres notice, no INFO line: what a one-shot command prints is its result.
fn assert_quiet(what: &str, output: &Output) {
    let all = format!("{}{}", stdout(output), stderr(output));
    assert!(
        !all.contains("NOTICE") && !all.contains("already exists") && !all.contains("skipping"),
        "{what} printed a Postgres notice: {all}"
    );
    assert!(!all.contains(" INFO "), "{what} printed INFO lines: {all}");
}

#[tokio::test]
async fn one_shot_commands_are_quiet_and_report_progress() {
    let db = fresh_database().await;
    // Twice: the second run meets every table already there, which is when
    // idempotent DDL raises its notices.
    for _ in 0..2 {
        let migrated = one_shot(&db.url, &["migrate"], &[]);
        assert_quiet("migrate", &migrated);
        assert_eq!(stdout(&migrated), "migrations applied\n");
    }

    // The key, and one line of how to use it, nothing else.
    let created = one_shot(
        &db.url,
        &["api-key", "create", "--project", "acme", "--name", "ops"],
        &[],
    );
    assert_quiet("api-key create", &created);
    assert_eq!(stderr(&created), "", "api-key create writes nothing to stderr");
    let out = stdout(&created);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("Authorization: Bearer <key>"), "{out}");
    let key = lines[1].to_owned();
    assert!(key.starts_with("mk_"), "{out}");

    // Even with RUST_LOG=info (INFO lines allowed then), the sessions ask
    // Postgres for no notices.
    let verbose = one_shot(
        &db.url,
        &["api-key", "create", "--project", "acme"],
        &[("RUST_LOG", "info")],
    );
    assert!(
        !stderr(&verbose).contains("NOTICE"),
        "notices with RUST_LOG=info: {}",
        stderr(&verbose)
    );

    let app = marketing::startup::Application::build(
        marketing::config::Config::for_database(&db.url),
        marketing::startup::Role::Serve,
    )
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}/v1/dev/marketing/campaigns", app.port());
    let stop = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let campaign: serde_json::Value = client
        .post(&base)
        .bearer_auth(&key)
        .json(&serde_json::json!({ "name": "Imported into" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let campaign_id = campaign["id"].as_str().unwrap().to_owned();

    // import-leads: the endpoint's rules and report, progress in bytes.
    let dir = std::env::temp_dir().join(format!("import-leads-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("leads.csv");
    std::fs::write(
        &csv,
        "email,name,tier\nann@example.com,Ann,gold\nnot-an-email,Bob,\nANN@example.com,Ann again,\nzoe@example.com,Zoe,silver\n",
    )
    .unwrap();
    let imported = one_shot(
        &db.url,
        &["import-leads", &campaign_id, csv.to_str().unwrap()],
        &[],
    );
    assert_quiet("import-leads", &imported);
    let report = stdout(&imported);
    assert!(
        report.starts_with("4 rows: 2 imported, 1 duplicates, 1 failed\n"),
        "{report}"
    );
    assert!(
        report.contains("line 3 (email): "),
        "the bad row by line: {report}"
    );
    let progress = stderr(&imported);
    assert!(
        progress
            .lines()
            .any(|l| l.starts_with("import-leads ") && l.contains("MiB/s, done")),
        "{progress}"
    );
    // The leads are there for the API (once the projector has them), with
    // their custom column.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page: serde_json::Value = client
            .get(format!("{base}/{campaign_id}/leads"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let leads = page["data"].as_array().unwrap();
        if leads.len() == 2 {
            assert!(
                leads.iter().any(|l| l["custom_fields"]["tier"] == "gold"),
                "{page}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "imported leads never listed: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = marketing(
        &db.url,
        &[
            "import-leads",
            &uuid::Uuid::new_v4().to_string(),
            csv.to_str().unwrap(),
        ],
    );
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no campaign"), "{}", stderr(&missing));

    // Non-terminal progress: a plain line per update, with the total, rate
    // and share, and a last line when done. The log has 3 events.
    let replayed = one_shot(&db.url, &["replay", "--projection", "leads"], &[]);
    assert_quiet("replay", &replayed);
    assert!(
        stderr(&replayed)
            .lines()
            .any(|l| l.starts_with("replay leads: 3/3 events (100%), ") && l.ends_with("events/s, done")),
        "{}",
        stderr(&replayed)
    );
    assert!(stdout(&replayed).starts_with("leads: rebuilt from 3 events"));
    let verified = one_shot(&db.url, &["verify"], &[]);
    assert_quiet("verify", &verified);
    assert!(
        stderr(&verified)
            .lines()
            .any(|l| l.starts_with("verify: 3/3 events (100%)")),
        "{}",
        stderr(&verified)
    );
    let media_dir = dir.join("media");
    let collected = one_shot(
        &db.url,
        &["media-gc", "--dry-run"],
        &[("MEDIA_DIR", media_dir.to_str().unwrap())],
    );
    assert_quiet("media-gc", &collected);
    assert!(
        stderr(&collected).contains("media-gc: reading the log: 3/3 events (100%)"),
        "{}",
        stderr(&collected)
    );

    // LOG_FORMAT=json: the progress lines are JSON objects.
    let json = one_shot(&db.url, &["verify"], &[("LOG_FORMAT", "json")]);
    let last: serde_json::Value = serde_json::from_str(stderr(&json).lines().last().unwrap()).unwrap();
    assert_eq!(last["progress"], "verify");
    assert_eq!(last["done"], 3);
    assert_eq!(last["total"], 3);
    assert_eq!(last["finished"], true);
    assert!(last["rate_per_second"].is_number(), "{last}");

    stop.cancel();
    server.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The text of `out` between the first `start` and the next `end`.
fn between<'a>(out: &'a str, start: &str, end: &str) -> &'a str {
    let from = out.find(start).unwrap_or_else(|| panic!("no {start:?} in {out}")) + start.len();
    let len = out[from..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end:?} in {out}"));
    &out[from..from + len]
}
