//! The three analytics endpoints with the seed's bodies: tracking adds up, reads
//! filter by inclusive UTC day ranges and source, the summary derives its
//! metrics from exact sums, and the rollups are a replayable projection.

use domain::analytics::{AnalyticsEvent, AnalyticsRecorded, Metrics};
use domain::{DomainEvent, Money, ProjectSlug};
use event_store::{connect_pool, EventStore, ExpectedVersion, NewEvent, PgEventStore, StreamAppend, Wakeups};
use futures::future::join_all;
use marketing::startup::Role;
use marketing_e2e::{assert_error, spawn_app, spawn_app_with, RunningApp, TestApp, SEED_CREATE};
use reqwest::{Method, Response};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The seed's exact track body.
const SEED_TRACK: &str = r#"{ "date": "2024-06-15", "source": "facebook", "metrics": { "impressions": 10000, "clicks": 500, "conversions": 50, "cost": 250.00, "revenue": 5000.00, "custom_metrics": { "engagement_rate": 0.05 } } }"#;
/// The seed's exact read queries.
const SEED_GET_QUERY: &str = "?start_date=2024-06-01&end_date=2024-06-30&source=facebook";
const SEED_SUMMARY_QUERY: &str = "?start_date=2024-06-01&end_date=2024-06-30";

