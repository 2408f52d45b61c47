//! `marketing import-leads <campaign-id> <file.csv>`: the HTTP lead import,
//! run from the shell.
//!
//! It sends the file through the command API's own import route in this
//! process (no listener, no network), so the rules, limits and report are
//! exactly the endpoint's and there is no second import to keep in step. The
//! caller is the campaign's project, with a key made for the one request
//! (`leads:write` only, named `marketing import-leads (<user>)`, revoked when
//! answered), so the events record who imported as for any client. It does not
//! wait for the projectors: the leads show in reads once they have caught up.

use crate::config::Config;
use crate::progress::{Progress, Unit};
use anyhow::Context;
use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use command_api::CommandState;
use domain::ProjectSlug;
use event_store::{connect_pool, LogPosition, Wakeups};
use futures::StreamExt;
use http_body_util::BodyExt;
use projector::{ReadModelProgress, Written};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tower::ServiceExt;
use uuid::Uuid;
use web::{ApiKeys, Scope, Scopes};

const BOUNDARY: &str = "marketing-import-leads-7b1f0c2e";
const CHUNK: usize = 256 * 1024;

/// The CLI answers when the leads are written, not when they are projected.
struct NoWait;

#[async_trait]
impl ReadModelProgress for NoWait {
    async fn wait_for_writes(&self, _: LogPosition, _: Option<&[Written<'_>]>, _: Duration) -> bool {
        true
    }
}

/// How long the import's own key would stay valid if the command died
/// before revoking it: longer than any import runs.
const KEY_LIFETIME: Duration = Duration::from_secs(86_400);

pub async fn run(config: &Config, campaign_id: Uuid, file: &Path) -> anyhow::Result<()> {
    let pool = connect_pool(&config.database_url, 4)?;
    let log = config.event_store(pool.clone(), Wakeups::new())?.log_reader();
    let project = query_api::history::campaign_owner(&pool, &log, campaign_id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("no campaign {campaign_id}"))?;
    let opened = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let size = opened.metadata().await?.len();
    // The import goes through the endpoint's access guard like any client's,
    // with a key of its own: only `leads:write`, named for the operator, so
    // the events say who imported, and revoked as soon as it is answered.
    let keys = ApiKeys::new(pool.clone());
    let project = ProjectSlug::parse(&project).map_err(anyhow::Error::msg)?;
    let (key, secret) = keys
        .create_scoped(
            &project,
            &format!("marketing import-leads ({})", operator()),
            Scopes::of([Scope::LeadsWrite]),
            Some(KEY_LIFETIME),
        )
        .await?;
    let state = command_state(config, pool, keys.clone())?;
    let progress = Arc::new(Mutex::new(Progress::new(
        config,
        format!("import-leads {}", file.display()),
        Unit::Bytes,
        Some(size),
    )));
    let request =
        axum::http::Request::post(format!("/v1/dev/marketing/campaigns/{campaign_id}/leads/import"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .header("x-request-id", format!("cli-{}", Uuid::now_v7()))
            .header("authorization", format!("Bearer {secret}"))
            .body(multipart_body(opened, file, progress.clone()))?;
    let response = command_api::router(state).oneshot(request).await;
    // Revoked whatever the answer: the key exists for this one request.
    keys.revoke(key.id).await?;
    let response = response?;
    progress.lock().expect("progress lock").finish();
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let report: serde_json::Value =
        serde_json::from_slice(&body).context("the import's answer is not JSON")?;
    print_report(&report);
    anyhow::ensure!(
        status.is_success(),
        "import stopped ({status}): {}",
        report["message"].as_str().unwrap_or("see above")
    );
    Ok(())
}

/// The command side's state for one in-process request: no read-model
/// wait, no replica, no import worker (the CLI imports synchronously).
fn command_state(
    config: &Config,
    pool: deadpool_postgres::Pool,
    keys: ApiKeys,
) -> anyhow::Result<CommandState> {
    Ok(CommandState {
        store: config.event_store(pool.clone(), Wakeups::new())?,
        progress: Arc::new(NoWait),
        keys,
        default_currency: config.default_currency,
        pool,
        read_after_write_timeout: config.read_after_write_timeout(),
        // No replica to wait for either: the command answers once the leads
        // are written.
        replica: None,
        media: config.media_store().context("cannot open the media store")?,
        vault: config.lead_vault()?,
        lead_import: config.lead_import_limits(),
        analytics_import: config.analytics_import_limits(),
        // The CLI imports synchronously: no worker here.
        import_wake: Arc::default(),
    })
}

/// Who runs the command, for the audit trail.
fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown user".into())
}

/// The file as the `file` field of a multipart form, streamed in chunks, each
/// counted on the progress as the import takes it.
fn multipart_body(file: tokio::fs::File, path: &Path, progress: Arc<Mutex<Progress>>) -> Body {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().replace(['"', '\r', '\n'], "_"))
        .unwrap_or_else(|| "leads.csv".into());
    let head = Bytes::from(format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/csv\r\n\r\n"
    ));
    let tail = Bytes::from(format!("\r\n--{BOUNDARY}--\r\n"));
    let chunks = futures::stream::unfold(Some(file), move |file| {
        let progress = progress.clone();
        async move {
            let mut file = file?;
            let mut buffer = vec![0u8; CHUNK];
            match file.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    progress.lock().expect("progress lock").add(n as u64);
                    Some((Ok(Bytes::from(buffer)), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(head) })
        .chain(chunks)
        .chain(futures::stream::once(async move { Ok(tail) }));
    Body::from_stream(stream)
}

/// The counts, then each refused row. An import that stopped early (a limit,
/// an unreadable record) answers its error with the report so far inside.
fn print_report(answer: &serde_json::Value) {
    let report = answer.get("report").unwrap_or(answer);
    let count = |key: &str| report[key].as_u64().unwrap_or(0);
    println!(
        "{} rows: {} imported, {} duplicates, {} failed",
        count("rows"),
        count("imported"),
        count("duplicates"),
        count("failed")
    );
    let listed = report["errors"].as_array().into_iter().flatten();
    for error in listed {
        let field = error["field"]
            .as_str()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        println!(
            "line {}{field}: {}",
            error["line"],
            error["message"].as_str().unwrap_or("invalid row")
        );
    }
}
