//! Campaign time zones and the bulk CSV backfill of analytics
//! (`POST .../analytics/import`), over real HTTP against a real Postgres.

use marketing_e2e::{assert_error, spawn_app, spawn_app_with, TestApp};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const HEADER: &str = "date,source,impressions,clicks,conversions,cost,revenue,engagement_rate";

async fn campaign_in(app: &TestApp, time_zone: &str) -> String {
    let body = json!({"name": "Zoned", "time_zone": time_zone}).to_string();
    let created = app.create_campaign(&app.key, &body).await;
    assert_eq!(created["time_zone"], time_zone, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path, &app.key).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

async fn import(app: &TestApp, campaign: &str, query: &str, csv: impl Into<Vec<u8>>) -> Response {
    let part = Part::bytes(csv.into())
        .file_name("analytics.csv")
        .mime_str("text/csv")
        .unwrap();
    app.request(
        Method::POST,
        &format!("/campaigns/{campaign}/analytics/import{query}"),
        &app.key,
    )
    .multipart(Form::new().part("file", part))
    .send()
    .await
    .unwrap()
}

async fn import_ok(app: &TestApp, campaign: &str, query: &str, csv: impl Into<Vec<u8>>) -> Value {
    let response = import(app, campaign, query, csv).await;
    assert_eq!(response.status(), 200, "import");
    response.json().await.unwrap()
}

async fn summary(app: &TestApp, campaign: &str) -> Value {
    get_json(app, &format!("/campaigns/{campaign}/analytics/summary")).await
}

/// `days` days from 2024-01-01 for each of `sources` sources, with figures
/// that differ per row (so a lost or doubled row shows in the totals), plus
/// the exact totals they add up to: (rows, impressions, clicks, cost in cents).
fn file(days: u32, sources: u32) -> (String, (u64, u64, u64, u64)) {
    let mut csv = format!("{HEADER}\n");
    let (mut impressions, mut clicks, mut cents) = (0u64, 0u64, 0u64);
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    for day in 0..days {
        let date = start + chrono::Days::new(u64::from(day));
        for source in 0..sources {
            let i = u64::from(day * sources + source);
            let (imp, clk, cost) = (1000 + i, 10 + i % 7, 100 + i % 250);
            impressions += imp;
            clicks += clk;
            cents += cost;
            csv.push_str(&format!(
                "{date},source{source},{imp},{clk},{},{}.{:02},{}.00,0.0{}\n",
                i % 3,
                cost / 100,
                cost % 100,
                i % 50,
                i % 9
            ));
        }
    }
    (csv, (u64::from(days * sources), impressions, clicks, cents))
}

fn totals(summary: &Value) -> (u64, u64, u64, String) {
    let m = &summary["metrics"];
    (
        summary["records"].as_u64().unwrap(),
        m["impressions"].as_u64().unwrap(),
        m["clicks"].as_u64().unwrap(),
        m["cost"].to_string(),
    )
}

fn cents(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[tokio::test]
async fn a_los_angeles_campaign_buckets_the_dst_day_into_its_local_day_week_and_month() {
    let app = spawn_app().await;
    let campaign = campaign_in(&app, "America/Los_Angeles").await;
    let path = format!("/campaigns/{campaign}/analytics");
    // 2024-03-10 is the spring-forward day in Los Angeles (23 hours long) and
    // a Sunday: the last day of ISO week 10. Its neighbours fall on either side.
    for (date, clicks) in [
        ("2024-03-09", 1),
        ("2024-03-10", 10),
        ("2024-03-11", 100),
        ("2024-02-29", 1000),
    ] {
        let body = json!({"date": date, "source": "google", "metrics": {"clicks": clicks}});
        let response = app
            .json(Method::POST, &path, &app.key, &body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let record: Value = response.json().await.unwrap();
        assert_eq!(record["date"], date, "the date is kept as the local day it names");
    }
    let day = get_json(&app, &format!("{path}?start_date=2024-03-10&end_date=2024-03-10")).await;
    assert_eq!(day["data"].as_array().unwrap().len(), 1, "{day}");
    assert_eq!(day["data"][0]["date"], "2024-03-10");
    assert_eq!(day["data"][0]["metrics"]["clicks"], 10);

    let weeks = get_json(&app, &format!("{path}?granularity=week&start_date=2024-03-01")).await;
    let weeks: Vec<(String, String, u64)> = weeks["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["date"].as_str().unwrap().to_owned(),
                w["period_end"].as_str().unwrap().to_owned(),
                w["metrics"]["clicks"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weeks,
        vec![
            ("2024-03-04".into(), "2024-03-10".into(), 11),
            ("2024-03-11".into(), "2024-03-17".into(), 100),
        ],
        "the DST Sunday closes its Monday-to-Sunday week"
    );
    let months = get_json(&app, &format!("{path}?granularity=month")).await;
    let months: Vec<(String, u64)> = months["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["date"].as_str().unwrap().to_owned(),
                m["metrics"]["clicks"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        months,
        vec![("2024-02-01".into(), 1000), ("2024-03-01".into(), 111)]
    );
    let summary = get_json(
        &app,
        &format!("{path}/summary?start_date=2024-03-10&end_date=2024-03-10"),
    )
    .await;
    assert_eq!(
        (summary["metrics"]["clicks"].as_u64(), &summary["time_zone"]),
        (Some(10), &json!("America/Los_Angeles"))
    );

    // A record without a date is for today in the campaign's zone, not in UTC.
    let la = domain::TimeZone::parse("time_zone", "America/Los_Angeles").unwrap();
    let before = la.today(chrono::Utc::now());
    let response = app
        .json(
            Method::POST,
            &path,
            &app.key,
            r#"{"source": "meta", "metrics": {"clicks": 1}}"#,
        )
        .send()
        .await
        .unwrap();
    let after = la.today(chrono::Utc::now());
    assert_eq!(response.status(), 201);
    let record: Value = response.json().await.unwrap();
    let date: chrono::NaiveDate = record["date"].as_str().unwrap().parse().unwrap();
    assert!(
        date == before || date == after,
        "{date} is not today in Los Angeles ({before}..{after})"
    );
}

#[tokio::test]
async fn time_zones_default_to_utc_are_validated_and_change_only_by_an_explicit_update() {
    let app = spawn_app().await;
    let created = app.create_campaign(&app.key, r#"{"name": "Plain"}"#).await;
    assert_eq!(created["time_zone"], "UTC");
    let id = created["id"].as_str().unwrap();
    for bad in ["Mars/Base", "america/los_angeles", "+02:00"] {
        let body = json!({"name": "Bad", "time_zone": bad}).to_string();
        let response = app
            .json(Method::POST, "/campaigns", &app.key, &body)
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], "time_zone", "{error}");
        let response = app
            .json(
                Method::PUT,
                &format!("/campaigns/{id}"),
                &app.key,
                &json!({"time_zone": bad}).to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(assert_error(response, 400, "").await["field"], "time_zone");
    }
    let response = app
        .json(
            Method::PUT,
            &format!("/campaigns/{id}"),
            &app.key,
            r#"{"time_zone": null}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(response, 400, "").await["field"], "time_zone");
    // Recorded days stay where they are when the zone changes (a relabel).
    let path = format!("/campaigns/{id}/analytics");
    let body = r#"{"date": "2024-03-10", "source": "google", "metrics": {"clicks": 5}}"#;
    let response = app
        .json(Method::POST, &path, &app.key, body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = app
        .json(
            Method::PUT,
            &format!("/campaigns/{id}"),
            &app.key,
            r#"{"time_zone": "Asia/Tokyo"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["time_zone"], "Asia/Tokyo");
    let page = get_json(&app, &path).await;
    assert_eq!(page["data"][0]["date"], "2024-03-10");
    let history = get_json(&app, &format!("/campaigns/{id}/history?limit=50")).await;
    let changes: Vec<&Value> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "CampaignUpdated")
        .map(|e| &e["data"]["changes"]["time_zone"])
        .collect();
    assert_eq!(changes, vec![&json!("Asia/Tokyo")], "{history}");
}

#[tokio::test]
async fn a_csv_import_totals_its_rows_and_a_replace_reimport_changes_nothing() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    let (csv, (rows, impressions, clicks, cost)) = file(73, 10);
    let report = import_ok(&app, &campaign, "", csv.clone()).await;
    assert_eq!(report["mode"], "replace", "replace is the default: {report}");
    assert_eq!(
        (
            report["rows"].as_u64(),
            report["imported"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some(rows), Some(rows), Some(0)),
        "{report}"
    );
    // The answer waited for the rollups: the totals are the file's at once.
    let once = summary(&app, &campaign).await;
    assert_eq!(totals(&once), (rows, impressions, clicks, cents(cost)));
    assert_eq!(once["by_source"].as_array().unwrap().len(), 10);
    // Again, and again explicitly: the same totals, nothing appended.
    for query in ["", "?mode=replace"] {
        let report = import_ok(&app, &campaign, query, csv.clone()).await;
        assert_eq!(
            (report["imported"].as_u64(), report["unchanged"].as_u64()),
            (Some(0), Some(rows))
        );
        assert_eq!(summary(&app, &campaign).await, once);
    }
    // A corrected day replaces its figures, as a PUT would, and a PUT of the
    // same figures afterwards is a no-op (the import wrote that day's stream).
    let report = import_ok(
        &app,
        &campaign,
        "",
        format!("{HEADER}\n2024-01-01,source0,5,5,5,5.00,5.00,0.5\n"),
    )
    .await;
    assert_eq!(report["imported"], 1);
    let day = get_json(
        &app,
        &format!("/campaigns/{campaign}/analytics?start_date=2024-01-01&end_date=2024-01-01&source=source0"),
    )
    .await;
    assert_eq!(day["data"][0]["metrics"]["clicks"], 5, "{day}");
    assert_eq!(day["data"][0]["records"], 1);
    let put = app
        .json(
            Method::PUT,
            &format!("/campaigns/{campaign}/analytics/2024-01-01/source0"),
            &app.key,
            r#"{"metrics": {"impressions": 5, "clicks": 5, "conversions": 5, "cost": 5.00, "revenue": 5.00, "custom_metrics": {"engagement_rate": 0.5}}}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        put.headers()["etag"],
        "\"1\"",
        "the import's restatement is version 1 of the day"
    );
    // `add` adds on top: every total doubles (but the corrected day).
    let add = import_ok(&app, &campaign, "?mode=add", csv).await;
    assert_eq!(
        (add["mode"].as_str(), add["imported"].as_u64()),
        (Some("add"), Some(rows))
    );
    let twice = summary(&app, &campaign).await;
    assert_eq!(twice["records"].as_u64(), Some(2 * rows));
}

/// More batches than the writer may run ahead of the rollups
/// (`BATCHES_AHEAD`), so the writer waits for them on the way: every row
/// still lands once, in both modes.
#[tokio::test]
async fn an_import_of_many_batches_lands_every_row_once() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    let (csv, (rows, impressions, clicks, cost)) = file(1_001, 7);
    // Four batches of `command_api::analytics::import::BATCH_ROWS` (2,000).
    assert!(rows > 3 * 2_000);
    let report = import_ok(&app, &campaign, "", csv.clone()).await;
    assert_eq!(report["imported"].as_u64(), Some(rows), "{report}");
    let once = summary(&app, &campaign).await;
    assert_eq!(totals(&once), (rows, impressions, clicks, cents(cost)));
    let report = import_ok(&app, &campaign, "?mode=add", csv).await;
    assert_eq!(report["imported"].as_u64(), Some(rows), "{report}");
    let twice = summary(&app, &campaign).await;
    assert_eq!(
        totals(&twice),
        (2 * rows, 2 * impressions, 2 * clicks, cents(2 * cost))
    );
}

/// The same days restated in consecutive batches: each batch is planned
/// while the one before it is still being appended, yet sees that batch's
/// figures, so a repeat is `unchanged` and a change lands once on top.
#[tokio::test]
async fn days_restated_again_in_the_next_batches_land_once_each() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    // 2,000 keys: one batch (`BATCH_ROWS`) each pass, three passes.
    let keys: Vec<(String, u32)> = (0..200u32)
        .flat_map(|day| {
            let date =
                chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(u64::from(day));
            (0..10).map(move |source| (format!("{date},source{source}"), day * 10 + source))
        })
        .collect();
    let row = |key: &str, clicks: u32| format!("{key},1000,{clicks},0,1.00,0.00,0.01\n");
    let (first, second) = (|i: u32| 10 + i % 7, |i: u32| 20 + i % 5);
    let mut csv = format!("{HEADER}\n");
    // Pass 1: every key at its first figures.
    for (key, i) in &keys {
        csv.push_str(&row(key, first(*i)));
    }
    // Pass 2: the first half again unchanged, the second half changed.
    for (key, i) in &keys {
        csv.push_str(&row(key, if *i < 1_000 { first(*i) } else { second(*i) }));
    }
    // Pass 3: the first half changed, the second half again unchanged.
    for (key, i) in &keys {
        csv.push_str(&row(key, second(*i)));
    }
    let report = import_ok(&app, &campaign, "", csv).await;
    assert_eq!(
        (
            report["rows"].as_u64(),
            report["imported"].as_u64(),
            report["unchanged"].as_u64()
        ),
        (Some(6_000), Some(4_000), Some(2_000)),
        "{report}"
    );
    let clicks: u64 = keys.iter().map(|(_, i)| u64::from(second(*i))).sum();
    let restated = summary(&app, &campaign).await;
    assert_eq!(
        (
            restated["records"].as_u64(),
            restated["metrics"]["clicks"].as_u64()
        ),
        (Some(2_000), Some(clicks)),
        "{restated}"
    );
    // The days' final figures again: nothing to restate.
    let again = import_ok(
        &app,
        &campaign,
        "",
        format!(
            "{HEADER}\n{}",
            &keys
                .iter()
                .map(|(key, i)| row(key, second(*i)))
                .collect::<String>()
        ),
    )
    .await;
    assert_eq!(again["unchanged"].as_u64(), Some(2_000), "{again}");
    assert_eq!(
        summary(&app, &campaign).await["metrics"]["clicks"].as_u64(),
        Some(clicks)
    );
}

#[tokio::test]
async fn bad_rows_are_reported_by_line_and_the_good_rows_land() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    let csv = format!(
        "{HEADER}\n\
         2024-01-01,google,100,10,1,1.50,3.00,0.1\n\
         2024-02-30,google,100,10,1,1.50,3.00,0.1\n\
         \n\
         2024-01-02,\"goo\ngle\",100,ten,1,1.50,3.00,0.1\n\
         2024-01-03,google,100,10,1,-1,3.00,0.1\n\
         2024-01-04,google,100,10\n\
         2024-01-05,google,,,,,,\n"
    );
    let report = import_ok(&app, &campaign, "", csv).await;
    let errors: Vec<(u64, Option<&str>)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["field"].as_str()))
        .collect();
    // Lines count physical lines: the blank line 4 is no row, and the quoted
    // source of the row on line 5 spans two lines (and, holding a line
    // break, is refused; so is its `clicks`, in the same message).
    assert_eq!(
        errors,
        vec![
            (3, Some("date")),
            (5, Some("source")),
            (7, Some("cost")),
            (8, None)
        ],
        "{report}"
    );
    assert!(report["errors"][1]["message"]
        .as_str()
        .unwrap()
        .contains("clicks must be a number"));
    assert_eq!(
        (
            report["rows"].as_u64(),
            report["imported"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some(6), Some(2), Some(4))
    );
    let summary = summary(&app, &campaign).await;
    assert_eq!(
        (summary["records"].as_u64(), summary["metrics"]["clicks"].as_u64()),
        (Some(2), Some(10))
    );

    // Whole-file refusals: nothing imported.
    for (csv, words) in [
        ("", "empty"),
        ("source,cost\ngoogle,1\n", "no `date` column"),
        ("date,source,Cost,cost\n", "appears twice"),
    ] {
        let body = assert_error(import(&app, &campaign, "", csv).await, 400, "").await;
        assert_eq!(body["field"], "file");
        assert!(body["message"].as_str().unwrap().contains(words), "{body}");
    }
    let currency = "date,source,cost,currency\n2024-01-09,google,1,EUR\n";
    let report = import_ok(&app, &campaign, "", currency).await;
    assert_eq!(report["errors"][0]["field"], "currency", "{report}");
    for query in ["?mode=Replace", "?mode=add&mode=add", "?mod=add"] {
        let body = assert_error(import(&app, &campaign, query, HEADER).await, 400, "").await;
        assert!(
            ["mode", "mod"].contains(&body["field"].as_str().unwrap()),
            "{body}"
        );
    }
    let response = app
        .request(
            Method::POST,
            &format!("/campaigns/{campaign}/analytics/import"),
            &app.key,
        )
        .multipart(Form::new().text("other", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(response, 400, "").await["field"], "file");
    let unknown = uuid::Uuid::now_v7();
    let response = import(&app, &unknown.to_string(), "", HEADER).await;
    assert_error(response, 404, "Campaign not found").await;
    assert_eq!(self::summary(&app, &campaign).await["records"], 2);
}

#[tokio::test]
async fn import_limits_answer_413_with_the_report_of_what_got_in() {
    let app = spawn_app_with(|config| {
        config.analytics_import_max_rows = 3;
        config.analytics_import_max_bytes = 2_000;
    })
    .await;
    let campaign = app.campaign().await;
    let (three, _) = file(3, 1);
    assert_eq!(import_ok(&app, &campaign, "", three).await["imported"], 3);
    let (five, _) = file(5, 1);
    let body = assert_error(import(&app, &campaign, "?mode=add", five).await, 413, "").await;
    assert!(
        body["message"].as_str().unwrap().contains("more than 3 rows"),
        "{body}"
    );
    assert_eq!(
        (
            body["report"]["rows"].as_u64(),
            body["report"]["imported"].as_u64()
        ),
        (Some(3), Some(3))
    );
    let (big, _) = file(40, 2);
    assert!(big.len() > 2_000);
    let body = assert_error(import(&app, &campaign, "", big).await, 413, "").await;
    assert!(body["message"].as_str().unwrap().contains("2000 bytes"), "{body}");
    // An oversized single record stops the import with a reason.
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    let huge = format!("date,source\n2024-01-01,\"{}\"\n", "x".repeat(1_200_000));
    let body = assert_error(import(&app, &campaign, "", huge).await, 400, "").await;
    assert!(
        body["message"].as_str().unwrap().contains("larger than"),
        "{body}"
    );
    assert_eq!(summary(&app, &campaign).await["records"], 0);
}

/// Every row of `table` in `schema`, as text, sorted.
async fn table_rows(db: &tokio_postgres::Client, schema: &str, table: &str) -> Vec<String> {
    let query = format!("SELECT t::text FROM {schema}.{table} t ORDER BY 1");
    let rows = db.query(&query, &[]).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaying_the_rollups_of_imported_data_equals_live() {
    let app = spawn_app().await;
    let campaign = app.campaign().await;
    let other = app.campaign().await;
    let (csv, _) = file(30, 4);
    import_ok(&app, &campaign, "", csv.clone()).await;
    import_ok(&app, &other, "?mode=add", csv.clone()).await;
    // Restated on top, a day appearing twice in one file, and adds on top.
    let again =
        format!("{HEADER}\n2024-01-02,source1,7,7,7,7.00,7.00,0.7\n2024-01-02,source1,8,8,8,8.00,8.00,0.8\n");
    import_ok(&app, &campaign, "", again.clone()).await;
    import_ok(&app, &campaign, "?mode=add", again).await;
    let db = app.db.connect().await;
    let day: i64 = db
        .query_one(
            "SELECT clicks::int8 FROM analytics_daily WHERE day = '2024-01-02' AND source = 'source1' AND campaign_id = $1::text::uuid",
            &[&campaign],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        day,
        8 + 7 + 8,
        "the file's last row restated the day, then two adds"
    );

    let pool = event_store::connect_pool(&app.db.url, 4).unwrap();
    let store =
        event_store::PgEventStore::new(pool.clone(), domain::upcast::ALL, event_store::Wakeups::new());
    let vault = app.config.lead_vault().unwrap();
    let projections = projector::all_projections(&vault);
    let analytics = projections.iter().find(|p| p.name() == "analytics").unwrap();
    // The import answered after the rollups included it; every shard's
    // checkpoint is at the head before comparing.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: bool = db
            .query_one(
                "SELECT bool_and((c.tx_id, c.position) >= (e.tx_id, e.position))
                 FROM projection_checkpoints c,
                      (SELECT tx_id, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1) e
                 WHERE c.name = 'analytics' OR starts_with(c.name, 'analytics:')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the rollups did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for batch_size in [7, 500] {
        let options = projector::ReplayOptions {
            batch_size,
            swap: false,
            shards: app.config.projection_shards,
        };
        let outcome = projector::replay(&store, &pool, analytics.as_ref(), &options, |_, _| {})
            .await
            .unwrap();
        for table in analytics.tables() {
            let live = table_rows(&db, "public", table).await;
            let rebuilt = table_rows(&db, &outcome.schema, table).await;
            assert!(!live.is_empty(), "{table} is empty");
            assert_eq!(
                live, rebuilt,
                "{table} differs from its replay at batch size {batch_size}"
            );
        }
    }
}
