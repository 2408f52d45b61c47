//! Given campaign events, when tracking, then an `AnalyticsRecorded` event (or an
//! error naming the field). Plus the derived metrics on hand-checked numbers.
//! No I/O anywhere.

use super::*;
use crate::aggregate::testing::{at, invalid_fields};
use crate::campaign::{CampaignCommand, CampaignEvent, CreateCampaign};
use crate::input::from_json_slice;
use crate::DomainEvent;
use proptest::prelude::*;
use std::str::FromStr;

const SEED_TRACK: &str = r#"{ "date": "2024-06-15", "source": "facebook", "metrics": { "impressions": 10000, "clicks": 500, "conversions": 50, "cost": 250.00, "revenue": 5000.00, "custom_metrics": { "engagement_rate": 0.05 } } }"#;

fn campaign_id() -> Uuid {
    Uuid::from_u128(7)
}

fn record_id() -> Uuid {
    Uuid::from_u128(8)
}

fn acme() -> ProjectSlug {
    ProjectSlug::parse("acme").unwrap()
}

fn given_campaign(events: &[CampaignEvent]) -> Campaign {
    crate::aggregate::testing::given(events, &())
}

fn created(project: ProjectSlug) -> CampaignEvent {
    let input: CreateCampaign = from_json_slice(br#"{"name": "Summer"}"#).unwrap();
    Campaign::default()
        .handle(CampaignCommand::Create {
            campaign_id: campaign_id(),
            project,
            input: Box::new(input),
        })
        .unwrap()
        .remove(0)
}

fn deleted() -> CampaignEvent {
    CampaignEvent::Deleted(crate::campaign::CampaignDeleted {
        campaign_id: campaign_id(),
    })
}

fn track(campaign: &Campaign, body: &str) -> Result<Vec<AnalyticsEvent>, AnalyticsError> {
    let input = from_json_slice::<TrackAnalytics>(body.as_bytes()).map_err(AnalyticsError::Invalid)?;
    AnalyticsRecord::default().handle(Track {
        record_id: record_id(),
        project: acme(),
        campaign: campaign.clone(),
        input,
        at: at(0),
    })
}

fn recorded(result: Result<Vec<AnalyticsEvent>, AnalyticsError>) -> AnalyticsRecorded {
    match result {
        Ok(mut events) if events.len() == 1 => match events.remove(0) {
            AnalyticsEvent::Recorded(e) => e,
            other => panic!("expected AnalyticsRecorded, got {other:?}"),
        },
        other => panic!("expected one AnalyticsRecorded, got {other:?}"),
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn q(s: &str) -> Option<Quantity> {
    Some(Quantity(dec(s)))
}

#[test]
fn seed_body_records_exact_metrics_for_the_campaign() {
    let campaign = given_campaign(&[created(acme())]);
    let event = recorded(track(&campaign, SEED_TRACK));
    assert_eq!(event.record_id, record_id());
    assert_eq!(event.campaign_id, campaign_id());
    assert_eq!(event.project, acme());
    assert_eq!(event.date, NaiveDate::from_ymd_opt(2024, 6, 15).unwrap());
    assert_eq!(event.source, "facebook");
    assert_eq!(event.metrics.impressions, 10_000);
    assert_eq!(event.metrics.clicks, 500);
    assert_eq!(event.metrics.conversions, 50);
    assert_eq!(event.metrics.cost.to_string(), "250.00");
    assert_eq!(event.metrics.revenue.to_string(), "5000.00");
    assert_eq!(
        event.metrics.custom_metrics["engagement_rate"],
        Quantity(dec("0.05"))
    );
    // The event round-trips through its stored JSON unchanged, digits included.
    let stored = AnalyticsEvent::Recorded(event.clone());
    let data = stored.to_data();
    assert_eq!(data["metrics"]["cost"].to_string(), "250.00");
    let back = AnalyticsEvent::from_data(stored.event_type(), data).unwrap();
    assert_eq!(back, stored);
}

#[test]
fn absent_metrics_count_as_zero_and_sources_are_case_insensitive() {
    let campaign = given_campaign(&[created(acme())]);
    let event = recorded(track(
        &campaign,
        r#"{"date": "2024-01-31", "source": "  Google Ads ", "metrics": {"clicks": 3}}"#,
    ));
    assert_eq!(event.source, "google ads");
    assert_eq!(
        event.metrics,
        Metrics {
            clicks: 3,
            ..Metrics::default()
        }
    );
}

#[test]
fn clicks_above_impressions_are_allowed() {
    let campaign = given_campaign(&[created(acme())]);
    let event = recorded(track(
        &campaign,
        r#"{"date": "2024-06-15", "source": "x", "metrics": {"impressions": 1, "clicks": 5, "conversions": 9}}"#,
    ));
    assert_eq!((event.metrics.impressions, event.metrics.clicks), (1, 5));
}

#[test]
fn numbers_are_read_exactly_whatever_their_notation() {
    let campaign = given_campaign(&[created(acme())]);
    let event = recorded(track(
        &campaign,
        r#"{"date": "2024-06-15", "source": "x", "metrics": {"impressions": 1e3, "clicks": 20.0, "cost": 0.1, "revenue": 2.500000000, "custom_metrics": {"r": 1.5e-3}}}"#,
    ));
    assert_eq!(event.metrics.impressions, 1000);
    assert_eq!(event.metrics.clicks, 20);
    assert_eq!(event.metrics.cost.amount(), dec("0.1"));
    // More than 6 places, but only trailing zeros: accepted without them.
    assert_eq!(event.metrics.revenue.to_string(), "2.5");
    assert_eq!(event.metrics.custom_metrics["r"].0, dec("0.0015"));
    let negative_zero = recorded(track(
        &campaign,
        r#"{"date": "2024-06-15", "source": "x", "metrics": {"cost": -0.0}}"#,
    ));
    assert_eq!(negative_zero.metrics.cost.to_string(), "0.0");
}

#[test]
fn nonsense_is_refused_naming_the_field() {
    let campaign = given_campaign(&[created(acme())]);
    let m = |metrics: &str| format!(r#"{{"date": "2024-06-15", "source": "x", "metrics": {metrics}}}"#);
    let cases = [
        // Shape errors, caught while parsing.
        // (No `date` at all is today in the campaign's zone: see
        // `a_record_without_a_date_is_for_today_in_the_campaigns_time_zone`.)
        (r#"{"date": "", "source": "x", "metrics": {}}"#.to_owned(), "date"),
        (r#"{"date": "2024-06-15", "metrics": {}}"#.to_owned(), "source"),
        (r#"{"date": "2024-06-15", "source": "x"}"#.to_owned(), "metrics"),
        (
            r#"{"date": 20240615, "source": "x", "metrics": {}}"#.to_owned(),
            "date",
        ),
        (
            r#"{"date": "2024-06-15", "source": 7, "metrics": {}}"#.to_owned(),
            "source",
        ),
        (m(r#"{"impressions": "10000"}"#), "metrics.impressions"),
        (m(r#"{"cost": "250.00"}"#), "metrics.cost"),
        (m(r#"{"cost": true}"#), "metrics.cost"),
        (
            m(r#"{"custom_metrics": {"rate": "high"}}"#),
            "metrics.custom_metrics.rate",
        ),
        (m(r#"{"custom_metrics": [1]}"#), "metrics.custom_metrics"),
        (m(r#"{"views": 1}"#), "metrics.views"),
        (
            r#"{"date": "2024-06-15", "source": "x", "metrics": {}, "campaign": 1}"#.to_owned(),
            "campaign",
        ),
        // Values, caught by validation.
        (m(r#"{"impressions": -1}"#), "metrics.impressions"),
        (m(r#"{"clicks": 1.5}"#), "metrics.clicks"),
        (m(r#"{"conversions": null}"#), "metrics.conversions"),
        (m(r#"{"impressions": 1000000000001}"#), "metrics.impressions"),
        (m(r#"{"impressions": 1e40}"#), "metrics.impressions"),
        (m(r#"{"cost": -0.01}"#), "metrics.cost"),
        (m(r#"{"revenue": 0.0000001}"#), "metrics.revenue"),
        (m(r#"{"revenue": 1000000000000000.01}"#), "metrics.revenue"),
        (m(r#"{"revenue": 1e400}"#), "metrics.revenue"),
        (
            m(r#"{"custom_metrics": {"rate": -0.5}}"#),
            "metrics.custom_metrics.rate",
        ),
        (m(r#"{"custom_metrics": {" ": 1}}"#), "metrics.custom_metrics. "),
        (
            r#"{"date": "2024-6-15", "source": "x", "metrics": {}}"#.to_owned(),
            "date",
        ),
        (
            r#"{"date": "2024-02-30", "source": "x", "metrics": {}}"#.to_owned(),
            "date",
        ),
        (
            r#"{"date": "2024-06-15T00:00:00Z", "source": "x", "metrics": {}}"#.to_owned(),
            "date",
        ),
        (
            r#"{"date": "1999-12-31", "source": "x", "metrics": {}}"#.to_owned(),
            "date",
        ),
        (
            r#"{"date": "2024-06-15", "source": "   ", "metrics": {}}"#.to_owned(),
            "source",
        ),
        (
            format!(
                r#"{{"date": "2024-06-15", "source": "{}", "metrics": {{}}}}"#,
                "s".repeat(101)
            ),
            "source",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(
            invalid_fields(track(&campaign, &body))
                .first()
                .map(String::as_str),
            Some(field),
            "body: {body}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let campaign = given_campaign(&[created(acme())]);
    let fields = invalid_fields(track(
        &campaign,
        r#"{"date": "someday", "source": "", "metrics": {"impressions": -1, "cost": -2, "custom_metrics": {"a": -1}}}"#,
    ));
    assert_eq!(
        fields,
        [
            "date",
            "source",
            "metrics.impressions",
            "metrics.cost",
            "metrics.custom_metrics.a"
        ]
    );
}

#[test]
fn too_many_custom_metrics_are_refused() {
    let campaign = given_campaign(&[created(acme())]);
    let custom: Vec<String> = (0..=MAX_CUSTOM_METRICS)
        .map(|i| format!(r#""m{i}": 1"#))
        .collect();
    let body = format!(
        r#"{{"date": "2024-06-15", "source": "x", "metrics": {{"custom_metrics": {{{}}}}}}}"#,
        custom.join(",")
    );
    assert_eq!(
        invalid_fields(track(&campaign, &body)),
        ["metrics.custom_metrics"]
    );
}

#[test]
fn a_campaign_that_is_missing_deleted_or_another_projects_is_not_found() {
    let cases = [
        given_campaign(&[]),
        given_campaign(&[created(acme()), deleted()]),
        given_campaign(&[created(ProjectSlug::parse("globex").unwrap())]),
    ];
    for campaign in cases {
        assert_eq!(
            track(&campaign, SEED_TRACK),
            Err(AnalyticsError::CampaignNotFound)
        );
        // Even with a nonsensical body: the campaign is checked first.
        let input: TrackAnalytics =
            from_json_slice(br#"{"date": "x", "source": "", "metrics": {}}"#).unwrap();
        let result = AnalyticsRecord::default().handle(Track {
            record_id: record_id(),
            project: acme(),
            campaign: campaign.clone(),
            input,
            at: at(0),
        });
        assert_eq!(result, Err(AnalyticsError::CampaignNotFound));
    }
}

#[test]
fn a_record_is_written_once() {
    let campaign = given_campaign(&[created(acme())]);
    let event = recorded(track(&campaign, SEED_TRACK));
    let mut record = AnalyticsRecord::default();
    record.apply(&AnalyticsEvent::Recorded(event.clone()), at(5), 0);
    let state = record.state().unwrap();
    assert_eq!(state.id, record_id());
    assert_eq!(state.recorded_at, at(5));
    assert_eq!(state.metrics, event.metrics);
    let again = record.handle(Track {
        record_id: record_id(),
        project: acme(),
        campaign: campaign.clone(),
        input: from_json_slice(SEED_TRACK.as_bytes()).unwrap(),
        at: at(0),
    });
    assert_eq!(again, Err(AnalyticsError::AlreadyRecorded));
    let json = serde_json::to_string(state).unwrap();
    assert!(json.contains(r#""cost":250.00"#), "{json}");
    assert!(json.contains(r#""date":"2024-06-15""#), "{json}");
}

#[test]
fn derived_metrics_of_the_seed_record() {
    let t = Metrics {
        impressions: 10_000,
        clicks: 500,
        conversions: 50,
        cost: Money(dec("250.00")),
        revenue: Money(dec("5000.00")),
        custom_metrics: BTreeMap::new(),
    }
    .totals();
    let d = DerivedMetrics::from_totals(&t);
    assert_eq!(d.ctr, q("0.05"));
    assert_eq!(d.cpc, q("0.5"));
    assert_eq!(d.cpm, q("25"));
    assert_eq!(d.cpa, q("5"));
    assert_eq!(d.conversion_rate, q("0.1"));
    assert_eq!(d.roas, q("20"));
    assert_eq!(d.roi, q("19"));
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(
        json,
        r#"{"ctr":0.05,"cpc":0.5,"cpm":25,"cpa":5,"conversion_rate":0.1,"roas":20,"roi":19}"#
    );
}

#[test]
fn derived_metrics_are_null_when_the_divisor_is_zero() {
    let all_zero = DerivedMetrics::from_totals(&Totals::default());
    assert_eq!(all_zero, DerivedMetrics::default());
    assert_eq!(
        serde_json::to_string(&all_zero).unwrap(),
        r#"{"ctr":null,"cpc":null,"cpm":null,"cpa":null,"conversion_rate":null,"roas":null,"roi":null}"#
    );
    // Impressions only: CTR and CPM are defined (0), the rest are not.
    let d = DerivedMetrics::from_totals(&Totals {
        impressions: dec("100"),
        ..Totals::default()
    });
    assert_eq!((d.ctr, d.cpm), (q("0"), q("0")));
    assert_eq!(
        (d.cpc, d.cpa, d.conversion_rate, d.roas, d.roi),
        (None, None, None, None, None)
    );
    // Revenue without cost: ROAS and ROI are undefined, not infinite.
    let d = DerivedMetrics::from_totals(&Totals {
        revenue: dec("10"),
        ..Totals::default()
    });
    assert_eq!((d.roas, d.roi), (None, None));
}

#[test]
fn ratios_round_half_away_from_zero_to_six_places() {
    // 1/3 and 2/3; 1/8 is exact; 0.0000005 rounds up; a loss gives a negative ROI.
    assert_eq!(ratio(dec("1"), dec("3")), q("0.333333"));
    assert_eq!(ratio(dec("2"), dec("3")), q("0.666667"));
    assert_eq!(ratio(dec("1"), dec("8")), q("0.125"));
    assert_eq!(ratio(dec("1"), dec("2000000")), q("0.000001"));
    let d = DerivedMetrics::from_totals(&Totals {
        impressions: dec("3"),
        clicks: dec("7"),
        conversions: dec("0"),
        cost: dec("10.00"),
        revenue: dec("4.00"),
    });
    assert_eq!(
        d.ctr,
        q("2.333333"),
        "clicks above impressions give a CTR above 1"
    );
    assert_eq!(d.cpm, q("3333.333333"));
    assert_eq!(d.cpc, q("1.428571"));
    assert_eq!(d.roas, q("0.4"));
    assert_eq!(d.roi, q("-0.6"));
    assert_eq!(d.cpa, None);
}

#[test]
fn budget_usage_against_total_budget() {
    let b = BudgetUsage::new(Currency::USD, Some(Money(dec("10000.00"))), dec("250.00"));
    assert_eq!(b.remaining, q("9750.00"));
    assert_eq!(b.spent_ratio, q("0.025"));
    let over = BudgetUsage::new(Currency::USD, Some(Money(dec("100"))), dec("150.50"));
    assert_eq!(over.remaining, q("-50.50"));
    assert_eq!(over.spent_ratio, q("1.505"));
    let none = BudgetUsage::new(Currency::USD, None, dec("5"));
    assert_eq!((none.remaining, none.spent_ratio), (None, None));
    let zero = BudgetUsage::new(Currency::USD, Some(Money::ZERO), dec("5"));
    assert_eq!(zero.spent_ratio, None);
}

#[test]
fn kpis_match_core_metrics_case_insensitively() {
    let kpis: Vec<Kpi> = serde_json::from_str(
        r#"[{"name": "Conversions", "target": 1000, "current": 0, "unit": "count"},
            {"name": " REVENUE ", "target": 0},
            {"name": "Brand lift", "target": 5}]"#,
    )
    .unwrap();
    let goals: Goals =
        serde_json::from_str(r#"{"kpis": [{"metric": "clicks", "target": 2000, "current": 10}]}"#).unwrap();
    let totals = Totals {
        clicks: dec("500"),
        conversions: dec("50"),
        revenue: dec("5000.00"),
        ..Totals::default()
    };
    let progress = kpi_progress(&kpis, Some(&goals), &totals);
    assert_eq!(progress.len(), 4);
    assert_eq!(progress[0].metric, Some(Metric::Conversions));
    assert_eq!(progress[0].actual, q("50"));
    assert_eq!(progress[0].progress, q("0.05"));
    assert_eq!(progress[1].metric, Some(Metric::Revenue));
    assert_eq!(progress[1].progress, None, "a target of 0 has no progress ratio");
    assert_eq!(progress[2].metric, None);
    assert_eq!((progress[2].actual, progress[2].progress), (None, None));
    assert_eq!(progress[3].defined_in, KpiOrigin::GoalKpis);
    assert_eq!(progress[3].name, "clicks");
    assert_eq!(progress[3].current, Money(dec("10")));
    assert_eq!(progress[3].progress, q("0.25"));
    let json = serde_json::to_value(&progress[3]).unwrap();
    assert_eq!(json["defined_in"], "goals.kpis");
    assert_eq!(json["metric"], "clicks");
}

#[test]
fn dates_must_be_exactly_yyyy_mm_dd() {
    assert_eq!(
        parse_day("start_date", "2024-06-01"),
        Ok(NaiveDate::from_ymd_opt(2024, 6, 1).unwrap())
    );
    for bad in [
        "2024-6-1",
        "2024/06/01",
        "20240601",
        "2024-13-01",
        "2023-02-29",
        "",
        "+2024-06-01",
    ] {
        let message = parse_day("start_date", bad).unwrap_err();
        assert!(message.starts_with("start_date must be"), "{bad}: {message}");
    }
}

proptest! {
    /// Sums of exactly parsed cents are exact, whatever the order: the property
    /// the rollups rely on (and that binary floats do not have).
    #[test]
    fn cents_add_up_exactly(cents in proptest::collection::vec(0u32..100_000_000, 1..200)) {
        let expected: u64 = cents.iter().map(|&c| u64::from(c)).sum();
        let mut forward = Totals::default();
        let mut backward = Totals::default();
        let records: Vec<Totals> = cents
            .iter()
            .map(|&c| {
                let body = format!(
                    r#"{{"date": "2024-06-15", "source": "x", "metrics": {{"cost": {}.{:02}}}}}"#,
                    c / 100,
                    c % 100
                );
                let input: TrackAnalytics = from_json_slice(body.as_bytes()).unwrap();
                input.validate(crate::analytics::first_day()).unwrap().metrics.totals()
            })
            .collect();
        for r in &records { forward.add(r); }
        for r in records.iter().rev() { backward.add(r); }
        prop_assert_eq!(forward.cost, Decimal::new(expected as i64, 2));
        prop_assert_eq!(forward, backward);
    }

    /// Derived metrics are never NaN or infinite: either a number or null.
    #[test]
    fn derived_metrics_are_total(
        impressions in 0u64..1_000_000, clicks in 0u64..1_000_000, conversions in 0u64..1000,
        cost in 0i64..10_000_000, revenue in 0i64..10_000_000,
    ) {
        let t = Totals {
            impressions: Decimal::from(impressions),
            clicks: Decimal::from(clicks),
            conversions: Decimal::from(conversions),
            cost: Decimal::new(cost, 2),
            revenue: Decimal::new(revenue, 2),
        };
        let d = DerivedMetrics::from_totals(&t);
        prop_assert_eq!(d.ctr.is_none(), impressions == 0);
        prop_assert_eq!(d.cpc.is_none(), clicks == 0);
        prop_assert_eq!(d.cpm.is_none(), impressions == 0);
        prop_assert_eq!(d.cpa.is_none(), conversions == 0);
        prop_assert_eq!(d.conversion_rate.is_none(), clicks == 0);
        prop_assert_eq!(d.roas.is_none(), cost == 0);
        prop_assert_eq!(d.roi.is_none(), cost == 0);
        let json = serde_json::to_value(d).unwrap();
        for (_, v) in json.as_object().unwrap() {
            prop_assert!(v.is_null() || v.is_number());
        }
    }
}

// ---------------------------------------------------------------------------
// Restatement: given a day's restatements, when restating, then one
// `AnalyticsRestated` (or nothing when it changes nothing).

fn day_key() -> DayKey {
    DayKey::parse(campaign_id(), "2024-06-15", " Google ").unwrap()
}

fn restate(
    campaign: &Campaign,
    day: &RestatedDay,
    project: ProjectSlug,
    metrics: &str,
) -> Result<Vec<AnalyticsEvent>, AnalyticsError> {
    let body = format!(r#"{{"metrics": {metrics}}}"#);
    let input = from_json_slice::<RestateAnalytics>(body.as_bytes()).map_err(AnalyticsError::Invalid)?;
    day.handle(Restate {
        key: day_key(),
        project,
        campaign: campaign.clone(),
        input,
    })
}

fn given_day(events: &[AnalyticsEvent]) -> RestatedDay {
    crate::aggregate::testing::given(events, &())
}

#[test]
fn day_keys_are_checked_normalized_and_name_one_stream() {
    let key = day_key();
    assert_eq!(key.source, "google");
    assert_eq!(
        key.id(),
        DayKey::parse(campaign_id(), "2024-06-15", "GOOGLE").unwrap().id()
    );
    assert_ne!(
        key.id(),
        DayKey::parse(campaign_id(), "2024-06-16", "google").unwrap().id()
    );
    assert_ne!(
        key.id(),
        DayKey::parse(record_id(), "2024-06-15", "google").unwrap().id()
    );
    // Stable across versions: the stream ids already written depend on it.
    assert_eq!(
        DayKey::parse(Uuid::nil(), "2024-01-01", "x")
            .unwrap()
            .id()
            .to_string(),
        Uuid::new_v5(
            &Uuid::from_u128(0x6d61_726b_6574_696e_6700_616e_616c_7974),
            b"00000000-0000-0000-0000-000000000000/2024-01-01/x"
        )
        .to_string()
    );
    let fields = |r: Result<DayKey, ValidationErrors>| -> Vec<String> {
        r.unwrap_err().0.into_iter().map(|e| e.field).collect()
    };
    assert_eq!(fields(DayKey::parse(campaign_id(), "2024-02-30", "x")), ["date"]);
    assert_eq!(
        fields(DayKey::parse(campaign_id(), "1999-12-31", " ")),
        ["date", "source"]
    );
}

#[test]
fn a_first_restatement_records_the_day_in_full() {
    let campaign = given_campaign(&[created(acme())]);
    let events = restate(
        &campaign,
        &RestatedDay::default(),
        acme(),
        r#"{"clicks": 7, "cost": 1.50}"#,
    )
    .unwrap();
    let [AnalyticsEvent::Restated(e)] = events.as_slice() else {
        panic!("expected one AnalyticsRestated, got {events:?}");
    };
    assert_eq!(
        (e.campaign_id, e.date, e.source.as_str()),
        (campaign_id(), day_key().date, "google")
    );
    assert_eq!(e.metrics.clicks, 7);
    assert_eq!(e.metrics.cost.to_string(), "1.50");
    let stored = AnalyticsEvent::from_data("AnalyticsRestated", events[0].to_data()).unwrap();
    assert_eq!(stored, events[0]);
}

#[test]
fn restating_the_same_metrics_again_decides_nothing_and_other_metrics_supersede() {
    let campaign = given_campaign(&[created(acme())]);
    let first = restate(
        &campaign,
        &RestatedDay::default(),
        acme(),
        r#"{"clicks": 7, "cost": 1.50}"#,
    )
    .unwrap();
    let day = given_day(&first);
    assert_eq!(day.state().unwrap().metrics.clicks, 7);
    // The same figures, even written differently, change nothing.
    assert_eq!(
        restate(&campaign, &day, acme(), r#"{"cost": 1.5, "clicks": 7.0}"#).unwrap(),
        vec![]
    );
    let second = restate(&campaign, &day, acme(), r#"{"clicks": 9}"#).unwrap();
    let day = given_day(&[first[0].clone(), second[0].clone()]);
    let state = day.state().unwrap();
    assert_eq!((state.metrics.clicks, state.metrics.cost), (9, Money::ZERO));
    assert_eq!(state.version, 1);
}

#[test]
fn restating_needs_the_callers_live_campaign_before_a_valid_body() {
    let other = ProjectSlug::parse("other").unwrap();
    let live = given_campaign(&[created(acme())]);
    let gone = given_campaign(&[created(acme()), deleted()]);
    for (campaign, project) in [(&live, other), (&gone, acme()), (&Campaign::default(), acme())] {
        let refused = restate(campaign, &RestatedDay::default(), project, r#"{"clicks": -1}"#);
        assert_eq!(refused, Err(AnalyticsError::CampaignNotFound));
    }
    let invalid = restate(
        &live,
        &RestatedDay::default(),
        acme(),
        r#"{"clicks": -1, "cost": "x"}"#,
    );
    assert_eq!(invalid_fields(invalid), ["metrics.cost"]);
    let invalid = restate(&live, &RestatedDay::default(), acme(), r#"{"clicks": -1}"#);
    assert_eq!(invalid_fields(invalid), ["metrics.clicks"]);
}

#[test]
fn a_record_stream_ignores_restatements_and_a_day_ignores_records() {
    let campaign = given_campaign(&[created(acme())]);
    let recorded = track(&campaign, SEED_TRACK).unwrap();
    assert!(given_day(&recorded).state().is_none());
    let restated = restate(&campaign, &RestatedDay::default(), acme(), "{}").unwrap();
    let record: AnalyticsRecord = crate::aggregate::testing::given(&restated, &());
    assert!(record.state().is_none());
}

// ---------------------------------------------------------------------------
// Metric kinds: given the rollups' aggregates, the value each kind gives.

fn aggregate_of(records: &[(&str, u64)]) -> CustomAggregate {
    let mut a = CustomAggregate::default();
    for (value, impressions) in records {
        let (value, impressions) = (dec(value), Decimal::from(*impressions));
        a.sum += value;
        a.records += Decimal::ONE;
        a.weighted[0] += value * impressions;
        a.bases[0] += impressions;
        a.last = Some(value);
    }
    a
}

#[test]
fn an_average_weighted_by_impressions_is_the_weighted_mean() {
    let a = aggregate_of(&[("0.05", 10_000), ("0.10", 30_000), ("0.02", 60_000)]);
    let by_impressions = MetricKind::Average {
        weighted_by: WeightBase::Impressions,
    };
    assert_eq!(by_impressions.combine(&a), q("0.047"));
    let by_records = MetricKind::Average {
        weighted_by: WeightBase::Records,
    };
    assert_eq!(by_records.combine(&a), q("0.0566666667"), "rounded to 10 places");
    assert_eq!(MetricKind::default().combine(&a), q("0.17"));
    assert_eq!(MetricKind::Last {}.combine(&a), q("0.02"));
    // No base at all: no average, rather than a division by zero.
    assert_eq!(by_impressions.combine(&aggregate_of(&[("0.5", 0)])), None);
}

#[test]
fn kinds_read_as_declared_and_refuse_what_they_do_not_know() {
    let kind: MetricKind = serde_json::from_str(r#"{"kind": "average"}"#).unwrap();
    assert_eq!(
        kind,
        MetricKind::Average {
            weighted_by: WeightBase::Records
        }
    );
    assert_eq!(
        serde_json::to_value(MetricKind::Last {}).unwrap(),
        serde_json::json!({"kind": "last"})
    );
    for bad in [
        r#"{"kind": "median"}"#,
        r#"{"kind": "sum", "weighted_by": "impressions"}"#,
        r#"{"kind": "average", "weighted_by": "cost"}"#,
        r#"{}"#,
    ] {
        assert!(serde_json::from_str::<MetricKind>(bad).is_err(), "{bad}");
    }
    let applied = AppliedKind::of(None);
    assert_eq!((applied.kind, applied.declared), (KindName::Sum, false));
}

#[test]
fn a_record_without_a_date_is_for_today_in_the_campaigns_time_zone() {
    let input: CreateCampaign =
        from_json_slice(br#"{"name": "LA", "time_zone": "America/Los_Angeles"}"#).unwrap();
    let in_la = Campaign::default()
        .handle(CampaignCommand::Create {
            campaign_id: campaign_id(),
            project: acme(),
            input: Box::new(input),
        })
        .unwrap()
        .remove(0);
    let campaign = given_campaign(&[in_la]);
    let dateless = |instant: &str| {
        let input: TrackAnalytics =
            from_json_slice(br#"{"source": "google", "metrics": {"clicks": 1}}"#).unwrap();
        let events = AnalyticsRecord::default()
            .handle(Track {
                record_id: record_id(),
                project: acme(),
                campaign: campaign.clone(),
                input,
                at: instant.parse().unwrap(),
            })
            .unwrap();
        match &events[0] {
            AnalyticsEvent::Recorded(e) => e.date.to_string(),
            other => panic!("{other:?}"),
        }
    };
    // Either side of local midnight on the DST day, and of UTC midnight.
    assert_eq!(dateless("2024-03-10T07:30:00Z"), "2024-03-09");
    assert_eq!(dateless("2024-03-10T08:30:00Z"), "2024-03-10");
    assert_eq!(dateless("2024-03-11T06:30:00Z"), "2024-03-10");
    // A campaign without a zone is in UTC.
    let utc = given_campaign(&[created(acme())]);
    let input: TrackAnalytics = from_json_slice(br#"{"source": "g", "metrics": {}}"#).unwrap();
    let events = AnalyticsRecord::default()
        .handle(Track {
            record_id: record_id(),
            project: acme(),
            campaign: utc,
            input,
            at: "2024-03-10T07:30:00Z".parse().unwrap(),
        })
        .unwrap();
    assert!(matches!(&events[0], AnalyticsEvent::Recorded(e) if e.date.to_string() == "2024-03-10"));
}
