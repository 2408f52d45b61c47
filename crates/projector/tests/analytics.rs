//! The analytics rollup projection against a real Postgres: exact sums at scale,
//! deletes, and rebuilds that reproduce the table exactly.

use chrono::{NaiveDate, Utc};
use deadpool_postgres::Pool;
use domain::analytics::{AnalyticsEvent, AnalyticsRecorded, AnalyticsRestated, DayKey, Metrics, Quantity};
use domain::campaign::{CampaignDeleted, CampaignEvent};
use domain::{DomainEvent, Money, ProjectSlug};
use event_store::{
    connect_pool, EventStore, ExpectedVersion, LogPosition, NewEvent, PgEventStore, RecordedEvent, Wakeups,
};
use projector::{
    AnalyticsProjection, Progress, Projection, ProjectionRunner, ReadModelProgress, RunnerConfig,
};
use rust_decimal::Decimal;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::fresh_database;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Setup {
    store: Arc<PgEventStore>,
    pool: Pool,
    _db: test_support::TestDatabase,
}

async fn setup() -> Setup {
    let db = fresh_database().await;
    let mut client = db.connect().await;
    event_store::migrate(&mut client).await.unwrap();
    projector::migrate(&mut client).await.unwrap();
    let pool = connect_pool(&db.url, 8).unwrap();
    let store = Arc::new(PgEventStore::new(pool.clone(), &[], Wakeups::new()));
    Setup { store, pool, _db: db }
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 6, d).unwrap()
}

fn record(
    campaign_id: Uuid,
    date: NaiveDate,
    source: &str,
    cents: i64,
    custom: &[(&str, &str)],
) -> AnalyticsEvent {
    AnalyticsEvent::Recorded(AnalyticsRecorded {
        record_id: Uuid::new_v4(),
        campaign_id,
        project: ProjectSlug::parse("acme").unwrap(),
        date,
        source: source.to_owned(),
        currency: None,
        metrics: Metrics {
            impressions: 1000,
            clicks: 10,
            conversions: 1,
            cost: Money(Decimal::new(cents, 2)),
            revenue: Money(Decimal::new(cents * 3, 2)),
            custom_metrics: custom
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Quantity(v.parse().unwrap())))
                .collect(),
        },
    })
}

fn new_event(event: &impl DomainEvent) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        data: event.to_data(),
        metadata: json!({}),
        recorded_at: event_store::now(),
    }
}

fn stream_of(event: &AnalyticsEvent) -> String {
    match event {
        AnalyticsEvent::Recorded(r) => domain::analytics::stream_id(r.record_id),
        AnalyticsEvent::Restated(r) => {
            let key = DayKey {
                campaign_id: r.campaign_id,
                date: r.date,
                source: r.source.clone(),
            };
            domain::analytics::stream_id(key.id())
        }
    }
}

/// A restatement of `campaign_id`'s `date` and `source` to these figures.
fn restated(
    campaign_id: Uuid,
    date: NaiveDate,
    source: &str,
    cents: i64,
    custom: &[(&str, &str)],
) -> AnalyticsEvent {
    let AnalyticsEvent::Recorded(r) = record(campaign_id, date, source, cents, custom) else {
        unreachable!("record() makes records")
    };
    AnalyticsEvent::Restated(AnalyticsRestated {
        campaign_id,
        project: r.project,
        date,
        source: source.to_owned(),
        currency: domain::Currency::USD,
        metrics: r.metrics,
    })
}

/// `cents` as an exact JSON money amount, e.g. `12.34`.
fn money_json(cents: i64) -> serde_json::Value {
    serde_json::to_value(Money(Decimal::new(cents, 2))).unwrap()
}

