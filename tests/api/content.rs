//! The content-calendar endpoints and media upload/download, over real HTTP,
//! Postgres and a real media directory.

use marketing_e2e::{assert_error, spawn_app, spawn_app_with, TestApp};
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A real 1x1 red PNG and a real 2x1 blue one.
const RED_PNG: &str = "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c49444154789c63f8cfc0000003010100c9fe92ef0000000049454e44ae426082";
const BLUE_PNG: &str = "89504e470d0a1a0a0000000d49484452000000020000000108020000007b40e8dd0000000d49444154789c636060f80f4400050201ffc12b969f0000000049454e44ae426082";
const ASSIGNEE: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";

fn red_png() -> Vec<u8> {
    hex::decode(RED_PNG).unwrap()
}

fn blue_png() -> Vec<u8> {
    hex::decode(BLUE_PNG).unwrap()
}

/// A file that starts like a PNG, followed by `len` varied bytes: large enough
/// to cross many chunk and part boundaries.
fn big_png(len: usize) -> Vec<u8> {
    let mut bytes = red_png()[..16].to_vec();
    let mut state: u32 = 0x1234_5678;
    bytes.extend((0..len).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as u8
    }));
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A file part as `curl -F "media=@/path/to/file.png"` sends it.
fn file(bytes: Vec<u8>, name: &str, mime: &str) -> Part {
    Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap()
}

/// The seed's create form exactly, with `assigned_to` as given.
fn seed_form(assigned_to: &str, media: Option<Part>) -> Form {
    let form = Form::new()
        .text("title", "New Blog Post")
        .text("content_type", "blog")
        .text("scheduled_date", "2024-06-15T10:00:00Z")
        .text("platform", "wordpress")
        .text("status", "draft")
        .text("content", "Content description")
        .text("assigned_to", assigned_to.to_owned());
    match media {
        Some(part) => form.part("media", part),
        None => form,
    }
}

/// The seed's update form exactly.
fn seed_update_form(media: Part) -> Form {
    Form::new()
        .text("title", "Updated Title")
        .text("status", "published")
        .text("content", "Updated content")
        .part("media", media)
}

async fn create(app: &TestApp, campaign_id: &str, form: Form) -> Value {
    let response = app
        .multipart(
            Method::POST,
            &format!("/campaigns/{campaign_id}/content"),
            &app.key,
            form,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "create content failed");
    response.json().await.unwrap()
}

