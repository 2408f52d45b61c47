//! `marketing-bench`: drives a running Marketing API with N concurrent
//! connections for a fixed time and prints throughput and latency percentiles
//! as one JSON line, for `deploy/bench/run.sh` to compare against pgbench.

use clap::{Parser, ValueEnum};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// `POST /campaigns` with a small valid body.
    Create,
    /// `GET /campaigns/{id}` over a set of campaigns created first.
    Get,
    /// `POST /campaigns/{id}/analytics` spread over the preloaded campaigns,
    /// a different day or source each time.
    Track,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "MARKETING_API_KEY")]
    key: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Campaigns created before a `get` or `track` run.
    #[arg(long, default_value_t = 1000)]
    preload: usize,
    /// The JSON body of each `create` (default: a small valid one). The
    /// benchmark script passes the seed's full example, as the peer uses.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let base = format!("{}/v1/dev/marketing/campaigns", args.url);
    let ids: Arc<Vec<String>> = Arc::new(match args.scenario {
        Scenario::Create => Vec::new(),
        Scenario::Get | Scenario::Track => preload(&client, &base, &args.key, args.preload).await?,
    });
    let body: Arc<serde_json::Value> = Arc::new(match &args.body_file {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None => json!({ "name": "bench", "type": "sales", "total_budget": 1000.00 }),
    });
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let workers = (0..args.concurrency).map(|worker| {
        let load = Load {
            client: client.clone(),
            base: base.clone(),
            key: args.key.clone(),
            ids: ids.clone(),
            body: body.clone(),
            scenario: args.scenario,
        };
        tokio::spawn(load.run(worker, deadline))
    });
    let mut latencies = Vec::new();
    let mut errors = 0;
    for result in futures::future::join_all(workers).await {
        let (l, e) = result?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{}",
        json!({
            "scenario": format!("{:?}", args.scenario).to_lowercase(),
            "concurrency": args.concurrency,
            "requests": latencies.len(),
            "errors": errors,
            "seconds": elapsed,
            "rps": latencies.len() as f64 / elapsed,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        })
    );
    Ok(())
}

/// One worker's share of the load.
struct Load {
    client: reqwest::Client,
    base: String,
    key: String,
    ids: Arc<Vec<String>>,
    body: Arc<serde_json::Value>,
    scenario: Scenario,
}

impl Load {
    /// Requests until `deadline`: the latencies of the successes, and the
    /// number of failures.
    async fn run(self, worker: usize, deadline: Instant) -> (Vec<Duration>, u64) {
        let mut latencies = Vec::new();
        let mut errors = 0u64;
        let mut n = worker;
        while Instant::now() < deadline {
            let t = Instant::now();
            if self.request(worker, n).await {
                latencies.push(t.elapsed());
            } else {
                errors += 1;
            }
            n += 7919; // stride through the preloaded ids
        }
        (latencies, errors)
    }

    async fn request(&self, worker: usize, n: usize) -> bool {
        let response = match self.scenario {
            Scenario::Create => {
                let mut body = (*self.body).clone();
                body["name"] = json!(format!("bench {worker}-{n}"));
                self.client
                    .post(&self.base)
                    .bearer_auth(&self.key)
                    .json(&body)
                    .send()
                    .await
            }
            Scenario::Track => {
                let id = &self.ids[n % self.ids.len()];
                // A new (day, source) pair almost every time, as a day's
                // figures arrive per source, and some restated ones.
                let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()
                    + chrono::Days::new((n / 7 % 3650) as u64);
                self.client
                    .post(format!("{}/{id}/analytics", self.base))
                    .bearer_auth(&self.key)
                    .json(&json!({
                        "date": day.to_string(),
                        "source": format!("source{}", n % 7),
                        "metrics": {"impressions": 1000, "clicks": 50, "conversions": 5,
                                    "cost": 25.00, "revenue": 500.00}
                    }))
                    .send()
                    .await
            }
            Scenario::Get => {
                let id = &self.ids[n % self.ids.len()];
                self.client
                    .get(format!("{}/{id}", self.base))
                    .bearer_auth(&self.key)
                    .send()
                    .await
            }
        };
        match response {
            Ok(r) => {
                let status = r.status();
                let _ = r.bytes().await;
                status.is_success()
            }
            Err(_) => false,
        }
    }
}

async fn preload(client: &reqwest::Client, base: &str, key: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let created: serde_json::Value = client
            .post(base)
            .bearer_auth(key)
            .json(&json!({ "name": format!("preload {i}") }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ids.push(created["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(ids)
}
