//! Asynchronous lead imports (`Prefer: respond-async`): the `202` and its
//! `Location`, the job's progress, every row not imported as pages and as a
//! CSV that imports back once fixed. The kill-and-resume proof runs the real
//! binary: `crates/marketing/tests/lead_import_resume.rs`.

use marketing_e2e::{assert_error, spawn_app_with, TestApp};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response};
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(120);

fn leads_path(campaign: &str) -> String {
    format!("/campaigns/{campaign}/leads")
}

fn file(csv: impl Into<Vec<u8>>) -> Form {
    let part = Part::bytes(csv.into())
        .file_name("leads.csv")
        .mime_str("text/csv")
        .unwrap();
    Form::new().part("file", part)
}

async fn import_async(app: &TestApp, campaign: &str, csv: impl Into<Vec<u8>>) -> Response {
    app.request(
        Method::POST,
        &format!("{}/import", leads_path(campaign)),
        &app.key,
    )
    .header("Prefer", "respond-async")
    .multipart(file(csv))
    .send()
    .await
    .unwrap()
}

/// The job's path below the base path, from a `202`'s `Location`.
fn job_path(response: &Response) -> String {
    let location = response.headers()["location"].to_str().unwrap();
    location
        .strip_prefix("/v1/dev/marketing")
        .expect("Location is below the base path")
        .to_owned()
}

async fn job(app: &TestApp, path: &str) -> Value {
    let response = app.get(path, &app.key).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls the job until `done` holds for it.
async fn job_until(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let job = job(app, path).await;
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "the import never got there: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn finished(job: &Value) -> bool {
    job["state"] == "completed" || job["state"] == "failed"
}

/// Every error row, page by page.
async fn all_errors(app: &TestApp, path: &str, limit: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("{path}/errors?limit={limit}&cursor={cursor}"),
            None => format!("{path}/errors?limit={limit}"),
        };
        let response = app.get(&query, &app.key).await;
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit);
        rows.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(page["has_more"], true);
                cursor = Some(next.to_owned());
            }
            None => return rows,
        }
    }
}

/// A file with `valid` good rows, an invalid row every 7th line and the
/// first row's email again at the end.
fn mixed_file(valid: usize) -> (String, Vec<u64>) {
    let mut csv = String::from("name,email,tier\n");
    let mut bad_lines = Vec::new();
    let mut line = 1u64;
    for i in 0..valid {
        line += 1;
        if i % 7 == 3 {
            csv.push_str(&format!("Bad {i},not-an-email-{i},x\n"));
            bad_lines.push(line);
            line += 1;
        }
        csv.push_str(&format!("Lead {i},lead{i}@example.com,gold\n"));
    }
    csv.push_str("Again,LEAD0@example.com,gold\n");
    (csv, bad_lines)
}

#[tokio::test]
async fn an_async_import_answers_202_at_once_and_ends_completed_with_every_bad_row_pageable() {
    let app = spawn_app_with(|c| c.lead_import_chunk_rows = 4).await;
    let campaign = app.campaign().await;
    let (csv, bad_lines) = mixed_file(40);
    let response = import_async(&app, &campaign, csv).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["preference-applied"], "respond-async");
    let path = job_path(&response);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(
        path,
        format!(
            "{}/imports/{}",
            leads_path(&campaign),
            accepted["id"].as_str().unwrap()
        )
    );
    assert_eq!(accepted["state"], "queued");
    assert_eq!(accepted["campaign_id"], campaign.as_str());
    assert!(accepted["created_at"].is_string() && accepted["finished_at"].is_null());

    let done = job_until(&app, &path, finished).await;
    assert_eq!(done["state"], "completed", "{done}");
    let invalid = bad_lines.len() as i64;
    assert_eq!(done["rows"], 40 + invalid + 1);
    assert_eq!(
        (
            done["imported"].as_i64(),
            done["failed"].as_i64(),
            done["duplicates"].as_i64()
        ),
        (Some(40), Some(invalid), Some(1))
    );
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert!(done["failure"].is_null());

    // Pages of 2, with a cursor, in line order: every bad row, no cap.
    let errors = all_errors(&app, &path, 2).await;
    let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    let mut expected = bad_lines.clone();
    // The repeated email is the last row: the header and every row before it.
    expected.push(1 + done["rows"].as_u64().unwrap());
    assert_eq!(lines, expected);
    assert!(errors[..bad_lines.len()]
        .iter()
        .all(|e| e["kind"] == "invalid" && e["field"] == "email"));
    assert_eq!(errors[0]["values"][1], "not-an-email-3");
    let last = errors.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["values"][1].as_str()),
        (Some("duplicate"), Some("LEAD0@example.com"))
    );
    let invalid_only = app
        .get(&format!("{path}/errors?kind=invalid&limit=500"), &app.key)
        .await;
    let invalid_only: Value = invalid_only.json().await.unwrap();
    assert_eq!(invalid_only["data"].as_array().unwrap().len(), bad_lines.len());

    // Every lead once, listable once the projectors caught up.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let page: Value = app
            .get(&format!("{}?limit=500", leads_path(&campaign)), &app.key)
            .await
            .json()
            .await
            .unwrap();
        let listed = page["data"].as_array().unwrap().len();
        if listed == 40 {
            break;
        }
        assert!(listed < 40 && Instant::now() < deadline, "{listed} leads listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.event_count("lead-").await, 40);
}

