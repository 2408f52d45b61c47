//! Time zones: the IANA zone a campaign's analytics days are in.
//!
//! Ad platforms report each day in the ad account's time zone, and a day in
//! `America/Los_Angeles` is not the UTC day of the same date. A campaign
//! carries the zone its days are in; analytics `date`s and query ranges are
//! local dates in it. Dates are stored as given (local calendar days), so
//! weeks (ISO, from Monday) and months group those local days as they are.
//! What the zone changes is every date the service derives from an instant:
//! a record sent without a `date` is for *today in the campaign's zone*,
//! which is what [`TimeZone::today`] computes, across DST changes included.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// An IANA time zone (`Europe/Berlin`, `America/Los_Angeles`, `UTC`), from
/// the tz database compiled into `chrono-tz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(Tz);

impl TimeZone {
    pub const UTC: TimeZone = TimeZone(Tz::UTC);

    /// Parses an IANA zone name, exactly as the tz database spells it
    /// (`america/los_angeles` is refused rather than guessed at; so are
    /// offsets such as `+02:00`, which have no DST rules). The message names
    /// `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, String> {
        raw.parse::<Tz>().map(TimeZone).map_err(|_| {
            format!(
                "{field} must be an IANA time zone name, such as UTC, Europe/Berlin or America/Los_Angeles, not {raw:?}"
            )
        })
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The local calendar day in this zone at instant `at`.
    pub fn today(self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.0).date_naive()
    }
}

impl Default for TimeZone {
    /// Campaigns stored before time zones existed, and those created without
    /// one, are in UTC (what dates meant before).
    fn default() -> Self {
        Self::UTC
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TimeZone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        TimeZone::parse("time_zone", &raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn today_is_the_local_day_across_the_dst_change() {
        let la = TimeZone::parse("time_zone", "America/Los_Angeles").unwrap();
        // 2024-03-10 is the spring-forward day in Los Angeles: 02:00 PST
        // jumps to 03:00 PDT, so the local day runs from 08:00 UTC on the
        // 10th to 07:00 UTC on the 11th (23 hours).
        assert_eq!(la.today(at("2024-03-10T07:59:59Z")), d("2024-03-09"));
        assert_eq!(la.today(at("2024-03-10T08:00:00Z")), d("2024-03-10"));
        assert_eq!(la.today(at("2024-03-11T06:59:59Z")), d("2024-03-10"));
        assert_eq!(la.today(at("2024-03-11T07:00:00Z")), d("2024-03-11"));
        // UTC: the UTC day, as before zones existed.
        assert_eq!(TimeZone::UTC.today(at("2024-03-10T07:59:59Z")), d("2024-03-10"));
        // East of UTC the local day starts earlier.
        let kiritimati = TimeZone::parse("time_zone", "Pacific/Kiritimati").unwrap();
        assert_eq!(kiritimati.today(at("2024-03-10T10:00:00Z")), d("2024-03-11"));
    }

    #[test]
    fn names_parse_exactly_and_round_trip() {
        for name in ["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata"] {
            let zone = TimeZone::parse("time_zone", name).unwrap();
            assert_eq!(zone.name(), name);
            let json = serde_json::to_string(&zone).unwrap();
            assert_eq!(serde_json::from_str::<TimeZone>(&json).unwrap(), zone);
        }
        for bad in [
            "",
            "america/los_angeles",
            "Mars/Olympus_Mons",
            "+02:00",
            "PST8PDT ",
        ] {
            let message = TimeZone::parse("time_zone", bad).unwrap_err();
            assert!(
                message.starts_with("time_zone must be an IANA"),
                "{bad}: {message}"
            );
        }
        assert_eq!(TimeZone::default(), TimeZone::UTC);
    }
}
