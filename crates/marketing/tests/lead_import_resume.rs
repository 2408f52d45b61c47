//! An asynchronous lead import survives its server being killed mid-way
//! (docs/leads.md, "Asynchronous imports"): `marketing serve` is killed with
//! SIGKILL while the worker is inside a chunk's transaction, a new server is
//! started on the same database and media directory, and the job ends
//! `completed` with exact counts, every valid row imported exactly once (one
//! claim, one key, one `LeadCreated` per address) and every bad row listed
//! once.
//!
//! Where the kill lands is not left to timing: the test holds, in an open
//! transaction of its own, the email claim of a row in the middle of the
//! file, so the worker stops inside that row's chunk with the chunks before
//! it committed; the test sees that progress, kills the server, then lets
//! its transaction go.

use std::path::Path;
use std::time::{Duration, Instant};
use test_support::fresh_database;
use test_support::process::{Marketing, RoleProcess};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_marketing");
const ROWS: usize = 6_000;
const CHUNK_ROWS: usize = 500;
/// The row whose claim the test holds: in the seventh chunk.
const HELD_ROW: usize = 3_210;
const DEADLINE: Duration = Duration::from_secs(300);

/// `marketing serve` on the test's database and media directory; dropping it
/// is the SIGKILL.
async fn serve(marketing: &Marketing, media_dir: &Path) -> RoleProcess {
    let media_dir = media_dir.to_str().unwrap();
    marketing
        .spawn(
            "serve",
            &[
                ("MEDIA_DIR", media_dir),
                ("LEAD_IMPORT_CHUNK_ROWS", &CHUNK_ROWS.to_string()),
                // Short, so the new server takes the dead one's job over soon.
                ("LEAD_IMPORT_LEASE_MS", "2000"),
                ("RATE_LIMIT_PER_SECOND", "0"),
            ],
        )
        .await
}

/// The file: every 50th row invalid, every 97th repeating an earlier address.
fn leads_file() -> (String, u64, u64) {
    let mut csv = String::from("name,email,tier\n");
    let (mut invalid, mut duplicates) = (0, 0);
    for i in 0..ROWS {
        if i % 50 == 49 {
            csv.push_str(&format!("Bad {i},not-an-address-{i},x\n"));
            invalid += 1;
        } else if i % 97 == 96 {
            // An earlier row's address (never one of the invalid rows').
            let earlier = if (i - 90) % 50 == 49 { i - 91 } else { i - 90 };
            csv.push_str(&format!("Again {i},lead{earlier}@example.com,y\n"));
            duplicates += 1;
        } else {
            csv.push_str(&format!("\"Doe, {i}\",lead{i}@example.com,gold\n"));
        }
    }
    (csv, invalid, duplicates)
}

async fn job(client: &reqwest::Client, url: &str, key: &str) -> serde_json::Value {
    let response = client
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .expect("GET the import");
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn job_until(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let job = job(client, url, key).await;
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "the import never got there: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_import_resumes_the_job_without_skipping_or_repeating_a_row() {
    let db = fresh_database().await;
    let media = tempdir();
    let marketing = Marketing::new(BIN, &db.url);
    marketing.migrate();
    let key = marketing.api_key("acme", "import");
    let client = reqwest::Client::new();
    let server = serve(&marketing, &media).await;
    let base = format!("http://{}/v1/dev/marketing", server.address);
    let campaign: serde_json::Value = client
        .post(format!("{base}/campaigns"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "Resume"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let campaign_id: Uuid = campaign["id"].as_str().unwrap().parse().unwrap();

    let mut blocker_db = db.connect().await;
    let blocker = blocker_db.transaction().await.unwrap();
    let held = lead_vault::email_digest(campaign_id, &format!("lead{HELD_ROW}@example.com"));
    blocker
        .execute(
            "INSERT INTO lead_email_claims (campaign_id, email_digest, lead_id) VALUES ($1, $2, $3)",
            &[&campaign_id, &held, &Uuid::new_v4()],
        )
        .await
        .unwrap();

    let (csv, invalid, duplicates) = leads_file();
    let part = reqwest::multipart::Part::bytes(csv.into_bytes()).file_name("leads.csv");
    let response = client
        .post(format!("{base}/campaigns/{campaign_id}/leads/import"))
        .bearer_auth(&key)
        .header("Prefer", "respond-async")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let url = |server: &RoleProcess| format!("{}{location}", server.base_url());

    // Six chunks committed, the seventh waiting on the held claim.
    let before = (HELD_ROW / CHUNK_ROWS * CHUNK_ROWS) as i64;
    let running = job_until(&client, &url(&server), &key, |j| j["rows"] == before).await;
    assert_eq!(running["state"], "running");
    assert!(running["imported"].as_i64().unwrap() > 0);
    drop(server); // SIGKILL, inside the seventh chunk's transaction
    blocker.rollback().await.unwrap();

    let server = serve(&marketing, &media).await;
    let done = job_until(&client, &url(&server), &key, |j| {
        j["state"] == "completed" || j["state"] == "failed"
    })
    .await;
    let valid = ROWS as i64 - invalid as i64 - duplicates as i64;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["rows"], ROWS as i64);
    assert_eq!(done["imported"], valid);
    assert_eq!(done["failed"], invalid as i64);
    assert_eq!(done["duplicates"], duplicates as i64);

    let check = db.connect().await;
    let one = |sql: &'static str| {
        let check = &check;
        async move {
            check
                .query_one(sql, &[&campaign_id])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        one("SELECT count(*) FROM lead_email_claims WHERE campaign_id = $1").await,
        valid
    );
    assert_eq!(
        one("SELECT count(*) FROM lead_keys WHERE campaign_id = $1").await,
        valid
    );
    assert_eq!(
        one("SELECT count(*) FROM events WHERE event_type = 'LeadCreated' AND metadata->>'campaign_id' = $1::uuid::text").await,
        valid
    );
    // Taken over once: the killed server's claim, then the new one's.
    let attempts: i32 = check
        .query_one(
            "SELECT attempts FROM lead_imports WHERE campaign_id = $1",
            &[&campaign_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2);
    let errors = check
        .query_one(
            "SELECT count(*), count(DISTINCT line) FROM lead_import_errors e JOIN lead_imports i ON i.id = e.import_id
             WHERE i.campaign_id = $1",
            &[&campaign_id],
        )
        .await
        .unwrap();
    assert_eq!(
        (errors.get::<_, i64>(0), errors.get::<_, i64>(1)),
        (
            invalid as i64 + duplicates as i64,
            invalid as i64 + duplicates as i64
        )
    );
    // Every address once in the read model, once the projectors caught up.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let row = check
            .query_one(
                "SELECT count(*), count(DISTINCT body->>'email') FROM leads WHERE campaign_id = $1",
                &[&campaign_id],
            )
            .await
            .unwrap();
        let (leads, distinct): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(leads, distinct, "a lead twice");
        if leads == valid {
            break;
        }
        assert!(
            leads < valid && Instant::now() < deadline,
            "{leads} of {valid} leads projected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The finished job's spooled file is gone.
    let spool = media.join("spool");
    let left = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "files left in {}", spool.display());
    drop(server);
    let _ = std::fs::remove_dir_all(&media);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("marketing-import-resume-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
