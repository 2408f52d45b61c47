//! `GET /campaigns` with `search`, `sort`, `start_after` and `end_before`:
//! every sort pages through every campaign exactly once, in the order a
//! client computes from the campaigns themselves.

use base64::Engine;
use chrono::{DateTime, Utc};
use marketing_e2e::{assert_error, spawn_app, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use std::cmp::Ordering;

/// Names in mixed case (the name order ignores case; "Delta" and "delta"
/// tie and are ordered by id), dates with ties and gaps.
const CAMPAIGNS: [(&str, Option<&str>, Option<&str>); 12] = [
    ("Zeta", Some("2024-05-01"), Some("2024-06-01")),
    ("alpha", Some("2024-01-15"), Some("2024-12-31")),
    ("Delta", Some("2024-03-01"), Some("2024-04-01")),
    ("delta", Some("2024-03-01"), None),
    ("Beta", None, None),
    ("gamma", None, Some("2024-02-01")),
    ("Epsilon", Some("2024-07-01"), Some("2024-07-31")),
    ("eta", Some("2024-03-01"), Some("2024-03-15")),
    ("Theta", None, None),
    ("iota", Some("2023-12-01"), Some("2024-01-01")),
    ("Kappa", Some("2024-05-01"), Some("2024-06-01")),
    ("lambda", Some("2025-01-01"), Some("2025-02-01")),
];

const SORTS: [&str; 8] = [
    "created_at",
    "-created_at",
    "name",
    "-name",
    "start_date",
    "-start_date",
    "end_date",
    "-end_date",
];

async fn seed(app: &TestApp) -> Vec<Value> {
    let mut created = Vec::new();
    for (name, start, end) in CAMPAIGNS {
        let mut body = json!({ "name": name });
        if let Some(start) = start {
            body["start_date"] = json!(format!("{start}T00:00:00Z"));
        }
        if let Some(end) = end {
            body["end_date"] = json!(format!("{end}T00:00:00Z"));
        }
        created.push(app.create_campaign(&app.key, &body.to_string()).await);
    }
    created
}

fn time(campaign: &Value, field: &str) -> Option<DateTime<Utc>> {
    campaign[field].as_str().map(|t| t.parse().unwrap())
}

/// The order a client expects: by the field (names case-insensitively),
/// ties by id, both in the sort's direction; campaigns without the date last.
fn expected(campaigns: &[Value], sort: &str) -> Vec<String> {
    let (descending, field) = match sort.strip_prefix('-') {
        Some(field) => (true, field),
        None => (false, sort),
    };
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Key {
        Text(String),
        Time(DateTime<Utc>),
    }
    let key = |c: &Value| match field {
        "name" => Some(Key::Text(c["name"].as_str().unwrap().to_lowercase())),
        other => time(c, other).map(Key::Time),
    };
    let mut sorted = campaigns.to_vec();
    sorted.sort_by(|a, b| {
        let directed = |o: Ordering| if descending { o.reverse() } else { o };
        let by_id = directed(a["id"].as_str().cmp(&b["id"].as_str()));
        match (key(a), key(b)) {
            (None, None) => by_id,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => directed(x.cmp(&y)).then(by_id),
        }
    });
    sorted
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of `query` at `limit`, followed by its cursors: the ids in the
/// order served.
async fn every_page(app: &TestApp, query: &str, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/campaigns?{query}&limit={limit}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let response = app.get(&path, &app.key).await;
        assert_eq!(response.status(), 200, "{path}");
        let page: Value = response.json().await.unwrap();
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(data.len(), limit, "{path}");
                cursor = Some(next.to_owned());
            }
            None => return seen,
        }
    }
}

#[tokio::test]
async fn every_sort_pages_through_every_campaign_exactly_once() {
    let app = spawn_app().await;
    let campaigns = seed(&app).await;
    for sort in SORTS {
        let order = expected(&campaigns, sort);
        assert_eq!(order.len(), CAMPAIGNS.len());
        // Pages of 1 (every boundary, the null group's included), 5 and all.
        for limit in [1, 5, 50] {
            assert_eq!(
                every_page(&app, &format!("sort={sort}"), limit).await,
                order,
                "sort={sort}, limit={limit}"
            );
        }
    }
    // No sort is newest first, as before.
    assert_eq!(
        every_page(&app, "x=1", 4).await,
        expected(&campaigns, "-created_at")
    );

    // A change of name or date moves the campaign in its sort.
    let zeta = campaigns[0]["id"].as_str().unwrap();
    let response = app
        .json(
            Method::PUT,
            &format!("/campaigns/{zeta}"),
            &app.key,
            r#"{"name": "Aardvark", "start_date": "2020-01-01T00:00:00Z"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for sort in ["name", "start_date"] {
        assert_eq!(
            every_page(&app, &format!("sort={sort}"), 3).await[0],
            zeta,
            "{sort}"
        );
    }
}

