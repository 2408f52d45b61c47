//! The `analytics` read model: exact per-campaign, per-day, per-source sums of
//! `AnalyticsRecorded` events (`analytics_daily`, custom metrics in
//! `analytics_daily_custom`), so analytics reads touch at most one row per day
//! and source (and custom metric), never the raw events.
//!
//! An `AnalyticsRestated` replaces its row (and the row's custom metrics)
//! with its own metrics: it supersedes everything before it in the log for
//! that day and source; records after it add on top, as ever.
//!
//! A campaign's `CampaignDeleted` removes its rows and leaves a tombstone
//! ([`crate::tombstones`]), so
//! records that reach the log after the delete stay out. Every write is a pure
//! function of the log in order, so truncating the tables and resetting the
//! checkpoint rebuilds exactly the same rows.

use crate::{decode, tombstones, Projection, ProjectionError, Reads, CAMPAIGN_DELETIONS};
use async_trait::async_trait;
use chrono::NaiveDate;
use domain::analytics::{AnalyticsEvent, AnalyticsRecorded, AnalyticsRestated, Metrics, Quantity, Totals};
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

/// What the batch does to one `(campaign, day, source)` row: adds to it, or
/// (after a restatement in the batch) replaces it.
#[derive(Default)]
struct Delta {
    /// The row becomes this delta instead of growing by it.
    replace: bool,
    totals: Totals,
    /// One entry per record and custom metric, in log order: Postgres sums
    /// the products for weighted averages exactly (`NUMERIC`), which
    /// `Decimal`'s 28 digits could not promise for value × impressions.
    custom: Vec<Custom>,
    records: i64,
}

/// One custom metric of one record, with the record's bases.
struct Custom {
    name: String,
    value: Decimal,
    bases: [Decimal; 3],
    /// Position in the batch: the latest is the row's `last`.
    seq: i64,
}

impl Delta {
    fn add(&mut self, metrics: &Metrics, seq: i64) {
        let totals = metrics.totals();
        self.totals.add(&totals);
        for (name, Quantity(value)) in &metrics.custom_metrics {
            self.custom.push(Custom {
                name: name.clone(),
                value: *value,
                bases: [totals.impressions, totals.clicks, totals.conversions],
                seq,
            });
        }
        self.records += 1;
    }
}

type RowKey = (Uuid, NaiveDate, String);

