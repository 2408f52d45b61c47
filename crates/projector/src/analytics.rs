//! The `analytics` read model: exact per-campaign, per-day, per-source sums of
//! `AnalyticsRecorded` events (`analytics_daily`, custom metrics in
//! `analytics_daily_custom`), so analytics reads touch at most one row per day
//! and source (and custom metric), never the raw events.
//!
//! A campaign's `CampaignDeleted` removes its rows and leaves a tombstone
//! ([`crate::tombstones`]), so
//! records that reach the log after the delete stay out. Every write is a pure
//! function of the log in order, so truncating the tables and resetting the
//! checkpoint rebuilds exactly the same rows.

use crate::{decode, tombstones, Projection, ProjectionError, Reads, CAMPAIGN_DELETIONS};
use async_trait::async_trait;
use chrono::NaiveDate;
use domain::analytics::{AnalyticsEvent, AnalyticsRecorded, Quantity, Totals};
use domain::campaign::CampaignEvent;
use event_store::RecordedEvent;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

pub struct AnalyticsProjection;

impl AnalyticsProjection {
    pub const NAME: &'static str = "analytics";
    /// Every table the projection owns; a rebuild truncates exactly these (its
    /// tombstones are in the shared `campaign_tombstones`, see [`crate::tombstones`]).
    pub const TABLES: [&'static str; 2] = ["analytics_daily", "analytics_daily_custom"];
}

const READS: [Reads; 2] = [
    Reads::stream(domain::analytics::STREAM_PREFIX),
    CAMPAIGN_DELETIONS,
];

/// What the batch adds to one `(campaign, day, source)` row.
#[derive(Default)]
struct Delta {
    totals: Totals,
    custom: BTreeMap<String, Decimal>,
    records: i64,
}

type RowKey = (Uuid, NaiveDate, String);

/// `analytics_daily_custom` rows to upsert, as parallel arrays for `unnest`.
#[derive(Default)]
struct CustomColumns {
    campaign_ids: Vec<Uuid>,
    days: Vec<NaiveDate>,
    sources: Vec<String>,
    names: Vec<String>,
    values: Vec<Decimal>,
}

/// `analytics_daily` rows to upsert, as parallel arrays for `unnest`.
#[derive(Default)]
struct DailyColumns {
    campaign_ids: Vec<Uuid>,
    days: Vec<NaiveDate>,
    sources: Vec<String>,
    impressions: Vec<Decimal>,
    clicks: Vec<Decimal>,
    conversions: Vec<Decimal>,
    costs: Vec<Decimal>,
    revenues: Vec<Decimal>,
    records: Vec<i64>,
}

enum Step {
    Record(AnalyticsRecorded),
    Delete(Uuid),
}

#[async_trait]
impl Projection for AnalyticsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &Self::TABLES
    }

    /// Its own events, and campaign deletions (which hide its rows).
    fn reads(&self) -> Option<&'static [Reads]> {
        Some(&READS)
    }

    /// Folds the batch in memory into one delta per row, then writes it with at
    /// most six statements, however many events the batch holds.
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let steps = steps(events)?;
        if steps.is_empty() {
            return Ok(());
        }
        let campaigns: Vec<Uuid> = steps
            .iter()
            .map(|step| match step {
                Step::Record(r) => r.campaign_id,
                Step::Delete(id) => *id,
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut gone = tombstones::load(tx, Self::NAME, &campaigns).await?;
        let (deltas, newly_deleted) = fold(steps, &mut gone);
        tombstones::record(tx, Self::NAME, &newly_deleted, &Self::TABLES).await?;
        if deltas.is_empty() {
            return Ok(());
        }
        write(tx, deltas).await
    }
}

