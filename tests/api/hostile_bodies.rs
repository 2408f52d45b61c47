//! A property test over every JSON write endpoint: bodies generated from the
//! service's own OpenAPI request schemas, with any value liable to be replaced
//! by something hostile (U+0000 and other controls, lone surrogates written as
//! `\ud800` escapes, invalid UTF-8, 1 MiB strings, nesting far past any parser
//! limit, numbers like `1e400`, wrong types, broken JSON). Sent over real HTTP
//! to one spawned app, every answer must be below 500 and every 4xx the JSON
//! error envelope with a `message`; and every accepted write must reach every
//! read model (a year-0 date once passed validation and stopped a projection).
//!
//! The bodies are JSON *text* built here, not `serde_json::Value`s, since most
//! of what is hostile (`1e400`, `"\ud800"`, a 100 000-deep array) cannot be a
//! `Value`. The seed is fixed (override with `HOSTILE_SEED=<u64>`), so a run is
//! reproducible and a failure names the body that caused it;
//! `HOSTILE_TRACE=1` prints every status.

use marketing_e2e::{spawn_app_with, TestApp};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::Method;
use serde_json::Value;

/// Bodies per endpoint: enough variety, and the whole test stays well under a
/// minute on a busy machine. `HOSTILE_CASES=<n>` runs more, to explore.
const CASES: usize = 64;
/// How deep schema objects are followed before a value is only hostile.
const MAX_SCHEMA_DEPTH: usize = 6;
const MIB: usize = 1024 * 1024;
/// Longest wait for one answer before it counts as a hang.
const ANSWER_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// An object member: the key's JSON text and the value.
type Field = (Vec<u8>, Json);

/// JSON text, possibly not valid JSON, possibly not UTF-8.
#[derive(Clone, Debug)]
enum Json {
    Raw(Vec<u8>),
    Array(Vec<Json>),
    Object(Vec<Field>),
}

impl Json {
    fn raw(text: &str) -> Self {
        Json::Raw(text.as_bytes().to_vec())
    }