/// The whole read model as text, in key order: equal dumps, equal tables.
async fn dump(pool: &Pool) -> Vec<String> {
    let client = pool.get().await.unwrap();
    let mut dump = Vec::new();
    for query in [
        "SELECT concat_ws('|', campaign_id, day, source, impressions, clicks, conversions, cost,
                          revenue, records)
         FROM analytics_daily ORDER BY campaign_id, day, source",
        "SELECT concat_ws('|', 'custom', campaign_id, day, source, name, value, records,
                          w_impressions, w_clicks, w_conversions, b_impressions, b_clicks,
                          b_conversions, last)
         FROM analytics_daily_custom ORDER BY campaign_id, day, source, name",
        "SELECT concat_ws('|', 'deleted', campaign_id) FROM campaign_tombstones
         WHERE projection = 'analytics' ORDER BY 1",
    ] {
        let rows = client.query(query, &[]).await.unwrap();
        dump.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    dump
}

/// Runs the projection from its checkpoint until it has applied `until`.
async fn project_until(setup: &Setup, batch_size: usize, until: LogPosition) {
    let config = RunnerConfig {
        batch_size,
        idle_poll: Duration::from_millis(20),
        standby_poll: Duration::from_millis(50),
    };
    let runner = ProjectionRunner::new(
        setup.store.clone(),
        setup.pool.clone(),
        Arc::new(AnalyticsProjection),
        config,
    );
    let progress = Progress::in_process(vec![runner.progress()]);
    let stop = CancellationToken::new();
    let task = tokio::spawn(runner.run(stop.clone()));
    assert!(
        progress.wait_for(until, Duration::from_secs(60)).await,
        "projection did not catch up"
    );
    stop.cancel();
    task.await.unwrap();
}

/// What a rebuild does: empty the projection's tables, rewind its checkpoint.
async fn reset(pool: &Pool) {
    let client = pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "TRUNCATE {}; DELETE FROM campaign_tombstones WHERE projection = '{name}';
             UPDATE projection_checkpoints SET tx_id = 0, position = 0 WHERE name = '{name}'",
            AnalyticsProjection::TABLES.join(", "),
            name = AnalyticsProjection::NAME
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn rebuilds_reproduce_the_table_whatever_the_batch_size_and_deletes_hide_campaigns() {
    let setup = setup().await;
    let kept = Uuid::new_v4();
    let deleted = Uuid::new_v4();
    let mut appends = Vec::new();
    let mut expected_cost = Decimal::ZERO;
    for i in 0..60i64 {
        let source = ["facebook", "google", "tiktok"][(i % 3) as usize];
        let custom: &[(&str, &str)] = if i % 2 == 0 {
            &[("engagement_rate", "0.05")]
        } else {
            &[]
        };
        let event = record(kept, day(1 + (i % 5) as u32), source, 1 + i * 37, custom);
        expected_cost += Decimal::new(1 + i * 37, 2);
        appends.push((stream_of(&event), new_event(&event)));
        let doomed = record(deleted, day(2), "facebook", 999, &[]);
        appends.push((stream_of(&doomed), new_event(&doomed)));
    }
    for (stream, event) in appends {
        setup
            .store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
            .unwrap();
    }
    let delete = CampaignEvent::Deleted(CampaignDeleted { campaign_id: deleted });
    setup
        .store
        .append(
            &domain::campaign::stream_id(deleted),
            ExpectedVersion::Any,
            vec![new_event(&delete)],
        )
        .await
        .unwrap();
    // A record that reached the log after its campaign's delete (the race the
    // command side cannot close without a shared stream) stays out too.
    let late = record(deleted, day(3), "google", 5, &[]);
    let last = setup
        .store
        .append(
            &stream_of(&late),
            ExpectedVersion::NoStream,
            vec![new_event(&late)],
        )
        .await
        .unwrap()
        .last_position;

    project_until(&setup, 7, last).await;
    let live = dump(&setup.pool).await;
    // 15 rows of the kept campaign, custom metrics on all 15 (day, source) pairs
    // (even records cover every pair), one tombstone; nothing of the deleted one.
    assert_eq!(live.len(), 15 + 15 + 1, "{live:#?}");
    assert!(live.iter().all(|row| !row.contains(&format!("{deleted}|"))));
    assert_eq!(*live.last().unwrap(), format!("deleted|{deleted}"));
    let client = setup.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT sum(cost), sum(records)::int8,
                    (SELECT sum(value)::text FROM analytics_daily_custom
                     WHERE campaign_id = $1 AND name = 'engagement_rate')
             FROM analytics_daily WHERE campaign_id = $1",
            &[&kept],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Decimal>(0), expected_cost);
    assert_eq!(row.get::<_, i64>(1), 60);
    assert_eq!(row.get::<_, String>(2), "1.50");

    // Replays with one event per batch and with everything in one batch give
    // the same table, row for row, digit for digit.
    for batch_size in [1, 500] {
        reset(&setup.pool).await;
        assert!(dump(&setup.pool).await.is_empty());
        project_until(&setup, batch_size, last).await;
        assert_eq!(dump(&setup.pool).await, live, "batch size {batch_size}");
    }
}

