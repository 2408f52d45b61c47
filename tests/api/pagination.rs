//! Cursor pagination and filters.

use marketing_e2e::{assert_error, spawn_app};
use serde_json::{json, Value};
use std::collections::HashSet;

#[tokio::test]
async fn pages_through_every_campaign_exactly_once_newest_first() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..7 {
        let body = json!({ "name": format!("Campaign {i}") }).to_string();
        created.push(
            app.create_campaign(&app.key, &body).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/campaigns?limit=3&cursor={c}"),
            None => "/campaigns?limit=3".to_owned(),
        };
        let page: Value = app.get(&path, &app.key).await.json().await.unwrap();
        pages += 1;
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        assert_eq!(page["has_more"], !page["next_cursor"].is_null());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(data.len(), 3);
                cursor = Some(next.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "newest first, each once");
    let default: Value = app.get("/campaigns", &app.key).await.json().await.unwrap();
    assert_eq!(default["data"].as_array().unwrap().len(), 7);
    assert_eq!(default["has_more"], false);
    assert_eq!(default["next_cursor"], Value::Null);
}

#[tokio::test]
async fn limits_and_cursors_are_validated() {
    let app = spawn_app().await;
    for limit in ["0", "501", "-3", "many"] {
        let response = app.get(&format!("/campaigns?limit={limit}"), &app.key).await;
        assert_eq!(assert_error(response, 400, "").await["field"], "limit");
    }
    assert_eq!(app.get("/campaigns?limit=500", &app.key).await.status(), 200);
    let response = app.get("/campaigns?cursor=bogus!!", &app.key).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "cursor");
    let response = app.get("/campaigns?status=sleeping", &app.key).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "status");
    let response = app.get("/campaigns?type=telepathy", &app.key).await;
    assert_eq!(assert_error(response, 400, "").await["field"], "type");
}

#[tokio::test]
async fn filters_by_status_and_type() {
    let app = spawn_app().await;
    app.create_campaign(&app.key, r#"{"name": "a", "type": "sales", "status": "active"}"#)
        .await;
    app.create_campaign(&app.key, r#"{"name": "b", "type": "sales"}"#)
        .await;
    app.create_campaign(&app.key, r#"{"name": "c", "type": "email", "status": "active"}"#)
        .await;
    let names = |v: Value| -> HashSet<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let active = app
        .get("/campaigns?status=active", &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(active), HashSet::from(["a".into(), "c".into()]));
    let sales = app
        .get("/campaigns?type=sales", &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(sales), HashSet::from(["a".into(), "b".into()]));
    let both = app
        .get("/campaigns?type=sales&status=draft", &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(both), HashSet::from(["b".into()]));
}
