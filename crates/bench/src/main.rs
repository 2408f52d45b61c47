//! `marketing-bench`: drives a running Marketing API with N concurrent
//! connections for a fixed time and prints throughput and latency percentiles
//! as one JSON line, for `deploy/bench/run.sh` to compare against pgbench.
//! With `--rate` the load is open-loop instead (a fixed number of requests a
//! second, whatever the latency), for `deploy/bench/isolation.sh`.

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
    /// Requests per second over all connections (open loop): each connection
    /// sends on a fixed schedule, and a latency is counted from the time its
    /// request was due, not from when it went out, so a server that stalls is
    /// charged for the requests it held back (no coordinated omission).
    /// Without it every connection sends its next request as soon as the
    /// previous one is answered.
    #[arg(long)]
    rate: Option<f64>,
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
    // Each connection's share of the rate: one request every `interval`.
    let interval = match args.rate {
        Some(rate) if rate > 0.0 => Some(Duration::from_secs_f64(args.concurrency as f64 / rate)),
        Some(_) => anyhow::bail!("--rate must be positive"),
        None => None,
    };
    let workers = (0..args.concurrency).map(|worker| {
        let load = Load {
            client: client.clone(),
            base: base.clone(),
            key: args.key.clone(),
            ids: ids.clone(),
            body: body.clone(),
            scenario: args.scenario,
        };
        // Connections start spread over one interval, not all at once.
        let first =
            started + interval.map_or(Duration::ZERO, |i| i * worker as u32 / args.concurrency as u32);
        tokio::spawn(load.run(worker, first, interval, deadline))
    });
    let mut latencies = Vec::new();
    let mut service = Vec::new();
    let mut errors = 0;
    for result in futures::future::join_all(workers).await {
        let (l, s, e) = result?;
        latencies.extend(l);
        service.extend(s);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    service.sort();
    let at = |sorted: &[Duration], p: f64| {
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let pct = |p: f64| at(&latencies, p);
    println!(
        "{}",
        json!({
            "scenario": format!("{:?}", args.scenario).to_lowercase(),
            "concurrency": args.concurrency,
            "requests": latencies.len(),
            "errors": errors,
            "seconds": elapsed,
            "rps": latencies.len() as f64 / elapsed,
            "rate": args.rate,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
            // From sending to the answer, without the time a request waited
            // for its connection (equal to the above without `--rate`).
            "service_p50_ms": at(&service, 0.50),
            "service_p99_ms": at(&service, 0.99),
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
    /// number of failures. With an `interval`, the k-th request is due at
    /// `first + k * interval` and its latency counts from then; the second
    /// list is the time from sending to the answer (the same without one).
    async fn run(
        self,
        worker: usize,
        first: Instant,
        interval: Option<Duration>,
        deadline: Instant,
    ) -> (Vec<Duration>, Vec<Duration>, u64) {
        let mut latencies = Vec::new();
        let mut service = Vec::new();
        let mut errors = 0u64;
        let mut n = worker;
        let mut due = first;
        loop {
            let t = match interval {
                Some(interval) => {
                    tokio::time::sleep_until(due.into()).await;
                    let t = due;
                    due += interval;
                    t
                }
                None => Instant::now(),
            };
            if t >= deadline {
                break;
            }
            let sent = Instant::now();
            if self.request(worker, n).await {
                latencies.push(t.elapsed());
                service.push(sent.elapsed());
            } else {
                errors += 1;
            }
            n += 7919; // stride through the preloaded ids
        }
        (latencies, service, errors)
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