/// Records and restatements of a few keys interleaved: each restatement
/// replaces its row (custom metrics too), records after it add on top, and
/// every batch size rebuilds the same table. Restatements of one key share a
/// stream, appended at its versions as the command side does.
#[tokio::test]
async fn restatements_replace_their_row_and_replays_agree_at_every_batch_size() {
    let setup = setup().await;
    let campaign = Uuid::new_v4();
    // The log, in order.
    let script: Vec<AnalyticsEvent> = vec![
        record(campaign, day(1), "google", 100, &[("engagement_rate", "0.5")]),
        record(campaign, day(1), "google", 200, &[]),
        restated(campaign, day(1), "google", 1000, &[("video_views", "7")]),
        record(campaign, day(1), "google", 5, &[("engagement_rate", "0.25")]),
        record(campaign, day(2), "google", 50, &[]),
        restated(campaign, day(2), "meta", 70, &[]),
        restated(campaign, day(1), "google", 2000, &[]),
        record(campaign, day(2), "meta", 1, &[]),
        restated(campaign, day(2), "google", 9, &[("engagement_rate", "0.125")]),
    ];
    let mut versions: BTreeMap<String, i64> = BTreeMap::new();
    let mut last = None;
    for event in &script {
        let stream = stream_of(event);
        let expected = match versions.get(&stream) {
            None => ExpectedVersion::NoStream,
            Some(v) => ExpectedVersion::Exact(*v),
        };
        let outcome = setup
            .store
            .append(&stream, expected, vec![new_event(event)])
            .await
            .unwrap();
        *versions.entry(stream).or_insert(-1) += 1;
        last = Some(outcome.last_position);
    }
    let last = last.unwrap();
    project_until(&setup, 500, last).await;
    let live = dump(&setup.pool).await;
    let c = campaign;
    assert_eq!(
        live,
        vec![
            // day 1 google: restated to 20.00 (the second restatement), nothing after.
            format!("{c}|2024-06-01|google|1000|10|1|20.00|60.00|1"),
            // day 2 google: a record, then a restatement to 0.09.
            format!("{c}|2024-06-02|google|1000|10|1|0.09|0.27|1"),
            // day 2 meta: restated to 0.70, then a record of 0.01 on top.
            format!("{c}|2024-06-02|meta|2000|20|2|0.71|2.13|2"),
            format!(
                "custom|{c}|2024-06-02|google|engagement_rate|0.125|1|125.000|1.250|0.125|1000|10|1|0.125"
            ),
        ],
    );
    for batch_size in [1, 2, 3, 7] {
        reset(&setup.pool).await;
        project_until(&setup, batch_size, last).await;
        assert_eq!(dump(&setup.pool).await, live, "batch size {batch_size}");
    }
}