/// Custom metric entries to add into `analytics_daily_custom`, as parallel
/// arrays for `unnest` (grouped into rows by the statement).
#[derive(Default)]
struct CustomColumns {
    campaign_ids: Vec<Uuid>,
    days: Vec<NaiveDate>,
    sources: Vec<String>,
    names: Vec<String>,
    values: Vec<Decimal>,
    impressions: Vec<Decimal>,
    clicks: Vec<Decimal>,
    conversions: Vec<Decimal>,
    seqs: Vec<i64>,
    /// Some row has entries of more than one record, so a name may repeat
    /// within a row: the entries must be grouped before the upsert.
    repeated: bool,
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
    Restate(AnalyticsRestated),
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
                Step::Restate(r) => r.campaign_id,
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
            steps.push(match decode(event)? {
                AnalyticsEvent::Recorded(recorded) => Step::Record(recorded),
                AnalyticsEvent::Restated(restated) => Step::Restate(restated),
            });
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
    for (seq, step) in (0..).zip(steps) {
        match step {
            Step::Record(r) if !gone.contains(&r.campaign_id) => {
                deltas
                    .entry((r.campaign_id, r.date, r.source))
                    .or_default()
                    .add(&r.metrics, seq);
            }
            Step::Restate(r) if !gone.contains(&r.campaign_id) => {
                // Whatever came before for the key, in this batch or in the
                // row, is superseded.
                let mut delta = Delta {
                    replace: true,
                    ..Delta::default()
                };
                delta.add(&r.metrics, seq);
                deltas.insert((r.campaign_id, r.date, r.source), delta);
            }
            Step::Record(_) | Step::Restate(_) => {}
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

/// Writes the deltas into their rows: rows replaced by a restatement lose
/// their custom metrics first, then one upsert per table and kind of delta.
async fn write(
    tx: &tokio_postgres::Transaction<'_>,
    deltas: BTreeMap<RowKey, Delta>,
) -> Result<(), ProjectionError> {
    let mut added = DailyColumns::default();
    let mut replaced = DailyColumns::default();
    let mut custom = CustomColumns::default();
    for ((campaign_id, day, source), delta) in deltas {
        // One record's custom metrics are a map: its names are distinct.
        custom.repeated |= delta.records > 1 && !delta.custom.is_empty();
        for entry in delta.custom {
            custom.campaign_ids.push(campaign_id);
            custom.days.push(day);
            custom.sources.push(source.clone());
            custom.names.push(entry.name);
            custom.values.push(entry.value);
            let [impressions, clicks, conversions] = entry.bases;
            custom.impressions.push(impressions);
            custom.clicks.push(clicks);
            custom.conversions.push(conversions);
            custom.seqs.push(entry.seq);
        }
        let daily = if delta.replace { &mut replaced } else { &mut added };
        daily.push(campaign_id, day, source, &delta.totals, delta.records);
    }
    if !replaced.campaign_ids.is_empty() {
        // One index probe per replaced row, then a delete by row address.
        // Not `DELETE … USING unnest(…)`: given the batch's 2,000 keys the
        // planner merge-joins them with a sort of the whole table, every
        // batch (35 µs per imported row at 200,000 rows, growing with the
        // table). `OFFSET 0` keeps the lateral subquery from being flattened
        // into such a join; the rows are the projection's own (one writer).
        tx.execute(
            "DELETE FROM analytics_daily_custom c
             WHERE c.ctid = ANY (ARRAY(
                 SELECT x.ctid
                 FROM unnest($1::uuid[], $2::date[], $3::text[]) AS r(campaign_id, day, source)
                 CROSS JOIN LATERAL (
                     SELECT ctid FROM analytics_daily_custom k
                     WHERE (k.campaign_id, k.day, k.source) = (r.campaign_id, r.day, r.source)
                     OFFSET 0) x))",
            &[&replaced.campaign_ids, &replaced.days, &replaced.sources],
        )
        .await?;
        upsert_daily(tx, &replaced, "excluded.{c}").await?;
    }
    if !added.campaign_ids.is_empty() {
        upsert_daily(tx, &added, "d.{c} + excluded.{c}").await?;
    }
    if !custom.names.is_empty() {
        upsert_custom(tx, &custom).await?;
    }
    Ok(())
}

/// Adds the entries into their rows: sums, counts, weighted sums and bases,
/// and the batch's latest value as the row's `last` (the batch comes after
/// whatever the row holds).
async fn upsert_custom(
    tx: &tokio_postgres::Transaction<'_>,
    custom: &CustomColumns,
) -> Result<(), ProjectionError> {
    // Grouping costs more than the insert itself (an ordered `array_agg` per
    // group): when every entry is alone in its group (a batch of
    // restatements, or of records on distinct days), each is its group's
    // sums, count 1 and `last` as it stands.
    let rows = if custom.repeated {
        "SELECT campaign_id, day, source, name, sum(value), count(*),
                sum(value * impressions), sum(value * clicks), sum(value * conversions),
                sum(impressions), sum(clicks), sum(conversions),
                (array_agg(value ORDER BY seq DESC))[1]
         FROM entries
         GROUP BY campaign_id, day, source, name"
    } else {
        "SELECT campaign_id, day, source, name, value, 1,
                value * impressions, value * clicks, value * conversions,
                impressions, clicks, conversions, value
         FROM entries"
    };
    tx.execute(
        &format!(
            "WITH entries AS (
                 SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[], $4::text[],
                                      $5::numeric[], $6::numeric[], $7::numeric[],
                                      $8::numeric[], $9::int8[])
                     AS e(campaign_id, day, source, name, value, impressions, clicks,
                          conversions, seq))
         INSERT INTO analytics_daily_custom AS c
             (campaign_id, day, source, name, value, records, w_impressions, w_clicks,
              w_conversions, b_impressions, b_clicks, b_conversions, last)
         {rows}
         ON CONFLICT (campaign_id, day, source, name) DO UPDATE SET
             value = c.value + excluded.value,
             records = c.records + excluded.records,
             w_impressions = c.w_impressions + excluded.w_impressions,
             w_clicks = c.w_clicks + excluded.w_clicks,
             w_conversions = c.w_conversions + excluded.w_conversions,
             b_impressions = c.b_impressions + excluded.b_impressions,
             b_clicks = c.b_clicks + excluded.b_clicks,
             b_conversions = c.b_conversions + excluded.b_conversions,
             last = excluded.last"
        ),
        &[
            &custom.campaign_ids,
            &custom.days,
            &custom.sources,
            &custom.names,
            &custom.values,
            &custom.impressions,
            &custom.clicks,
            &custom.conversions,
            &custom.seqs,
        ],
    )
    .await?;
    Ok(())
}

impl DailyColumns {
    fn push(&mut self, campaign_id: Uuid, day: NaiveDate, source: String, totals: &Totals, records: i64) {
        self.campaign_ids.push(campaign_id);
        self.days.push(day);
        self.sources.push(source);
        self.impressions.push(totals.impressions);
        self.clicks.push(totals.clicks);
        self.conversions.push(totals.conversions);
        self.costs.push(totals.cost);
        self.revenues.push(totals.revenue);
        self.records.push(records);
    }
}

/// One upsert of `analytics_daily`; `update` is how a column `{c}` of an
/// existing row is set (`excluded.{c}` replaces, `d.{c} + excluded.{c}` adds).
async fn upsert_daily(
    tx: &tokio_postgres::Transaction<'_>,
    daily: &DailyColumns,
    update: &str,
) -> Result<(), ProjectionError> {
    let set = [
        "impressions",
        "clicks",
        "conversions",
        "cost",
        "revenue",
        "records",
    ]
    .map(|c| format!("{c} = {}", update.replace("{c}", c)))
    .join(", ");
    tx.execute(
        &format!(
            "INSERT INTO analytics_daily AS d
                 (campaign_id, day, source, impressions, clicks, conversions, cost, revenue, records)
             SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[], $4::numeric[], $5::numeric[],
                                  $6::numeric[], $7::numeric[], $8::numeric[], $9::int8[])
             ON CONFLICT (campaign_id, day, source) DO UPDATE SET {set}"
        ),
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
    Ok(())
}