    fn render(&self, out: &mut Vec<u8>) {
        match self {
            Json::Raw(bytes) => out.extend_from_slice(bytes),
            Json::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.render(out);
                }
                out.push(b']');
            }
            Json::Object(fields) => {
                out.push(b'{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(key);
                    out.push(b':');
                    value.render(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// String literals (with their quotes) that have broken services before.
fn hostile_string() -> BoxedStrategy<Vec<u8>> {
    let fixed: Vec<&'static [u8]> = vec![
        br#""a\u0000b""#,
        br#""\u0000""#,
        br#""\u0001\u0008\u000b\u000c\u000e\u001f""#,
        br#""\u007f""#,
        br#""\u0085\u009f""#,
        br#""\ud800""#,
        br#""\udc00x""#,
        br#""a\ud800\u0000""#,
        br#""\ud83d\ude00""#,
        br#""\ud800\ud800""#,
        "\"\u{202e}gnp.exe\"".as_bytes(),
        "\"\u{feff}\u{200b}\"".as_bytes(),
        b"\"a\x01b\"",
        b"\"\xc0\x80\"",
        b"\"\xff\xfe\"",
        b"\"\xed\xa0\x80\"",
        br#""""#,
        br#""   ""#,
        br#""\\\"\/""#,
        br#""' OR 1=1 --""#,
        br#""%00%ff""#,
        br#""../../etc/passwd""#,
        br#""2024-02-30T00:00:00Z""#,
        br#""+275760-09-13T00:00:00Z""#,
        br#""-262144-01-01T00:00:00Z""#,
        br#""0000-01-01T00:00:00Z""#,
        br#""2024-06-01T00:00:00+25:00""#,
        br#""00000000-0000-0000-0000-000000000000""#,
        br#""1e400""#,
        br#""NaN""#,
        br#""unterminated"#,
    ];
    prop_oneof![
        8 => proptest::sample::select(fixed).prop_map(<[u8]>::to_vec),
        1 => (1usize..300).prop_map(|n| format!("\"{}\"", "\u{e9}".repeat(n)).into_bytes()),
        1 => "[\\PC]{0,40}".prop_map(|s| serde_json::to_vec(&s).unwrap()),
    ]
    .boxed()
}

/// Numbers and other scalars no handler should trust.
fn hostile_scalar() -> BoxedStrategy<Json> {
    let fixed = vec![
        "1e400",
        "-1e400",
        "1e-400",
        "1e999999999",
        "-0",
        "0.0000000000000000000000000001",
        "123456789012345678901234567890.123456789",
        "18446744073709551616",
        "-9223372036854775809",
        "9007199254740993",
        "1000000000000001",
        "1E+2",
        "-1",
        "NaN",
        "Infinity",
        "01",
        "1.",
        "true",
        "false",
        "null",
        "[]",
        "{}",
        "[1,\"a\",null,{}]",
    ];
    prop_oneof![
        2 => proptest::sample::select(fixed).prop_map(Json::raw),
        3 => hostile_string().prop_map(Json::Raw),
    ]
    .boxed()
}

/// `depth` arrays or objects inside one another, sometimes unclosed.
fn nested(depth: usize, objects: bool, closed: bool) -> Json {
    let (open, close) = if objects { (r#"{"a":"#, "}") } else { ("[", "]") };
    let mut text = open.repeat(depth);
    text.push('1');
    if closed {
        text.push_str(&close.repeat(depth));
    }
    Json::raw(&text)
}

/// A value that is only hostile: a scalar, deep nesting or a huge string.
fn hostile_value() -> BoxedStrategy<Json> {
    prop_oneof![
        40 => hostile_scalar(),
        1 => Just(nested(200, false, true)),
        1 => Just(nested(200, true, true)),
        1 => Just(nested(100_000, false, false)),
        1 => Just(Json::Raw(format!("\"{}\"", "a".repeat(MIB)).into_bytes())),
        1 => Just(Json::Raw(format!("\"{}\"", "a".repeat(MIB - 4096)).into_bytes())),
    ]
    .boxed()
}

/// Follows a `$ref` into the document's components.
fn resolve<'a>(schema: &'a Value, doc: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(doc.pointer(pointer).unwrap_or(&Value::Null), doc)
        }
        None => schema,
    }
}

/// The schema's type; a 3.1 type list counts as its first non-null type.
fn schema_type(schema: &Value) -> &str {
    match &schema["type"] {
        Value::String(t) => t,
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or(""),
        _ => "",
    }
}

/// A plausible value for `schema`, any part of which may be hostile instead.
fn from_schema(schema: &Value, doc: &Value, depth: usize) -> BoxedStrategy<Json> {
    let schema = resolve(schema, doc);
    if depth > MAX_SCHEMA_DEPTH {
        return hostile_value();
    }
    let variants: Vec<&Value> = ["oneOf", "anyOf", "allOf"]
        .iter()
        .filter_map(|k| schema[*k].as_array())
        .flatten()
        .collect();
    let plausible = if !variants.is_empty() {
        let choices: Vec<_> = variants.iter().map(|v| from_schema(v, doc, depth + 1)).collect();
        proptest::strategy::Union::new(choices).boxed()
    } else if let Some(values) = schema["enum"].as_array().filter(|v| !v.is_empty()) {
        let values: Vec<Json> = values.iter().map(|v| Json::raw(&v.to_string())).collect();
        proptest::sample::select(values).boxed()
    } else if let Some(example) = schema.get("example").filter(|e| !e.is_null()) {
        // The documented example, so bodies get past the parse to the rules.
        let example = Json::raw(&example.to_string());
        prop_oneof![2 => Just(example), 1 => plausible_for_type(schema, doc, depth)].boxed()
    } else {
        plausible_for_type(schema, doc, depth)
    };
    prop_oneof![6 => plausible, 1 => hostile_value()].boxed()
}

fn plausible_for_type(schema: &Value, doc: &Value, depth: usize) -> BoxedStrategy<Json> {
    match schema_type(schema) {
        "object" => object_from_schema(schema, doc, depth),
        "array" => {
            let items = from_schema(&schema["items"], doc, depth + 1);
            proptest::collection::vec(items, 0..4)
                .prop_map(Json::Array)
                .boxed()
        }
        "string" => {
            let typical: Vec<&'static str> = match schema["format"].as_str() {
                // The edges of what Postgres can store, and just past them.
                Some("date-time") => vec![
                    r#""2024-06-01T00:00:00Z""#,
                    r#""2024-08-31T23:59:59Z""#,
                    r#""0001-01-01T00:00:00Z""#,
                    r#""9999-12-31T23:59:59Z""#,
                    r#""0000-01-01T00:00:00Z""#,
                    r#""0001-01-01T00:00:00+01:00""#,
                    r#""9999-12-31T23:59:59-01:00""#,
                ],
                Some("uuid") => vec![r#""3fa85f64-5717-4562-b3fc-2c963f66afa6""#],
                Some("email") => vec![r#""john@example.com""#],
                _ => vec![r#""Summer Sale""#, r#""a""#, r#""facebook""#],
            };
            proptest::sample::select(typical).prop_map(Json::raw).boxed()
        }
        "integer" => (0i64..2000).prop_map(|n| Json::raw(&n.to_string())).boxed(),
        "number" => proptest::sample::select(vec!["0", "10.50", "1000", "10000.00"])
            .prop_map(Json::raw)
            .boxed(),
        "boolean" => any::<bool>().prop_map(|b| Json::raw(&b.to_string())).boxed(),
        _ => hostile_value(),
    }
}

/// Each property present or not; now and then a key that is no property.
fn object_from_schema(schema: &Value, doc: &Value, depth: usize) -> BoxedStrategy<Json> {
    let Some(properties) = schema["properties"].as_object() else {
        let field = (hostile_string(), hostile_value());
        return proptest::collection::vec(field, 0..3)
            .prop_map(Json::Object)
            .boxed();
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let fields: Vec<BoxedStrategy<Option<Field>>> = properties
        .iter()
        .map(|(name, property)| {
            let key = serde_json::to_vec(name).unwrap();
            let presence = if required.contains(&name.as_str()) {
                0.95
            } else {
                0.5
            };
            let value = from_schema(property, doc, depth + 1).prop_map(move |v| (key.clone(), v));
            proptest::option::weighted(presence, value).boxed()
        })
        .collect();
    let stranger = proptest::option::weighted(0.1, (hostile_string(), hostile_value()));
    (fields, stranger)
        .prop_map(|(fields, stranger)| {
            let mut fields: Vec<_> = fields.into_iter().flatten().collect();
            fields.extend(stranger);
            Json::Object(fields)
        })
        .boxed()
}

/// A whole body: mostly the operation's schema, sometimes no JSON object at all.
fn body(schema: &Value, doc: &Value) -> BoxedStrategy<Vec<u8>> {
    let whole: Vec<&'static [u8]> = vec![
        b"",
        b" ",
        b"null",
        b"[]",
        b"1e400",
        b"\"\\ud800\"",
        b"{",
        b"{\"name\":",
        "\u{feff}{}".as_bytes(),
        b"{}",
        b"{\"name\":\"x\"}trailing",
        b"{\"name\":\"a\",\"name\":\"b\"}",
        b"{\"name\":\"\\ud800\"}",
        b"{\"\\u0000\":1}",
        b"\xff{}",
    ];
    let rendered = from_schema(schema, doc, 0).prop_map(|json| {
        let mut out = Vec::new();
        json.render(&mut out);
        out
    });
    prop_oneof![
        6 => rendered,
        1 => proptest::sample::select(whole).prop_map(<[u8]>::to_vec),
    ]
    .boxed()
}

/// A JSON write operation of the OpenAPI document.
struct Operation {
    method: Method,
    path: String,
    schema: Value,
}

/// Every POST, PUT and PATCH that takes `application/json`.
fn json_writes(doc: &Value) -> Vec<Operation> {
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (name, method) in [
            ("post", Method::POST),
            ("put", Method::PUT),
            ("patch", Method::PATCH),
        ] {
            let schema = &item[name]["requestBody"]["content"]["application/json"]["schema"];
            if !schema.is_null() {
                operations.push(Operation {
                    method,
                    path: path.clone(),
                    schema: schema.clone(),
                });
            }
        }
    }
    operations
}

/// Real ids for every path parameter, so bodies reach the handlers' checks.
async fn seed(app: &TestApp) -> Vec<(&'static str, String)> {
    let campaign = app.create_campaign(&app.key, r#"{"name": "Target"}"#).await;
    let campaign_id = campaign["id"].as_str().unwrap().to_owned();
    // A restatement's day and source: valid, so bodies reach its checks.
    let mut ids = vec![
        ("{campaign_id}", campaign_id.clone()),
        ("{date}", "2024-06-15".to_owned()),
        ("{source}", "google".to_owned()),
    ];
    for (param, resource, body) in [
        ("{task_id}", "tasks", r#"{"title": "A task"}"#),
        (
            "{content_id}",
            "content",
            r#"{"title": "A post", "content_type": "blog"}"#,
        ),
        (
            "{lead_id}",
            "leads",
            r#"{"name": "A lead", "email": "lead@example.com"}"#,
        ),
    ] {
        let path = format!("/campaigns/{campaign_id}/{resource}");
        let response = app
            .json(Method::POST, &path, &app.key, body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "seed {resource}");
        let created: Value = response.json().await.unwrap();
        ids.push((param, created["id"].as_str().unwrap().to_owned()));
    }
    ids
}

fn cases() -> usize {
    std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CASES)
}

fn runner(endpoint: usize) -> TestRunner {
    let seed: u64 = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0012);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(endpoint as u64).to_le_bytes());
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// `None` if the answer keeps the contract, else what was wrong.
async fn check(app: &TestApp, operation: &Operation, path: &str, body: Vec<u8>) -> Option<String> {
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let response = app
        .request(operation.method.clone(), path, &app.key)
        .header("content-type", "application/json")
        // An answer that never comes is a failure too (the contract: never
        // a hang), reported with the body instead of stalling the test.
        .timeout(ANSWER_LIMIT)
        .body(body)
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            return Some(format!(
                "{} {path}: no answer ({error}) to {excerpt}",
                operation.method
            ))
        }
    };
    let status = response.status();
    if std::env::var_os("HOSTILE_TRACE").is_some() {
        eprintln!(
            "TRACE {} {path} {status} {}",
            operation.method,
            excerpt.chars().take(100).collect::<String>()
        );
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let answer: Option<Value> = response.json().await.ok();
    let enveloped = content_type.starts_with("application/json")
        && answer.as_ref().is_some_and(|a| a["message"].is_string());
    if status.is_server_error() || (status.is_client_error() && !enveloped) {
        return Some(format!(
            "{} {path}: {status} {answer:?} to {excerpt}",
            operation.method
        ));
    }
    None
}

/// Every accepted write must reach every read model: an event a projection
/// cannot store stops it (and every later write's read-after-write with it).
async fn unprojected(app: &TestApp) -> Option<String> {
    let db = app.db.connect().await;
    let deadline = std::time::Instant::now() + ANSWER_LIMIT;
    loop {
        let behind: Vec<String> = db
            .query(
                "SELECT name FROM projection_checkpoints \
                 WHERE position < (SELECT coalesce(max(position), 0) FROM events)",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        if behind.is_empty() {
            return None;
        }
        if std::time::Instant::now() >= deadline {
            return Some(format!("projections stuck behind the log: {behind:?}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn hostile_bodies_on_every_json_write_endpoint_get_a_4xx_envelope_never_a_5xx() {
    // Short: a projection stopped by an accepted body makes every later write
    // wait this long before answering; the test should report it, not crawl.
    let app = spawn_app_with(|config| config.read_after_write_timeout_ms = 1000).await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations = json_writes(&doc);
    let ids = seed(&app).await;
    let mut checked = Vec::new();
    for (index, operation) in operations.iter().enumerate() {
        let path = ids.iter().fold(operation.path.clone(), |path, (param, id)| {
            path.replace(param, id)
        });
        let path = path
            .strip_prefix(web::BASE_PATH)
            .expect("below the base path")
            .to_owned();
        let strategy = body(&operation.schema, &doc);
        let mut runner = runner(index);
        let bodies: Vec<Vec<u8>> = (0..cases())
            .map(|_| strategy.new_tree(&mut runner).expect("a case").current())
            .collect();
        checked.push((operation, path, bodies));
    }
    let names: Vec<String> = checked
        .iter()
        .map(|(o, p, _)| format!("{} {p}", o.method))
        .collect();
    // Every endpoint of the brief is covered (content create takes JSON too).
    for expected in [
        "POST /campaigns",
        "PATCH",
        "/tasks",
        "/analytics",
        "/leads",
        "/content",
    ] {
        assert!(
            names.iter().any(|n| n.contains(expected)),
            "{expected} not in {names:?}"
        );
    }
    // The endpoints in parallel, each endpoint's bodies in order.
    let failures = futures::future::join_all(checked.into_iter().map(|(operation, path, bodies)| {
        let app = &app;
        async move {
            let mut failures = Vec::new();
            for body in bodies {
                failures.extend(check(app, operation, &path, body).await);
            }
            failures
        }
    }))
    .await;
    let mut failures: Vec<String> = failures.into_iter().flatten().collect();
    failures.extend(unprojected(&app).await);
    assert!(
        failures.is_empty(),
        "{} of {} answers broke the contract:\n{}",
        failures.len(),
        names.len() * cases(),
        failures.join("\n")
    );
}
