//! The split deployment with shared media: `command-api`, `query-api` and
//! `projector` as three processes of the real binary on one database, all
//! with `MEDIA_STORE_URL=s3://…` pointing at a real S3-compatible server on
//! loopback (`s3s-fs`, see `test_support::s3`). A file uploaded through the
//! command role is downloaded, byte for byte, through the query role; the
//! object is in the S3 server's storage under its content address, nothing
//! is left in staging, and no role used a local media directory.

use serde_json::Value;
use sha2::{Digest, Sha256};
use test_support::fresh_database;
use test_support::process::Marketing;
use test_support::s3::S3Server;

const BIN: &str = env!("CARGO_BIN_EXE_marketing");
/// The objects' prefix inside the bucket (`s3://bucket/prefix`).
const PREFIX: &str = "tenant-media";
/// Larger than S3's 5 MiB multipart part, so the upload is sent as two parts.
const FILE_BYTES: usize = 6 * 1024 * 1024 + 12_345;
const API: &str = "/v1/dev/marketing";

/// A file that starts like a PNG (the type is sniffed from the first bytes)
/// followed by varied bytes, so a part sent twice or out of order shows.
fn png_file(len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let mut state: u32 = 0x9e37_79b9;
    let header = bytes.len();
    bytes.extend((header..len).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as u8
    }));
    bytes
}

async fn json(response: reqwest::Response, status: u16, what: &str) -> Value {
    let got = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(got, status, "{what}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_uploaded_through_the_command_role_is_downloaded_through_the_query_role_from_s3() {
    let db = fresh_database().await;
    let s3 = S3Server::start().await;
    let marketing = Marketing::new(BIN, &db.url);
    marketing.migrate();
    let key = marketing.api_key("acme", "split-roles");

    // Never created: a role that fell back to a local directory would make it
    // (a local store creates its MEDIA_DIR when it opens).
    let local_media = std::env::temp_dir().join(format!("split-roles-no-media-{}", uuid::Uuid::new_v4()));
    let mut env = s3.env();
    env.extend([
        ("MEDIA_STORE_URL", s3.media_store_url(PREFIX)),
        ("MEDIA_DIR", local_media.to_str().unwrap().to_owned()),
        // Far beyond what a loaded machine needs, so every write below
        // answers with its result projected (checked on /metrics at the end).
        ("READ_AFTER_WRITE_TIMEOUT_MS", "120000".to_owned()),
        ("RATE_LIMIT_PER_SECOND", "0".to_owned()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let projector = marketing.spawn("projector", &env).await;
    let command = marketing.spawn("command-api", &env).await;
    let query = marketing.spawn("query-api", &env).await;
    let writes = format!("{}{API}", command.base_url());
    let reads = format!("{}{API}", query.base_url());
    let client = reqwest::Client::new();

    let campaign = json(
        client
            .post(format!("{writes}/campaigns"))
            .bearer_auth(&key)
            .json(&serde_json::json!({ "name": "Split roles" }))
            .send()
            .await
            .unwrap(),
        201,
        "create the campaign through the command role",
    )
    .await;
    let campaign_id = campaign["id"].as_str().unwrap();
    // Read-after-write across processes: no polling.
    let read = json(
        client
            .get(format!("{reads}/campaigns/{campaign_id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
        200,
        "the campaign through the query role",
    )
    .await;
    assert_eq!(read["name"], "Split roles");

    let file = png_file(FILE_BYTES);
    let sha256 = hex::encode(Sha256::digest(&file));
    let form = reqwest::multipart::Form::new()
        .text("title", "Launch banner")
        .text("content_type", "social_post")
        .part(
            "media",
            reqwest::multipart::Part::bytes(file.clone())
                .file_name("banner.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let created = json(
        client
            .post(format!("{writes}/campaigns/{campaign_id}/content"))
            .bearer_auth(&key)
            .multipart(form)
            .send()
            .await
            .unwrap(),
        201,
        "upload through the command role",
    )
    .await;
    assert_eq!(created["media"]["sha256"], sha256.as_str(), "{created}");
    assert_eq!(created["media"]["size"], file.len() as u64);
    assert_eq!(created["media"]["media_type"], "image/png");
    let content_id = created["id"].as_str().unwrap();

    let item = json(
        client
            .get(format!("{reads}/campaigns/{campaign_id}/content/{content_id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
        200,
        "the content item through the query role",
    )
    .await;
    assert_eq!(item["title"], "Launch banner");
    assert_eq!(item["media"]["sha256"], sha256.as_str(), "{item}");
    let media_url = item["media"]["url"].as_str().unwrap().to_owned();
    assert_eq!(
        media_url,
        format!("{API}/campaigns/{campaign_id}/content/{content_id}/media")
    );

    let download = client
        .get(format!("{}{media_url}", query.base_url()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200, "download through the query role");
    assert_eq!(download.headers()["content-type"], "image/png");
    assert_eq!(download.headers()["etag"], format!("\"{sha256}\"").as_str());
    let downloaded = download.bytes().await.unwrap();
    assert_eq!(downloaded.len(), file.len());
    assert!(
        downloaded == file,
        "the downloaded bytes differ from the uploaded ones"
    );
    // The download came from the query process: the command role serves no
    // reads of content.
    let not_served = client
        .get(format!("{}{media_url}", command.base_url()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(
        !not_served.status().is_success(),
        "the command role served a read: {}",
        not_served.status()
    );

    // In the S3 server's own storage, under its content address and the
    // configured prefix; the staging object was moved (copied and deleted)
    // into place, so it is the only object.
    let object = format!("{PREFIX}/sha256/{}/{sha256}", &sha256[..2]);
    assert_eq!(s3.object_keys(PREFIX), vec![object.clone()]);
    let stored = std::fs::read(s3.object_file(&object)).unwrap();
    assert!(stored == file, "the stored object differs from the upload");
    assert!(
        !local_media.exists(),
        "a role created the local MEDIA_DIR {}",
        local_media.display()
    );

    assert_eq!(
        command
            .metric(&client, "marketing_read_after_write_timeouts_total")
            .await,
        0.0,
        "a write answered before its read model had it"
    );
    drop((query, command, projector));
}
