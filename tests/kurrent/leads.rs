//! Leads with the log in KurrentDB: the email claim is taken in Postgres
//! before the lead's events are appended (docs/kurrentdb.md, "Lead email
//! uniqueness"), so concurrent creates of one address still make one lead.

use crate::{spawn_on_kurrentdb, KurrentApp};
use futures::future::join_all;
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

fn leads_path(campaign: &str) -> String {
    format!("/campaigns/{campaign}/leads")
}

async fn create(app: &KurrentApp, campaign: &str, email: &str) -> (u16, Value) {
    let body = format!(r#"{{"name": "Ann", "email": "{email}"}}"#);
    let response = app
        .json(Method::POST, &leads_path(campaign), &app.key, &body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn count(app: &KurrentApp, sql: &str) -> i64 {
    app.db.connect().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_email_make_one_lead_and_a_delete_frees_it() {
    let app = spawn_on_kurrentdb(|_| {}).await;
    let campaign = app.campaign().await;
    let answers = join_all((0..12).map(|i| {
        let email = if i % 2 == 0 {
            "ann@example.com"
        } else {
            "ANN@example.com"
        };
        create(&app, &campaign, email)
    }))
    .await;
    let winners: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let lead_id = winners[0]["id"].as_str().unwrap().to_owned();
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(body["existing_id"], lead_id.as_str(), "{body}");
    }
    let lead_path = format!("{}/{lead_id}", leads_path(&campaign));
    assert_eq!(app.get(&lead_path, &app.key).await.status(), 200);
    // Only the winner's claim and key are left: every loser released its own.
    assert_eq!(count(&app, "SELECT count(*) FROM lead_email_claims").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM lead_keys").await, 1);

    let delete = app
        .request(Method::DELETE, &lead_path, &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    assert_eq!(app.get(&lead_path, &app.key).await.status(), 404);
    assert_eq!(count(&app, "SELECT count(*) FROM lead_keys").await, 0);
    let (status, again) = create(&app, &campaign, "ann@example.com").await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        app.types(&format!("lead-{lead_id}")).await,
        ["LeadCreated", "LeadDeleted"]
    );
    app.assert_postgres_log_empty().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_change_moves_the_claim() {
    let app = spawn_on_kurrentdb(|_| {}).await;
    let campaign = app.campaign().await;
    let (_, lead) = create(&app, &campaign, "old@example.com").await;
    let lead_path = format!("{}/{}", leads_path(&campaign), lead["id"].as_str().unwrap());
    create(&app, &campaign, "taken@example.com").await;
    let taken = r#"{"email": "taken@example.com"}"#;
    let response = app
        .json(Method::PUT, &lead_path, &app.key, taken)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let moved = r#"{"email": "new@example.com"}"#;
    let response = app
        .json(Method::PUT, &lead_path, &app.key, moved)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(create(&app, &campaign, "new@example.com").await.0, 409);
    assert_eq!(create(&app, &campaign, "old@example.com").await.0, 201);
    assert_eq!(count(&app, "SELECT count(*) FROM lead_email_claims").await, 3);
}

/// A claim whose lead never got its `LeadCreated` (a crash between the two)
/// holds the address only for the grace period; after it, the next claimant
/// releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_left_by_a_crash_is_released_by_the_next_claimant_after_the_grace() {
    let app = spawn_on_kurrentdb(|_| {}).await;
    let campaign = app.campaign().await;
    let campaign_id: Uuid = campaign.parse().unwrap();
    let client = app.db.connect().await;
    for (email, age) in [("fresh@example.com", "0 s"), ("stale@example.com", "10 min")] {
        let orphan = Uuid::now_v7();
        let digest = lead_vault::email_digest(campaign_id, email);
        client
            .execute(
                "INSERT INTO lead_email_claims (campaign_id, email_digest, lead_id) VALUES ($1, $2, $3)",
                &[&campaign_id, &digest, &orphan],
            )
            .await
            .unwrap();
        client
            .execute(
                &format!(
                    "INSERT INTO lead_keys (lead_id, campaign_id, key_material, created_at)
                     VALUES ($1, $2, $3, now() - interval '{age}')"
                ),
                &[&orphan, &campaign_id, &vec![7u8; 32]],
            )
            .await
            .unwrap();
    }
    // Within the grace it may still be a creation in flight: 409.
    assert_eq!(create(&app, &campaign, "fresh@example.com").await.0, 409);
    let (status, body) = create(&app, &campaign, "stale@example.com").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(count(&app, "SELECT count(*) FROM lead_keys").await, 2);
}

fn csv_form(csv: &str) -> Form {
    let part = Part::bytes(csv.as_bytes().to_vec())
        .file_name("leads.csv")
        .mime_str("text/csv")
        .unwrap();
    Form::new().part("file", part)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_csv_import_reports_duplicates_and_bad_rows_and_a_rerun_adds_nothing() {
    let app = spawn_on_kurrentdb(|_| {}).await;
    let campaign = app.campaign().await;
    create(&app, &campaign, "dee@example.com").await;
    let csv = "name,email\nAnn,ann@example.com\nBob,bob-at-example.com\nCy,cy@example.com\nAnn again,ANN@example.com\nDee,dee@example.com\n";
    let import = |form: Form| {
        app.request(
            Method::POST,
            &format!("{}/import", leads_path(&campaign)),
            &app.key,
        )
        .multipart(form)
        .send()
    };
    let response = import(csv_form(csv)).await.unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(
        (
            &report["rows"],
            &report["imported"],
            &report["duplicates"],
            &report["failed"]
        ),
        (&5.into(), &2.into(), &2.into(), &1.into()),
        "{report}"
    );
    assert_eq!(report["errors"][0]["line"], 3, "{report}");
    // Read-after-write: the imported leads are listed at once.
    let page: Value = app
        .get(&leads_path(&campaign), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 3, "{page}");

    let response = import(csv_form(csv)).await.unwrap();
    let rerun: Value = response.json().await.unwrap();
    assert_eq!(
        (&rerun["imported"], &rerun["duplicates"]),
        (&0.into(), &4.into()),
        "{rerun}"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM lead_keys").await, 3);
    app.assert_postgres_log_empty().await;
}