#[tokio::test]
async fn search_and_date_filters_narrow_any_sort() {
    let app = spawn_app().await;
    let campaigns = seed(&app).await;
    let at = |day: &str| format!("{day}T00:00:00Z").parse::<DateTime<Utc>>().unwrap();
    let filtered = |keep: &dyn Fn(&Value) -> bool, sort: &str| -> Vec<String> {
        let kept: Vec<Value> = campaigns.iter().filter(|c| keep(c)).cloned().collect();
        expected(&kept, sort)
    };
    let names = |ids: &[String]| -> Vec<String> {
        ids.iter()
            .map(|id| {
                let c = campaigns.iter().find(|c| c["id"] == id.as_str()).unwrap();
                c["name"].as_str().unwrap().to_owned()
            })
            .collect()
    };

    // A case-insensitive substring of the name.
    let served = every_page(&app, "search=ELT&sort=name", 1).await;
    assert_eq!(names(&served).len(), 2);
    assert!(names(&served).iter().all(|n| n.to_lowercase() == "delta"));
    let contains_ta = |c: &Value| c["name"].as_str().unwrap().to_lowercase().contains("ta");
    let served = every_page(&app, "search=TA&sort=-start_date", 2).await;
    assert_eq!(served, filtered(&contains_ta, "-start_date"));
    assert_eq!(served.len(), 7);
    // `%` and `_` are literal; an empty term is no filter.
    assert!(every_page(&app, "search=%25", 5).await.is_empty());
    assert!(every_page(&app, "search=_", 5).await.is_empty());
    assert_eq!(every_page(&app, "search=", 50).await.len(), 12);

    // Inclusive bounds; a campaign without the date is left out.
    let starts = |c: &Value| time(c, "start_date").is_some_and(|t| t >= at("2024-03-01"));
    let served = every_page(&app, "start_after=2024-03-01T00:00:00Z&sort=end_date", 2).await;
    assert_eq!(served, filtered(&starts, "end_date"));
    assert_eq!(served.len(), 7);
    let ends = |c: &Value| time(c, "end_date").is_some_and(|t| t <= at("2024-06-01"));
    let served = every_page(&app, "end_before=2024-06-01T00:00:00Z&sort=-name", 4).await;
    assert_eq!(served, filtered(&ends, "-name"));
    assert_eq!(served.len(), 6);
    // Offsets other than Z, and every filter at once.
    let both = |c: &Value| starts(c) && ends(c) && c["name"].as_str().unwrap().to_lowercase().contains('a');
    let served = every_page(
        &app,
        "start_after=2024-02-29T20:00:00-04:00&end_before=2024-06-01T02:00:00%2B02:00&search=a&sort=start_date",
        1,
    )
    .await;
    assert_eq!(served, filtered(&both, "start_date"));
    assert_eq!(served.len(), 4, "Delta, eta, Zeta, Kappa: {:?}", names(&served));
}

#[tokio::test]
async fn invalid_list_parameters_are_400s_naming_the_parameter() {
    let app = spawn_app().await;
    seed(&app).await;
    let long = "x".repeat(201);
    let cases = [
        ("sort=budget", "sort"),
        ("sort=--name", "sort"),
        ("sort=Name", "sort"),
        ("sort=", "sort"),
        ("start_after=yesterday", "start_after"),
        ("start_after=2024-06-01", "start_after"),
        ("start_after=0000-01-01T00:00:00Z", "start_after"),
        ("end_before=2024-13-01T00:00:00Z", "end_before"),
        (&format!("search={long}") as &str, "search"),
    ];
    for (query, field) in cases {
        let response = app.get(&format!("/campaigns?{query}"), &app.key).await;
        let body = assert_error(response, 400, "").await;
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    assert_eq!(
        app.get(&format!("/campaigns?search={}", "x".repeat(200)), &app.key)
            .await
            .status(),
        200
    );
    // A cursor is a position in its own sort only.
    let page: Value = app
        .get("/campaigns?sort=name&limit=2", &app.key)
        .await
        .json()
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap();
    for other in ["-name", "start_date", "created_at"] {
        let response = app
            .get(&format!("/campaigns?sort={other}&cursor={cursor}"), &app.key)
            .await;
        assert_eq!(
            assert_error(response, 400, "").await["field"],
            "cursor",
            "{other}"
        );
    }
    let response = app.get(&format!("/campaigns?cursor={cursor}"), &app.key).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "cursor");
    // A cursor made before sorts existed (`{created_at, id}`) still pages
    // the default order.
    let first: Value = app
        .get("/campaigns?limit=3", &app.key)
        .await
        .json()
        .await
        .unwrap();
    let last = &first["data"][2];
    let legacy = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"created_at": last["created_at"], "id": last["id"]}).to_string());
    let second: Value = app
        .get(&format!("/campaigns?limit=3&cursor={legacy}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    let next: Value = app
        .get(
            &format!(
                "/campaigns?limit=3&cursor={}",
                first["next_cursor"].as_str().unwrap()
            ),
            &app.key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["data"], next["data"]);
    assert_eq!(second["data"].as_array().unwrap().len(), 3);
}