fn body(date: &str, source: &str, metrics: &str) -> String {
    format!(r#"{{"date": "{date}", "source": "{source}", "metrics": {metrics}}}"#)
}

/// A JSON number's exact text (`serde_json` keeps the digits), or `null`.
fn num(value: &Value) -> String {
    value.to_string()
}

async fn new_campaign(app: &TestApp) -> String {
    let created = app.create_campaign(&app.key, SEED_CREATE).await;
    created["id"].as_str().unwrap().to_owned()
}

fn analytics_path(campaign: &str) -> String {
    format!("/campaigns/{campaign}/analytics")
}

async fn post_track(app: &TestApp, key: &str, campaign: &str, body: &str) -> Response {
    app.json(Method::POST, &analytics_path(campaign), key, body)
        .send()
        .await
        .unwrap()
}

async fn track(app: &TestApp, campaign: &str, body: &str) -> Value {
    let response = post_track(app, &app.key, campaign, body).await;
    assert_eq!(response.status(), 201, "track failed");
    response.json().await.unwrap()
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path, &app.key).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

async fn rows(app: &TestApp, campaign: &str, query: &str) -> Vec<Value> {
    let page = get_json(app, &format!("{}{query}", analytics_path(campaign))).await;
    assert_eq!(page["has_more"], false, "{page}");
    page["data"].as_array().unwrap().clone()
}

async fn summary(app: &TestApp, campaign: &str, query: &str) -> Value {
    get_json(app, &format!("{}/summary{query}", analytics_path(campaign))).await
}

fn dates_and_sources(rows: &[Value]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["date"].as_str().unwrap().to_owned(),
                r["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn seed_track_returns_the_record_and_a_location_that_shows_it() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    let response = post_track(&app, &app.key, &campaign, SEED_TRACK).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!(
            "/v1/dev/marketing/campaigns/{campaign}/analytics?start_date=2024-06-15&end_date=2024-06-15&source=facebook"
        )
    );
    let raw = response.text().await.unwrap();
    assert!(
        raw.contains(r#""cost":250.00"#),
        "money comes back exactly: {raw}"
    );
    assert!(raw.contains(r#""revenue":5000.00"#), "{raw}");
    let record: Value = serde_json::from_str(&raw).unwrap();
    assert!(Uuid::parse_str(record["id"].as_str().unwrap()).is_ok());
    assert_eq!(record["campaign_id"], campaign.as_str());
    assert_eq!(record["date"], "2024-06-15");
    assert_eq!(record["source"], "facebook");
    assert_eq!(num(&record["metrics"]["impressions"]), "10000");
    assert_eq!(
        num(&record["metrics"]["custom_metrics"]["engagement_rate"]),
        "0.05"
    );
    assert!(record["recorded_at"].is_string());

    // Read-after-write: the Location shows the record at once.
    let page: Value = app
        .client
        .get(format!("{}{location}", app.app.address))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &page["data"][0];
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(row["date"], "2024-06-15");
    assert_eq!(row["period_end"], "2024-06-15");
    assert_eq!(num(&row["metrics"]["cost"]), "250.00");
    assert_eq!(row["records"], 1);
    assert_eq!(
        row["derived"],
        json!({"ctr": 0.05, "cpc": 0.5, "cpm": 25, "cpa": 5, "conversion_rate": 0.1, "roas": 20, "roi": 19})
    );
}

#[tokio::test]
async fn tracks_for_the_same_day_and_source_add_up() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    track(&app, &campaign, SEED_TRACK).await;
    track(&app, &campaign, SEED_TRACK).await;
    // Case and spacing do not make a new source.
    track(
        &app,
        &campaign,
        &body(
            "2024-06-15",
            " FaceBook ",
            r#"{"impressions": 1, "clicks": 2, "cost": 0.01, "custom_metrics": {"video_views": 7}}"#,
        ),
    )
    .await;
    track(
        &app,
        &campaign,
        &body("2024-06-16", "facebook", r#"{"clicks": 1}"#),
    )
    .await;
    track(&app, &campaign, &body("2024-06-15", "google", r#"{"clicks": 1}"#)).await;

    let rows = rows(&app, &campaign, SEED_GET_QUERY).await;
    assert_eq!(
        dates_and_sources(&rows),
        [
            ("2024-06-15".into(), "facebook".into()),
            ("2024-06-16".into(), "facebook".into())
        ]
    );
    let day = &rows[0];
    assert_eq!(day["records"], 3);
    let m = &day["metrics"];
    assert_eq!(num(&m["impressions"]), "20001");
    assert_eq!(num(&m["clicks"]), "1002");
    assert_eq!(num(&m["conversions"]), "100");
    assert_eq!(num(&m["cost"]), "500.01");
    assert_eq!(num(&m["revenue"]), "10000.00");
    assert_eq!(num(&m["custom_metrics"]["engagement_rate"]), "0.10");
    assert_eq!(num(&m["custom_metrics"]["video_views"]), "7");
    // Derived from the day's sums: 1002/20001, 500.01/1002, ...
    assert_eq!(num(&day["derived"]["ctr"]), "0.050097");
    assert_eq!(num(&day["derived"]["cpc"]), "0.499012");
    assert_eq!(num(&day["derived"]["cpm"]), "24.99925");
    assert_eq!(num(&day["derived"]["roas"]), "19.9996");
}

#[tokio::test]
async fn reads_filter_by_source_and_inclusive_utc_day_ranges() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    for date in [
        "2024-05-31",
        "2024-06-01",
        "2024-06-15",
        "2024-06-30",
        "2024-07-01",
    ] {
        for source in ["google", "facebook"] {
            track(
                &app,
                &campaign,
                &body(date, source, r#"{"clicks": 1, "cost": 1.25}"#),
            )
            .await;
        }
    }
    let june_facebook = rows(&app, &campaign, SEED_GET_QUERY).await;
    assert_eq!(
        dates_and_sources(&june_facebook),
        [
            ("2024-06-01".into(), "facebook".into()),
            ("2024-06-15".into(), "facebook".into()),
            ("2024-06-30".into(), "facebook".into()),
        ],
        "both ends of the range are included, nothing outside"
    );
    let june_all = rows(&app, &campaign, "?start_date=2024-06-01&end_date=2024-06-30").await;
    assert_eq!(june_all.len(), 6);
    assert_eq!(
        dates_and_sources(&june_all)[..2],
        [
            ("2024-06-01".into(), "facebook".into()),
            ("2024-06-01".into(), "google".into())
        ],
        "ordered by date, then source"
    );
    let one_day = rows(
        &app,
        &campaign,
        "?start_date=2024-06-30&end_date=2024-06-30&source=GOOGLE",
    )
    .await;
    assert_eq!(
        dates_and_sources(&one_day),
        [("2024-06-30".into(), "google".into())]
    );
    // Open ranges: no range is the whole history; one bound is open on the other side.
    assert_eq!(rows(&app, &campaign, "").await.len(), 10);
    assert_eq!(rows(&app, &campaign, "?start_date=2024-06-30").await.len(), 4);
    assert_eq!(rows(&app, &campaign, "?end_date=2024-06-01").await.len(), 4);
    assert!(rows(&app, &campaign, "?source=tiktok").await.is_empty());
    // The summary honours the same range and filter.
    let s = summary(&app, &campaign, SEED_SUMMARY_QUERY).await;
    assert_eq!(num(&s["metrics"]["cost"]), "7.50");
    assert_eq!(s["first_date"], "2024-06-01");
    assert_eq!(s["last_date"], "2024-06-30");
    let s = summary(&app, &campaign, "?source=facebook").await;
    assert_eq!(num(&s["metrics"]["cost"]), "6.25");
    assert_eq!(s["start_date"], Value::Null);
    assert_eq!(s["source"], "facebook");
}

#[tokio::test]
async fn summary_totals_every_derived_metric_budget_and_kpis() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    track(&app, &campaign, SEED_TRACK).await;
    track(
        &app,
        &campaign,
        &body(
            "2024-06-20",
            "google",
            r#"{"impressions": 20000, "clicks": 300, "conversions": 10, "cost": 150.00, "revenue": 600.00}"#,
        ),
    )
    .await;
    // Impressions but no clicks or spend: zero divisors at the source level.
    track(
        &app,
        &campaign,
        &body("2024-06-25", "tiktok", r#"{"impressions": 5000}"#),
    )
    .await;
    // Outside the range: must not count.
    track(
        &app,
        &campaign,
        &body(
            "2024-07-01",
            "facebook",
            r#"{"impressions": 99999, "cost": 999.99}"#,
        ),
    )
    .await;

    let response = app
        .get(
            &format!("{}/summary{SEED_SUMMARY_QUERY}", analytics_path(&campaign)),
            &app.key,
        )
        .await;
    assert_eq!(response.status(), 200);
    let raw = response.text().await.unwrap();
    let s: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(s["campaign_id"], campaign.as_str());
    assert_eq!(
        (s["start_date"].clone(), s["end_date"].clone()),
        (json!("2024-06-01"), json!("2024-06-30"))
    );
    assert_eq!(s["records"], 3);
    let m = &s["metrics"];
    assert_eq!(
        [
            &m["impressions"],
            &m["clicks"],
            &m["conversions"],
            &m["cost"],
            &m["revenue"]
        ]
        .map(num),
        ["35000", "800", "60", "400.00", "5600.00"]
    );
    assert_eq!(num(&m["custom_metrics"]["engagement_rate"]), "0.05");
    // Every derived metric from the sums (never an average of per-source ratios):
    // 800/35000, 400/800, 1000*400/35000, 400/60, 60/800, 5600/400, 5200/400.
    let d = &s["derived"];
    assert_eq!(
        [
            &d["ctr"],
            &d["cpc"],
            &d["cpm"],
            &d["cpa"],
            &d["conversion_rate"],
            &d["roas"],
            &d["roi"]
        ]
        .map(num),
        ["0.022857", "0.5", "11.428571", "6.666667", "0.075", "14", "13"]
    );

    let by_source = s["by_source"].as_array().unwrap();
    let names: Vec<&str> = by_source.iter().map(|b| b["source"].as_str().unwrap()).collect();
    assert_eq!(names, ["facebook", "google", "tiktok"]);
    assert_eq!(num(&by_source[1]["metrics"]["cost"]), "150.00");
    assert_eq!(
        num(&by_source[0]["metrics"]["custom_metrics"]["engagement_rate"]),
        "0.05"
    );
    assert_eq!(by_source[1]["metrics"]["custom_metrics"], json!({}));
    assert_eq!(num(&by_source[1]["derived"]["roi"]), "3");
    let tiktok = &by_source[2]["derived"];
    assert_eq!(
        *tiktok,
        json!({"ctr": 0, "cpc": null, "cpm": 0, "cpa": null, "conversion_rate": null, "roas": null, "roi": null})
    );

    assert_eq!(num(&s["budget"]["total_budget"]), "10000.00");
    assert_eq!(num(&s["budget"]["spent"]), "400.00");
    assert_eq!(num(&s["budget"]["remaining"]), "9600.00");
    assert_eq!(num(&s["budget"]["spent_ratio"]), "0.04");

    // The seed campaign's KPI `Conversions` and goal KPI `conversions` both match.
    let kpis = s["kpis"].as_array().unwrap();
    assert_eq!(kpis.len(), 2);
    assert_eq!(kpis[0]["name"], "Conversions");
    assert_eq!(kpis[0]["defined_in"], "kpis");
    assert_eq!(kpis[1]["defined_in"], "goals.kpis");
    for kpi in kpis {
        assert_eq!(kpi["metric"], "conversions");
        assert_eq!(num(&kpi["target"]), "1000");
        assert_eq!(num(&kpi["actual"]), "60");
        assert_eq!(num(&kpi["progress"]), "0.06");
    }
    assert!(!raw.contains("NaN") && !raw.contains("inf"), "{raw}");
}

#[tokio::test]
async fn derived_metrics_are_null_when_their_divisor_is_zero() {
    let app = spawn_app().await;
    let created = app
        .create_campaign(
            &app.key,
            r#"{"name": "No budget", "kpis": [{"name": "Brand lift", "target": 5}, {"name": "revenue", "target": 0}]}"#,
        )
        .await;
    let campaign = created["id"].as_str().unwrap();
    // No data at all: zeros and nulls, not errors.
    let empty = summary(&app, campaign, "").await;
    assert_eq!(empty["records"], 0);
    assert_eq!(num(&empty["metrics"]["impressions"]), "0");
    assert_eq!(empty["metrics"]["custom_metrics"], json!({}));
    assert_eq!(empty["first_date"], Value::Null);
    assert!(empty["by_source"].as_array().unwrap().is_empty());
    for metric in ["ctr", "cpc", "cpm", "cpa", "conversion_rate", "roas", "roi"] {
        assert_eq!(empty["derived"][metric], Value::Null, "{metric}");
    }
    assert_eq!(
        empty["budget"],
        json!({"currency": "USD", "total_budget": null, "spent": 0, "remaining": null, "spent_ratio": null})
    );
    assert_eq!(empty["kpis"][0]["metric"], Value::Null);
    assert_eq!(empty["kpis"][0]["progress"], Value::Null);
    assert_eq!(empty["kpis"][1]["metric"], "revenue");
    assert_eq!(empty["kpis"][1]["progress"], Value::Null, "target 0");

    // Revenue with no cost and no clicks: ROAS/ROI/CPC/CPA/conversion rate stay null.
    track(
        &app,
        campaign,
        &body(
            "2024-06-15",
            "email",
            r#"{"impressions": 10, "conversions": 2, "revenue": 30.00}"#,
        ),
    )
    .await;
    let s = summary(&app, campaign, "").await;
    assert_eq!(
        s["derived"],
        json!({"ctr": 0, "cpc": null, "cpm": 0, "cpa": 0, "conversion_rate": null, "roas": null, "roi": null})
    );
}

#[tokio::test]
async fn two_hundred_concurrent_tracks_add_up_exactly() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    let sources = ["facebook", "google", "tiktok", "email"];
    let requests = (1..=200u32).map(|i| {
        let body = body(
            "2024-06-15",
            sources[i as usize % 4],
            &format!(
                r#"{{"impressions": {i}, "clicks": 1, "cost": {}.{:02}, "revenue": 0.01}}"#,
                i / 100,
                i % 100
            ),
        );
        let app = &app;
        let campaign = &campaign;
        async move { post_track(app, &app.key, campaign, &body).await.status().as_u16() }
    });
    let statuses = join_all(requests).await;
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");

    let s = summary(&app, &campaign, "").await;
    assert_eq!(s["records"], 200);
    assert_eq!(num(&s["metrics"]["impressions"]), "20100"); // 1 + 2 + ... + 200
    assert_eq!(num(&s["metrics"]["clicks"]), "200");
    assert_eq!(num(&s["metrics"]["cost"]), "201.00"); // 0.01 + ... + 2.00
    assert_eq!(num(&s["metrics"]["revenue"]), "2.00");
    let rows = rows(&app, &campaign, "").await;
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["records"] == 50));

    // One stream per record: nothing for concurrent tracks to contend on.
    let db = app.db.connect().await;
    let streams: i64 = db
        .query_one(
            "SELECT count(DISTINCT stream_id) FROM events WHERE event_type = 'AnalyticsRecorded'
               AND data->>'campaign_id' = $1",
            &[&campaign],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(streams, 200);
}

#[tokio::test]
async fn idempotent_retries_count_once_even_after_a_lost_response() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    let post = |key: &'static str| {
        app.json(Method::POST, &analytics_path(&campaign), &app.key, SEED_TRACK)
            .header("idempotency-key", key)
            .send()
    };
    let first = post("track-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let first_body: Value = first.json().await.unwrap();
    for _ in 0..3 {
        let again = post("track-1").await.unwrap();
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap(), first_body);
    }
    assert_eq!(summary(&app, &campaign, "").await["records"], 1);

    // A request whose response was never stored (the process died after the
    // append): its retry runs again, but its ids derive from the key, so the
    // append is recognised as done and nothing is counted twice.
    let db = app.db.connect().await;
    db.execute("DELETE FROM idempotency_keys WHERE key = 'track-1'", &[])
        .await
        .unwrap();
    let retried = post("track-1").await.unwrap();
    assert_eq!(retried.status(), 201);
    assert!(retried.headers().get("idempotent-replayed").is_none());
    assert_eq!(retried.json::<Value>().await.unwrap(), first_body);
    let s = summary(&app, &campaign, "").await;
    assert_eq!(s["records"], 1);
    assert_eq!(num(&s["metrics"]["cost"]), "250.00");

    // Another key is another record; the same key with another body is refused.
    assert_eq!(post("track-2").await.unwrap().status(), 201);
    assert_eq!(summary(&app, &campaign, "").await["records"], 2);
    let conflict = app
        .json(
            Method::POST,
            &analytics_path(&campaign),
            &app.key,
            &body("2024-06-15", "facebook", "{}"),
        )
        .header("idempotency-key", "track-1")
        .send()
        .await
        .unwrap();
    assert_error(
        conflict,
        409,
        "Idempotency-Key was already used with a different request",
    )
    .await;
}

#[tokio::test]
async fn invalid_tracks_are_400s_naming_the_field_and_write_nothing() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    let m = |metrics: &str| body("2024-06-15", "facebook", metrics);
    let cases = [
        (r#"{"date": "2024-06-15", "metrics": {}}"#.to_owned(), "source"),
        (
            r#"{"date": 20240615, "source": "facebook", "metrics": {}}"#.to_owned(),
            "date",
        ),
        (body("15/06/2024", "facebook", "{}"), "date"),
        (body("2024-02-30", "facebook", "{}"), "date"),
        (body("2024-06-15", "", "{}"), "source"),
        (m(r#"{"impressions": -5}"#), "metrics.impressions"),
        (m(r#"{"clicks": 2.5}"#), "metrics.clicks"),
        (m(r#"{"conversions": "50"}"#), "metrics.conversions"),
        (m(r#"{"cost": -250.00}"#), "metrics.cost"),
        (m(r#"{"revenue": "5000.00"}"#), "metrics.revenue"),
        (m(r#"{"cost": 0.0000001}"#), "metrics.cost"),
        (
            m(r#"{"custom_metrics": {"engagement_rate": "high"}}"#),
            "metrics.custom_metrics.engagement_rate",
        ),
        (
            m(r#"{"custom_metrics": {"engagement_rate": -0.05}}"#),
            "metrics.custom_metrics.engagement_rate",
        ),
        (m(r#"{"likes": 3}"#), "metrics.likes"),
        ("[]".to_owned(), "body"),
        ("{".to_owned(), "body"),
    ];
    for (bad, field) in &cases {
        let response = post_track(&app, &app.key, &campaign, bad).await;
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], *field, "body {bad}: {error}");
        assert!(error["message"].as_str().unwrap().len() > 5, "{error}");
    }
    // Clicks above impressions are not nonsense (view-through, other counting).
    let ok = post_track(
        &app,
        &app.key,
        &campaign,
        &m(r#"{"impressions": 1, "clicks": 3}"#),
    )
    .await;
    assert_eq!(ok.status(), 201);
    let s = summary(&app, &campaign, "").await;
    assert_eq!(s["records"], 1, "no invalid request was recorded");
    // Not JSON at all.
    let text = app
        .request(Method::POST, &analytics_path(&campaign), &app.key)
        .header("content-type", "text/plain")
        .body(SEED_TRACK)
        .send()
        .await
        .unwrap();
    assert_error(text, 415, "Content-Type must be application/json").await;
}

#[tokio::test]
async fn invalid_read_parameters_are_400s_naming_the_parameter() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    let path = analytics_path(&campaign);
    let cases = [
        ("?start_date=2024-06-30&end_date=2024-06-01", "end_date"),
        ("?start_date=2024-6-1", "start_date"),
        ("?end_date=2024-06-31", "end_date"),
        ("?start_date=", "start_date"),
        ("?source=", "source"),
        ("?start=2024-06-01", "start"),
        ("?source=a&source=b", "source"),
    ];
    for (query, field) in cases {
        for endpoint in [path.clone(), format!("{path}/summary")] {
            let response = app.get(&format!("{endpoint}{query}"), &app.key).await;
            let error = assert_error(response, 400, "").await;
            assert_eq!(error["field"], field, "{endpoint}{query}: {error}");
        }
    }
    for (query, field) in [
        ("?granularity=year", "granularity"),
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?cursor=garbage", "cursor"),
    ] {
        let response = app.get(&format!("{path}{query}"), &app.key).await;
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], field, "{query}: {error}");
    }
    // Paging parameters belong to the list, not the summary.
    let response = app.get(&format!("{path}/summary?limit=5"), &app.key).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "limit");
}

#[tokio::test]
async fn other_projects_unknown_and_deleted_campaigns_are_404() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    track(&app, &campaign, SEED_TRACK).await;
    let globex = app.new_key("globex").await;
    let unknown = Uuid::new_v4().to_string();
    let probes = [
        (globex.as_str(), campaign.as_str()),
        (app.key.as_str(), unknown.as_str()),
        (app.key.as_str(), "not-a-uuid"),
    ];
    for (key, id) in probes {
        let path = analytics_path(id);
        let posted = post_track(&app, key, id, SEED_TRACK).await;
        assert_error(posted, 404, "Campaign not found").await;
        // Even a nonsensical body: another project's campaign is simply not there.
        let posted = post_track(&app, key, id, &body("x", "", "{}")).await;
        assert_error(posted, 404, "Campaign not found").await;
        assert_error(app.get(&path, key).await, 404, "Campaign not found").await;
        assert_error(
            app.get(&format!("{path}/summary"), key).await,
            404,
            "Campaign not found",
        )
        .await;
    }
    // The other project's attempts changed nothing.
    assert_eq!(summary(&app, &campaign, "").await["records"], 1);

    // Deleting the campaign makes its analytics 404 and removes its rollups.
    let deleted = app
        .request(Method::DELETE, &format!("/campaigns/{campaign}"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let path = analytics_path(&campaign);
    assert_error(app.get(&path, &app.key).await, 404, "Campaign not found").await;
    assert_error(
        app.get(&format!("{path}/summary"), &app.key).await,
        404,
        "Campaign not found",
    )
    .await;
    assert_error(
        post_track(&app, &app.key, &campaign, SEED_TRACK).await,
        404,
        "Campaign not found",
    )
    .await;
    let db = app.db.connect().await;
    let left: i64 = db
        .query_one(
            "SELECT count(*) FROM analytics_daily WHERE campaign_id = $1",
            &[&Uuid::parse_str(&campaign).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn weekly_and_monthly_rows_follow_iso_weeks_and_calendar_months() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    // Sunday 2024-06-09 ends one ISO week; Monday 2024-06-10 starts the next.
    for (date, clicks) in [
        ("2024-06-09", 1),
        ("2024-06-10", 10),
        ("2024-06-16", 100),
        ("2024-06-30", 1000),
        ("2024-07-01", 10000),
    ] {
        track(
            &app,
            &campaign,
            &body(
                date,
                "facebook",
                &format!(
                    r#"{{"clicks": {clicks}, "cost": 1.00, "custom_metrics": {{"video_views": {clicks}}}}}"#
                ),
            ),
        )
        .await;
    }
    let weeks = rows(&app, &campaign, "?granularity=week").await;
    let summarised: Vec<(&str, &str, String)> = weeks
        .iter()
        .map(|w| {
            (
                w["date"].as_str().unwrap(),
                w["period_end"].as_str().unwrap(),
                num(&w["metrics"]["clicks"]),
            )
        })
        .collect();
    assert_eq!(
        summarised,
        [
            ("2024-06-03", "2024-06-09", "1".to_owned()),
            ("2024-06-10", "2024-06-16", "110".to_owned()),
            ("2024-06-24", "2024-06-30", "1000".to_owned()),
            ("2024-07-01", "2024-07-07", "10000".to_owned()),
        ]
    );
    assert_eq!(num(&weeks[1]["derived"]["cpc"]), "0.018182"); // 2.00 / 110
    assert_eq!(num(&weeks[1]["metrics"]["custom_metrics"]["video_views"]), "110");
    assert_eq!(weeks[1]["records"], 2);
    let months = rows(&app, &campaign, "?granularity=month&start_date=2024-06-10").await;
    assert_eq!(months.len(), 2);
    assert_eq!(months[0]["date"], "2024-06-01");
    assert_eq!(months[0]["period_end"], "2024-06-30");
    assert_eq!(
        num(&months[0]["metrics"]["clicks"]),
        "1110",
        "only days in range count"
    );
    assert_eq!(months[0]["records"], 3);
    assert_eq!(
        num(&months[0]["metrics"]["custom_metrics"]["video_views"]),
        "1110"
    );
    assert_eq!(num(&months[1]["metrics"]["clicks"]), "10000");
}

#[tokio::test]
async fn rows_are_keyset_paginated() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    // 3 sources x 30 days, written straight into the log in one append for speed;
    // the projector picks them up like any other events.
    let store = PgEventStore::new(
        connect_pool(&app.db.url, 2).unwrap(),
        domain::upcast::ALL,
        Wakeups::new(),
    );
    let mut appends = Vec::new();
    for day in 1..=30 {
        for source in ["a", "b", "c"] {
            appends.push(analytics_append(
                &campaign,
                &format!("2024-06-{day:02}"),
                source,
                1,
            ));
        }
    }
    store.append_many(appends).await.unwrap();
    wait_for_records(&app, &campaign, 90).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=40&cursor={c}"),
            None => "?limit=40".to_owned(),
        };
        let page = get_json(&app, &format!("{}{query}", analytics_path(&campaign))).await;
        pages += 1;
        seen.extend(dates_and_sources(page["data"].as_array().unwrap()));
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(page["has_more"], true);
                cursor = Some(next.to_owned());
            }
            None => {
                assert_eq!(page["has_more"], false);
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    let all = rows(&app, &campaign, "?limit=500").await;
    assert_eq!(seen, dates_and_sources(&all));
    assert_eq!(seen.len(), 90);
    assert_eq!(seen[0], ("2024-06-01".into(), "a".into()));
    assert_eq!(seen[89], ("2024-06-30".into(), "c".into()));
    // Default page size is 50.
    let first = get_json(&app, &analytics_path(&campaign)).await;
    assert_eq!(first["data"].as_array().unwrap().len(), 50);
}

/// One `AnalyticsRecorded` event of 0.01 cost per `cents` on its own stream.
fn analytics_append(campaign: &str, date: &str, source: &str, cents: i64) -> StreamAppend {
    let record_id = Uuid::now_v7();
    let event = AnalyticsEvent::Recorded(AnalyticsRecorded {
        record_id,
        campaign_id: Uuid::parse_str(campaign).unwrap(),
        project: ProjectSlug::parse("acme").unwrap(),
        date: date.parse().unwrap(),
        source: source.to_owned(),
        // As events stored before currencies were: the campaign's (USD).
        currency: None,
        metrics: Metrics {
            clicks: 1,
            cost: Money(Decimal::new(cents, 2)),
            ..Metrics::default()
        },
    });
    StreamAppend {
        stream_id: domain::analytics::stream_id(record_id),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            data: event.to_data(),
            metadata: json!({ "project": "acme" }),
            recorded_at: event_store::now(),
        }],
    }
}

/// Events appended behind the API's back are not waited for: poll until the
/// projector has them.
async fn wait_for_records(app: &TestApp, campaign: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = summary(app, campaign, "").await;
        if s["records"].as_i64() == Some(expected) {
            return;
        }
        assert!(Instant::now() < deadline, "projector stuck at {}", s["records"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tens of thousands of cents-valued records through the whole path (log,
/// projector, API) sum to the exact total. (A million go through the projection
/// itself in the projector's tests.)
#[tokio::test]
async fn many_cents_records_through_the_log_sum_exactly() {
    const RECORDS: i64 = 20_000;
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    let store = PgEventStore::new(
        connect_pool(&app.db.url, 2).unwrap(),
        domain::upcast::ALL,
        Wakeups::new(),
    );
    let mut expected_cents = 0i64;
    let mut appends = Vec::new();
    for i in 0..RECORDS {
        let cents = 1 + (i * 7919) % 99_999;
        expected_cents += cents;
        let day = format!("2024-06-{:02}", 1 + i % 30);
        appends.push(analytics_append(
            &campaign,
            &day,
            ["x", "y", "z"][(i % 3) as usize],
            cents,
        ));
        if appends.len() == 5_000 || i == RECORDS - 1 {
            store.append_many(std::mem::take(&mut appends)).await.unwrap();
        }
    }
    wait_for_records(&app, &campaign, RECORDS).await;
    let s = summary(&app, &campaign, "").await;
    assert_eq!(
        num(&s["metrics"]["cost"]),
        Decimal::new(expected_cents, 2).to_string()
    );
    assert_eq!(num(&s["metrics"]["clicks"]), RECORDS.to_string());
    let by_source: Decimal = s["by_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| num(&b["metrics"]["cost"]).parse::<Decimal>().unwrap())
        .sum();
    assert_eq!(by_source, Decimal::new(expected_cents, 2));
}

/// The rows read for `query` (`""` or `?...`), in one page of up to 500.
fn all_rows_path(campaign: &str, query: &str) -> String {
    let separator = if query.is_empty() { '?' } else { '&' };
    format!("{}{query}{separator}limit=500", analytics_path(campaign))
}

/// What the rollup tables hold, in key order, as text.
async fn dump_rollups(db: &tokio_postgres::Client) -> Vec<String> {
    let mut dump = Vec::new();
    for query in [
        "SELECT concat_ws('|', campaign_id, day, source, impressions, clicks, conversions, cost,
                          revenue, records)
         FROM analytics_daily ORDER BY campaign_id, day, source",
        "SELECT concat_ws('|', 'custom', campaign_id, day, source, name, value, records,
                          w_impressions, w_clicks, w_conversions, b_impressions, b_clicks,
                          b_conversions, last)
         FROM analytics_daily_custom ORDER BY campaign_id, day, source, name",
        "SELECT concat_ws('|', 'deleted', campaign_id) FROM campaign_tombstones
         WHERE projection = 'analytics'",
    ] {
        let rows = db.query(query, &[]).await.unwrap();
        dump.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    dump
}

#[tokio::test]
async fn replaying_the_rollup_projection_gives_identical_results() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    let doomed = new_campaign(&app).await;
    for (i, date) in [
        "2024-06-01",
        "2024-06-15",
        "2024-06-15",
        "2024-06-30",
        "2024-07-02",
    ]
    .into_iter()
    .enumerate()
    {
        for source in ["facebook", "google"] {
            let metrics = format!(
                r#"{{"impressions": {}, "clicks": {}, "conversions": {i}, "cost": {i}.3{i}, "revenue": 10.05, "custom_metrics": {{"engagement_rate": 0.0{i}}}}}"#,
                1000 * (i + 1),
                17 * (i + 1)
            );
            track(&app, &campaign, &body(date, source, &metrics)).await;
            track(&app, &doomed, &body(date, source, &metrics)).await;
        }
    }
    // Restatements: one replaces a tracked day (and drops its custom metric),
    // one adds a day, and a record lands on top of a restated day.
    for c in [&campaign, &doomed] {
        restate(&app, c, "2024-06-15", "google", r#"{"clicks": 3, "cost": 1.10}"#).await;
        restate(
            &app,
            c,
            "2024-07-09",
            "facebook",
            r#"{"clicks": 4, "custom_metrics": {"engagement_rate": 0.5}}"#,
        )
        .await;
        track(&app, c, &body("2024-07-09", "facebook", r#"{"clicks": 1}"#)).await;
    }
    let deleted = app
        .request(Method::DELETE, &format!("/campaigns/{doomed}"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let reads = ["", "?granularity=week", "?granularity=month&source=google"];
    let mut before = Vec::new();
    for query in reads {
        before.push(get_json(&app, &all_rows_path(&campaign, query)).await);
    }
    before.push(summary(&app, &campaign, "").await);
    before.push(summary(&app, &campaign, SEED_SUMMARY_QUERY).await);
    let db = app.db.connect().await;
    let table_before = dump_rollups(&db).await;
    // 4 days x 2 sources and the restated new day; custom metrics on all but
    // the restated 2024-06-15 google; the deleted campaign's tombstone (but
    // none of its rows).
    assert_eq!(table_before.len(), 9 + 8 + 1, "{table_before:#?}");

    // Rebuild from scratch: stop the service, empty the projection's tables,
    // rewind its checkpoint, start again.
    let TestApp {
        app: running,
        db: database,
        client,
        key,
        media_dir,
        config,
    } = app;
    running.stop().await;
    db.batch_execute(
        "TRUNCATE analytics_daily, analytics_daily_custom;
         DELETE FROM campaign_tombstones WHERE projection = 'analytics';
         UPDATE projection_checkpoints SET tx_id = 0, position = 0
         WHERE name = 'analytics' OR starts_with(name, 'analytics:')",
    )
    .await
    .unwrap();
    assert!(dump_rollups(&db).await.is_empty());
    let app = TestApp {
        app: RunningApp::start_with(config.clone(), Role::Serve).await,
        db: database,
        client,
        key,
        media_dir,
        config,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught_up: bool = db
            .query_one(
                "SELECT bool_and((c.tx_id, c.position) >= (e.tx_id, e.position))
                 FROM projection_checkpoints c,
                      (SELECT tx_id, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1) e
                 WHERE c.name = 'analytics' OR starts_with(c.name, 'analytics:')",
                &[],
            )
            .await
            .map(|row| row.get(0))
            .unwrap_or(false);
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "replay did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dump_rollups(&db).await, table_before);
    let mut after = Vec::new();
    for query in reads {
        after.push(get_json(&app, &all_rows_path(&campaign, query)).await);
    }
    after.push(summary(&app, &campaign, "").await);
    after.push(summary(&app, &campaign, SEED_SUMMARY_QUERY).await);
    assert_eq!(after, before);
    assert_error(
        app.get(&analytics_path(&doomed), &app.key).await,
        404,
        "Campaign not found",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Restatement: `PUT .../analytics/{date}/{source}` replaces the day and source.

async fn put_day(app: &TestApp, campaign: &str, date: &str, source: &str, metrics: &str) -> Response {
    let path = format!("{}/{date}/{source}", analytics_path(campaign));
    app.json(
        Method::PUT,
        &path,
        &app.key,
        &format!(r#"{{"metrics": {metrics}}}"#),
    )
    .send()
    .await
    .unwrap()
}

async fn restate(app: &TestApp, campaign: &str, date: &str, source: &str, metrics: &str) -> Value {
    let response = put_day(app, campaign, date, source, metrics).await;
    assert_eq!(response.status(), 200, "PUT {date}/{source}");
    response.json().await.unwrap()
}

/// The campaign's analytics events in the audit history, by type.
async fn analytics_history(app: &TestApp, campaign: &str) -> Vec<String> {
    let page = get_json(app, &format!("/campaigns/{campaign}/history?limit=500")).await;
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .filter(|t| t.starts_with("Analytics"))
        .collect()
}

/// Day `i` of the week before 2024-06-08, as a sync job re-sends it.
fn synced_day(i: u32, source: &str, late_conversions: u32) -> (String, String) {
    let date = format!("2024-06-{:02}", 1 + i);
    let metrics = format!(
        r#"{{"impressions": {}, "clicks": {}, "conversions": {}, "cost": {}.25, "revenue": 99.90, "custom_metrics": {{"video_views": {}}}}}"#,
        1000 + i,
        50 + i,
        5 + i + late_conversions,
        10 + i,
        3 * i + source.len() as u32
    );
    (date, metrics)
}

#[tokio::test]
async fn resending_the_last_seven_days_by_put_three_times_counts_once() {
    let app = spawn_app().await;
    let once = new_campaign(&app).await;
    let thrice = new_campaign(&app).await;
    for (campaign, sends) in [(&once, 1), (&thrice, 3)] {
        for send in 0..sends {
            for source in ["google", "meta"] {
                for i in 0..7 {
                    let (date, metrics) = synced_day(i, source, 0);
                    let day = restate(&app, campaign, &date, source, &metrics).await;
                    // The same figures again change nothing: same version.
                    assert_eq!(day["version"], 0, "send {send}: {day}");
                    assert_eq!(day["date"], date.as_str());
                    assert_eq!(day["source"], source);
                }
            }
        }
    }
    let mut one = summary(&app, &once, "").await;
    let mut three = summary(&app, &thrice, "").await;
    let clicks: u32 = (0..7).map(|i| 50 + i).sum::<u32>() * 2;
    assert_eq!(num(&three["metrics"]["clicks"]), clicks.to_string());
    for s in [&mut one, &mut three] {
        s["campaign_id"] = Value::Null;
    }
    assert_eq!(three, one, "three sends total what one send does");
    assert_eq!(three["records"], 14);
    // Re-sends appended nothing: one event per day and source.
    assert_eq!(analytics_history(&app, &thrice).await.len(), 14);
    assert_eq!(
        rows(&app, &once, "").await,
        rows(&app, &thrice, "").await,
        "every row agrees too"
    );

    // The platform restates the week with late conversions: the days now
    // hold the new figures, not old + new.
    for source in ["google", "meta"] {
        for i in 0..7 {
            let (date, metrics) = synced_day(i, source, 2);
            let day = restate(&app, &thrice, &date, source, &metrics).await;
            assert_eq!(day["version"], 1, "{day}");
        }
    }
    let restated = summary(&app, &thrice, "").await;
    let conversions: u32 = (0..7).map(|i| 5 + i).sum::<u32>() * 2;
    assert_eq!(
        num(&restated["metrics"]["conversions"]),
        (conversions + 7 * 2 * 2).to_string()
    );
    assert_eq!(restated["metrics"]["clicks"], one["metrics"]["clicks"]);
    assert_eq!(restated["records"], 14);
    assert_eq!(analytics_history(&app, &thrice).await.len(), 28);
}

#[tokio::test]
async fn post_and_put_on_one_day_follow_the_log_order() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    let day = "?start_date=2024-06-15&end_date=2024-06-15";
    let post = |clicks: u32, rate: &str| {
        body(
            "2024-06-15",
            "Google",
            &format!(
                r#"{{"clicks": {clicks}, "cost": 1.00, "custom_metrics": {{"engagement_rate": {rate}}}}}"#
            ),
        )
    };
    // POSTs add.
    track(&app, &campaign, &post(10, "0.1")).await;
    track(&app, &campaign, &post(20, "0.2")).await;
    let row = &rows(&app, &campaign, day).await[0];
    assert_eq!(
        (num(&row["metrics"]["clicks"]), row["records"].clone()),
        ("30".into(), json!(2))
    );
    // A PUT supersedes them, custom metrics included.
    let put = restate(
        &app,
        &campaign,
        "2024-06-15",
        "GOOGLE",
        r#"{"clicks": 100, "cost": 5.50}"#,
    )
    .await;
    assert_eq!(put["source"], "google");
    assert_eq!(put["version"], 0);
    let row = &rows(&app, &campaign, day).await[0];
    assert_eq!(num(&row["metrics"]["clicks"]), "100");
    assert_eq!(num(&row["metrics"]["cost"]), "5.50");
    assert_eq!(row["metrics"]["custom_metrics"], json!({}));
    assert_eq!(row["records"], 1);
    // A POST after it adds on top.
    track(&app, &campaign, &post(1, "0.3")).await;
    let row = &rows(&app, &campaign, day).await[0];
    assert_eq!(num(&row["metrics"]["clicks"]), "101");
    assert_eq!(num(&row["metrics"]["cost"]), "6.50");
    assert_eq!(num(&row["metrics"]["custom_metrics"]["engagement_rate"]), "0.3");
    assert_eq!(row["records"], 2);
    // The same PUT again is a no-op: no event, and the later POST stays.
    let again = restate(
        &app,
        &campaign,
        "2024-06-15",
        "google",
        r#"{"cost": 5.5, "clicks": 100}"#,
    )
    .await;
    assert_eq!(again["version"], 0);
    assert_eq!(again["restated_at"], put["restated_at"]);
    assert_eq!(
        num(&rows(&app, &campaign, day).await[0]["metrics"]["clicks"]),
        "101"
    );
    // Different figures supersede everything again.
    let changed = restate(&app, &campaign, "2024-06-15", "google", r#"{"clicks": 7}"#).await;
    assert_eq!(changed["version"], 1);
    let row = &rows(&app, &campaign, day).await[0];
    assert_eq!(num(&row["metrics"]["clicks"]), "7");
    assert_eq!(num(&row["metrics"]["cost"]), "0");
    assert_eq!(row["records"], 1);
    // Other days and sources are untouched by it.
    track(&app, &campaign, &body("2024-06-15", "meta", r#"{"clicks": 2}"#)).await;
    restate(&app, &campaign, "2024-06-16", "google", r#"{"clicks": 3}"#).await;
    let all = rows(&app, &campaign, "").await;
    assert_eq!(
        all.iter()
            .map(|r| num(&r["metrics"]["clicks"]))
            .collect::<Vec<_>>(),
        ["7", "2", "3"]
    );
    // The history shows every POST and every PUT that changed something.
    assert_eq!(
        analytics_history(&app, &campaign).await,
        [
            "AnalyticsRecorded",
            "AnalyticsRecorded",
            "AnalyticsRestated",
            "AnalyticsRecorded",
            "AnalyticsRestated",
            "AnalyticsRecorded",
            "AnalyticsRestated",
        ]
    );
}

#[tokio::test]
async fn invalid_restatements_are_400s_naming_the_field_and_unknown_campaigns_404() {
    let app = spawn_app().await;
    let campaign = new_campaign(&app).await;
    for (date, source, metrics, field) in [
        ("2024-02-30", "google", "{}", "date"),
        ("20240615", "google", "{}", "date"),
        ("1999-12-31", "google", "{}", "date"),
        ("2024-06-15", "%20", "{}", "source"),
        ("2024-06-15", "%07x", "{}", "source"),
        ("2024-06-15", "google", r#"{"clicks": -1}"#, "metrics.clicks"),
        ("2024-06-15", "google", r#"{"cost": "1"}"#, "metrics.cost"),
        ("2024-06-15", "google", r#"{"views": 1}"#, "metrics.views"),
    ] {
        let response = put_day(&app, &campaign, date, source, metrics).await;
        assert_eq!(response.status(), 400, "{date}/{source} {metrics}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["field"], field, "{error}");
    }
    let path = format!("{}/2024-06-15/google", analytics_path(&campaign));
    let response = app
        .json(
            Method::PUT,
            &path,
            &app.key,
            r#"{"metrics": {}, "date": "2024-06-15"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        analytics_history(&app, &campaign).await.is_empty(),
        "nothing was written"
    );
    for unknown in [Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        assert_error(
            put_day(&app, &unknown, "2024-02-30", "google", "{}").await,
            404,
            "Campaign not found",
        )
        .await;
    }
}

// ---------------------------------------------------------------------------
// Currency: a campaign's money is in its currency, and so is its analytics.

/// A `400` naming `field`, and its message.
async fn refused(response: Response, field: &str) -> String {
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["field"], field, "{error}");
    error["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn currency_mismatches_are_refused_and_every_money_figure_states_its_currency() {
    let app = spawn_app().await;
    let usd = new_campaign(&app).await;
    let created = app
        .create_campaign(
            &app.key,
            r#"{"name": "EU", "currency": "EUR", "total_budget": 100.00}"#,
        )
        .await;
    assert_eq!(created["currency"], "EUR");
    let eur = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        get_json(&app, &format!("/campaigns/{usd}")).await["currency"],
        "USD"
    );

    let stated = |currency: &str| {
        format!(
            r#"{{"date": "2024-06-15", "source": "meta", "currency": "{currency}", "metrics": {{"cost": 12.50}}}}"#
        )
    };
    let record = track(&app, &eur, &stated("EUR")).await;
    assert_eq!(record["currency"], "EUR");
    let record = track(&app, &eur, &body("2024-06-16", "meta", r#"{"cost": 1.25}"#)).await;
    assert_eq!(
        record["currency"], "EUR",
        "a record without one is in the campaign's"
    );
    let message = refused(post_track(&app, &app.key, &eur, &stated("USD")).await, "currency").await;
    assert_eq!(message, "currency USD does not match the campaign's currency EUR");
    refused(post_track(&app, &app.key, &eur, &stated("eur")).await, "currency").await;
    let path = format!("{}/2024-06-17/meta", analytics_path(&eur));
    let put = |currency: &str| {
        app.json(
            Method::PUT,
            &path,
            &app.key,
            &format!(r#"{{"currency": "{currency}", "metrics": {{"cost": 3}}}}"#),
        )
        .send()
    };
    refused(put("USD").await.unwrap(), "currency").await;
    let day: Value = put("EUR").await.unwrap().json().await.unwrap();
    assert_eq!(day["currency"], "EUR");
    // Refused writes wrote nothing.
    assert_eq!(analytics_history(&app, &eur).await.len(), 3);

    let s = summary(&app, &eur, "").await;
    assert_eq!(s["currency"], "EUR");
    assert_eq!(s["budget"]["currency"], "EUR");
    assert_eq!(num(&s["metrics"]["cost"]), "16.75");
    assert_eq!(s["by_source"][0]["currency"], "EUR");
    for row in rows(&app, &eur, "").await {
        assert_eq!(row["currency"], "EUR");
    }
    assert_eq!(summary(&app, &usd, "").await["currency"], "USD");

    // Changing the currency relabels (converts nothing): from then on the
    // campaign's money, and what records must state, is in the new one.
    let updated = app
        .json(
            Method::PUT,
            &format!("/campaigns/{eur}"),
            &app.key,
            r#"{"currency": "GBP"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let s = summary(&app, &eur, "").await;
    assert_eq!(
        (s["currency"].as_str(), num(&s["metrics"]["cost"])),
        (Some("GBP"), "16.75".into())
    );
    refused(post_track(&app, &app.key, &eur, &stated("EUR")).await, "currency").await;
    for bad in [
        r#"{"currency": null}"#,
        r#"{"currency": "XYZ"}"#,
        r#"{"currency": 978}"#,
    ] {
        let response = app
            .json(Method::PUT, &format!("/campaigns/{eur}"), &app.key, bad)
            .send()
            .await
            .unwrap();
        refused(response, "currency").await;
    }
    let response = app
        .json(
            Method::POST,
            "/campaigns",
            &app.key,
            r#"{"name": "x", "currency": "Euro"}"#,
        )
        .send()
        .await
        .unwrap();
    refused(response, "currency").await;
}

#[tokio::test]
async fn the_default_currency_is_configurable() {
    let app =
        spawn_app_with(|config| config.default_currency = domain::Currency::parse("c", "JPY").unwrap()).await;
    let campaign = new_campaign(&app).await;
    assert_eq!(
        get_json(&app, &format!("/campaigns/{campaign}")).await["currency"],
        "JPY"
    );
    let record = track(&app, &campaign, SEED_TRACK).await;
    assert_eq!(record["currency"], "JPY");
}

// ---------------------------------------------------------------------------
// Metric kinds: custom metrics combine as the campaign declares.

#[tokio::test]
async fn engagement_rate_declared_average_by_impressions_gives_the_weighted_mean() {
    let app = spawn_app().await;
    let created = app
        .create_campaign(
            &app.key,
            r#"{"name": "Kinds", "custom_metric_kinds": {
                "engagement_rate": {"kind": "average", "weighted_by": "impressions"},
                "score": {"kind": "average"},
                "followers": {"kind": "last"}}}"#,
        )
        .await;
    assert_eq!(
        created["custom_metric_kinds"]["score"],
        json!({"kind": "average", "weighted_by": "records"})
    );
    let campaign = created["id"].as_str().unwrap().to_owned();
    for (date, source, metrics) in [
        (
            "2024-06-15",
            "google",
            r#"{"impressions": 10000, "custom_metrics": {"engagement_rate": 0.05, "followers": 100, "score": 1, "video_views": 5}}"#,
        ),
        (
            "2024-06-15",
            "google",
            r#"{"impressions": 30000, "custom_metrics": {"engagement_rate": 0.10, "followers": 120, "score": 3}}"#,
        ),
        (
            "2024-06-16",
            "meta",
            r#"{"impressions": 60000, "custom_metrics": {"engagement_rate": 0.02, "followers": 50, "video_views": 7}}"#,
        ),
        // An earlier day of google, tracked last: not google's latest follower count.
        (
            "2024-06-14",
            "google",
            r#"{"impressions": 0, "custom_metrics": {"followers": 90}}"#,
        ),
    ] {
        track(&app, &campaign, &body(date, source, metrics)).await;
    }
    let s = summary(&app, &campaign, "").await;
    let custom = &s["metrics"]["custom_metrics"];
    // (0.05·10000 + 0.10·30000 + 0.02·60000) / 100000, not the mean of the
    // rates (0.0566…) nor their sum (0.17).
    assert_eq!(num(&custom["engagement_rate"]), "0.047");
    assert_eq!(num(&custom["score"]), "2");
    // Each source's latest value, added over the sources.
    assert_eq!(num(&custom["followers"]), "170");
    assert_eq!(num(&custom["video_views"]), "12");
    assert_eq!(
        s["metrics"]["custom_metric_kinds"],
        json!({
            "engagement_rate": {"kind": "average", "weighted_by": "impressions", "declared": true},
            "followers": {"kind": "last", "weighted_by": null, "declared": true},
            "score": {"kind": "average", "weighted_by": "records", "declared": true},
            "video_views": {"kind": "sum", "weighted_by": null, "declared": false},
        })
    );
    let google = &s["by_source"][0]["metrics"]["custom_metrics"];
    assert_eq!(num(&google["engagement_rate"]), "0.0875");
    assert_eq!(num(&google["followers"]), "120");
    // Rows combine the same way, per period and source.
    let day = rows(&app, &campaign, "?start_date=2024-06-15&end_date=2024-06-15").await;
    assert_eq!(
        num(&day[0]["metrics"]["custom_metrics"]["engagement_rate"]),
        "0.0875"
    );
    let month = rows(&app, &campaign, "?granularity=month&source=google").await;
    assert_eq!(num(&month[0]["metrics"]["custom_metrics"]["followers"]), "120");

    // Kinds apply to all data at once: undeclared, the rate is summed again.
    let response = app
        .json(
            Method::PUT,
            &format!("/campaigns/{campaign}"),
            &app.key,
            r#"{"custom_metric_kinds": {"followers": {"kind": "last"}}}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let s = summary(&app, &campaign, "").await;
    assert_eq!(num(&s["metrics"]["custom_metrics"]["engagement_rate"]), "0.17");
    assert_eq!(
        s["metrics"]["custom_metric_kinds"]["engagement_rate"]["declared"],
        false
    );
    // `null` clears every declaration: all summed.
    let cleared: Value = app
        .json(
            Method::PUT,
            &format!("/campaigns/{campaign}"),
            &app.key,
            r#"{"custom_metric_kinds": null}"#,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["custom_metric_kinds"], json!({}));
    let s = summary(&app, &campaign, "").await;
    assert_eq!(num(&s["metrics"]["custom_metrics"]["followers"]), "360");
    // Invalid declarations name their field.
    for (bad, field) in [
        (
            r#"{"custom_metric_kinds": {"r": {"kind": "median"}}}"#,
            "custom_metric_kinds.r",
        ),
        (
            r#"{"custom_metric_kinds": {"r": {"kind": "average", "weighted_by": "cost"}}}"#,
            "custom_metric_kinds.r",
        ),
        (
            r#"{"custom_metric_kinds": {"r": {"kind": "sum", "x": 1}}}"#,
            "custom_metric_kinds.r",
        ),
        (
            r#"{"custom_metric_kinds": {" ": {"kind": "sum"}}}"#,
            "custom_metric_kinds. ",
        ),
    ] {
        let response = app
            .json(Method::PUT, &format!("/campaigns/{campaign}"), &app.key, bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["field"].as_str().is_some_and(|f| f.starts_with(field)),
            "{bad}: {error}"
        );
    }
}