async fn download(app: &TestApp, url: &str, key: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{url}", app.app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn list(app: &TestApp, campaign_id: &str, query: &str) -> Vec<String> {
    let response = app
        .get(&format!("/campaigns/{campaign_id}/content{query}"), &app.key)
        .await;
    assert_eq!(response.status(), 200, "list {query}");
    let page: Value = response.json().await.unwrap();
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn seed_multipart_create_and_update_with_byte_identical_media() {
    let app = spawn_app().await;
    let campaign_id = app.campaign().await;
    let content = format!("/campaigns/{campaign_id}/content");

    // The seed's form verbatim: "uuid-here" is refused, and nothing is kept.
    let response = app
        .multipart(
            Method::POST,
            &content,
            &app.key,
            seed_form("uuid-here", Some(file(red_png(), "file.png", "image/png"))),
        )
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 400, "").await;
    assert_eq!(error["field"], "assigned_to", "{error}");
    assert_eq!(app.event_count("content-").await, 0);
    assert_eq!(
        app.media_dir.files(),
        Vec::<std::path::PathBuf>::new(),
        "no orphan file"
    );

    let response = app
        .multipart(
            Method::POST,
            &content,
            &app.key,
            seed_form(ASSIGNEE, Some(file(red_png(), "file.png", "image/png"))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"0\"");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let raw = response.text().await.unwrap();
    let created: Value = serde_json::from_str(&raw).unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        location,
        format!("/v1/dev/marketing/campaigns/{campaign_id}/content/{id}")
    );
    assert_eq!(created["campaign_id"], campaign_id.as_str());
    assert_eq!(created["title"], "New Blog Post");
    assert_eq!(created["content_type"], "blog");
    assert_eq!(created["scheduled_date"], "2024-06-15T10:00:00Z");
    assert_eq!(created["platform"], "wordpress");
    assert_eq!(created["status"], "draft");
    assert_eq!(created["content"], "Content description");
    assert_eq!(created["assigned_to"], ASSIGNEE);
    let media_url = format!("/v1/dev/marketing/campaigns/{campaign_id}/content/{id}/media");
    assert_eq!(
        created["media"],
        json!({
            "url": media_url,
            "file_name": "file.png",
            "media_type": "image/png",
            "size": red_png().len(),
            "sha256": sha256(&red_png()),
        })
    );
    // Read-after-write, byte for byte.
    let fetched = download(&app, &location, &app.key).await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.text().await.unwrap(), raw);

    // The download is the same bytes, with the sniffed type.
    let got = download(&app, &media_url, &app.key).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(
        got.headers()["etag"],
        format!("\"{}\"", sha256(&red_png())).as_str()
    );
    assert_eq!(got.headers()["x-content-type-options"], "nosniff");
    assert!(got.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("inline; filename=\"file.png\""));
    assert_eq!(got.bytes().await.unwrap().as_ref(), red_png().as_slice());
    // The event holds metadata only; the file is stored once, under its hash.
    let client = app.db.connect().await;
    let data: Value = client
        .query_one(
            "SELECT data FROM events WHERE stream_id = $1",
            &[&format!("content-{id}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(data["media"]["sha256"], sha256(&red_png()));
    assert!(data.to_string().len() < 1000, "no bytes in the event: {data}");
    let red_path = app
        .media_dir
        .path()
        .join("sha256")
        .join(&sha256(&red_png())[..2])
        .join(sha256(&red_png()));
    assert_eq!(app.media_dir.files(), vec![red_path.clone()]);

    // The seed's update form: new fields, status, and a replacement file.
    let path = format!("{content}/{id}");
    let response = app
        .multipart(
            Method::PUT,
            &path,
            &app.key,
            seed_update_form(file(blue_png(), "file.png", "image/png")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let raw = response.text().await.unwrap();
    let updated: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(updated["title"], "Updated Title");
    assert_eq!(updated["status"], "published");
    assert_eq!(updated["content"], "Updated content");
    assert_eq!(updated["platform"], "wordpress", "untouched fields stay");
    assert_eq!(updated["media"]["sha256"], sha256(&blue_png()));
    assert_eq!(app.get(&path, &app.key).await.text().await.unwrap(), raw);
    let got = download(&app, &media_url, &app.key).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), blue_png().as_slice());
    // The replaced file is still there and reachable through the item's history.
    assert_eq!(app.media_dir.files().len(), 2);
    let old = download(
        &app,
        &format!("{media_url}?sha256={}", sha256(&red_png())),
        &app.key,
    )
    .await;
    assert_eq!(old.status(), 200);
    assert_eq!(old.bytes().await.unwrap().as_ref(), red_png().as_slice());
    // A hash this item never had is not served.
    let stranger = download(&app, &format!("{media_url}?sha256={}", "ab".repeat(32)), &app.key).await;
    assert_error(stranger, 404, "Media not found").await;
    let malformed = download(&app, &format!("{media_url}?sha256=xyz"), &app.key).await;
    assert_eq!(assert_error(malformed, 400, "").await["field"], "sha256");
    // Conditional download.
    let cached = app
        .client
        .get(format!("{}{media_url}", app.app.address))
        .bearer_auth(&app.key)
        .header("if-none-match", format!("\"{}\"", sha256(&blue_png())))
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
}

#[tokio::test]
async fn large_media_streams_through_unchanged_and_json_bodies_work_too() {
    let app = spawn_app().await;
    let campaign_id = app.campaign().await;
    let bytes = big_png(7 * 1024 * 1024 + 3);
    let created = create(
        &app,
        &campaign_id,
        Form::new()
            .part(
                "media",
                file(
                    bytes.clone(),
                    "C:\\Users\\me\\big.png",
                    "application/octet-stream",
                ),
            )
            .text("title", "Big")
            .text("content_type", "video"),
    )
    .await;
    assert_eq!(created["media"]["size"], bytes.len());
    assert_eq!(
        created["media"]["file_name"], "big.png",
        "a path is reduced to its base name"
    );
    assert_eq!(
        created["media"]["media_type"], "image/png",
        "decided from the bytes"
    );
    let got = download(&app, created["media"]["url"].as_str().unwrap(), &app.key).await;
    assert_eq!(got.headers()["content-length"], bytes.len().to_string().as_str());
    let downloaded = got.bytes().await.unwrap();
    assert_eq!(sha256(&downloaded), sha256(&bytes));

    // JSON create and update, and removing media with null.
    let content = format!("/campaigns/{campaign_id}/content");
    let response = app
        .json(
            Method::POST,
            &content,
            &app.key,
            r#"{"title": "Tweet", "content_type": "social_post", "platform": "Twitter", "status": "scheduled", "scheduled_date": "2024-07-01T09:00:00Z"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let tweet: Value = response.json().await.unwrap();
    assert_eq!(tweet["media"], Value::Null);
    assert_eq!(tweet["platform"], "Twitter");
    let media = app
        .get(
            &format!("{content}/{}/media", tweet["id"].as_str().unwrap()),
            &app.key,
        )
        .await;
    assert_error(media, 404, "Media not found").await;

    let path = format!("{content}/{}", created["id"].as_str().unwrap());
    let removed: Value = app
        .json(
            Method::PUT,
            &path,
            &app.key,
            r#"{"media": null, "platform": "youtube"}"#,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(removed["media"], Value::Null);
    assert_eq!(removed["platform"], "youtube");
    let media = download(&app, created["media"]["url"].as_str().unwrap(), &app.key).await;
    assert_error(media, 404, "Media not found").await;
    // Removal by form: an empty `media` text field. First attach again.
    let attached: Value = app
        .multipart(
            Method::PUT,
            &path,
            &app.key,
            Form::new().part("media", file(red_png(), "a.png", "image/png")),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(attached["media"]["sha256"], sha256(&red_png()));
    let detached: Value = app
        .multipart(
            Method::PUT,
            &path,
            &app.key,
            Form::new().text("media", "").text("platform", ""),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (detached["media"].clone(), detached["platform"].clone()),
        (Value::Null, Value::Null)
    );
}

/// Every refusal: the right status and field, no event, no file left behind.
#[tokio::test]
async fn refused_writes_leave_no_event_and_no_file() {
    let app = spawn_app_with(|config| config.media_max_bytes = 4096).await;
    let campaign_id = app.campaign().await;
    let content = format!("/campaigns/{campaign_id}/content");
    let with_png = |form: Form| form.part("media", file(red_png(), "file.png", "image/png"));
    let base = || Form::new().text("title", "T").text("content_type", "blog");
    let cases: Vec<(Form, u16, &str)> = vec![
        (with_png(Form::new().text("content_type", "blog")), 400, "title"),
        (with_png(base().text("title", "again")), 400, "title"),
        (
            with_png(base().text("scheduled_date", "2024-06-31T10:00:00Z")),
            400,
            "scheduled_date",
        ),
        (
            with_png(base().text("scheduled_date", "tomorrow")),
            400,
            "scheduled_date",
        ),
        (with_png(base().text("status", "live")), 400, "status"),
        (
            with_png(base().text("status", "scheduled")),
            400,
            "scheduled_date",
        ),
        (
            with_png(base().text("assigned_to", "uuid-here")),
            400,
            "assigned_to",
        ),
        (with_png(base().text("colour", "red")), 400, "colour"),
        (
            base().part("media", file(Vec::new(), "empty.png", "image/png")),
            400,
            "media",
        ),
        (base().text("media", "not a file"), 400, "media"),
        (
            with_png(base()).part("media", file(blue_png(), "second.png", "image/png")),
            400,
            "media",
        ),
    ];
    for (n, (form, status, field)) in cases.into_iter().enumerate() {
        let response = app
            .multipart(Method::POST, &content, &app.key, form)
            .send()
            .await
            .unwrap();
        let error = assert_error(response, status, "").await;
        assert_eq!(error["field"], field, "case {n}: {error}");
    }
    // Oversize: one byte over MEDIA_MAX_BYTES is a JSON 413.
    let response = app
        .multipart(
            Method::POST,
            &content,
            &app.key,
            base().part("media", file(big_png(4096 - 15), "big.png", "image/png")),
        )
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "media is larger than the limit of 4096 bytes").await;
    // Mislabelled: text bytes named and declared as a PNG.
    let response = app
        .multipart(
            Method::POST,
            &content,
            &app.key,
            base().part(
                "media",
                file(
                    b"<svg onload=alert(1)>hello</svg>".to_vec(),
                    "file.png",
                    "image/png",
                ),
            ),
        )
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 415, "").await;
    assert!(
        error["message"].as_str().unwrap().contains("image/png"),
        "{error}"
    );
    // Too short to be anything.
    let response = app
        .multipart(
            Method::POST,
            &content,
            &app.key,
            base().part("media", file(b"GIF8".to_vec(), "x.gif", "image/gif")),
        )
        .send()
        .await
        .unwrap();
    assert_error(response, 415, "").await;
    // Neither multipart nor JSON.
    let response = app
        .request(Method::POST, &content, &app.key)
        .header("content-type", "text/plain")
        .body("title=x")
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        415,
        "Content-Type must be multipart/form-data or application/json",
    )
    .await;
    let response = app
        .request(Method::POST, &content, &app.key)
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body("garbage without boundaries")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "").await;

    assert_eq!(app.event_count("content-").await, 0);
    assert_eq!(
        app.media_dir.files_once(0).await,
        Vec::<std::path::PathBuf>::new(),
        "no orphan file"
    );

    // Exactly at the limit is accepted; a refused update keeps the old file and
    // adds none.
    let at_limit = big_png(4096 - 16);
    let created = create(
        &app,
        &campaign_id,
        base().part("media", file(at_limit.clone(), "ok.png", "image/png")),
    )
    .await;
    assert_eq!(created["media"]["size"], 4096);
    let path = format!("{content}/{}", created["id"].as_str().unwrap());
    let refused = app
        .multipart(
            Method::PUT,
            &path,
            &app.key,
            Form::new()
                .text("status", "bogus")
                .part("media", file(blue_png(), "b.png", "image/png")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(refused, 400, "").await["field"], "status");
    let refused = app
        .multipart(
            Method::PUT,
            &path,
            &app.key,
            Form::new().part("media", file(b"%PDX".repeat(10), "a.pdf", "application/pdf")),
        )
        .send()
        .await
        .unwrap();
    assert_error(refused, 415, "").await;
    assert_eq!(app.media_dir.files_once(1).await.len(), 1);
    assert_eq!(app.event_count("content-").await, 1);
    let got = download(&app, created["media"]["url"].as_str().unwrap(), &app.key).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), at_limit.as_slice());
}