#[tokio::test]
async fn the_errors_csv_has_the_original_columns_and_imports_back_once_fixed() {
    let app = spawn_app_with(|c| c.lead_import_chunk_rows = 3).await;
    let campaign = app.campaign().await;
    let csv = "Name,EMAIL,notes\nAnn,ann@example.com,\"ok, fine\"\nBob,bob-at-example.com,\"two\nlines\"\nCy,,x\nDee,dee@example.com\n";
    let response = import_async(&app, &campaign, csv).await;
    assert_eq!(response.status(), 202);
    let path = job_path(&response);
    let done = job_until(&app, &path, finished).await;
    assert_eq!(
        (done["imported"].as_i64(), done["failed"].as_i64()),
        (Some(1), Some(3)),
        "{done}"
    );

    let response = app.get(&format!("{path}/errors?format=csv"), &app.key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=lead-import-errors.csv"
    );
    let text = response.text().await.unwrap();
    let mut reader = csv_reader(&text);
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(records[0], ["Name", "EMAIL", "notes", "line", "error"]);
    assert_eq!(records[1][..4], ["Bob", "bob-at-example.com", "two\nlines", "3"]);
    assert_eq!(records[2][..4], ["Cy", "", "x", "5"]);
    // A short row is padded, so `line` and `error` stay in their columns.
    assert_eq!(records[3][..4], ["Dee", "dee@example.com", "", "6"]);
    assert!(records[3][4].contains("expected 3 fields"), "{records:?}");
    assert_eq!(records.len(), 4);

    // Fixed, without `line` and `error`: it imports.
    let fixed =
        "Name,EMAIL,notes\nBob,bob@example.com,\"two\nlines\"\nCy,cy@example.com,x\nDee,dee@example.com,\n";
    let response = import_async(&app, &campaign, fixed).await;
    let again = job_until(&app, &job_path(&response), finished).await;
    assert_eq!(
        (again["imported"].as_i64(), again["failed"].as_i64()),
        (Some(3), Some(0)),
        "{again}"
    );
}

fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
}

