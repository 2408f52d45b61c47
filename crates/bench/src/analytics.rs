//! Analytics benchmark: tracks per second, and summary latency for a campaign
//! with two years of daily data across ten sources.
//!
//! It starts the real application (the `marketing serve` wiring, in this
//! process) on a fresh Postgres database, creates a campaign, tracks
//! `--days × --sources` records over HTTP with `--concurrency` clients in flight,
//! checks that the totals came out exact, then times summary and row reads one
//! request at a time. The database is dropped at the end.
//!
//! ```text
//! cargo run --release -p bench --bin analytics-bench -- --days 730 --sources 10 --concurrency 32
//! ```
//!
//! Client and server share the process and the machine, so the figures are a
//! floor for a dedicated server, not a ceiling.

use anyhow::{ensure, Context};
use clap::Parser;
use domain::ProjectSlug;
use futures::StreamExt;
use marketing::config::Config;
use marketing::startup::{Application, Role};
use rust_decimal::Decimal;
use serde_json::Value;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Analytics: tracks/s and summary latency over real HTTP and Postgres")]
struct Args {
    /// Postgres to create the benchmark database in.
    #[arg(
        long,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    admin_url: String,
    /// Days of data, one record per day and source (730 = two years).
    #[arg(long, default_value_t = 730)]
    days: u32,
    /// Sources per day.
    #[arg(long, default_value_t = 10)]
    sources: u32,
    /// Track requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Timed requests per read.
    #[arg(long, default_value_t = 200)]
    reads: usize,
    /// Keep the benchmark database instead of dropping it.
    #[arg(long)]
    keep_database: bool,
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

fn latency_line(name: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 95.0),
        percentile(&samples, 99.0),
        percentile(&samples, 100.0),
    )
}

async fn admin(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot reach Postgres at {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name = format!("mk_bench_{}", uuid::Uuid::new_v4().simple());
    let admin_client = admin(&args.admin_url).await?;
    admin_client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let base = args
        .admin_url
        .rsplit_once('/')
        .map_or(args.admin_url.as_str(), |(base, _)| base);
    let database_url = format!("{base}/{name}");
    let result = run(&args, &database_url).await;
    if args.keep_database {
        eprintln!("kept database {name}");
    } else {
        admin_client
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await?;
    }
    result
}

async fn run(args: &Args, database_url: &str) -> anyhow::Result<()> {
    let mut config = Config::for_database(database_url);
    config.pool_size = 32;
    let app = Application::build(config, Role::Serve).await?;
    let address = format!("http://127.0.0.1:{}/v1/dev/marketing", app.port());
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());

    let keys = web::ApiKeys::new(event_store::connect_pool(database_url, 2)?);
    let project = ProjectSlug::parse("bench").map_err(anyhow::Error::msg)?;
    let key = keys.create(&project, "bench").await?.1;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let campaign: Value = client
        .post(format!("{address}/campaigns"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(
            r#"{"name": "Benchmark", "status": "active", "total_budget": 100000000.00,
                "kpis": [{"name": "Conversions", "target": 1000000}, {"name": "Revenue", "target": 50000000}]}"#,
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let campaign_id = campaign["id"].as_str().context("campaign id")?.to_owned();
    let analytics = format!("{address}/campaigns/{campaign_id}/analytics");

    // The data set: one record per day and source, with cent amounts that do
    // not add up to round numbers, so an inexact sum would show.
    let first_day = calendar_day(2023, 1, 1)?;
    let mut bodies = Vec::new();
    let mut expected_cost_cents: i64 = 0;
    let mut expected_clicks: i64 = 0;
    for day in 0..args.days {
        let date = first_day + chrono::Days::new(u64::from(day));
        for source in 0..args.sources {
            let cents = 1 + i64::from((day * 31 + source * 17) % 50_000);
            let clicks = 10 + i64::from((day + source * 3) % 90);
            expected_cost_cents += cents;
            expected_clicks += clicks;
            bodies.push(format!(
                r#"{{"date": "{date}", "source": "source-{source}", "metrics": {{"impressions": {}, "clicks": {clicks}, "conversions": {}, "cost": {}, "revenue": {}, "custom_metrics": {{"engagement_rate": 0.05}}}}}}"#,
                clicks * 40,
                clicks / 10,
                Decimal::new(cents, 2),
                Decimal::new(cents * 3, 2),
            ));
        }
    }
    let total = bodies.len();
    eprintln!(
        "tracking {total} records ({} days x {} sources) with {} in flight...",
        args.days, args.sources, args.concurrency
    );
    let started = Instant::now();
    let outcomes: Vec<(u16, Duration)> = futures::stream::iter(bodies)
        .map(|body| {
            let client = &client;
            let key = &key;
            let analytics = &analytics;
            async move {
                let sent = Instant::now();
                let status = client
                    .post(analytics)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                (status, sent.elapsed())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let tracking = started.elapsed();
    let failures = outcomes.iter().filter(|(status, _)| *status != 201).count();
    ensure!(failures == 0, "{failures} tracks failed");
    let tracks_per_second = total as f64 / tracking.as_secs_f64();

    // Exactness: the summary of everything equals the sums computed here.
    let summary_url = format!("{analytics}/summary");
    let everything: Value = client
        .get(&summary_url)
        .bearer_auth(&key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        everything["records"].as_u64() == Some(total as u64),
        "record count"
    );
    let cost = everything["metrics"]["cost"].to_string();
    ensure!(
        cost == Decimal::new(expected_cost_cents, 2).to_string(),
        "cost total {cost} is not exact"
    );
    ensure!(everything["metrics"]["clicks"].to_string() == expected_clicks.to_string());

    let last_month_start = first_day + chrono::Days::new(u64::from(args.days.saturating_sub(30)));
    let last_day = first_day + chrono::Days::new(u64::from(args.days.saturating_sub(1)));
    let reads = [
        ("summary, whole history", summary_url.clone()),
        (
            "summary, last 30 days",
            format!("{summary_url}?start_date={last_month_start}&end_date={last_day}"),
        ),
        (
            "rows, last 30 days, all sources (limit 500)",
            format!("{analytics}?start_date={last_month_start}&end_date={last_day}&limit=500"),
        ),
        (
            "rows, whole history by month",
            format!("{analytics}?granularity=month&limit=500"),
        ),
    ];
    let mut lines = Vec::new();
    for (name, url) in reads {
        let mut samples = Vec::with_capacity(args.reads);
        for _ in 0..args.reads {
            let sent = Instant::now();
            let response = client.get(&url).bearer_auth(&key).send().await?;
            ensure!(response.status() == 200, "{name}: {}", response.status());
            response.bytes().await?;
            samples.push(sent.elapsed());
        }
        lines.push(latency_line(name, samples));
    }

    println!(
        "tracks: {total} in {:.2} s = {tracks_per_second:.0} tracks/s ({} in flight)",
        tracking.as_secs_f64(),
        args.concurrency
    );
    println!("| request | n | p50 ms | p95 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    println!(
        "{}",
        latency_line(
            "track (POST, incl. read-after-write wait)",
            outcomes.iter().map(|(_, d)| *d).collect()
        )
    );
    for line in lines {
        println!("{line}");
    }
    println!("totals exact: cost {cost}, clicks {expected_clicks}");

    // Idle keep-alive connections would hold up the graceful shutdown.
    drop(client);
    shutdown.cancel();
    server.await??;
    Ok(())
}

fn calendar_day(year: i32, month: u32, day: u32) -> anyhow::Result<chrono::NaiveDate> {
    chrono::NaiveDate::from_ymd_opt(year, month, day).context("valid date")
}