/// 1,000,000 cents-valued records sum to the exact total, through the same
/// `apply` the runner calls, committed in 1,000 transactions so the NUMERIC
/// additions in Postgres are exercised as well as the in-batch fold.
#[tokio::test]
async fn a_million_cents_records_sum_exactly() {
    const BATCHES: usize = 1_000;
    const PER_BATCH: usize = 1_000;
    let setup = setup().await;
    let campaign = Uuid::new_v4();
    let sources = ["facebook", "google", "tiktok", "email"];
    let mut expected_cents: BTreeMap<&str, i64> = BTreeMap::new();
    let mut float_sum = 0f64;
    let mut client = setup.pool.get().await.unwrap();
    let started = Instant::now();
    // Events are stamped out from one template (fresh ids from a counter, not
    // the OS RNG) so building them does not dominate the test's runtime.
    let template = record(campaign, day(15), "facebook", 0, &[]).to_data();
    // A deterministic spread of cent values 0.01 ..= 999.99.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut position = 0i64;
    for _ in 0..BATCHES {
        let mut batch = Vec::with_capacity(PER_BATCH);
        for _ in 0..PER_BATCH {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let cents = 1 + (seed % 99_999) as i64;
            let source = sources[(seed >> 32) as usize % sources.len()];
            *expected_cents.entry(source).or_default() += cents;
            float_sum += cents as f64 / 100.0;
            position += 1;
            let record_id = Uuid::from_u128(position as u128);
            let mut data = template.clone();
            data["record_id"] = json!(record_id);
            data["source"] = json!(source);
            data["metrics"]["cost"] = money_json(cents);
            data["metrics"]["revenue"] = money_json(cents * 3);
            batch.push(RecordedEvent {
                position: LogPosition { tx_id: 1, position },
                event_id: record_id,
                stream_id: domain::analytics::stream_id(record_id),
                version: 0,
                event_type: "AnalyticsRecorded".to_owned(),
                schema_version: 1,
                data: data.into(),
                metadata: event_store::null_body(),
                recorded_at: Utc::now(),
            });
        }
        let tx = client.transaction().await.unwrap();
        AnalyticsProjection.apply(&tx, &batch).await.unwrap();
        tx.commit().await.unwrap();
    }
    eprintln!("projected 1,000,000 records in {:?}", started.elapsed());
    let rows = client
        .query(
            "SELECT source, cost, revenue, records FROM analytics_daily WHERE campaign_id = $1 ORDER BY source",
            &[&campaign],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), sources.len());
    let mut total = Decimal::ZERO;
    for row in &rows {
        let source: String = row.get(0);
        let cents = expected_cents[source.as_str()];
        assert_eq!(row.get::<_, Decimal>(1), Decimal::new(cents, 2), "{source} cost");
        assert_eq!(
            row.get::<_, Decimal>(2),
            Decimal::new(cents * 3, 2),
            "{source} revenue"
        );
        total += row.get::<_, Decimal>(1);
    }
    let expected_total: i64 = expected_cents.values().sum();
    assert_eq!(total, Decimal::new(expected_total, 2));
    let records: i64 = rows.iter().map(|r| r.get::<_, i64>(3)).sum();
    assert_eq!(records, (BATCHES * PER_BATCH) as i64);
    // The same sum in binary floating point drifts: the reason money is NUMERIC.
    let float_error = (float_sum - expected_total as f64 / 100.0).abs();
    eprintln!("exact total {total}; an f64 running sum is off by {float_error:e}");
    assert!(float_error > 0.0, "this data set must expose float drift");
}

#[tokio::test]
async fn batches_without_analytics_events_write_nothing() {
    let setup = setup().await;
    let mut client = setup.pool.get().await.unwrap();
    let other = RecordedEvent {
        position: LogPosition {
            tx_id: 1,
            position: 1,
        },
        event_id: Uuid::new_v4(),
        stream_id: "thing-1".into(),
        version: 0,
        event_type: "Thing".into(),
        schema_version: 1,
        data: json!({}).into(),
        metadata: json!({}).into(),
        recorded_at: Utc::now(),
    };
    let tx = client.transaction().await.unwrap();
    AnalyticsProjection.apply(&tx, &[other]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(dump(&setup.pool).await.is_empty());
}
