//! The auditor's commands: `replay`, `history`, `verify`, on either backend
//! of the log (`EVENT_STORE_URL`): the store and its [`LogReader`] say how
//! to read it.

use crate::config::Config;
use crate::progress::{Progress, Unit};
use anyhow::Context;
use event_store::{connect_pool, EventStore, HistoryFilter, LogPosition, Wakeups};
use projector::{projections_for, ReplayOptions};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

pub async fn replay(config: &Config, only: Option<&str>) -> anyhow::Result<()> {
    let pool = connect_pool(&config.database_url, 8)?;
    let store: Arc<dyn EventStore> = config.event_store(pool.clone(), Wakeups::new())?;
    let log = store.clone().log_reader();
    let vault = config.lead_vault()?;
    let projections: Vec<_> = projections_for(&vault, &log)
        .into_iter()
        .filter(|p| only.is_none_or(|name| p.name() == name))
        .collect();
    if projections.is_empty() {
        let known: Vec<_> = projections_for(&vault, &log).iter().map(|p| p.name()).collect();
        anyhow::bail!(
            "no projection named {:?}; known: {}",
            only.unwrap_or_default(),
            known.join(", ")
        );
    }
    let total = log.count(&pool).await?;
    for projection in projections {
        let name = projection.name();
        let mut progress = Progress::new(config, format!("replay {name}"), Unit::Events, Some(total));
        let outcome = projector::replay(
            store.as_ref(),
            &pool,
            projection.as_ref(),
            &ReplayOptions {
                shards: config.projection_shards,
                ..ReplayOptions::default()
            },
            |events, _position| progress.set(events),
        )
        .await
        .with_context(|| format!("replay of {name} failed"))?;
        progress.finish();
        let seconds = outcome.elapsed.as_secs_f64();
        println!(
            "{name}: rebuilt from {} events in {seconds:.1}s ({:.0} events/s) and swapped in",
            outcome.events,
            outcome.events as f64 / seconds.max(1e-9)
        );
    }
    Ok(())
}

pub async fn history(
    config: &Config,
    campaign_id: Uuid,
    json: bool,
    event_type: Option<String>,
) -> anyhow::Result<()> {
    let pool = connect_pool(&config.database_url, 2)?;
    let log = config.event_store(pool.clone(), Wakeups::new())?.log_reader();
    if query_api::history::campaign_owner(&pool, &log, campaign_id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .is_none()
    {
        anyhow::bail!("no campaign {campaign_id} in the log");
    }
    let filter = HistoryFilter {
        event_type,
        ..HistoryFilter::default()
    };
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:>10}  {:<27}  {:<45}  {:>4}  {:<24}  {:<36}  data",
            "position", "recorded_at", "stream", "ver", "type", "api key"
        )?;
    }
    let mut after = LogPosition::START;
    loop {
        let page = log
            .correlated(
                &pool,
                domain::upcast::ALL,
                &campaign_id.to_string(),
                &filter,
                after,
                500,
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in page {
            let entry = query_api::history::entry(event);
            if json {
                writeln!(out, "{}", serde_json::to_string(&entry)?)?;
            } else {
                let key = entry.actor["api_key_name"]
                    .as_str()
                    .map(|name| format!("{name} ({})", entry.actor["api_key_id"].as_str().unwrap_or("?")))
                    .unwrap_or_else(|| "-".into());
                let mut data = entry.data.to_string();
                if data.len() > 120 {
                    data.truncate(data.char_indices().nth(117).map_or(data.len(), |(i, _)| i));
                    data.push_str("...");
                }
                writeln!(
                    out,
                    "{:>10}  {:<27}  {:<45}  {:>4}  {:<24}  {:<36}  {data}",
                    entry.position,
                    entry.recorded_at.to_rfc3339(),
                    entry.stream_id,
                    entry.version,
                    entry.event_type,
                    key
                )?;
            }
        }
    }
    Ok(())
}

pub async fn verify(config: &Config) -> anyhow::Result<()> {
    let pool = connect_pool(&config.database_url, 2)?;
    let log = config.event_store(pool.clone(), Wakeups::new())?.log_reader();
    let started = Instant::now();
    let mut progress = Progress::new(config, "verify", Unit::Events, Some(log.count(&pool).await?));
    let report = log.verify(&pool, |events| progress.set(events)).await?;
    progress.set(report.events);
    progress.finish();
    println!(
        "checked {} events in {} streams in {:.1}s",
        report.events,
        report.streams,
        started.elapsed().as_secs_f64()
    );
    println!("log digest: {}", report.log_digest);
    match report.first_break {
        None => {
            println!("every hash chain is intact");
            Ok(())
        }
        Some(broken) => anyhow::bail!(
            "hash chain broken in stream {} at version {}: {}",
            broken.stream_id,
            broken.version,
            broken.reason
        ),
    }
}