#[tokio::test]
async fn default_limit_is_25_mib() {
    let app = spawn_app().await;
    assert_eq!(app.config.media_max_bytes, 25 * 1024 * 1024);
    let campaign_id = app.campaign().await;
    let response = app
        .multipart(
            Method::POST,
            &format!("/campaigns/{campaign_id}/content"),
            &app.key,
            Form::new()
                .text("title", "Huge")
                .text("content_type", "video")
                .part(
                    "media",
                    file(big_png(25 * 1024 * 1024 - 15), "huge.png", "image/png"),
                ),
        )
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "media is larger than the limit of 26214400 bytes").await;
    assert_eq!(app.event_count("content-").await, 0);
    assert_eq!(
        app.media_dir.files_once(0).await,
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test]
async fn wrong_campaign_other_project_and_unknown_ids_are_404() {
    let app = spawn_app().await;
    let campaign_a = app.campaign().await;
    let campaign_b = app.campaign().await;
    let item = create(
        &app,
        &campaign_a,
        seed_form(ASSIGNEE, Some(file(red_png(), "file.png", "image/png"))),
    )
    .await;
    let id = item["id"].as_str().unwrap();
    let nil = "00000000-0000-0000-0000-000000000000";
    let update = || Form::new().text("title", "Hijacked");

    for (campaign_id, content_id) in [
        (campaign_a.as_str(), nil),
        (campaign_a.as_str(), "x"),
        (campaign_b.as_str(), id),
    ] {
        let path = format!("/campaigns/{campaign_id}/content/{content_id}");
        assert_error(app.get(&path, &app.key).await, 404, "Content not found").await;
        assert_error(
            app.get(&format!("{path}/media"), &app.key).await,
            404,
            "Content not found",
        )
        .await;
        let put = app
            .multipart(Method::PUT, &path, &app.key, update())
            .send()
            .await
            .unwrap();
        assert_error(put, 404, "Content not found").await;
        let delete = app.request(Method::DELETE, &path, &app.key).send().await.unwrap();
        assert_error(delete, 404, "Content not found").await;
    }
    let other = app.new_key("globex").await;
    let content = format!("/campaigns/{campaign_a}/content");
    let path = format!("{content}/{id}");
    assert_error(app.get(&content, &other).await, 404, "Campaign not found").await;
    assert_error(app.get(&path, &other).await, 404, "Campaign not found").await;
    assert_error(
        download(&app, item["media"]["url"].as_str().unwrap(), &other).await,
        404,
        "Campaign not found",
    )
    .await;
    let post = app
        .multipart(
            Method::POST,
            &content,
            &other,
            seed_form(ASSIGNEE, Some(file(blue_png(), "f.png", "image/png"))),
        )
        .send()
        .await
        .unwrap();
    assert_error(post, 404, "Campaign not found").await;
    let put = app
        .multipart(Method::PUT, &path, &other, update())
        .send()
        .await
        .unwrap();
    assert_error(put, 404, "Campaign not found").await;
    let delete = app.request(Method::DELETE, &path, &other).send().await.unwrap();
    assert_error(delete, 404, "Campaign not found").await;
    for campaign_id in [nil, "nope"] {
        let list = app
            .get(&format!("/campaigns/{campaign_id}/content"), &app.key)
            .await;
        assert_error(list, 404, "Campaign not found").await;
    }
    let anonymous = app
        .client
        .get(format!(
            "{}{}",
            app.app.address,
            item["media"]["url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_error(anonymous, 401, "Invalid or missing API key").await;
    // Nothing changed, and no file from the refused upload of the other project.
    let current: Value = app.get(&path, &app.key).await.json().await.unwrap();
    assert_eq!(current, item);
    assert_eq!(app.media_dir.files().len(), 1);
}

#[tokio::test]
async fn calendar_filters_window_sort_and_pagination() {
    let app = spawn_app().await;
    let campaign_id = app.campaign().await;
    let other = app.campaign().await;
    create(
        &app,
        &other,
        Form::new()
            .text("title", "elsewhere")
            .text("content_type", "blog"),
    )
    .await;
    let items = [
        (
            "Late June",
            "blog",
            "WordPress",
            "draft",
            Some("2024-06-30T23:59:59Z"),
        ),
        ("Unscheduled", "email", "", "draft", None),
        (
            "Early June",
            "social_post",
            "twitter",
            "scheduled",
            Some("2024-06-01T00:00:00Z"),
        ),
        (
            "July",
            "blog",
            "wordpress",
            "published",
            Some("2024-07-01T00:00:00Z"),
        ),
        (
            "May",
            "video",
            "youtube",
            "archived",
            Some("2024-05-31T23:59:59Z"),
        ),
        (
            "Mid June",
            "blog",
            "medium",
            "scheduled",
            Some("2024-06-15T10:00:00Z"),
        ),
        (
            "Also mid June",
            "blog",
            "wordpress",
            "draft",
            Some("2024-06-15T10:00:00Z"),
        ),
    ];
    for (title, content_type, platform, status, date) in items {
        let mut form = Form::new()
            .text("title", title)
            .text("content_type", content_type)
            .text("platform", platform)
            .text("status", status);
        if let Some(date) = date {
            form = form.text("scheduled_date", date);
        }
        create(&app, &campaign_id, form).await;
    }
    let all = list(&app, &campaign_id, "").await;
    assert_eq!(&all[..2], ["May", "Early June"]);
    assert_eq!(all.len(), 7);
    assert_eq!(
        &all[4..],
        ["Late June", "July", "Unscheduled"],
        "sorted by date, unscheduled last"
    );
    let mid: Vec<&str> = all[2..4].iter().map(String::as_str).collect();
    assert!(mid.contains(&"Mid June") && mid.contains(&"Also mid June"));

    let june = list(&app, &campaign_id, "?from=2024-06-01&to=2024-06-30").await;
    assert_eq!(june.len(), 4);
    assert_eq!((june[0].as_str(), june[3].as_str()), ("Early June", "Late June"));
    let instants = list(
        &app,
        &campaign_id,
        "?from=2024-06-15T10:00:00Z&to=2024-07-01T00:00:00Z",
    )
    .await;
    assert_eq!(instants.len(), 4, "both bounds inclusive: {instants:?}");
    assert_eq!(list(&app, &campaign_id, "?from=2024-07-01").await, ["July"]);
    assert_eq!(list(&app, &campaign_id, "?to=2024-05-31").await, ["May"]);
    assert_eq!(
        list(&app, &campaign_id, "?platform=wordpress").await.len(),
        3,
        "platform matches case-insensitively"
    );
    assert_eq!(
        list(&app, &campaign_id, "?content_type=BLOG&status=draft")
            .await
            .len(),
        2
    );
    assert_eq!(
        list(&app, &campaign_id, "?status=scheduled&from=2024-06-02").await,
        ["Mid June"]
    );
    assert_eq!(
        list(&app, &campaign_id, "?content_type=podcast").await,
        Vec::<String>::new()
    );

    // Pages of two, walked with the cursor, give exactly the unpaginated order.
    let mut walked = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page: Value = app
            .get(&format!("/campaigns/{campaign_id}/content{query}"), &app.key)
            .await
            .json()
            .await
            .unwrap();
        walked.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["title"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(walked, all);

    for (query, field) in [
        ("?from=June", "from"),
        ("?to=2024-02-30", "to"),
        ("?from=2024-06-02&to=2024-06-01", "to"),
        ("?status=live", "status"),
        ("?platform=", "platform"),
        ("?limit=0", "limit"),
        ("?cursor=zzz", "cursor"),
    ] {
        let response = app
            .get(&format!("/campaigns/{campaign_id}/content{query}"), &app.key)
            .await;
        assert_eq!(assert_error(response, 400, "").await["field"], field, "{query}");
    }
}

#[tokio::test]
async fn delete_item_and_campaign_and_keep_history() {
    let app = spawn_app().await;
    let campaign_id = app.campaign().await;
    let content = format!("/campaigns/{campaign_id}/content");
    let first = create(
        &app,
        &campaign_id,
        seed_form(ASSIGNEE, Some(file(red_png(), "file.png", "image/png"))),
    )
    .await;
    let second = create(
        &app,
        &campaign_id,
        seed_form(ASSIGNEE, Some(file(blue_png(), "file.png", "image/png"))),
    )
    .await;
    let first_path = format!("{content}/{}", first["id"].as_str().unwrap());

    let stale = app
        .request(Method::DELETE, &first_path, &app.key)
        .header("if-match", "\"7\"")
        .send()
        .await
        .unwrap();
    assert_error(stale, 412, "").await;
    let deleted = app
        .request(Method::DELETE, &first_path, &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_error(app.get(&first_path, &app.key).await, 404, "Content not found").await;
    assert_error(
        download(&app, first["media"]["url"].as_str().unwrap(), &app.key).await,
        404,
        "Content not found",
    )
    .await;
    assert_eq!(list(&app, &campaign_id, "").await.len(), 1);
    assert_eq!(
        app.media_dir.files().len(),
        2,
        "the history still names the deleted item's file"
    );

    let response = app
        .request(Method::DELETE, &format!("/campaigns/{campaign_id}"), &app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let second_path = format!("{content}/{}", second["id"].as_str().unwrap());
    assert_error(app.get(&content, &app.key).await, 404, "Campaign not found").await;
    assert_error(app.get(&second_path, &app.key).await, 404, "Campaign not found").await;
    assert_error(
        download(&app, second["media"]["url"].as_str().unwrap(), &app.key).await,
        404,
        "Campaign not found",
    )
    .await;
    let post = app
        .multipart(
            Method::POST,
            &content,
            &app.key,
            seed_form(ASSIGNEE, Some(file(red_png(), "f.png", "image/png"))),
        )
        .send()
        .await
        .unwrap();
    assert_error(post, 404, "Campaign not found").await;
    let put = app
        .multipart(
            Method::PUT,
            &second_path,
            &app.key,
            Form::new().text("title", "x"),
        )
        .send()
        .await
        .unwrap();
    assert_error(put, 404, "Campaign not found").await;
    let rows: i64 = app
        .db
        .connect()
        .await
        .query_one("SELECT count(*) FROM content_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    assert_eq!(app.event_count("content-").await, 3);

    // Garbage collection keeps every file an event names, and removes one none does.
    let orphan = app
        .media_dir
        .path()
        .join("sha256")
        .join("ab")
        .join("ab".repeat(32));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"never referenced").unwrap();
    // Older than the grace period (none here) for certain, whatever the
    // clock's and the file system's resolution.
    std::fs::File::options()
        .write(true)
        .open(&orphan)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let report = marketing::media_gc::run(&app.config, Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!((report.files_kept, report.files_deleted), (2, 1));
    assert!(!orphan.exists());
    assert_eq!(app.media_dir.files().len(), 2);
}

#[tokio::test]
async fn idempotent_multipart_create_stores_once() {
    let app = spawn_app().await;
    let campaign_id = app.campaign().await;
    let content = format!("/campaigns/{campaign_id}/content");
    let bytes = big_png(2 * 1024 * 1024);
    let post = |key: &'static str, title: &'static str| {
        app.multipart(
            Method::POST,
            &content,
            &app.key,
            Form::new()
                .text("title", title)
                .text("content_type", "blog")
                .part("media", file(bytes.clone(), "big.png", "image/png")),
        )
        .header("idempotency-key", key)
        .send()
    };
    let first = post("upload-1", "Once").await.unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].clone();
    let body = first.text().await.unwrap();
    let replay = post("upload-1", "Once").await.unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["location"], location);
    assert_eq!(replay.text().await.unwrap(), body);
    let conflict = post("upload-1", "Twice").await.unwrap();
    assert_error(
        conflict,
        409,
        "Idempotency-Key was already used with a different request",
    )
    .await;
    assert_eq!(app.event_count("content-").await, 1);
    assert_eq!(list(&app, &campaign_id, "").await, ["Once"]);
    assert_eq!(app.media_dir.files().len(), 1);
    // JSON routes still use the JSON flavour, unchanged.
    let json_post = app
        .json(
            Method::POST,
            &content,
            &app.key,
            r#"{"title": "J", "content_type": "blog"}"#,
        )
        .header("idempotency-key", "json-1")
        .send()
        .await
        .unwrap();
    assert_eq!(json_post.status(), 201);
}