/// The batch's records and campaign deletions, in log order.
fn steps(events: &[RecordedEvent]) -> Result<Vec<Step>, ProjectionError> {
    let [records, deletions] = &READS;
    let mut steps = Vec::new();
    for event in events {
        if records.matches(event) {
            let AnalyticsEvent::Recorded(recorded) = decode(event)?;
            steps.push(Step::Record(recorded));
        } else if deletions.matches(event) {
            if let CampaignEvent::Deleted(deleted) = decode(event)? {
                steps.push(Step::Delete(deleted.campaign_id));
            }
        }
    }
    Ok(steps)
}

/// One delta per row (records of campaigns in `gone` stay out), and the
/// campaigns the batch deleted.
fn fold(steps: Vec<Step>, gone: &mut HashSet<Uuid>) -> (BTreeMap<RowKey, Delta>, Vec<Uuid>) {
    // BTreeMap: rows are written in key order, the same on every run.
    let mut deltas: BTreeMap<RowKey, Delta> = BTreeMap::new();
    let mut newly_deleted = Vec::new();
    for step in steps {
        match step {
            Step::Record(r) if !gone.contains(&r.campaign_id) => {
                let delta = deltas.entry((r.campaign_id, r.date, r.source)).or_default();
                delta.totals.add(&r.metrics.totals());
                for (name, Quantity(value)) in r.metrics.custom_metrics {
                    *delta.custom.entry(name).or_default() += value;
                }
                delta.records += 1;
            }
            Step::Record(_) => {}
            Step::Delete(id) => {
                if gone.insert(id) {
                    newly_deleted.push(id);
                }
                deltas.retain(|(campaign, _, _), _| *campaign != id);
            }
        }
    }
    (deltas, newly_deleted)
}

/// Adds the deltas into their rows: one upsert per table.
async fn write(
    tx: &tokio_postgres::Transaction<'_>,
    deltas: BTreeMap<RowKey, Delta>,
) -> Result<(), ProjectionError> {
    let mut daily = DailyColumns::default();
    let mut custom = CustomColumns::default();
    for ((campaign_id, day, source), delta) in deltas {
        for (name, value) in delta.custom {
            custom.campaign_ids.push(campaign_id);
            custom.days.push(day);
            custom.sources.push(source.clone());
            custom.names.push(name);
            custom.values.push(value);
        }
        daily.campaign_ids.push(campaign_id);
        daily.days.push(day);
        daily.sources.push(source);
        daily.impressions.push(delta.totals.impressions);
        daily.clicks.push(delta.totals.clicks);
        daily.conversions.push(delta.totals.conversions);
        daily.costs.push(delta.totals.cost);
        daily.revenues.push(delta.totals.revenue);
        daily.records.push(delta.records);
    }
    tx.execute(
        "INSERT INTO analytics_daily AS d
             (campaign_id, day, source, impressions, clicks, conversions, cost, revenue, records)
         SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[], $4::numeric[], $5::numeric[],
                              $6::numeric[], $7::numeric[], $8::numeric[], $9::int8[])
         ON CONFLICT (campaign_id, day, source) DO UPDATE SET
             impressions = d.impressions + excluded.impressions,
             clicks = d.clicks + excluded.clicks,
             conversions = d.conversions + excluded.conversions,
             cost = d.cost + excluded.cost,
             revenue = d.revenue + excluded.revenue,
             records = d.records + excluded.records",
        &[
            &daily.campaign_ids,
            &daily.days,
            &daily.sources,
            &daily.impressions,
            &daily.clicks,
            &daily.conversions,
            &daily.costs,
            &daily.revenues,
            &daily.records,
        ],
    )
    .await?;
    if !custom.names.is_empty() {
        tx.execute(
            "INSERT INTO analytics_daily_custom AS c (campaign_id, day, source, name, value)
             SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[], $4::text[], $5::numeric[])
             ON CONFLICT (campaign_id, day, source, name) DO UPDATE SET
                 value = c.value + excluded.value",
            &[
                &custom.campaign_ids,
                &custom.days,
                &custom.sources,
                &custom.names,
                &custom.values,
            ],
        )
        .await?;
    }
    Ok(())
}
