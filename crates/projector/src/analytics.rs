//! The `analytics` read model: exact per-campaign, per-day, per-source sums of
//! `AnalyticsRecorded` events (`analytics_daily`, custom metrics in
//! `analytics_daily_custom`), so analytics reads touch at most one row per day
//! and source (and custom metric), never the raw events.
//!
//! A campaign's `CampaignDeleted` removes its rows and leaves a tombstone, so
//! records that reach the log after the delete stay out. Every write is a pure
//! function of the log in order, so truncating the tables and resetting the
//! checkpoint rebuilds exactly the same rows.

use crate::{Projection, ProjectionError};
use async_trait::async_trait;
use chrono::NaiveDate;
use domain::analytics::{AnalyticsEvent, AnalyticsRecorded, Quantity, Totals};
use domain::campaign::CampaignEvent;
use domain::DomainEvent;
use event_store::RecordedEvent;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

pub struct AnalyticsProjection;

impl AnalyticsProjection {
    pub const NAME: &'static str = "analytics";
    /// Every table the projection writes; a rebuild truncates exactly these.
    pub const TABLES: [&'static str; 3] = [
        "analytics_daily",
        "analytics_daily_custom",
        "analytics_deleted_campaigns",
    ];
}

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

enum Step {
    Record(AnalyticsRecorded),
    Delete(Uuid),
}

fn decode<E: DomainEvent>(event: &RecordedEvent) -> Result<E, ProjectionError> {
    E::from_data(&event.event_type, event.data.clone()).map_err(|source| ProjectionError::Decode {
        position: event.position,
        source,
    })
}

#[async_trait]
impl Projection for AnalyticsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "analytics_daily",
            "analytics_daily_custom",
            "analytics_deleted_campaigns",
        ]
    }

    /// Its own events, and campaign deletions (which hide its rows).
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("Analytics") || event_type == "CampaignDeleted"
    }

    /// Folds the batch in memory into one delta per row, then writes it with at
    /// most six statements, however many events the batch holds.
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut steps = Vec::new();
        for event in events {
            if event.stream_id.starts_with(domain::analytics::STREAM_PREFIX) {
                let AnalyticsEvent::Recorded(recorded) = decode(event)?;
                steps.push(Step::Record(recorded));
            } else if event.stream_id.starts_with(domain::campaign::STREAM_PREFIX)
                && event.event_type == "CampaignDeleted"
            {
                if let CampaignEvent::Deleted(deleted) = decode(event)? {
                    steps.push(Step::Delete(deleted.campaign_id));
                }
            }
        }
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
        let mut gone: HashSet<Uuid> = tx
            .query(
                "SELECT campaign_id FROM analytics_deleted_campaigns WHERE campaign_id = ANY($1)",
                &[&campaigns],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();

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

        if !newly_deleted.is_empty() {
            tx.execute(
                "INSERT INTO analytics_deleted_campaigns (campaign_id) SELECT unnest($1::uuid[])
                 ON CONFLICT DO NOTHING",
                &[&newly_deleted],
            )
            .await?;
            for table in ["analytics_daily", "analytics_daily_custom"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE campaign_id = ANY($1)"),
                    &[&newly_deleted],
                )
                .await?;
            }
        }
        if deltas.is_empty() {
            return Ok(());
        }
        let n = deltas.len();
        let mut campaign_ids = Vec::with_capacity(n);
        let mut days = Vec::with_capacity(n);
        let mut sources = Vec::with_capacity(n);
        let mut impressions = Vec::with_capacity(n);
        let mut clicks = Vec::with_capacity(n);
        let mut conversions = Vec::with_capacity(n);
        let mut costs = Vec::with_capacity(n);
        let mut revenues = Vec::with_capacity(n);
        let mut records = Vec::with_capacity(n);
        let mut custom = CustomColumns::default();
        for ((campaign_id, day, source), delta) in deltas {
            for (name, value) in delta.custom {
                custom.campaign_ids.push(campaign_id);
                custom.days.push(day);
                custom.sources.push(source.clone());
                custom.names.push(name);
                custom.values.push(value);
            }
            campaign_ids.push(campaign_id);
            days.push(day);
            sources.push(source);
            impressions.push(delta.totals.impressions);
            clicks.push(delta.totals.clicks);
            conversions.push(delta.totals.conversions);
            costs.push(delta.totals.cost);
            revenues.push(delta.totals.revenue);
            records.push(delta.records);
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
                &campaign_ids,
                &days,
                &sources,
                &impressions,
                &clicks,
                &conversions,
                &costs,
                &revenues,
                &records,
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
}
