//! Health, readiness, metrics and the OpenAPI document.

use marketing_e2e::{spawn_app, SEED_CREATE};
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeSet;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let base = &app.app.address;
    let health: Value = app
        .client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let campaign = app.create_campaign(&app.key, SEED_CREATE).await;
    let id: uuid::Uuid = campaign["id"].as_str().unwrap().parse().unwrap();
    // The shard that holds the campaign has applied it (the others may
    // record the event they pass over a little later).
    let shard = projector::Shard::of(id, app.config.projection_shards);
    let metrics = app.metrics().await;
    let lag = format!(
        "marketing_projection_lag_events{{projection=\"campaigns\",shard=\"{}/{}\"}} 0",
        shard.index, shard.count
    );
    assert!(metrics.contains(&lag), "{metrics}");
    assert!(
        metrics.contains("marketing_oldest_transaction_age_seconds"),
        "{metrics}"
    );
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains("marketing_projection_events_total"), "{metrics}");
}

/// Every route the service answers is in the document, and the documented
/// resource has exactly the fields the service returns.
#[tokio::test]
async fn openapi_covers_every_endpoint_and_matches_the_resource() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    // The router and the document come from the same declarations (each
    // route is declared once, with its entry), so the list is the document's.
    // What the service answers must match it both ways: every documented
    // operation is routed, and on each documented path every other method is
    // refused as not allowed (so nothing is served there undocumented).
    // 35 resource operations, 9 of webhooks and the event feed.
    assert_eq!(documented.len(), 44, "{documented:?}");
    // Every operation lists what the shared machinery can answer, and a JSON
    // body's operation its 413 and 415.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for status in ["400", "401", "403", "429", "500", "503"] {
                assert!(responses.contains_key(status), "{method} {path} lacks {status}");
            }
            for header in [
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ] {
                assert!(
                    responses["429"]["headers"].get(header).is_some(),
                    "{method} {path}: 429 without {header}"
                );
            }
            assert!(
                responses["503"]["headers"].get("Retry-After").is_some(),
                "{method} {path}"
            );
            // Exactly one scope, a known one, named in the description too.
            let scopes = operation["security"][0]["bearer"].as_array().unwrap();
            assert_eq!(
                operation["security"].as_array().unwrap().len(),
                1,
                "{method} {path}"
            );
            assert_eq!(scopes.len(), 1, "{method} {path}");
            let scope = web::Scope::parse(scopes[0].as_str().unwrap()).unwrap();
            assert!(
                operation["description"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("`{scope}`")),
                "{method} {path}"
            );
            if operation.get("requestBody").is_some() {
                for status in ["413", "415"] {
                    assert!(responses.contains_key(status), "{method} {path} lacks {status}");
                }
            }
        }
    }
    // Operation ids are unique (`<tag>_<handler>`), and every link from a
    // create's 201 names one of them and fills exactly its path parameters,
    // each from the created resource's id or the create's own path.
    let mut operations = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for operation in item.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().unwrap().to_owned();
            let tag = operation["tags"][0].as_str().unwrap();
            assert!(id.starts_with(&format!("{tag}_")), "{id}");
            assert!(
                operations.insert(id.clone(), path.clone()).is_none(),
                "{id} twice"
            );
        }
    }
    let mut links = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for operation in item.as_object().unwrap().values() {
            let Some(created) = operation["responses"]["201"]["links"].as_object() else {
                continue;
            };
            for link in created.values() {
                let target = &operations[link["operationId"].as_str().unwrap()];
                let wanted: BTreeSet<&str> = target
                    .split('{')
                    .skip(1)
                    .map(|rest| rest.split('}').next().unwrap())
                    .collect();
                let given = link["parameters"].as_object().unwrap();
                assert_eq!(given.keys().map(String::as_str).collect::<BTreeSet<_>>(), wanted);
                for (name, value) in given {
                    let value = value.as_str().unwrap();
                    assert!(
                        value == "$response.body#/id"
                            || (value == format!("$request.path.{name}")
                                && path.contains(&format!("{{{name}}}"))),
                        "{path} -> {target}: {name} = {value}"
                    );
                }
                links += 1;
            }
        }
    }
    assert!(links >= 20, "{links} links");
    // Every schema the document refers to is in it.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
    // Each documented operation really exists: unauthenticated, it is a 401
    // (a missing route would be 404/405).
    for (method, path) in &documented {
        let path = path
            .replace("{campaign_id}", "00000000-0000-0000-0000-000000000000")
            .replace("{task_id}", "00000000-0000-0000-0000-000000000000")
            .replace("{content_id}", "00000000-0000-0000-0000-000000000000")
            .replace("{lead_id}", "00000000-0000-0000-0000-000000000000")
            .replace("{webhook_id}", "00000000-0000-0000-0000-000000000000")
            .replace("{event_id}", "00000000-0000-0000-0000-000000000000");
        let response = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.app.address),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
    }
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    for path in paths {
        // Any segment matches a `{parameter}`: routing is decided before the
        // parameters are parsed.
        let concrete = path.replace(['{', '}'], "");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if documented.contains(&(method.to_owned(), path.clone())) {
                continue;
            }
            let response = app
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{concrete}", app.app.address),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                405,
                "{method} {path} is served but not documented"
            );
        }
    }
    let created = app.create_campaign(&app.key, SEED_CREATE).await;
    let returned: BTreeSet<&String> = created.as_object().unwrap().keys().collect();
    let schema: BTreeSet<&String> = doc["components"]["schemas"]["Campaign"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(returned, schema);

    // Tasks and content too, and the content routes document their multipart body.
    let campaign_id = created["id"].as_str().unwrap();
    let task: Value = app
        .json(
            Method::POST,
            &format!("/campaigns/{campaign_id}/tasks"),
            &app.key,
            r#"{"title": "t"}"#,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let content: Value = app
        .json(
            Method::POST,
            &format!("/campaigns/{campaign_id}/content"),
            &app.key,
            r#"{"title": "c", "content_type": "blog"}"#,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (resource, name) in [(&task, "Task"), (&content, "Content")] {
        let returned: BTreeSet<&String> = resource.as_object().unwrap().keys().collect();
        let schema: BTreeSet<&String> = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {name} missing"))
            .keys()
            .collect();
        assert_eq!(returned, schema, "{name}");
    }
    let content_path = &doc["paths"]["/v1/dev/marketing/campaigns/{campaign_id}/content/{content_id}"];
    let create_path = &doc["paths"]["/v1/dev/marketing/campaigns/{campaign_id}/content"];
    for operation in [&create_path["post"], &content_path["put"]] {
        let bodies = operation["requestBody"]["content"].as_object().unwrap();
        assert!(bodies.contains_key("multipart/form-data"), "{operation}");
        assert!(bodies.contains_key("application/json"), "{operation}");
    }
    let form = &doc["components"]["schemas"]["ContentForm"]["properties"];
    assert_eq!(form["media"]["format"], "binary", "{form}");
}