/// Progress shows while the job runs. Deterministically mid-way: the test
/// holds, in an open transaction, the email claim of a row of the fifth
/// chunk, so the worker waits inside that chunk with four committed.
#[tokio::test]
async fn progress_is_visible_while_the_import_runs() {
    let app = spawn_app_with(|c| c.lead_import_chunk_rows = 10).await;
    let campaign = app.campaign().await;
    let mut csv = String::from("email\n");
    for i in 0..100 {
        csv.push_str(&format!("p{i}@example.com\n"));
    }
    let mut db = app.db.connect().await;
    let blocker = db.transaction().await.unwrap();
    let campaign_id: Uuid = campaign.parse().unwrap();
    blocker
        .execute(
            "INSERT INTO lead_email_claims (campaign_id, email_digest, lead_id) VALUES ($1, $2, $3)",
            &[
                &campaign_id,
                &lead_vault::email_digest(campaign_id, "p45@example.com"),
                &Uuid::new_v4(),
            ],
        )
        .await
        .unwrap();
    let response = import_async(&app, &campaign, csv).await;
    assert_eq!(response.status(), 202);
    let path = job_path(&response);
    let running = job_until(&app, &path, |j| j["rows"] == 40).await;
    assert_eq!(running["state"], "running");
    assert_eq!(
        (running["imported"].as_i64(), running["last_line"].as_i64()),
        (Some(40), Some(41))
    );
    assert!(running["started_at"].is_string() && running["finished_at"].is_null());
    blocker.rollback().await.unwrap();
    let done = job_until(&app, &path, finished).await;
    assert_eq!(
        (done["state"].as_str(), done["imported"].as_i64()),
        (Some("completed"), Some(100))
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_lead_csv_fails_the_job_visibly() {
    let app = spawn_app_with(|_| {}).await;
    let campaign = app.campaign().await;
    let response = import_async(&app, &campaign, "name,phone\nAnn,1\n").await;
    assert_eq!(response.status(), 202);
    let done = job_until(&app, &job_path(&response), finished).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["failure"], "the CSV has no `email` column");
    assert_eq!(done["rows"], 0);
    // An empty file is refused at once: nothing to queue.
    let empty = import_async(&app, &campaign, "").await;
    assert_error(
        empty,
        400,
        "the file is not a lead CSV: it is empty; expected a header row with an `email` column",
    )
    .await;
}

#[tokio::test]
async fn the_row_limit_fails_the_job_after_importing_the_rows_before_it() {
    let app = spawn_app_with(|c| {
        c.lead_import_max_rows = 5;
        c.lead_import_chunk_rows = 2;
    })
    .await;
    let campaign = app.campaign().await;
    let csv: String = std::iter::once("email\n".to_owned())
        .chain((0..8).map(|i| format!("r{i}@example.com\n")))
        .collect();
    let response = import_async(&app, &campaign, csv).await;
    let done = job_until(&app, &job_path(&response), finished).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(
        done["failure"],
        "the file has more than 5 rows; the rows after that were not imported"
    );
    assert_eq!(
        (done["rows"].as_i64(), done["imported"].as_i64()),
        (Some(5), Some(5))
    );
}

#[tokio::test]
async fn jobs_are_private_to_their_project_and_bad_parameters_are_400s() {
    let app = spawn_app_with(|_| {}).await;
    let campaign = app.campaign().await;
    let response = import_async(&app, &campaign, "email\na@example.com\n").await;
    let path = job_path(&response);
    job_until(&app, &path, finished).await;
    let other = app.new_key("globex").await;
    assert_error(app.get(&path, &other).await, 404, "Campaign not found").await;
    let unknown = format!("{}/imports/{}", leads_path(&campaign), Uuid::now_v7());
    assert_error(app.get(&unknown, &app.key).await, 404, "Import not found").await;
    assert_error(
        app.get(&format!("{unknown}/errors"), &app.key).await,
        404,
        "Import not found",
    )
    .await;
    let garbage = format!("{}/imports/not-an-id", leads_path(&campaign));
    assert_error(app.get(&garbage, &app.key).await, 404, "Import not found").await;
    assert_error(
        app.get(&format!("{path}/errors?format=xml"), &app.key).await,
        400,
        "format must be one of json, csv",
    )
    .await;
    assert_error(
        app.get(&format!("{path}/errors?kind=all"), &app.key).await,
        400,
        "kind must be one of invalid, duplicate",
    )
    .await;
    assert_error(
        app.get(&format!("{path}/errors?cursor=zzz"), &app.key).await,
        400,
        "",
    )
    .await;
    assert_error(
        app.get(&format!("{path}/errors?limit=0"), &app.key).await,
        400,
        "",
    )
    .await;
    // Another project cannot queue into the campaign.
    let foreign = app
        .request(Method::POST, &format!("{}/import", leads_path(&campaign)), &other)
        .header("Prefer", "respond-async")
        .multipart(file("email\nb@example.com\n"))
        .send()
        .await
        .unwrap();
    assert_error(foreign, 404, "Campaign not found").await;
}

#[tokio::test]
async fn without_the_preference_the_import_is_synchronous() {
    let app = spawn_app_with(|_| {}).await;
    let campaign = app.campaign().await;
    for prefer in [None, Some("return=minimal"), Some("respond-asynchronously")] {
        let mut request = app.request(
            Method::POST,
            &format!("{}/import", leads_path(&campaign)),
            &app.key,
        );
        if let Some(prefer) = prefer {
            request = request.header("Prefer", prefer);
        }
        let response = request
            .multipart(file("email\ns@example.com\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{prefer:?}");
        assert!(response.headers().get("preference-applied").is_none());
    }
    // One preference among others, in any case, is honoured.
    let response = app
        .request(
            Method::POST,
            &format!("{}/import", leads_path(&campaign)),
            &app.key,
        )
        .header("Prefer", "wait=5, Respond-Async")
        .multipart(file("email\nt@example.com\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}
