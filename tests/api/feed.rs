//! The event feed: commit-safe paging while writers write (every event once,
//! the same ids and types as on Kafka), its filters and limits, tenancy, and
//! the personal-data rule for leads.

use marketing::config::Config;
use marketing_e2e::{assert_error, spawn_app, spawn_app_with, TestApp, SEED_CREATE, SEED_UPDATE};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::kafka::{shared_brokers, unique_topic, Reader};
use tokio::task::block_in_place;

const WRITERS: usize = 8;
const CAMPAIGNS_PER_WRITER: usize = 8;

async fn page(app: &TestApp, query: &str) -> Value {
    let response = app.get(&format!("/events?{query}"), &app.key).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Pages through the feed from `cursor` until it has no more right now.
async fn read_all(app: &TestApp, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let extra = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let page = page(app, &format!("{query}{extra}")).await;
        items.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feed_paged_while_8_writers_write_gives_every_event_once_with_kafkas_ids() {
    let brokers = shared_brokers();
    let topic = unique_topic("feed");
    let app = Arc::new(
        spawn_app_with(|config: &mut Config| {
            config.kafka_brokers = Some(brokers.clone());
            config.kafka_topic_campaigns = topic.clone();
            config.kafka_topic_leads = unique_topic("feed-leads");
            config.kafka_partitions = 2;
        })
        .await,
    );
    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let app = app.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..CAMPAIGNS_PER_WRITER {
                let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
                let path = format!("/campaigns/{}", campaign["id"].as_str().unwrap());
                let response = app
                    .json(Method::PUT, &path, &app.key, SEED_UPDATE)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }));
    }
    let expected = WRITERS * CAMPAIGNS_PER_WRITER * 2;
    let pager = {
        let (app, done) = (app.clone(), done.clone());
        tokio::spawn(async move {
            // A consumer that follows the feed: small pages, resuming from the
            // last item's position when it has caught up.
            let mut items: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let extra = cursor
                    .as_ref()
                    .map(|c| format!("&cursor={c}"))
                    .unwrap_or_default();
                let page = page(&app, &format!("limit=7{extra}")).await;
                let data = page["data"].as_array().unwrap();
                items.extend(data.iter().cloned());
                cursor = match page["next_cursor"].as_str() {
                    Some(next) => Some(next.to_owned()),
                    None => data
                        .last()
                        .map(|i| i["position"].as_str().unwrap().to_owned())
                        .or(cursor),
                };
                if done.load(Ordering::SeqCst) && page["has_more"] == false && items.len() >= expected {
                    return items;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} of {expected} events read",
                    items.len()
                );
            }
        })
    };
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let items = pager.await.unwrap();

    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event was read twice");
    assert_eq!(ids.len(), expected);
    let client = app.db.connect().await;
    let stored: HashSet<String> = client
        .query(
            "SELECT event_id::text FROM events WHERE metadata->>'project' = 'acme'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(unique, stored.iter().map(String::as_str).collect::<HashSet<_>>());
    // Per stream, the feed is in stream order.
    let mut versions: HashMap<&str, Vec<i64>> = HashMap::new();
    for item in &items {
        versions
            .entry(item["streamid"].as_str().unwrap())
            .or_default()
            .push(item["streamversion"].as_i64().unwrap());
    }
    assert!(versions.values().all(|v| v == &[0, 1]), "{versions:?}");

    let records = block_in_place(|| {
        let mut reader = Reader::new(&brokers, &[&topic]);
        reader
            .read_until(Duration::from_secs(60), |r| r.len() >= expected)
            .to_vec()
    });
    let on_kafka: HashMap<&str, (&str, &str, &str)> = records
        .iter()
        .map(|r| {
            let header = |name| r.header(name).unwrap();
            (
                header("ce_id"),
                (header("ce_type"), header("ce_source"), header("ce_subject")),
            )
        })
        .collect();
    assert_eq!(on_kafka.len(), expected);
    for item in &items {
        let kafka = on_kafka[item["id"].as_str().unwrap()];
        assert_eq!(
            kafka,
            (
                item["type"].as_str().unwrap(),
                item["source"].as_str().unwrap(),
                item["subject"].as_str().unwrap()
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feed_filters_by_type_and_campaign_within_its_limits_and_tenancy() {
    let app = spawn_app().await;
    let first = app.create_campaign(&app.key, SEED_CREATE).await;
    let second = app.create_campaign(&app.key, SEED_CREATE).await;
    let path = format!("/campaigns/{}", first["id"].as_str().unwrap());
    let response = app
        .json(Method::PUT, &path, &app.key, SEED_UPDATE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let all = read_all(&app, "limit=1").await;
    let types: Vec<&str> = all.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "com.marketing.campaign.created.v1",
            "com.marketing.campaign.created.v1",
            "com.marketing.campaign.updated.v1"
        ]
    );
    let item = &all[0];
    for attribute in [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "data",
        "position",
    ] {
        assert!(item.get(attribute).is_some(), "{attribute} missing: {item}");
    }
    assert_eq!(item["datacontenttype"], "application/json");
    assert_eq!(item["source"], "urn:marketing:project:acme");

    let updated = read_all(
        &app,
        "type=com.marketing.campaign.updated.v1,com.marketing.task.created.v1",
    )
    .await;
    assert_eq!(updated.len(), 1);
    let of_second = read_all(&app, &format!("campaign_id={}", second["id"].as_str().unwrap())).await;
    assert_eq!(of_second.len(), 1);
    assert_eq!(
        of_second[0]["subject"],
        format!("campaigns/{}", second["id"].as_str().unwrap())
    );
    // Resuming from an item's position gives what follows it.
    let after_first = read_all(&app, &format!("cursor={}", all[0]["position"].as_str().unwrap())).await;
    assert_eq!(after_first, all[1..]);

    let other = app.new_key("globex").await;
    let theirs: Value = app.get("/events", &other).await.json().await.unwrap();
    assert_eq!(
        theirs,
        json!({ "data": [], "has_more": false, "next_cursor": null })
    );

    let too_many_types = format!("type={}", vec!["a"; 65].join(","));
    for (query, field) in [
        (too_many_types.as_str(), "type"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=garbage", "cursor"),
        ("campaign_id=nope", "campaign_id"),
        ("type=a,,b", "type"),
    ] {
        let error = assert_error(app.get(&format!("/events?{query}"), &app.key).await, 400, "").await;
        assert_eq!(error["field"], field, "{query}");
    }
    assert_error(
        app.client.get(app.url("/events")).send().await.unwrap(),
        401,
        "Invalid or missing API key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lead_personal_data_is_in_the_feed_only_while_the_lead_exists() {
    let app = spawn_app().await;
    let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
    let leads = format!("/campaigns/{}/leads", campaign["id"].as_str().unwrap());
    let lead = json!({ "name": "John Doe", "email": "john@example.com", "company": "Acme Inc." });
    let created = app
        .json(Method::POST, &leads, &app.key, &lead.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let lead_id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = read_all(&app, "type=com.marketing.lead.created.v1").await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["subject"], format!("leads/{lead_id}"));
    assert!(
        before[0]["data"].to_string().contains("john@example.com"),
        "{}",
        before[0]
    );

    let deleted = app
        .request(Method::DELETE, &format!("{leads}/{lead_id}"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let after = read_all(&app, "type=com.marketing.lead.created.v1").await;
    assert_eq!(after[0]["id"], before[0]["id"]);
    let text = after[0]["data"].to_string();
    assert!(
        !text.contains("john@example.com") && !text.contains("John Doe"),
        "{text}"
    );
}
